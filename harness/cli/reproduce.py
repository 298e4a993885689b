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
                        help="reuse finished run folders instead of running the sweep (the comparison and its "
                        "report go to a new folder under --out; the runs are not written)")
    parser.add_argument("--part", default=None, choices=["babilong", "longbench"],
                        help="accuracy: reproduce one half only (e.g. babilong when LongBench's data is not at "
                        "hand); the output says it is partial")


def table_grid(table: str, tasks: list[str] | None) -> SweepSpec:
    """The sweep behind a paper table: its methods, its tasks (any task for TTFT) and its lengths."""
    return SweepSpec(methods=[",".join(TABLES[table]["methods"])], tasks=tasks or SweepSpec().tasks,
                     lengths=TABLES[table]["lengths"])


def main(args, argv: list[str]) -> int:
    from harness.reports.reproduce import check_data, compare, tasks_of  # the work: once the flags are good
    from harness.running import driver
    from harness.running.runner import RunMeasure

    tasks = tasks_of(args.table, args.part)
    name = f"reproduce-{args.table}"
    if args.reuse:
        runs, out = check_runs(args.reuse), None  # its own folder, made once the runs hold something to compare
    else:
        check_data(tasks or [], args.table)  # before a run folder exists
        settings = settings_from(args, argv, NAME, name=name, base=table_grid(args.table, tasks))
        store, counts = driver.execute(settings, RunMeasure())
        finish(store, counts)
        runs, out = [store.folder], store.folder / "report"
    print(compare(runs, args.table, tasks, out, args.out, args.name or name))
    return 0
