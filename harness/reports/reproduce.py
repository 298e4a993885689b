"""`reproduce TABLE`: ours beside the paper's, from the run folders of the sweep behind a paper table (the CLI,
harness/cli/reproduce.py, checks the data, runs that sweep or reuses finished runs, then calls `compare`).

The paper's models (ChatGLM2-6B, InternLM2-7B) are not ours, so the comparable quantities are relative:
accuracy as a share of the dense model's, and TTFT speedup over dense FlashAttention. Rows are joined on the
method's full configuration (`sample:alpha=0.95` is `sample` with its default alpha), never on its name alone.
"""
import dataclasses
import datetime
import json
import re
from pathlib import Path

import pandas as pd

from attention.registry import build_method
from harness.options import InputError, parse_spec
from harness.reports import report, tables_longbench
from harness.reports.paper import PAPER, PAPER_NAMES, TABLES
from tasks.base import TaskError, build_task

LONGBENCH_DATA = ("`hf download --repo-type dataset THUDM/LongBench data.zip` (it lands in the hub cache, where "
                  "this command looks), or run this command once online with --download")


def tasks_of(table: str, part: str | None = None) -> list[str] | None:
    """The table's tasks, or the one --part picks (a partial reproduction, labelled so)."""
    tasks = TABLES[table]["tasks"]
    if part is None:
        return tasks
    if tasks is None or part not in tasks:
        raise InputError(f"--part {part}: reproduce {table} has no such half"
                         + (f"; choose {' or '.join(tasks)}" if tasks else ""))
    return [part]


def check_data(tasks: list[str], table: str) -> None:
    """Every task's data is at hand before a run folder exists: LongBench's official files are not generated
    and, offline, come only from the hub cache."""
    for name in tasks:
        try:
            build_task(name).count(1)
        except TaskError as err:
            if name != "longbench":
                raise
            others = [t for t in TABLES[table]["tasks"] if t != "longbench"]
            offer = (f"; or reproduce the {others[0]} half alone with --part {others[0]} (partial, labelled so)"
                     if others else "")
            raise InputError(f"reproduce {table}: the LongBench half needs THUDM/LongBench's data.zip, which is not "
                             f"in the local cache ({' '.join(str(err).split())[:160]}); get it with "
                             f"{LONGBENCH_DATA}{offer}") from None


def partial_note(frame, table: str) -> str | None:
    tasks = TABLES[table]["tasks"]
    if not tasks:
        return None
    missing = [t for t in tasks if t not in set(frame["task"])]
    if not missing:
        return None
    return (f"**Partial reproduction**: only the {', '.join(t for t in tasks if t not in missing)} half; "
            f"no {', '.join(missing)} cells in these runs, so the paper's {', '.join(missing)} column has nothing "
            "beside it.")


