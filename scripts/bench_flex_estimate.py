"""FlexPrefill's estimate on the GPU, fused (attention/kernels/flex_estimate.py) against the unfused path
(override(flex_fused=False)) in the same process, beside cuDNN's dense causal attention.

Per (head dim, heads, kv heads, length) and per setting (the defaults; density=D): build_pattern's median time for
each path, its share of cuDNN's time, its CUDA kernel launches and host syncs (bench_attention.launches_and_syncs),
the fused path's kernels by GPU time (profiler), and how the two masks compare (cells that differ; gamma of each).
Random bf16 q/k with planted key stripes (bench_attention.planted_inputs). One JSON line per case to --out.

  PYTHONPATH=. python scripts/bench_flex_estimate.py --shapes 128:32:8,64:14:2 --lengths 32768,131072 \
      --densities 0.1 --out $OUT/flexfuse.jsonl
"""
import argparse
import collections
import json
import math
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.kernels.config import override  # noqa: E402
from attention.registry import build_method  # noqa: E402
from scripts.bench_attention import launches_and_syncs, planted_inputs  # noqa: E402
from scripts.bench_xattention_estimate import timed  # noqa: E402  (median ms after two warm-ups)


def kernel_times(fn) -> dict:
    """GPU ms per kernel name of one call (the fused path's breakdown)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    total = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            total[e.name[:60]] += e.device_time_total / 1000
    return {name: round(ms, 4) for name, ms in total.most_common(12)}


def cudnn_ms(q, k, v, reps: int) -> float:
    group = q.shape[1] // k.shape[1]
    kx, vx = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, kx, vx, is_causal=True), reps)


def case(dim, heads, kv_heads, length, density, reps, dense_ms):
    q, k, v = planted_inputs(length, heads, kv_heads, dim)
    scale = 1 / math.sqrt(dim)
    options = {"density": str(density)} if density else {}
    row = {"dim": dim, "heads": heads, "kv_heads": kv_heads, "length": length, "setting": options or "defaults",
           "cudnn_ms": dense_ms, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    masks = {}
    for label, fused in (("fused", True), ("unfused", False)):
        method = build_method("flexprefill", options)
        with override(flex_fused=fused):
            if fused:
                assert method.fused(q, k), "this shape does not take the fused path"
            build = lambda: method.build_pattern(q, k, scale)  # noqa: E731
            masks[label] = build().blocks
            row[f"{label}_gamma"] = float(method.knobs["gamma"])
            row[f"{label}_ms"] = timed(build, reps)
            row[f"{label}_share"] = row[f"{label}_ms"] / dense_ms
            row[f"{label}_launches"], row[f"{label}_syncs"] = launches_and_syncs(build)
            if fused:
                row["fused_kernels_ms"] = kernel_times(build)
        torch.cuda.empty_cache()
    row["cells_differ"] = int((masks["fused"] != masks["unfused"]).sum())
    row["cells"] = masks["fused"].numel()
    row["kept_share_fused"] = float(masks["fused"].float().mean())
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="128:32:8,64:14:2", help="head_dim:heads:kv_heads list")
    ap.add_argument("--lengths", default="32768,131072")
    ap.add_argument("--densities", default="0.1", help="density= settings besides the defaults ('' = none)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--out", default="flexfuse.jsonl")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit(print("bench_flex_estimate: no CUDA device here; run it on the GPU machine", file=sys.stderr) or 2)
    settings = [None] + [float(d) for d in args.densities.split(",") if d]
    with open(args.out, "a") as out:
        for shape in args.shapes.split(","):
            dim, heads, kv_heads = (int(x) for x in shape.split(":"))
            for length in (int(x) for x in args.lengths.split(",")):
                q, k, v = planted_inputs(length, heads, kv_heads, dim)
                dense = cudnn_ms(q, k, v, args.reps)
                del q, k, v
                for density in settings:
                    row = case(dim, heads, kv_heads, length, density, args.reps, dense)
                    print(json.dumps(row), flush=True)
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
