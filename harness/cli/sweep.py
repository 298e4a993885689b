"""`sampleattn sweep`: a grid of models x methods (x settings) x tasks x lengths x samples, from flags or from a
YAML file (flags given beside the file override its fields, and the run says which)."""
from pathlib import Path

from harness.cli.common import grid_flags, measure_grid, settings_from
from harness.cli.flags import add_batch_flag, add_common, add_scale_flags
from harness.running.settings import SweepSpec, load_spec_file

NAME = "sweep"


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="a grid of models x methods (x settings) x tasks x lengths x samples")
    add_common(parser, grid=True)
    add_scale_flags(parser)
    add_batch_flag(parser)
    parser.add_argument("spec", nargs="?", default=None, help="YAML sweep file (keys: models, methods, tasks, "
                        "lengths, samples, seed, device, repeats, warmup, max_new_tokens, beyond_context, "
                        "device_map, prefill, prefill_chunk, batch_size); flags given beside it override its fields")


def file_grid(path: str, given: dict) -> tuple[SweepSpec, tuple[str, ...]]:
    """The sweep file's grid and the fields it names; models, methods or tasks it leaves out may come from
    flags."""
    data = load_spec_file(path)
    named = tuple(data)
    for key in ("models", "methods", "tasks"):
        if key in given and not data.get(key):
            data[key] = given[key]
    return SweepSpec.from_dict(data, source=f"sweep file {path}"), named


def main(args, argv: list[str]) -> int:
    base, named = file_grid(args.spec, grid_flags(args)) if args.spec else (None, ())
    name = Path(args.spec).stem if args.spec else "sweep"
    # beside --resume a sweep file is checked like flags: what it names must match the stored grid (new methods
    # and lengths extend it), so the restart after a CUDA error (harness/running/worker.py) resumes it as given
    settings = settings_from(args, argv, NAME, name=name, base=base, sweep_file=args.spec, named=named)
    return measure_grid(settings)