def output_folder(out: str, name: str) -> Path:
    """--from: a folder of its own under --out (the source runs stay untouched)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "reproduce"
    root = Path(out)
    folder, suffix = root / f"{stamp}-{name}", 1
    while folder.exists():
        folder, suffix = root / f"{stamp}-{name}-{suffix}", suffix + 1
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        raise InputError(f"--out {root}: cannot create the reproduction's folder there ({err.strerror or err}); "
                         "pass a writable folder") from None
    return folder


def markdown(table) -> str:
    """Index levels as plain columns (never tuples), blanks where nothing is known (never nan)."""
    shown = report.flat(table) if table.index.nlevels > 1 or table.index.name else table
    return report.blank_missing(shown.round(3)).to_markdown(index=False)


def config_key(spec: str) -> str:
    """A method spec as its name plus full configuration, so equal configurations join whatever their spelling;
    a method we do not have (the paper's hyperattention) keeps its own name."""
    spec = PAPER_NAMES.get(spec, spec)
    try:
        name, options = parse_spec(spec)
        method = build_method(name, options)
    except ValueError:  # unknown method or option: not one of ours
        return spec
    return f"{method.name}:{json.dumps(dataclasses.asdict(method.config), sort_keys=True, default=str)}"


def restrict_to_tasks(frame, table: str):
    tasks = TABLES[table]["tasks"]
    if tasks is None:
        return frame
    ours = sorted(set(frame["task"]))
    if not set(ours) & set(tasks):
        raise InputError(f"reproduce {table} compares {', '.join(tasks)}, but these runs hold {', '.join(ours)}; "
                         f"pass runs of {' or '.join(tasks)}")
    return frame[frame["task"].isin(tasks)]


def paper_relative_accuracy():
    paper = pd.read_csv(PAPER / "accuracy_v2.csv")
    full = paper[paper["method"] == "full"].set_index("model")
    paper["longbench_vs_full"] = paper["longbench_total"] / paper["model"].map(full["longbench_total"])
    paper["babilong_vs_full"] = paper["babilong_avg"] / paper["model"].map(full["babilong_avg"])
    return paper.pivot_table(index="method", columns="model", values=["longbench_vs_full", "babilong_vs_full"])


def relative_to_dense(frame, baseline: str):
    """Ours, per (model, method) and task, relative to dense, averaged over lengths: BABILong (and any task but
    LongBench) as the report's relative accuracy; LongBench as the ratio of the official totals (sum of eval.py's
    per-dataset scores over the datasets dense has), the quantity the paper's totals give."""
    others = frame[frame["task"] != "longbench"]
    ours = report.relative_accuracy_table(others, baseline).mean(axis=1).unstack("task") if len(others) else None
    totals = tables_longbench.total_vs_baseline(frame, baseline)
    if not totals.empty:
        longbench = totals["vs_baseline"].groupby(level=["model", "method_spec"]).mean().rename("longbench")
        ours = longbench.to_frame() if ours is None else ours.join(longbench, how="outer")
    if ours is None:
        raise InputError(f"no cells to compare: these runs hold no LongBench v1 cells beside {baseline} and no "
                         "BABILong cells")
    return ours


def compare_accuracy(frame, baseline: str) -> str:
    ours = relative_to_dense(frame, baseline)
    ours.columns = [f"ours {task} vs dense" for task in ours.columns]
    ours = ours.reset_index().rename(columns={"model": "our model", "method_spec": "method"})
    ours["key"] = ours["method"].map(config_key)
    paper = paper_relative_accuracy()
    paper.columns = [f"paper {metric.removesuffix('_vs_full')} vs full ({model}; unconfirmed)"
                     for metric, model in paper.columns]
    paper = paper.reset_index().rename(columns={"method": "paper method"})
    paper["key"] = paper["paper method"].map(config_key)
    joined = ours.merge(paper, on="key", how="outer")
    joined["method"] = joined["method"].fillna(joined["paper method"])
    joined = joined.drop(columns=["key"])
    first = ["method", "our model", "paper method"]
    return markdown(joined[[c for c in first if c in joined] + [c for c in joined.columns if c not in first]])


def compare_ttft(frame, baseline: str) -> str:
    ours = report.speedup_table(frame, baseline).stack().rename("ours: TTFT speedup vs dense").reset_index()
    ours["key"] = ours["method_spec"].map(config_key)
    paper = pd.read_csv(PAPER / "ttft_speedup.csv")
    paper = paper.rename(columns={"method": "paper method", "seq_len": "length",
                                  "ttft_speedup_vs_fa2": "paper: TTFT speedup vs FA2"})
    paper["key"] = paper["paper method"].map(config_key)
    columns = ["key", "paper method", "length", "paper: TTFT speedup vs FA2", "version", "confirmed"]
    joined = ours.merge(paper[columns], on=["key", "length"], how="outer")
    joined["method_spec"] = joined["method_spec"].fillna(joined["paper method"])
    joined = joined.drop(columns=["key", "paper method"]).sort_values(["method_spec", "length"])
    first = ["model", "method_spec", "length"]
    joined = joined[first + [c for c in joined.columns if c not in first]]
    return markdown(joined.rename(columns={"method_spec": "method"}))


def compare(runs: list[Path], table: str, tasks: list[str] | None, out: Path | None, out_root: str,
            name: str) -> str:
    """Report the runs and set ours beside the paper's numbers of `table`; the report goes to `out`, or (runs
    reused with --from) to a new folder under `out_root`, made once the runs hold something to compare."""
    frame = restrict_to_tasks(report.load_cells(runs), table)
    if tasks:
        frame = frame[frame["task"].isin(tasks)]
    baseline = report.baseline_spec(frame)
    out = out or output_folder(out_root, name)
    report_path = report.build_report(runs, out, baseline)
    lines = [f"# reproduce {table}", f"runs: {', '.join(str(r) for r in runs)}", f"report: {report_path}", ""]
    partial = partial_note(frame, table)
    if partial:
        lines += [partial, ""]
    if table == "accuracy":
        lines.append(compare_accuracy(frame, baseline))
    elif table == "ttft":
        lines.append(compare_ttft(frame, baseline))
    else:
        lines.append(markdown(report.needle_grid(frame).round(2)))
        lines.append("\nThe paper shows needle heatmaps as figures only; compare with needle_heatmaps.png.")
    text = "\n".join(lines)
    (out / f"reproduce-{table}.md").write_text(text + "\n")
    return text
