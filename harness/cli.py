"""The `sampleattn` command line: run, sweep, methods, tasks, report, reproduce, diagnose.

Only argparse here; each subcommand's module is imported when it runs, so `--help` and bad flags are instant.
"""
import argparse
import importlib
import os
import sys

from harness.options import InputError, parse_lengths  # noqa: F401  (parse_lengths: the CLI's length grammar)
from harness.sweep import DEFAULTS
OUT = "runs"  # git ignores it; committed evidence lives in results/runs/


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise InputError(f"{self.prog}: {message} (see --help)")


def add_common(parser, grid: bool = False, methods: bool = True, timing: bool = True, resume: bool = True,
               lengths: str | None = DEFAULTS["lengths"]):
    """Flags shared by run, sweep, diagnose and reproduce; each takes only the flags it uses."""
    if grid:
        parser.add_argument("--models", default=None, help=f"comma list of models (default: {DEFAULTS['models']})")
        parser.add_argument("--task", action="append", help="task spec; repeat the flag for several tasks "
                            f"(default: {DEFAULTS['task']})")
    else:
        parser.add_argument("--model", default=None, help="embedded name (smollm2-135m, gemma3-270m), local folder, "
                            f".gguf file or cached hub id (default: {DEFAULTS['model']})")
        if methods:
            parser.add_argument("--task", default=None, help="task spec, e.g. passkey, needle, babilong:qa=qa1 "
                                f"(see `tasks`; default: {DEFAULTS['task']})")
    if methods:
        parser.add_argument("--methods", default=None, help="comma list, each optionally name:key=value,... e.g. "
                            f"dense,sample:alpha=0.9,bigbird; a|b|c runs each value (default: {DEFAULTS['methods']})")
    parser.add_argument("--lengths", default=None, help="comma list of prompt lengths in tokens; 8k accepted "
                        f"(default: {lengths or 'the table own lengths'})")
    parser.add_argument("--device", default=None, help="auto (GPU if present), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--out", default=OUT, help=f"folder that receives the run folder (default: {OUT}/, "
                        "ignored by git)")
    parser.add_argument("--name", default=None, help="run folder suffix (default: the subcommand and model)")
    parser.add_argument("--samples", type=int, default=None, help="samples per length (default: 1)")
    parser.add_argument("--seed", type=int, default=None, help="default: 0")
    if timing:
        parser.add_argument("--max-new-tokens", type=int, default=None, help="decode budget (default: the task's)")
        parser.add_argument("--repeats", type=int, default=None, help="timed prefills per cell (default 3 GPU, 1 CPU)")
        parser.add_argument("--warmup", type=int, default=None, help="untimed prefills first (default 1 GPU, 0 CPU)")
    parser.add_argument("--beyond-context", action="store_const", const=True, default=None,
                        help="also run lengths above the model's context (for timing; accuracy is meaningless)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--download", action="store_true",
                        help="allow downloads from the Hugging Face hub (default: offline, local cache only)")
    if resume:
        parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run folder, skipping "
                            "finished cells; new --methods/--lengths extend its grid, other grid flags must match")


def handler(parser, module: str, function: str):
    parser.set_defaults(handler=(module, function))


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
    from harness import calibrate_cli, diagnose_cli, report_cli

    parser = Parser(prog="sampleattn", description="Accuracy vs time-to-first-token of sparse prefill attention "
                    "methods (SampleAttention, BigBird, StreamingLLM, H2O) against dense FlashAttention.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = sub.add_parser("run", help="one model x methods x lengths on one task; writes a run folder")
    add_common(run)
    add_scale_flags(run)
    handler(run, "harness.commands", "cmd_run")
    sweep = sub.add_parser("sweep", help="a grid of models x methods (x settings) x tasks x lengths x samples")
    add_common(sweep, grid=True)
    add_scale_flags(sweep)
    sweep.add_argument("spec", nargs="?", default=None, help="YAML sweep file (keys: models, methods, tasks, lengths, "
                       "samples, seed, device, repeats, warmup, max_new_tokens, beyond_context); flags otherwise")
    handler(sweep, "harness.commands", "cmd_sweep")
    handler(sub.add_parser("methods", help="list attention methods with their options and defaults"),
            "harness.commands", "cmd_methods")
    handler(sub.add_parser("tasks", help="list tasks"), "harness.commands", "cmd_tasks")
    report_cli.add_subcommands(sub, add_common, handler)
    diagnose_cli.add_subcommands(sub, add_common, handler)
    calibrate_cli.add_subcommands(sub, handler)
    return parser


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # hook(scale): what --gpus relaunches
        # before anything imports huggingface_hub (it reads these once): no network unless --download
        offline = "0" if getattr(args, "download", False) else "1"
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[name] = offline
        if isinstance(getattr(args, "lengths", None), str):
            args.lengths = parse_lengths(args.lengths)
        module, function = args.handler
        return getattr(importlib.import_module(module), function)(args)
    except KeyboardInterrupt:
        print("interrupted: finished cells are already saved; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  bad input is one line and exit 2; anything else is a bug
        if not isinstance(err, InputError):  # methods' ConfigError and tasks' TaskError are InputErrors too
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
