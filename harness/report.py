"""Reports: run folders -> pandas tables (markdown, CSV, LaTeX), matplotlib plots (PNG, SVG), one report.md."""
from pathlib import Path

import pandas as pd

from harness.store import RunStore


def load_cells(run_dirs: list[Path]) -> pd.DataFrame:
    """Every finished cell of the given runs, one row each, with meta fields flattened (meta.depth, ...)."""
    rows = []
    for folder in run_dirs:
        store = RunStore.open(folder)
        for cell in store.cells():
            if cell.get("status") != "ok":
                continue
            row = {k: v for k, v in cell.items() if k not in ("meta", "layers", "scores")}
            row.update({f"meta.{k}": v for k, v in (cell.get("meta") or {}).items() if not isinstance(v, (list, dict))})
            row["layers"] = cell.get("layers")
            row["run"] = folder.name
            rows.append(row)
    if not rows:
        raise ValueError(f"no finished cells in {', '.join(str(d) for d in run_dirs)}; run a sweep first")
    return pd.DataFrame(rows)


def dense_specs(frame: pd.DataFrame) -> list[str]:
    return sorted(frame.loc[frame["method"] == "dense", "method_spec"].unique())


def baseline_spec(frame: pd.DataFrame, requested: str | None = None) -> str:
    specs = dense_specs(frame)
    if requested:
        if requested not in set(frame["method_spec"]):
            raise ValueError(f"baseline {requested!r} is not in these runs; choose from: {', '.join(specs)}")
        return requested
    if not specs:
        raise ValueError("these runs have no dense cells, so nothing is relative to dense; add --methods dense")
    return "dense" if "dense" in specs else specs[0]


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (model, task, method) x length."""
    return frame.pivot_table(index=["model", "task", "method_spec"], columns="length", values="score", aggfunc="mean")


def relative_accuracy_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Accuracy divided by the dense baseline's at the same (model, task, length)."""
    accuracy = accuracy_table(frame)
    base = accuracy.xs(baseline, level="method_spec")
    return accuracy.div(base.reindex(accuracy.index.droplevel("method_spec")).values)


def ttft_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Median TTFT (ms) per (model, method) x length, over every task's cells."""
    return frame.pivot_table(index=["model", "method_spec"], columns="length", values="ttft_ms", aggfunc="median")


def speedup_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """TTFT of the baseline divided by each method's, per (model, method) x length: > 1 is faster."""
    ttft = ttft_table(frame)
    base = ttft.xs(baseline, level="method_spec")
    return 1.0 / ttft.div(base.reindex(ttft.index.droplevel("method_spec")).values)


def needle_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """Needle score per (model, method, depth) x length, for heatmaps."""
    needle = frame[frame["task"] == "needle"]
    if needle.empty or "meta.depth" not in needle:
        return pd.DataFrame()
    return needle.pivot_table(index=["model", "method_spec", "meta.depth"], columns="length", values="score",
                              aggfunc="mean")


def density_per_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean density per (model, method, length, layer) from the per-layer stats cells carry."""
    rows = []
    for _, cell in frame.iterrows():
        for entry in cell["layers"] or []:
            if "density" not in entry:
                continue
            values = entry["density"] if isinstance(entry["density"], list) else [entry["density"]]
            rows.append({"model": cell["model"], "method_spec": cell["method_spec"], "length": cell["length"],
                         "layer": entry["layer"], "density": sum(values) / len(values)})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby(["model", "method_spec", "length", "layer"])["density"].mean().reset_index()


def write_table(table: pd.DataFrame, out: Path, stem: str, digits: int = 3) -> str:
    """Write <stem>.csv, .md and .tex; return the markdown."""
    table = table.copy()
    table.columns = [str(c) for c in table.columns]
    table.to_csv(out / f"{stem}.csv")
    markdown = table.round(digits).to_markdown()
    (out / f"{stem}.md").write_text(markdown + "\n")
    (out / f"{stem}.tex").write_text(table.round(digits).to_latex(float_format=f"%.{digits}f") + "\n")
    return markdown


def build_report(run_dirs: list[Path], out: Path, baseline: str | None = None) -> Path:
    from harness import diagnose_report, plots

    if not any((Path(d) / "cells.jsonl").is_file() for d in run_dirs) and diagnose_report.has_diagnostics(run_dirs):
        return diagnose_report.build(run_dirs, out)  # `diagnose` run folders: diagnostics only
    frame = load_cells(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    base = baseline_spec(frame, baseline)
    sections = [f"# Report\n\nRuns: {', '.join(d.name for d in run_dirs)}\n\nBaseline for relative numbers: "
                f"`{base}` (TTFT is the median over cells; accuracy the mean score).\n"]
    tables = [("accuracy", "Accuracy (mean score) per length", accuracy_table(frame)),
              ("accuracy_relative", f"Accuracy relative to {base}", relative_accuracy_table(frame, base)),
              ("ttft_ms", "Time to first token (ms, median)", ttft_table(frame))]
    for spec in dense_specs(frame):
        tables.append((f"speedup_vs_{spec.replace(':', '_').replace('=', '-')}", f"TTFT speedup vs {spec}",
                       speedup_table(frame, spec)))
    for stem, title, table in tables:
        markdown = write_table(table, out, stem)
        sections.append(f"## {title}\n\n{markdown}\n\n([CSV]({stem}.csv), [LaTeX]({stem}.tex))\n")
    figures = plots.all_plots(frame, base, out)
    for stem, title in figures:
        sections.append(f"## {title}\n\n![{title}]({stem}.png)\n")
    if diagnose_report.has_diagnostics(run_dirs):
        sections += diagnose_report.diagnostics_section(run_dirs, out)
    report = out / "report.md"
    report.write_text("\n".join(sections))
    return report
