"""`reproduce TABLE`: run (or reuse) the sweep behind a paper table and print ours beside the paper's.

The paper's models (ChatGLM2-6B, InternLM2-7B) are not ours, so the comparable quantities are relative:
accuracy as a share of the dense model's, and TTFT speedup over dense FlashAttention. Rows are joined on the
method's full configuration (`sample:alpha=0.95` is `sample` with its default alpha), never on its name alone.
"""
import argparse
import dataclasses
import datetime
import json
import re
from pathlib import Path

from harness.options import InputError

PAPER = Path(__file__).resolve().parents[2] / "results" / "paper"

# table -> the sweep behind it (methods, tasks, default lengths) and the paper CSV it is compared with;
# tasks None: any task (TTFT does not depend on what the prompt says)
TABLES = {
    "accuracy": {"methods": ["dense", "sample:alpha=0.95", "bigbird", "streaming"],
                 "tasks": ["babilong", "longbench"], "lengths": [2048, 4096], "paper": "accuracy_v2.csv"},
    "needle": {"methods": ["dense", "sample:alpha=0.95", "bigbird", "streaming"], "tasks": ["needle"],
               "lengths": [1024, 2048, 4096, 8192], "paper": None},
    "ttft": {"methods": ["dense", "sample:alpha=0.95", "sample:alpha=0.8", "sample:pattern=column_slash"],
             "tasks": None, "lengths": [8192, 16384, 32768], "paper": "ttft_speedup.csv"},
}
PAPER_NAMES = {"full": "dense"}  # the paper's name for dense attention
LONGBENCH_DATA = ("`hf download --repo-type dataset THUDM/LongBench data.zip` (it lands in the hub cache, where "
                  "this command looks), or run this command once online with --download")


def tasks_of(args) -> list[str] | None:
    """The table's tasks, or the one --part picks (a partial reproduction, labelled so)."""
    tasks = TABLES[args.table]["tasks"]
    part = getattr(args, "part", None)
    if part is None:
        return tasks
    if tasks is None or part not in tasks:
        raise InputError(f"--part {part}: reproduce {args.table} has no such half"
                         + (f"; choose {' or '.join(tasks)}" if tasks else ""))
    return [part]


def check_data(tasks: list[str], table: str) -> None:
    """Every task's data is at hand before a run folder exists: LongBench's official files are not generated
    and, offline, come only from the hub cache."""
    from tasks.base import TaskError, build_task

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


def output_folder(args) -> Path:
    """--from: a folder of its own under --out (the source runs stay untouched)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", args.name or f"reproduce-{args.table}").strip("-") or "reproduce"
    root = Path(args.out)
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
    from harness.reports.report import blank_missing, flat

    shown = flat(table) if table.index.nlevels > 1 or table.index.name else table
    return blank_missing(shown.round(3)).to_markdown(index=False)


def config_key(spec: str) -> str:
    """A method spec as its name plus full configuration, so equal configurations join whatever their spelling;
    a method we do not have (the paper's hyperattention) keeps its own name."""
    from attention.registry import build_method
    from harness.options import parse_spec

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
    import pandas as pd

    paper = pd.read_csv(PAPER / "accuracy_v2.csv")
    full = paper[paper["method"] == "full"].set_index("model")
    paper["longbench_vs_full"] = paper["longbench_total"] / paper["model"].map(full["longbench_total"])
    paper["babilong_vs_full"] = paper["babilong_avg"] / paper["model"].map(full["babilong_avg"])
    return paper.pivot_table(index="method", columns="model", values=["longbench_vs_full", "babilong_vs_full"])


def relative_to_dense(frame, baseline: str):
    """Ours, per (model, method) and task, relative to dense, averaged over lengths: BABILong (and any task but
    LongBench) as the report's relative accuracy; LongBench as the ratio of the official totals (sum of eval.py's
    per-dataset scores over the datasets dense has), the quantity the paper's totals give."""
    from harness.reports import report, tables_longbench

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
    import pandas as pd

    from harness.reports import report

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


def reproduce(args: argparse.Namespace) -> str:
    from harness.reports import report

    table = TABLES[args.table]
    tasks = tasks_of(args)
    if args.reuse:
        runs = [Path(r) for r in args.reuse]
        out = None  # made once the runs are known to hold something to compare
    else:
        from harness.running import driver
        from harness.cli.common import finish, given_flags, spec_from_flags
        from harness.running.runner import RunMeasure
        from harness.running.plan import DEFAULTS

        args.methods, args.task = ",".join(table["methods"]), None
        args.lengths = args.lengths or table["lengths"]
        check_data(tasks or [], args.table)

        def fresh():
            return spec_from_flags(args, tasks=tasks or [DEFAULTS["task"]])

        store, counts = driver.execute(args, "reproduce", fresh, RunMeasure(), given=given_flags(args),
                                       default_name=args.name or f"reproduce-{args.table}")
        finish(store, counts)
        runs = [store.folder]
        out = store.folder / "report"  # the new run's own folder
    frame = restrict_to_tasks(report.load_cells(runs), args.table)
    if tasks:
        frame = frame[frame["task"].isin(tasks)]
    baseline = report.baseline_spec(frame)
    out = out or output_folder(args)
    report_path = report.build_report(runs, out, baseline)
    lines = [f"# reproduce {args.table}", f"runs: {', '.join(str(r) for r in runs)}", f"report: {report_path}", ""]
    partial = partial_note(frame, args.table)
    if partial:
        lines += [partial, ""]
    if args.table == "accuracy":
        lines.append(compare_accuracy(frame, baseline))
    elif args.table == "ttft":
        lines.append(compare_ttft(frame, baseline))
    else:
        lines.append(markdown(report.needle_grid(frame).round(2)))
        lines.append("\nThe paper shows needle heatmaps as figures only; compare with needle_heatmaps.png.")
    text = "\n".join(lines)
    (out / f"reproduce-{args.table}.md").write_text(text + "\n")
    return text
