"""The flags several subcommands share, and a parser whose errors are one line (exit 2)."""
import argparse

from harness.options import PREFILL_CHUNK, InputError
from harness.running.settings import DEFAULT, DEVICE_MAPS, OUT, PREFILL_MODES

DEFAULT_LENGTHS = ",".join(map(str, DEFAULT.lengths))
TABLE_LENGTHS = "the table's own lengths"  # reproduce's default


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise InputError(f"{self.prog}: {message} (see --help)")


def add_common(parser, grid: bool = False, methods: bool = True, timing: bool = True, resume: bool = True,
               lengths: str | None = DEFAULT_LENGTHS):
    """Flags shared by run, sweep, diagnose and reproduce; each takes only the flags it uses. Every grid flag
    defaults to None, so that a flag given can be told from one left out (a sweep file or --resume keeps
    what was not given); the defaults themselves are harness.running.settings'."""
    if grid:
        parser.add_argument("--models", default=None, help=f"comma list of models (default: {','.join(DEFAULT.models)})")
        parser.add_argument("--task", action="append", help="task spec; repeat the flag for several tasks "
                            f"(default: {DEFAULT.tasks[0]})")
    else:
        parser.add_argument("--model", default=None, help="embedded name (smollm2-135m, gemma3-270m, "
                            "qwen2.5-coder-0.5b), random:<preset> (timing only), local folder, .gguf file or cached "
                            f"hub id (default: {DEFAULT.models[0]})")
        if methods:
            parser.add_argument("--task", default=None, help="task spec, e.g. passkey, needle, babilong:qa=qa1 "
                                f"(see `tasks`; default: {DEFAULT.tasks[0]})")
    if methods:
        parser.add_argument("--methods", default=None, help="comma list, each optionally name:key=value,... e.g. "
                            f"dense,sample:alpha=0.9,bigbird; a|b|c runs each value (default: {DEFAULT.methods[0]})")
    parser.add_argument("--lengths", default=None, help="comma list of prompt lengths in tokens; 8k accepted "
                        f"(default: {lengths or TABLE_LENGTHS})")
    parser.add_argument("--device", default=None, help="auto (GPU if present), cpu, cuda or cuda:N "
                        f"(default: {DEFAULT.device})")
    parser.add_argument("--out", default=OUT, help=f"folder that receives the run folder (default: {OUT}/, "
                        "ignored by git)")
    parser.add_argument("--name", default=None, help="run folder suffix (default: the subcommand and model)")
    parser.add_argument("--samples", type=int, default=None, help=f"samples per length (default: {DEFAULT.samples})")
    parser.add_argument("--seed", type=int, default=None, help=f"default: {DEFAULT.seed}")
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


def add_batch_flag(parser) -> None:
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="accuracy cells: N consecutive samples of one model, task, length and method share "
                        "one prefill and a batched greedy decode (same predictions; TTFT still at batch 1 on the "
                        "first; prompts are not padded: each token length is its own batch) (default: 1)")


def add_scale_flags(parser) -> None:
    """Data-parallel ranks and models split over GPUs (harness/running/distributed.py, harness/models/)."""
    parser.add_argument("--gpus", type=int, default=None, metavar="N",
                        help="run the cells on N ranks, one GPU each (starts torchrun --nproc-per-node N)")
    parser.add_argument("--device-map", default=None, choices=DEVICE_MAPS,
                        help="split one model's layers over the visible GPUs with accelerate (larger than one GPU)")
    parser.add_argument("--prefill", default=None, choices=PREFILL_MODES,
                        help="chunked: row-wise parts over --prefill-chunk tokens (memory linear in length, same "
                        "first token); chunked-nocache also drops each layer's KV cache (timing only, no decode); default: "
                        f"{DEFAULT.prefill}")
    parser.add_argument("--prefill-chunk", type=int, default=None,
                        help=f"tokens per chunk of --prefill chunked (default: {PREFILL_CHUNK})")
