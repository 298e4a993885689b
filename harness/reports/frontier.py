"""The accuracy-vs-TTFT frontier, computed once: per (model, task, length), one row per method setting with its
executed density, recall (from a diagnose run at the same model and length), accuracy with a 95% interval, n,
median TTFT and the speedup over the dense baseline; the Pareto frontier of (speedup, accuracy) marked.
harness.reports.plots.frontier draws it; `sampleattn report` and scripts/frontier_readme.py write it.

Speedups never mix devices: a GPU cell's device is its run's GPU (the manifest's `gpu`, e.g. "NVIDIA H200"), and
a row is divided only by the baseline's cells of the same model, length and device (and of the same run when
several runs are given, unless pooled, as report.py's speedups). A row with no baseline cells on its device has
no speedup, and the table's note says why. A row's interval is Wilson's (stats.wilson) when each of its scores is 0
or 1, else a percentile bootstrap of the mean over its cells (LongBench: resampled within each dataset).
"""
import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness.options import format_length
from harness.reports import plots
from harness.reports.cells import load_cells, model_label
from harness.reports.diagnose_report import load_heads, setting_label
from harness.reports.stats import accuracy_stats, baseline_spec, runs_level, timed
from harness.running.store import DIAGNOSTICS_FILE, RunStore

RESAMPLES = 2000
SEED = 0
GROUP = ["model", "task", "length"]  # one table each
PANEL = ["task", "device"]  # one panel each in a (model, length) figure; the Pareto frontier is per panel
UNRECORDED_GPU = "cuda (GPU not recorded)"
BOOTSTRAP_MARK = " *"  # beside a bootstrap interval in a table that also holds Wilson intervals
COLUMNS = {"method_spec": "method", "density": "density", "recall": "recall", "mean": "accuracy",
           "interval": "95% interval", "n": "n", "ttft_ms": "TTFT ms", "speedup": "speedup", "device": "device",
           "on_frontier": "frontier", "run": "run"}


# ---- inputs ---------------------------------------------------------------------------------------------------

def device_kinds(run_dirs) -> dict[str, str]:
    """Run folder name -> the GPU its manifest names, for the runs that recorded one."""
    kinds = {}
    for folder in map(Path, run_dirs):
        gpu = RunStore.open(folder).manifest().get("gpu")
        if gpu:
            kinds[folder.name] = str(gpu)
    return kinds


