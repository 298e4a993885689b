"""`reproduce TABLE`: run (or reuse) the sweep behind a paper table and print ours beside the paper's.

The paper's models (ChatGLM2-6B, InternLM2-7B) are not ours, so the comparable quantities are relative:
accuracy as a share of the dense model's, and TTFT speedup over dense FlashAttention.
"""
import argparse
from pathlib import Path

import pandas as pd

from harness import report

PAPER = Path(__file__).resolve().parents[1] / "results" / "paper"

# table -> the sweep behind it (methods, tasks, default lengths) and the paper CSV it is compared with
TABLES = {
    "accuracy": {"methods": ["dense", "sample:alpha=0.95", "bigbird", "streaming"],
                 "tasks": ["babilong", "longbench"], "lengths": [2048, 4096], "paper": "accuracy_v2.csv"},
    "needle": {"methods": ["dense", "sample:alpha=0.95", "bigbird", "streaming"], "tasks": ["needle"],
               "lengths": [1024, 2048, 4096, 8192], "paper": None},
    "ttft": {"methods": ["dense", "sample:alpha=0.95", "sample:alpha=0.8", "sample:pattern=column_slash"],
             "tasks": ["passkey"], "lengths": [8192, 16384, 32768], "paper": "ttft_speedup.csv"},
}


def paper_relative_accuracy() -> pd.DataFrame:
    paper = pd.read_csv(PAPER / "accuracy_v2.csv")
    full = paper[paper["method"] == "full"].set_index("model")
    paper["longbench_vs_full"] = paper["longbench_total"] / paper["model"].map(full["longbench_total"])
    paper["babilong_vs_full"] = paper["babilong_avg"] / paper["model"].map(full["babilong_avg"])
    return paper.pivot_table(index="method", columns="model", values=["longbench_vs_full", "babilong_vs_full"])


def compare_accuracy(frame: pd.DataFrame, baseline: str) -> str:
    ours = report.relative_accuracy_table(frame, baseline).mean(axis=1).unstack("task")
    ours.columns = [f"ours {task} vs dense" for task in ours.columns]
    ours = ours.reset_index(level="model").rename(columns={"model": "our model"})
    ours.index = [spec.split(":")[0] if spec.startswith(("dense", "bigbird", "streaming")) else spec
                  for spec in ours.index]
    paper = paper_relative_accuracy()
    paper.columns = [f"paper {metric.removesuffix('_vs_full')} vs full ({model}; unconfirmed)"
                     for metric, model in paper.columns]
    paper = paper.rename(index={"full": "dense"})
    return ours.join(paper, how="outer").round(3).to_markdown()


def compare_ttft(frame: pd.DataFrame, baseline: str) -> str:
    ours = report.speedup_table(frame, baseline).stack().rename("ours: TTFT speedup vs dense").reset_index()
    paper = pd.read_csv(PAPER / "ttft_speedup.csv")
    paper = paper.rename(columns={"method": "method_spec", "seq_len": "length",
                                  "ttft_speedup_vs_fa2": "paper: TTFT speedup vs FA2"})
    columns = ["method_spec", "length", "paper: TTFT speedup vs FA2", "version", "confirmed"]
    joined = pd.concat([ours, paper[columns]], ignore_index=True).sort_values(["method_spec", "length"])
    return joined.round(3).to_markdown(index=False)


def reproduce(args: argparse.Namespace) -> str:
    table = TABLES[args.table]
    if args.reuse:
        runs = [Path(r) for r in args.reuse]
    else:
        from harness.commands import execute_sweep
        from harness.sweep import SweepSpec

        spec = SweepSpec(models=[args.model], methods=table["methods"], tasks=table["tasks"],
                         lengths=args.lengths or table["lengths"], samples=args.samples, seed=args.seed,
                         device=args.device, repeats=args.repeats, warmup=args.warmup,
                         max_new_tokens=args.max_new_tokens, beyond_context=args.beyond_context)
        args.name = args.name or f"reproduce-{args.table}"
        runs = [execute_sweep(args, spec, default_name=args.name)]
    frame = report.load_cells(runs)
    baseline = report.baseline_spec(frame)
    out = runs[0] / "report"
    report_path = report.build_report(runs, out, baseline)
    lines = [f"# reproduce {args.table}", f"runs: {', '.join(str(r) for r in runs)}", f"report: {report_path}", ""]
    if args.table == "accuracy":
        lines.append(compare_accuracy(frame, baseline))
    elif args.table == "ttft":
        lines.append(compare_ttft(frame, baseline))
    else:
        lines.append(report.needle_grid(frame).round(2).to_markdown())
        lines.append("\nThe paper shows needle heatmaps as figures only; compare with needle_heatmaps.png.")
    text = "\n".join(lines)
    (out / f"reproduce-{args.table}.md").write_text(text + "\n")
    return text
