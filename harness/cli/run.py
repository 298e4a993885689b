"""`sampleattn run`: one model x methods x lengths on one task; writes a run folder."""
from pathlib import Path

from harness.cli.common import finish, given_flags, launch_ranks, spec_from_flags
from harness.cli.flags import add_batch_flag, add_common, add_scale_flags
from harness.running.plan import DEFAULTS

NAME = "run"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="one model x methods x lengths on one task; writes a run folder")
    add_common(parser)
    add_scale_flags(parser)
    add_batch_flag(parser)


def main(args) -> int:
    from harness.running import driver  # the work: imported once the flags are known good
    from harness.running.batch import BatchMeasure

    launched = launch_ranks(args)
    if launched is not None:
        return launched

    given = given_flags(args, [args.model] if args.model else None, [args.task] if args.task else None)
    store, counts = driver.execute(args, "run", lambda: spec_from_flags(args), BatchMeasure(),
                                   default_name=f"run-{Path(args.model or DEFAULTS['model']).stem}", given=given)
    finish(store, counts)
    return 0
