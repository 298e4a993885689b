"""On CUDA: the peers' default estimates replayed from CUDA graphs equal the eager ones, layer after layer, and
what each costs (wall time per layer, GPU kernels per layer from the profiler).

  PYTHONPATH=. python scripts/check_estimate_graphs.py --length 16384 --heads 14 --kv-heads 2 --dim 64
Exit 1 when a graphed pattern differs from the eager one. Random bf16 q/k, a different pair per layer.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.kernels.config import override  # noqa: E402
from attention.registry import build_method  # noqa: E402
from harness.options import parse_spec  # noqa: E402


def pattern_tensors(p):
    return [getattr(p, n) for n in ("blocks", "columns", "band_offsets", "slashes") if getattr(p, n, None) is not None]


def run_layers(name, layers, scale, graphs: bool):
    with override(estimate_graphs=graphs):
        return _run_layers(name, layers, scale)


def _run_layers(name, layers, scale):
    method = build_method(*parse_spec(name))  # a spec: name[:option=value,...]
    for i, (q, k) in enumerate(layers[:2]):  # warm-up: compiles, caches, the capture
        method.build_pattern(q, k, scale, i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    patterns = [method.build_pattern(q, k, scale, i) for i, (q, k) in enumerate(layers)]
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1e3 / len(layers)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        method.build_pattern(*layers[0], scale, 0)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time_total for e in kernels) / 1e3
    return patterns, ms, len(kernels), busy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--methods", default="flexprefill;xattention;minference",
                    help="method specs separated by ';', e.g. 'minference;minference:density=0.1'")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit(print("check_estimate_graphs: no CUDA device here; run it on the GPU machine", file=sys.stderr) or 2)
    gen = torch.Generator(device="cuda").manual_seed(0)
    layers = [(torch.randn(1, args.heads, args.length, args.dim, device="cuda", generator=gen).bfloat16() * 1.5,
               torch.randn(1, args.kv_heads, args.length, args.dim, device="cuda", generator=gen).bfloat16())
              for _ in range(args.layers)]
    scale = 1 / math.sqrt(args.dim)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} S={args.length} Hq={args.heads} "
          f"Hkv={args.kv_heads} D={args.dim}, {args.layers} layers", flush=True)
    failed = False
    for name in args.methods.split(";"):
        eager, eager_ms, eager_k, eager_busy = run_layers(name, layers, scale, graphs=False)
        graphed, graph_ms, graph_k, graph_busy = run_layers(name, layers, scale, graphs=True)
        same = all(torch.equal(a, b) for pe, pg in zip(eager, graphed)
                   for a, b in zip(pattern_tensors(pe), pattern_tensors(pg)))
        failed |= not same
        print(f"{name}: patterns {'equal' if same else 'DIFFER'}; eager {eager_ms:.3f} ms/layer, {eager_k} kernels, "
              f"GPU {eager_busy:.3f} ms; graph {graph_ms:.3f} ms/layer, {graph_k} kernels, GPU {graph_busy:.3f} ms",
              flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
