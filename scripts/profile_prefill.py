"""Where one layer's sparse prefill spends its time on the GPU: a method's whole prefill (estimate, dense-fallback
decision, pattern execution), on bench_attention's planted inputs, under the PyTorch profiler after warm-up. Prints
the wall time (CUDA events), the GPU's busy time (sum of kernel times: wall minus busy is launch latency and host
syncs), the kernel count and the kernels by GPU time, largest first. The profile a missed speed target is reported
with (results/bench/NOTES.md).

  PYTHONPATH=. python scripts/profile_prefill.py --methods 'minference;flexprefill:density=0.1' --length 32k \
      --shape 64:14:2
"""
import argparse
import collections
import math
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attention import planted_inputs  # noqa: E402
from attention.registry import build_method  # noqa: E402
from harness.options import parse_lengths, parse_spec  # noqa: E402


def kernel_table(events) -> tuple[float, int, list[tuple[str, float, int]]]:
    """(busy ms, kernels, [(name, ms, calls)] largest first) of a profiler's CUDA events."""
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.device_type == torch.autograd.DeviceType.CUDA:
            entry = by_name[e.name[:70]]
            entry[0] += e.device_time_total / 1e3
            entry[1] += 1
    rows = sorted(((name, ms, calls) for name, (ms, calls) in by_name.items()), key=lambda r: -r[1])
    return sum(r[1] for r in rows), sum(r[2] for r in rows), rows


def profile_method(spec: str, length: int, dim: int, heads: int, kv_heads: int, top: int, warmup: int) -> None:
    q, k, v = planted_inputs(length, heads, kv_heads, dim)
    scale = 1 / math.sqrt(dim)
    method = build_method(*parse_spec(spec))
    for _ in range(warmup):
        method.prefill(q, k, v, scale, 0)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    method.prefill(q, k, v, scale, 0)
    stop.record()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        method.prefill(q, k, v, scale, 0)
        torch.cuda.synchronize()
    busy, kernels, rows = kernel_table(prof.events())
    last = method.stats[-1] if method.stats else {}
    density = float(torch.as_tensor(last.get("density", float("nan"))).float().mean())
    print(f"== {spec} S={length} H={heads}/{kv_heads} D={dim}: wall {start.elapsed_time(stop):.3f} ms, GPU busy "
          f"{busy:.3f} ms, {kernels} kernels, density {density:.3f}, path {last.get('path', '?')} "
          f"{last.get('dense_fallback', '')}", flush=True)
    for name, ms, calls in rows[:top]:
        print(f"   {ms:8.3f} ms  {calls:4d}x  {name}", flush=True)


def each_method(script: str, methods: str, length: str, shape: str, run) -> int:
    """run(spec, length, head_dim, heads, kv_heads) for each spec of `methods` (separated by ';': a spec's options
    take commas); an out-of-memory spec is reported and the next one runs. Exit code 2 without a CUDA GPU."""
    if not torch.cuda.is_available():
        print(f"{script} needs a CUDA GPU; run it on the GPU machine", file=sys.stderr)
        return 2
    dim, heads, kv_heads = (int(x) for x in shape.split(":"))
    tokens = parse_lengths(length)[0]
    for spec in (s for s in methods.split(";") if s):
        try:
            run(spec, tokens, dim, heads, kv_heads)
        except torch.OutOfMemoryError as err:
            print(f"== {spec}: out of memory ({str(err).splitlines()[0]})", flush=True)
            torch.cuda.empty_cache()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="minference", help="method specs separated by ';'")
    ap.add_argument("--length", default="32k")
    ap.add_argument("--shape", default="64:14:2", help="head_dim:heads:kv_heads")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    return each_method("profile_prefill.py", args.methods, args.length, args.shape,
                       lambda spec, *shape: profile_method(spec, *shape, args.top, args.warmup))


if __name__ == "__main__":
    sys.exit(main())
