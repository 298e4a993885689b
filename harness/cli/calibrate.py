"""`sampleattn calibrate`: time dense against the sparse path on this card for a model's attention shape and cache
the dense-fallback limits (the logic is attention/calibrate.py; the table's home and use, attention/fallback.py).
With --model it then measures the model's density profiles (harness/running/density_profile.py; their home and
use, attention/profiles.py): what each layer selects per sparse method and length, so that a layer that would
select above the limit runs dense without paying the estimate."""
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
    cal.add_argument("--profile", default="defaults", help="with --model: method specs whose per-layer densities to "
                     "measure ('defaults': every sparse method with an adaptive selection; 'none': skip)")
    cal.add_argument("--profile-task", default="needle", help="task whose first sample per length is the "
                     "calibration prompt (default needle)")
    cal.add_argument("--profiles", default=None, help="profile file to merge into (default: the cache the methods "
                     "read, ~/.cache/sampleattn/density_profiles.json)")
    cal.add_argument("--skip-timing", action="store_true", help="only the density profiles (the card's limits kept)")


def model_shape(config) -> tuple[int, int, int]:
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
    if (args.model is None) == (args.shape is None):
        raise InputError("give one of --model NAME or --shape HEAD_DIM:HEADS:KV_HEADS")
    if args.skip_timing and args.model is None:
        raise InputError("--skip-timing leaves only the density profiles, which need --model NAME")
    lengths = parse_lengths(args.lengths) if isinstance(args.lengths, str) else args.lengths
    from attention import calibrate, fallback  # torch and the kernels: only when the command runs
    from harness.running import density_profile

    specs = [] if args.model is None or args.profile == "none" else density_profile.parse_profile_specs(args.profile)
    loaded = None
    if args.model is not None:
        from harness.models.loading import load_model  # loads transformers: only when a model is named

        loaded = load_model(args.model, args.device if specs else "cpu")
    dim, heads, kv = parse_shape(args.shape) if args.shape else model_shape(loaded.model.config)
    if not args.skip_timing:
        table = calibrate.calibrate(lengths, heads, kv, dim, args.device)
        print(f"wrote {fallback.save_table(table, Path(args.table) if args.table else fallback.CACHE)}")
    if specs:
        save_profiles(loaded, lengths, specs, args)
    return 0


def save_profiles(loaded, lengths: list[int], specs: list[str], args) -> None:
    import datetime

    from attention import profiles
    from attention.fallback import gpu_kind
    from harness.running import density_profile
    from harness.running.store import git_commit

    found = density_profile.measure(loaded, lengths, specs, args.profile_task)
    path = Path(args.profiles) if args.profiles else profiles.CACHE
    gpu = gpu_kind(args.device)
    stamp = f"calibrate {gpu} {datetime.date.today()} {git_commit()} task={args.profile_task}"
    for spec, per_length in found.densities.items():
        ratios = found.ratios[spec]
        profiles.save(loaded.name, spec, per_length, stamp, path, ratios, gpu=gpu)
        for length, row in per_length.items():
            seen = [d for d in row if d is not None]
            timed = f", prefill {ratios[length]:.3f}x dense" if length in ratios else ""
            print(f"profile {loaded.name} {spec} L={length}: mean density {sum(seen) / max(1, len(seen)):.3f} "
                  f"(layers {min(seen, default=0):.2f}-{max(seen, default=0):.2f}){timed}")
    print(f"wrote {path}")