def with_devices(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """`device` as the kind that times alike: a GPU cell's becomes its run's GPU name; cpu and the rest stay."""
    gpu = [kinds.get(run, UNRECORDED_GPU) if str(device).startswith("cuda") else str(device)
           for run, device in zip(frame["run"], frame["device"])]
    return frame.assign(device=gpu)


def recall_table(diagnose_dirs) -> pd.DataFrame:
    """Mean recall over heads per (model, length, setting) of the diagnose runs; empty when they hold none."""
    dirs = [d for d in map(Path, diagnose_dirs) if RunStore(d).has(DIAGNOSTICS_FILE)]
    heads = load_heads(dirs) if dirs else pd.DataFrame()
    if heads.empty:
        return pd.DataFrame(columns=["model", "length", "setting", "recall"])
    heads = heads.assign(model=heads["model"].map(model_label))
    return heads.groupby(["model", "length", "setting"])["recall"].mean().reset_index()


# ---- numbers --------------------------------------------------------------------------------------------------

def all_binary(scores) -> bool:
    values = np.asarray(scores, dtype=float)
    return bool(np.isin(values[~np.isnan(values)], (0.0, 1.0)).all())


def bootstrap(scores, strata=None, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile 95% interval of the mean (of the strata's means, when strata are given) over resampled cells."""
    scores = np.asarray(scores, dtype=float)
    labels = np.zeros(len(scores)) if strata is None else np.asarray(strata)
    rng = np.random.default_rng(seed)
    means = []
    for label in pd.unique(labels):
        part = scores[labels == label]
        means.append(part[rng.integers(0, len(part), size=(resamples, len(part)))].mean(axis=1))
    low, high = np.percentile(np.mean(means, axis=0), [2.5, 97.5])
    return float(low), float(high)


def pareto(speedup: pd.Series, accuracy: pd.Series) -> pd.Series:
    """True where no other point is at least as fast and as accurate and better in one of the two (points
    without a speedup or an accuracy are never on it)."""
    ok = speedup.notna() & accuracy.notna()
    s, a = speedup[ok].to_numpy(), accuracy[ok].to_numpy()
    on = pd.Series(False, index=speedup.index)
    for i, index in enumerate(speedup[ok].index):
        dominated = (s >= s[i]) & (a >= a[i]) & ((s > s[i]) | (a > a[i]))
        on[index] = not dominated.any()
    return on


def frontier_table(frame: pd.DataFrame, baseline: str, kinds: dict[str, str] | None = None,
                   recall: pd.DataFrame | None = None, pool: bool = False) -> pd.DataFrame:
    """One row per (model, task, length, device, method setting), and per run when several runs are given and
    not pooled: mean executed density, recall, accuracy (mean, low, high, interval kind, n), median TTFT (ms),
    the baseline's median TTFT on the same device and the speedup (baseline / method), on_frontier."""
    cells = with_devices(frame, kinds or {})
    cells = cells.assign(setting=[setting_label(m, c, s) for m, c, s in
                                  zip(cells["method"], cells.get("method_config", [None] * len(cells)),
                                      cells["method_spec"])])
    run = [] if pool else runs_level(cells)
    keys = [*run, *GROUP, "device", "method_spec"]
    stats = accuracy_stats(cells, by=keys)[["mean", "n", "low", "high", "dense_like"]]
    stats["interval"] = "Wilson"
    scored = cells.dropna(subset=["score"])
    for key, group in scored.groupby(keys):
        if all_binary(group["score"]):
            continue
        strata = group["meta.dataset"] if (group["task"] == "longbench").all() and "meta.dataset" in group else None
        stats.loc[key, ["low", "high"]] = list(bootstrap(group["score"], strata))
        stats.loc[key, "interval"] = "bootstrap"
    # dense cells carry no density of their own: they compute the whole causal area
    density = cells["density"].where(cells["method"] != "dense", cells["density"].fillna(1.0)).groupby(
        [cells[k] for k in keys]).mean()
    ttft = timed(cells).groupby(keys)["ttft_ms"].median()
    names = cells.groupby(keys)[["method", "setting"]].first()
    table = pd.concat([stats, density, ttft.rename("ttft_ms"), names], axis=1).reset_index()
    base_keys = [*run, "model", "length", "device"]
    base = timed(cells[cells["method_spec"] == baseline]).groupby(base_keys)["ttft_ms"].median()
    table = table.merge(base.rename("baseline_ms").reset_index(), on=base_keys, how="left")
    table["speedup"] = table["baseline_ms"] / table["ttft_ms"]
    if recall is not None and len(recall):
        table = table.merge(recall, on=["model", "length", "setting"], how="left")
    else:
        table["recall"] = float("nan")
    table["on_frontier"] = False
    for _, group in table.groupby([*GROUP, "device"]):
        table.loc[group.index, "on_frontier"] = pareto(group["speedup"], group["mean"])
    order = table["method_spec"].ne(baseline)
    return (table.assign(_order=order).sort_values([*GROUP, "device", "_order", "method_spec", *run])
            .drop(columns="_order").reset_index(drop=True))


# ---- writing --------------------------------------------------------------------------------------------------

def file_stem(model: str, length: int) -> str:
    return "frontier_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model}_{format_length(int(length))}").strip("-")


def display(rows: pd.DataFrame, several_runs: bool) -> pd.DataFrame:
    """The rows as text: density (dagger when the sparse path ran almost dense), accuracy, interval, TTFT, speedup."""
    mixed = rows["interval"].dropna().nunique() > 1

    def number(value, digits, suffix=""):
        return "" if value != value else f"{value:.{digits}f}{suffix}"
    shown = pd.DataFrame({
        "method_spec": rows["method_spec"],
        "density": [number(d, 2) + (" †" if like and method != "dense" and d == d else "")
                    for d, like, method in zip(rows["density"], rows["dense_like"].fillna(False), rows["method"])],
        "recall": [number(r, 3) for r in rows["recall"]],
        "mean": [number(m, 3) for m in rows["mean"]],
        "interval": ["" if lo != lo else f"[{lo:.2f}, {hi:.2f}]" + (BOOTSTRAP_MARK if kind == "bootstrap" and mixed
                                                                  else "")
                     for lo, hi, kind in zip(rows["low"], rows["high"], rows["interval"])],
        "n": ["" if n != n else str(int(n)) for n in rows["n"]],
        "ttft_ms": [number(t, 1) for t in rows["ttft_ms"]],
        "speedup": [number(s, 2, "x") for s in rows["speedup"]],
        "device": rows["device"],
        "on_frontier": ["yes" if on else "" for on in rows["on_frontier"]],
    })
    if several_runs:
        shown["run"] = rows["run"]
    return shown.rename(columns=COLUMNS)


def markdown_table(shown: pd.DataFrame) -> str:
    """A pipe table without padding (the text as given: numbers stay as formatted), as the README's tables are."""
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)


def group_note(rows: pd.DataFrame, baseline: str, recall_given: bool, per_run: bool) -> str:
    kinds = set(rows["interval"].dropna())
    bootstrap_text = (f"bootstrap 95% (percentile, {RESAMPLES} resamples of the row's cells, seed {SEED}; its "
                      "scores are not all 0 or 1)")
    if kinds == {"bootstrap"}:
        parts = [f"Interval: {bootstrap_text}"]
    elif len(kinds) > 1:
        parts = [f"Interval: Wilson 95% where each of the row's scores is 0 or 1, else ({BOOTSTRAP_MARK.strip()}) "
                 + bootstrap_text]
    else:
        parts = ["Interval: Wilson 95% (every score is 0 or 1)"]
    devices = sorted(set(rows["device"]))
    if len(devices) > 1:
        parts.append(f"timed on {len(devices)} devices ({', '.join(devices)}): each speedup divides by `{baseline}` "
                     "on the row's own device, and the frontier is drawn per device")
    unmatched = sorted(set(rows.loc[rows["ttft_ms"].notna() & rows["baseline_ms"].isna(), "device"]))
    if unmatched:
        parts.append(f"speedup blank on {', '.join(unmatched)}: no `{baseline}` cells timed on that device at this "
                     "length" + (" in the row's run (--pool-baselines pools the runs of one device)" if per_run else "")
                     + " (GPU kinds are never mixed in one ratio)")
    if (rows["task"] == "ruler").any():
        parts.append("RULER accuracy: the mean over its cells (the subtask average where every subtask has the same n)")
    if "cpu" in devices:
        parts.append("cpu rows time the exact fp32 PyTorch path: no performance evidence")
    if not recall_given:
        parts.append("recall blank: no diagnose run given")
    elif rows["recall"].isna().any():
        parts.append("recall blank where the diagnose runs did not measure that setting at this model and length")
    return "; ".join(parts) + "."


def notes(baseline: str, runs: list[str], diagnose: list[str], pool: bool) -> str:
    text = (f"Runs: {', '.join(runs)}" + (f"; recall from {', '.join(diagnose)}" if diagnose else "") + ". "
            "One row per method setting: density = mean executed share of the causal area (sweep cells; † the sparse "
            "path ran almost dense); recall = share of the dense attention mass the setting's mask keeps (diagnose "
            "run at the same model and length, mean over layers, heads and sampled rows; the dense fallback's "
            "options are ignored in matching); accuracy = mean score; TTFT = median over the row's timed cells (ms); "
            f"speedup = median TTFT of `{baseline}` on the same model, length and device / the row's; frontier = "
            "on the Pareto frontier of (speedup, accuracy) among the table's rows of that device.")
    if len(runs) > 1:
        text += (" Timings of different runs are pooled (--pool-baselines)." if pool else
                 " Each run's rows divide by its own baseline cells (a `run` column names it).")
    return text


def render(table: pd.DataFrame, baseline: str, runs: list[str], diagnose: list[str], pool: bool,
           figures: dict[tuple, str], image_prefix: str = "", heading: str = "##") -> str:
    """The frontier's markdown: notes, then per (model, length) its figure and per task its table."""
    several = "run" in table and table["run"].nunique() > 1 and not pool
    sections = [f"{heading} Accuracy vs TTFT frontier\n\n" + notes(baseline, runs, diagnose, pool)]
    for (model, length), part in table.groupby(["model", "length"], sort=True):
        title = f"{model} @ {format_length(int(length))}"
        if (model, length) in figures:
            sections.append(f"{heading}# {title}\n\n![frontier {title}]({image_prefix}{figures[(model, length)]}.png)")
        else:
            sections.append(f"{heading}# {title}\n\n(no figure: no row here has both a speedup and an accuracy"
                            + ("; CPU timings are drawn only with --cpu-timings" if (part["device"] == "cpu").any()
                               else "") + ")")
        for task, rows in part.groupby("task", sort=True):
            shown = display(rows, several)
            sections.append(f"{task}, {title}:\n\n" + markdown_table(shown) + "\n\n"
                            + group_note(rows, baseline, bool(diagnose), several))
    return "\n\n".join(sections) + "\n"


def build(run_dirs, out: Path, baseline: str | None = None, pool: bool = False, cpu_timings: bool = False,
          frame: pd.DataFrame | None = None) -> dict:
    """The table and its figures (drawn into `out`: the only thing written) with what render needs. Diagnose
    folders among run_dirs give the recall; the others' cells give the rest."""
    run_dirs = [Path(d) for d in run_dirs]
    frame = load_cells(run_dirs) if frame is None else frame
    base = baseline_spec(frame, baseline)
    diagnose = [d for d in run_dirs if RunStore(d).has(DIAGNOSTICS_FILE)]
    table = frontier_table(frame, base, device_kinds(run_dirs), recall_table(diagnose), pool)
    drawable = table[table["speedup"].notna() & table["mean"].notna()]
    if not cpu_timings:
        drawable = drawable[drawable["device"] != "cpu"]
    out = Path(out)
    figures = {}
    for (model, length), part in drawable.groupby(["model", "length"], sort=True):
        out.mkdir(parents=True, exist_ok=True)
        figures[(model, length)] = file_stem(model, length)
        plots.frontier(part, base, f"{model} @ {format_length(int(length))}", out, figures[(model, length)])
    ran = set(frame["run"])
    return {"table": table, "baseline": base, "runs": [d.name for d in run_dirs if d.name in ran],
            "diagnose": [d.name for d in diagnose], "pool": pool, "figures": figures}


def write(built: dict, out: Path) -> str:
    """frontier.csv and frontier.md (its figures already drawn there by build) into `out`; returns the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    built["table"].to_csv(out / "frontier.csv", index=False)
    markdown = render(**built)
    (out / "frontier.md").write_text(markdown)
    return markdown
