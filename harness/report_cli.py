"""CLI subcommands around reports: report and reproduce."""
import sys
from pathlib import Path


def add_subcommands(sub, add_common) -> dict:
    report = sub.add_parser("report", help="tables and plots from one or more run folders")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default=None, help="folder for the report (default: <first RUN_DIR>/report)")
    report.add_argument("--baseline", default=None, help="dense method spec to compare against (default: dense auto)")

    from harness.reproduce import TABLES

    reproduce = sub.add_parser("reproduce", help="run or reuse the sweep behind a paper table and print ours "
                               "beside the paper's")
    reproduce.add_argument("table", choices=sorted(TABLES), help="which paper table or figure")
    add_common(reproduce, lengths_default=None)
    reproduce.add_argument("--from", dest="reuse", nargs="+", default=None, metavar="RUN_DIR",
                           help="reuse finished run folders instead of running the sweep")
    return {"report": cmd_report, "reproduce": cmd_reproduce}


def cmd_report(args) -> int:
    from harness.report import build_report

    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "manifest.json").is_file()]
    if missing:
        raise ValueError(f"not a run folder (no manifest.json): {', '.join(missing)}")
    out = Path(args.out) if args.out else runs[0] / "report"
    path = build_report(runs, out, args.baseline)
    print(f"report: {path}")
    return 0


def cmd_reproduce(args) -> int:
    from harness.reproduce import reproduce

    print(reproduce(args), file=sys.stdout)
    return 0
