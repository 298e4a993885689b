"""`sampleattn calibrate`: time dense against the sparse path on this card for a model's attention shape and cache
the dense-fallback limits (the logic is attention/calibrate.py; the table's home and use, attention/fallback.py)."""
from pathlib import Path

from harness.options import InputError, parse_lengths

NAME = "calibrate"


def add_parser(sub) -> None:
    cal = sub.add_parser(NAME, help="time dense vs sparse attention on this GPU for a model's shape and "
                         "cache the dense-fallback limits every sparse method uses")
    cal.add_argument("--model", help="model whose attention shape (head dim, query / kv heads) to calibrate")
    cal.add_argument("--shape", help="HEAD_DIM:HEADS:KV_HEADS instead of --model, e.g. 64:14:2")
    cal.add_argument("--lengths", default="8k,16k,32k", help="prompt lengths to time (default 8k,16k,32k)")
    cal.add_argument("--device", default="cuda")
    cal.add_argument("--table", default=None, help="table to merge into (default: the cache the fallback reads, "
                     "~/.cache/sampleattn/dense_limits.json)")


def model_shape(name: str) -> tuple[int, int, int]:
    from harness.models.loading import load_model  # loads transformers: only when a model is named (`--help` stays fast)

    config = load_model(name, "cpu").model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return head_dim, heads, getattr(config, "num_key_value_heads", None) or heads


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dim, heads, kv = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--shape {text!r} is not HEAD_DIM:HEADS:KV_HEADS, e.g. 64:14:2") from None
    return dim, heads, kv


def main(args, argv=None) -> int:
    from attention import calibrate, fallback  # torch and the kernels: only when the command runs

    if (args.model is None) == (args.shape is None):
        raise InputError("give one of --model NAME or --shape HEAD_DIM:HEADS:KV_HEADS")
    dim, heads, kv = parse_shape(args.shape) if args.shape else model_shape(args.model)
    lengths = parse_lengths(args.lengths) if isinstance(args.lengths, str) else args.lengths
    table = calibrate.calibrate(lengths, heads, kv, dim, args.device)
    path = fallback.save_table(table, Path(args.table) if args.table else fallback.CACHE)
    print(f"wrote {path}")
    return 0
