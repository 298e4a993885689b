"""Where each peer's estimate (build_pattern) spends its GPU time: the top CUDA kernels of one call, after warm-up.

  PYTHONPATH=. python scripts/profile_peers.py --length 131072 --dim 128 --out results/bench/profile_peers.txt
Inputs as scripts/bench_attention.py (random bf16 with planted stripes, 32 q / 8 kv heads).
"""
import argparse
import math
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.registry import build_method  # noqa: E402
from scripts.bench_attention import planted_inputs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--methods", default="minference,flexprefill,xattention")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    q, k, _ = planted_inputs(args.length, 32, 8, args.dim)
    scale = 1 / math.sqrt(args.dim)
    lines = [f"{torch.cuda.get_device_name()} torch {torch.__version__} S={args.length} D={args.dim}"]
    for name in args.methods.split(","):
        method = build_method(name, {})
        for _ in range(2):
            method.build_pattern(q, k, scale)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            method.build_pattern(q, k, scale)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        total = sum(e.device_time_total for e in kernels) / 1e3
        lines.append(f"\n{name}: {len(kernels)} kernels, {total:.3f} ms of GPU time")
        by_name = {}
        for e in kernels:
            by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time_total / 1e3
        for kname, ms in sorted(by_name.items(), key=lambda x: -x[1])[:args.top]:
            lines.append(f"  {ms:9.3f} ms  {kname[:110]}")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
