"""The numbers every report table shares, defined once: the Wilson interval, the dense baseline's choice, accuracy
per group, which cells carry timings. harness.reports.report and harness.reports.frontier both build on these."""
import math

import pandas as pd

from harness.options import InputError
from harness.reports import tables_longbench

Z95 = 1.959964
DENSE_LIKE = 0.95  # executed density above this: the sparse method ran (almost) dense


def wilson(mean: float, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a proportion; a mean score in [0, 1] counts as mean * n successes."""
    if not n or mean != mean:
        return float("nan"), float("nan")
    p = min(max(float(mean), 0.0), 1.0)
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def dense_specs(frame: pd.DataFrame) -> list[str]:
    return sorted(frame.loc[frame["method"] == "dense", "method_spec"].unique())


def baseline_spec(frame: pd.DataFrame, requested: str | None = None) -> str:
    specs = dense_specs(frame)
    if requested:
        if requested not in set(frame["method_spec"]):
            raise InputError(f"baseline {requested!r} is not in these runs; choose from: {', '.join(specs)}")
        return requested
    if not specs:
        raise InputError("these runs have no dense cells, so nothing is relative to dense; add --methods dense")
    return "dense" if "dense" in specs else specs[0]


def accuracy_stats(frame: pd.DataFrame, by=("model", "task", "method_spec", "length")) -> pd.DataFrame:
    """Mean score, sample count, Wilson 95% interval and mean executed density per group. LongBench's mean is
    its per-dataset scores averaged over datasets, as LongBench defines it (tables_longbench.group_means)."""
    scored = frame.dropna(subset=["score"])
    stats = scored.groupby(list(by)).agg(mean=("score", "mean"), n=("score", "size"), density=("density", "mean"))
    if "task" in scored and (scored["task"] == "longbench").any():
        stats["mean"] = tables_longbench.group_means(scored, list(by)).reindex(stats.index)
    bounds = [wilson(m, n) for m, n in zip(stats["mean"], stats["n"])]
    stats["low"] = [b[0] for b in bounds]
    stats["high"] = [b[1] for b in bounds]
    stats["dense_like"] = stats["density"] > DENSE_LIKE
    return stats


def timed(frame: pd.DataFrame, cpu: bool = True) -> pd.DataFrame:
    """The cells that carry a time to first token (without the CPU's unless cpu)."""
    cells = frame.dropna(subset=["ttft_ms"])
    return cells if cpu else cells[cells["device"] != "cpu"]


def runs_level(frame: pd.DataFrame) -> list[str]:
    """['run'] when the frame holds several runs (their timings are never pooled unless asked), else []."""
    return ["run"] if frame["run"].nunique() > 1 else []
