"""`sampleattn run`: one model x methods x lengths on one task; writes a run folder."""
from harness.cli.common import finish, launch_ranks, model_stem, settings_from
from harness.cli.flags import add_batch_flag, add_common, add_scale_flags

NAME = "run"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="one model x methods x lengths on one task; writes a run folder")
    add_common(parser)
    add_scale_flags(parser)
    add_batch_flag(parser)


def main(args, argv: list[str]) -> int:
    settings = settings_from(args, argv, NAME, name=f"run-{model_stem(args)}")
    launched = launch_ranks(settings)
    if launched is not None:
        return launched
    from harness.running import driver  # the work: imported once the flags are known good
    from harness.running.batch import BatchMeasure

    store, counts = driver.execute(settings, BatchMeasure())
    finish(store, counts)
    return 0
