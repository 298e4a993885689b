"""The `sampleattn` command line: run, methods, tasks (and sweep, report, reproduce, diagnose)."""
import argparse
import re
import sys

from harness import commands

LENGTH = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2, nothing written."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message} (see --help)")


def parse_lengths(text: str) -> list[int]:
    lengths = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = LENGTH.match(item)
        if not match:
            raise UsageError(f"--lengths: {item!r} is not a length; write e.g. 1024,2048,8k,32k")
        value = float(match.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[match.group(2).lower()]
        if value != int(value):
            raise UsageError(f"--lengths: {item!r} must be a whole number of tokens")
        lengths.append(int(value))
    if not lengths:
        raise UsageError("--lengths: give at least one length, e.g. 1024,2048")
    return lengths


def add_common(parser, lengths_default="1024,2048", grid=False):
    """Flags shared by run, sweep and diagnose; grid=True takes several models and tasks."""
    if grid:
        parser.add_argument("--models", default="smollm2-135m", help="comma list of models")
        parser.add_argument("--task", action="append", help="task spec; repeat the flag for several tasks")
    else:
        parser.add_argument("--model", default="smollm2-135m", help="embedded name (smollm2-135m, gemma3-270m), "
                            "local folder, .gguf file or cached hub id")
        parser.add_argument("--task", default="passkey",
                            help="task spec, e.g. passkey, needle, babilong:qa=qa1 (see `tasks`)")
    parser.add_argument("--methods", default="dense",
                        help="comma list, each optionally name:key=value,... e.g. dense,sample:alpha=0.9,bigbird")
    parser.add_argument("--lengths", default=lengths_default, help="comma list of prompt lengths in tokens; 8k accepted")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda or cuda:N")
    parser.add_argument("--out", default="results/runs", help="folder that receives the run folder")
    parser.add_argument("--name", default=None, help="run folder suffix (default: the subcommand and model)")
    parser.add_argument("--samples", type=int, default=1, help="samples per length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="decode budget (default: the task's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed prefills per cell (default 3 GPU, 1 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed prefills first (default 1 GPU, 0 CPU)")
    parser.add_argument("--beyond-context", action="store_true",
                        help="also run lengths above the model's context (for timing; accuracy is meaningless)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue a run folder with its own stored grid, skipping finished cells")


def add_scale_flags(parser) -> None:
    """hook(scale): data-parallel ranks and models split over GPUs (harness/distributed.py, harness/device_map.py)."""
    parser.add_argument("--gpus", type=int, default=None, metavar="N",
                        help="run the cells on N ranks, one GPU each (starts torchrun --nproc-per-node N)")
    parser.add_argument("--device-map", default=None, choices=["auto", "balanced"],
                        help="split one model's layers over the visible GPUs with accelerate (larger than one GPU)")
    parser.add_argument("--prefill", default="plain", choices=["plain", "chunked", "chunked-nocache"],
                        help="chunked: row-wise parts over --prefill-chunk tokens (memory linear in length, same "
                        "first token); chunked-nocache also drops each layer's KV cache (timing only, no decode)")
    parser.add_argument("--prefill-chunk", type=int, default=16384, help="tokens per chunk of --prefill chunked")


def build_parser() -> Parser:
    parser = Parser(prog="sampleattn", description="Accuracy vs time-to-first-token of sparse prefill attention "
                    "methods (SampleAttention, BigBird, StreamingLLM, H2O) against dense FlashAttention.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser("run", help="one model x methods x lengths on one task; writes a run folder")
    add_common(run)
    add_scale_flags(run)
    sweep = sub.add_parser("sweep", help="a grid of models x methods (x settings) x tasks x lengths x samples")
    add_common(sweep, grid=True)
    add_scale_flags(sweep)
    sweep.add_argument("spec", nargs="?", default=None, help="YAML sweep file (keys: models, methods, tasks, lengths, "
                       "samples, seed, device, repeats, warmup, max_new_tokens, beyond_context); flags otherwise")
    sub.add_parser("methods", help="list attention methods with their options and defaults")
    sub.add_parser("tasks", help="list tasks")
    commands.add_extra_subcommands(sub, add_common)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # hook(scale): what --gpus relaunches
        if getattr(args, "lengths", None) is not None:
            args.lengths = parse_lengths(args.lengths)
        return commands.dispatch(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except commands.InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are already saved; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
