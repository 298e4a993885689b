"""`sampleattn reproduce TABLE`: run (or reuse) the sweep behind a paper table and print ours beside the paper's."""
from harness.cli.common import finish, settings_from
from harness.cli.flags import add_common
from harness.cli.report import check_runs
from harness.reports.paper import TABLES
from harness.running.settings import SweepSpec

NAME = "reproduce"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="run or reuse the sweep behind a paper table and print ours beside the "
                            "paper's")
    parser.add_argument("table", choices=sorted(TABLES), help="which paper table or figure")
    add_common(parser, methods=False, resume=False, lengths=None)
    parser.add_argument("--from", dest="reuse", nargs="+", default=None, metavar="RUN_DIR",
                        help="reuse finished run folders instead of running the sweep")


def table_grid(table: str) -> SweepSpec:
    """The sweep behind a paper table: its methods, its tasks (any task for TTFT) and its lengths."""
    entry = TABLES[table]
    return SweepSpec(methods=[",".join(entry["methods"])], tasks=entry["tasks"] or SweepSpec().tasks,
                     lengths=entry["lengths"])


def main(args, argv: list[str]) -> int:
    from harness.reports.reproduce import compare  # the work: imported once the flags are known good
    from harness.running import driver
    from harness.running.runner import RunMeasure

    if args.reuse:
        runs = check_runs(args.reuse)
    else:
        settings = settings_from(args, argv, NAME, name=f"reproduce-{args.table}", base=table_grid(args.table))
        store, counts = driver.execute(settings, RunMeasure())
        finish(store, counts)
        runs = [store.folder]
    print(compare(runs, args.table))
    return 0
