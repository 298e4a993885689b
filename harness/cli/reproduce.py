"""`sampleattn reproduce TABLE`: run or reuse the sweep behind a paper table and print ours beside the paper's."""
import sys

from harness.cli.flags import add_common
from harness.cli.report import check_runs
from harness.reports.reproduce import TABLES

NAME = "reproduce"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="run or reuse the sweep behind a paper table and print ours beside the "
                            "paper's")
    parser.add_argument("table", choices=sorted(TABLES), help="which paper table or figure")
    add_common(parser, methods=False, resume=False, lengths=None)
    parser.add_argument("--from", dest="reuse", nargs="+", default=None, metavar="RUN_DIR",
                        help="reuse finished run folders instead of running the sweep (the comparison and its "
                        "report go to a new folder under --out; the runs are not written)")
    parser.add_argument("--part", default=None, choices=["babilong", "longbench"],
                        help="accuracy: reproduce one half only (e.g. babilong when LongBench's data is not at "
                        "hand); the output says it is partial")


def main(args) -> int:
    from harness.reports.reproduce import reproduce  # the work: imported once the flags are known good

    if args.reuse:
        args.reuse = check_runs(args.reuse)
    print(reproduce(args), file=sys.stdout)
    return 0
