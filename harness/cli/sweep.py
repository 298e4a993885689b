"""`sampleattn sweep`: a grid of models x methods (x settings) x tasks x lengths x samples, from flags or a YAML
file."""
from pathlib import Path

from harness.cli.common import finish, given_flags, launch_ranks, spec_from_flags
from harness.cli.flags import add_batch_flag, add_common, add_scale_flags
from harness.options import InputError
from harness.running.plan import DEFAULTS, SweepSpec, load_spec_file

NAME = "sweep"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="a grid of models x methods (x settings) x tasks x lengths x samples")
    add_common(parser, grid=True)
    add_scale_flags(parser)
    add_batch_flag(parser)
    parser.add_argument("spec", nargs="?", default=None, help="YAML sweep file (keys: models, methods, tasks, "
                        "lengths, samples, seed, device, repeats, warmup, max_new_tokens, beyond_context); flags "
                        "otherwise")


def main(args) -> int:
    from harness.running import driver  # the work: imported once the flags are known good
    from harness.running.batch import BatchMeasure

    launched = launch_ranks(args)
    if launched is not None:
        return launched

    models = [m for m in args.models.split(",") if m] if args.models else None
    if args.resume and args.spec:
        raise InputError("--resume continues the run's stored grid; drop the sweep file")

    def fresh():
        if args.spec:
            return SweepSpec.from_dict(load_spec_file(args.spec))
        return spec_from_flags(args, models or [DEFAULTS["models"]], args.task or [DEFAULTS["task"]])

    name = Path(args.spec).stem if args.spec else "sweep"
    store, counts = driver.execute(args, "sweep", fresh, BatchMeasure(), default_name=name,
                                   given=given_flags(args, models, args.task))
    finish(store, counts)
    return 0
