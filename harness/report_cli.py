"""CLI subcommands around reports: report and reproduce."""
import sys
from pathlib import Path


def add_subcommands(sub, add_common, handler) -> None:
    from harness.reproduce import TABLES

    report = sub.add_parser("report", help="tables and plots from one or more run folders")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default=None, help="folder for the report (default: <first RUN_DIR>/report)")
    report.add_argument("--baseline", default=None, help="dense method spec to compare against (default: dense)")
    report.add_argument("--pool-baselines", action="store_true", help="compute speedups against the dense cells of "
                        "all runs together (default: each run against its own dense cells)")
    report.add_argument("--cpu-timings", action="store_true",
                        help="draw CPU timings in the speed plots too (default: GPU timings only)")
    handler(report, "harness.report_cli", "cmd_report")

    reproduce = sub.add_parser("reproduce", help="run or reuse the sweep behind a paper table and print ours "
                               "beside the paper's")
    reproduce.add_argument("table", choices=sorted(TABLES), help="which paper table or figure")
    add_common(reproduce, methods=False, resume=False, lengths=None)
    reproduce.add_argument("--from", dest="reuse", nargs="+", default=None, metavar="RUN_DIR",
                           help="reuse finished run folders instead of running the sweep (the comparison and its "
                           "report go to a new folder under --out; the runs are not written)")
    reproduce.add_argument("--part", default=None, choices=["babilong", "longbench"],
                           help="accuracy: reproduce one half only (e.g. babilong when LongBench's data is not at "
                           "hand); the output says it is partial")
    handler(reproduce, "harness.report_cli", "cmd_reproduce")


def check_runs(runs) -> list[Path]:
    from harness.options import InputError
    from harness.store import RunStore

    runs = [Path(r) for r in runs]
    missing = [str(r) for r in runs if not RunStore.is_run(r)]
    if missing:
        raise InputError(f"not a run folder (no manifest): {', '.join(missing)}; pass folders written by run or sweep")
    return runs


def cmd_report(args) -> int:
    from harness.report import build_report

    runs = check_runs(args.runs)
    out = Path(args.out) if args.out else runs[0] / "report"
    path = build_report(runs, out, args.baseline, pool_baselines=args.pool_baselines, cpu_timings=args.cpu_timings)
    print(f"report: {path}")
    return 0


def cmd_reproduce(args) -> int:
    from harness.reproduce import reproduce

    if args.reuse:
        args.reuse = check_runs(args.reuse)
    print(reproduce(args), file=sys.stdout)
    return 0
