"""`sampleattn report`: tables and plots from one or more run folders."""
from pathlib import Path

from harness.options import InputError
from harness.running.store import RunStore

NAME = "report"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="tables and plots from one or more run folders (sweep runs; diagnose runs "
                            "beside them give the frontier's recall column)")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", default=None, help="folder for the report (default: <first RUN_DIR>/report)")
    parser.add_argument("--baseline", default=None, help="dense method spec to compare against (default: dense)")
    parser.add_argument("--pool-baselines", action="store_true", help="compute speedups against the dense cells of "
                        "all runs together (default: each run against its own dense cells)")
    parser.add_argument("--cpu-timings", action="store_true",
                        help="draw CPU timings in the speed plots too (default: GPU timings only)")


def check_runs(runs) -> list[Path]:
    runs = [Path(r) for r in runs]
    missing = [str(r) for r in runs if not RunStore.is_run(r)]
    if missing:
        raise InputError(f"not a run folder (no manifest): {', '.join(missing)}; pass folders written by run or sweep")
    return runs


def main(args, argv: list[str]) -> int:
    from harness.reports.report import build_report  # the work: imported once the flags are known good

    runs = check_runs(args.runs)
    out = Path(args.out) if args.out else runs[0] / "report"
    path = build_report(runs, out, args.baseline, pool_baselines=args.pool_baselines, cpu_timings=args.cpu_timings)
    print(f"report: {path}")
    return 0
