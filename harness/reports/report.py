"""Reports: run folders -> every table computed once here (pandas) -> markdown, CSV, LaTeX and report.md;
harness.reports.plots only draws the tables it is handed.

Conventions: accuracy carries its sample count and a Wilson 95% interval; accuracy relative to dense is shown
only where dense scores clearly above zero; speedups divide by the dense cells of the same run (and so the same
device) unless pooling is asked for; CPU timings (the exact fp32 PyTorch path) are marked and kept out of the
speed plots unless asked for; a sparse cell whose executed density is above 0.95 is marked, since it ran
(almost) dense.
"""
from pathlib import Path

import pandas as pd

from harness.options import format_length
from harness.reports import diagnose_report, frontier, plots, tables_longbench, tables_ruler
from harness.reports.cells import load_cells, model_label  # noqa: F401  (model_label: the label tables use)
from harness.reports.stats import (DENSE_LIKE, Z95, accuracy_stats, baseline_spec, dense_specs,  # noqa: F401
                                   runs_level, timed, wilson)  # (Z95, wilson: defined in stats, read from here too)
from harness.running.store import DIAGNOSTICS_FILE, RunStore

CLEARLY_ABOVE_ZERO = 0.2  # relative accuracy needs dense's Wilson lower bound at least this high
DENSE_MARK, CPU_MARK = "†", "(CPU)"


# ---- accuracy -------------------------------------------------------------------------------------------------

def relative_accuracy_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Accuracy divided by the dense baseline's at the same (model, task, length); NaN where the baseline does
    not score clearly above zero (its Wilson lower bound below CLEARLY_ABOVE_ZERO), since a ratio to a noisy
    near-zero dense score says nothing."""
    stats = accuracy_stats(frame)
    accuracy = stats["mean"].unstack("length")
    base = stats.xs(baseline, level="method_spec")
    base_mean = base["mean"].where(base["low"] >= CLEARLY_ABOVE_ZERO).unstack("length")
    return accuracy.div(base_mean.reindex(accuracy.index.droplevel("method_spec")).values)


# ---- timing ---------------------------------------------------------------------------------------------------

def ttft_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Median TTFT (ms) per (model, method) x length over every task's cells; per run when several runs hold
    timings (times from different runs are never pooled)."""
    cells = timed(frame)
    return cells.pivot_table(index=[*runs_level(cells), "model", "method_spec"], columns="length",
                             values="ttft_ms", aggfunc="median")


def speedup_table(frame: pd.DataFrame, baseline: str, pool: bool = False) -> pd.DataFrame:
    """TTFT of the baseline divided by each method's, per (model, method) x length: > 1 is faster. Each run is
    divided by its own baseline cells (same run, same device); pool=True divides by all runs' cells together."""
    cells = timed(frame)
    level = [] if pool else runs_level(cells)
    ttft = cells.pivot_table(index=[*level, "model", "method_spec"], columns="length", values="ttft_ms",
                             aggfunc="median")
    base = ttft.xs(baseline, level="method_spec")
    return 1.0 / ttft.div(base.reindex(ttft.index.droplevel("method_spec")).values)


def devices(frame: pd.DataFrame, index: list[str]) -> pd.Series:
    """Where each row's timings were taken: 'GPU', 'CPU' (and 'reference path' for the fp32 eager method)."""
    def label(group):
        kinds = sorted({"CPU" if d == "cpu" else ("GPU" if d.startswith("cuda") else d) for d in group["device"]})
        text = "/".join(kinds)
        return text + (", reference path" if (group["method"] == "eager").any() else "")
    return timed(frame).groupby(index).apply(label, include_groups=False)


# ---- needle, density ------------------------------------------------------------------------------------------

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


