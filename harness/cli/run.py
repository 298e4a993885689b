"""`sampleattn run`: one model x methods x lengths on one task; writes a run folder."""
from harness.cli.common import measure_grid, model_stem, settings_from
from harness.cli.flags import add_batch_flag, add_common, add_scale_flags

NAME = "run"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="one model x methods x lengths on one task; writes a run folder")
    add_common(parser)
    add_scale_flags(parser)
    add_batch_flag(parser)


def main(args, argv: list[str]) -> int:
    settings = settings_from(args, argv, NAME, name=f"run-{model_stem(args)}")
    return measure_grid(settings)