def pareto_points(frame: pd.DataFrame, baseline: str, pool: bool, cpu: bool) -> pd.DataFrame:
    """Per (model, method, length), and per run when several runs hold timings: speedup vs the baseline and
    accuracy (all tasks pooled, LongBench as its dataset average) with its interval; only at lengths where the
    baseline scores clearly above zero (elsewhere accuracy separates nothing)."""
    cells = timed(frame, cpu)
    if cells.empty or baseline not in set(cells["method_spec"]):
        return pd.DataFrame()
    speed = speedup_table(cells, baseline, pool).stack().rename("speedup").reset_index()
    keys = [*(["run"] if "run" in speed else []), "model", "method_spec", "length"]
    acc = accuracy_stats(frame, by=tuple(keys)).reset_index()
    base = acc[(acc["method_spec"] == baseline) & (acc["low"] >= CLEARLY_ABOVE_ZERO)][
        [k for k in keys if k != "method_spec"]]
    return speed.merge(acc, on=keys, how="inner").merge(base, on=[k for k in keys if k != "method_spec"])


# ---- writing --------------------------------------------------------------------------------------------------

def length_columns(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table.columns = [format_length(int(c)) if str(c).isdigit() else str(c) for c in table.columns]
    return table


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """Index levels as ordinary columns, so markdown rows read `model | task | method` instead of tuples."""
    return length_columns(table).reset_index().rename(columns={"method_spec": "method"})


def write_table(display: pd.DataFrame, out: Path, stem: str, data: pd.DataFrame | None = None,
                digits: int = 3) -> str:
    """Write <stem>.csv (the numbers, `data` when given), .md and .tex (the display table); return the markdown."""
    data = display if data is None else data
    data.to_csv(out / f"{stem}.csv")
    shown = flat(display) if isinstance(display.index, pd.MultiIndex) or display.index.name else display
    shown = shown.round(digits) if any(k in "fi" for k in shown.dtypes.map(lambda d: d.kind)) else shown
    markdown = shown.to_markdown(index=False)
    (out / f"{stem}.md").write_text(markdown + "\n")
    (out / f"{stem}.tex").write_text(shown.to_latex(index=False, float_format=f"%.{digits}f") + "\n")
    return markdown


def accuracy_display(stats: pd.DataFrame) -> pd.DataFrame:
    def text(row):
        mark = f" {DENSE_MARK}" if row["dense_like"] else ""
        return f"{row['mean']:.2f} [{row['low']:.2f}, {row['high']:.2f}] n={int(row['n'])}{mark}"
    marked = stats.assign(dense_like=stats["dense_like"] & (stats.index.get_level_values("method_spec") != "dense"))
    return marked.apply(text, axis=1).unstack("length").fillna("")


def timing_display(table: pd.DataFrame, frame: pd.DataFrame, digits: int) -> pd.DataFrame:
    """The numbers as text, with a `timed on` column (GPU / CPU / reference path) per row."""
    shown = table.map(lambda v: "" if v != v else f"{v:.{digits}f}")
    where = devices(frame, list(table.index.names)).reindex(table.index)
    shown.insert(0, "timed on", where.values)
    return shown


def blank_missing(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype(object).where(table.notna(), "")


def task_tables(frame: pd.DataFrame, base: str) -> list[tuple]:
    """Tables in a task's own official layout: LongBench (per dataset x100, average, LongBench-E buckets) and
    RULER (methods x lengths of the subtask average, and per subtask), each computed once in its module."""
    tables = []
    if (frame["task"] == "longbench").any():
        cells = frame[frame["task"] == "longbench"]
        for stem, title, table in tables_longbench.report_tables(cells, base):
            tables.append((stem, title, blank_missing(flat(table).round(2)), flat(table)))
    if (frame["task"] == "ruler").any():
        for stem, title, table in (("ruler", "RULER: average over subtasks (0-100; blank where a subtask is missing)",
                                    tables_ruler.average_table(frame)),
                                   ("ruler_tasks", "RULER per subtask (0-100)", tables_ruler.per_task_table(frame))):
            tables.append((stem, title, blank_missing(flat(table).round(1)), flat(table)))
    return tables


def build_report(run_dirs: list[Path], out: Path, baseline: str | None = None, pool_baselines: bool = False,
                 cpu_timings: bool = False) -> Path:
    run_dirs = [Path(d) for d in run_dirs]
    stores = [RunStore.open(d) for d in run_dirs]
    if not any(s.has() for s in stores) and any(s.has(DIAGNOSTICS_FILE) for s in stores):
        return diagnose_report.build(run_dirs, out)  # `diagnose` run folders: diagnostics only
    frame = load_cells(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    base = baseline_spec(frame, baseline)
    stats = accuracy_stats(frame)
    relative = relative_accuracy_table(frame, base)
    ttft = ttft_table(frame)
    cpu = (timed(frame)["device"] == "cpu").any()
    untimed = timed(frame).empty  # no cell carries a time to first token: no timing tables to draw
    several = frame["run"].nunique() > 1
    notes = [f"Runs: {', '.join(d.name for d in run_dirs)}.",
             f"Baseline for relative numbers: `{base}`. Accuracy: mean score, [Wilson 95% interval], n = scored "
             f"samples; {DENSE_MARK} marks a sparse cell whose executed density is above {DENSE_LIKE} (it ran "
             "almost dense). TTFT: median over cells, in ms."]
    if several:
        notes.append("Speedups: each run against the dense cells of all runs pooled (--pool-baselines)."
                     if pool_baselines else "Speedups: each run against its own dense cells (same run, same "
                     "device); timings from different runs are never pooled.")
    if cpu:
        notes.append("**CPU timings** (rows timed on CPU) run the exact fp32 PyTorch path, not the GPU kernels: "
                     "they are no performance evidence" + ("" if cpu_timings else
                                                           ", and the speed plots leave them out (--cpu-timings "
                                                           "draws them)") + ".")
    if untimed:
        notes.append("No cell carries a time to first token, so the report has no timing tables.")
    sections = ["# Report\n\n" + "\n\n".join(notes) + "\n"]
    tables = [("accuracy", "Accuracy per length", accuracy_display(stats), stats),
              ("accuracy_relative", f"Accuracy relative to {base} (blank where {base} does not score clearly above "
               f"zero: Wilson lower bound below {CLEARLY_ABOVE_ZERO})",
               relative.map(lambda v: "" if v != v else f"{v:.2f}"), relative)]
    if not untimed:
        tables.append(("ttft_ms", "Time to first token (ms, median)", timing_display(ttft, frame, 1), ttft))
        for spec in dense_specs(frame):
            speed = speedup_table(frame, spec, pool_baselines)
            tables.append((f"speedup_vs_{spec.replace(':', '_').replace('=', '-')}", f"TTFT speedup vs {spec}",
                           timing_display(speed, frame, 2), speed))
    tables += task_tables(frame, base)
    for stem, title, display, data in tables:
        markdown = write_table(display, out, stem, data)
        sections.append(f"## {title}\n\n{markdown}\n\n([CSV]({stem}.csv), [LaTeX]({stem}.tex))\n")
    speed_frame = timed(frame, cpu_timings)
    figures = plots.all_plots(
        ttft=ttft_table(speed_frame) if not speed_frame.empty else pd.DataFrame(),
        speedup=speedup_table(speed_frame, base, pool_baselines) if base in set(speed_frame["method_spec"])
        else pd.DataFrame(),
        points=pareto_points(frame, base, pool_baselines, cpu_timings), needle=needle_grid(frame),
        density=density_per_layer(frame), baseline=base, out=out, cpu=cpu_timings and cpu)
    for stem, title in figures:
        sections.append(f"## {title}\n\n![{title}]({stem}.png)\n")
    if not untimed:
        built = frontier.build(run_dirs, out, base, pool_baselines, cpu_timings, frame)
        sections.append(frontier.write(built, out) + "\n([CSV](frontier.csv))\n")
    if any(s.has(DIAGNOSTICS_FILE) for s in stores):
        sections += diagnose_report.diagnostics_section(run_dirs, out)
    report = out / "report.md"
    report.write_text("\n".join(sections))
    return report
