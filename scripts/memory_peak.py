"""Where a method's long prefill peaks in GPU memory: one attention call as the last chunk of a chunked prefill
makes it (q the last --chunk rows, k/v the whole prompt, bench_attention's planted inputs) under PyTorch's memory
history; prints the call's peak above what it was given, and the tensors alive at that peak grouped by the
innermost frame in this repository, largest first, and the call's time (CUDA events, one call). The profile behind the peak / bound column of
results/bench/long_<gpu>.md (scripts/bench_long.py).

  PYTHONPATH=. python scripts/memory_peak.py --methods 'minference;flexprefill;h2o' --length 1m --shape 128:32:8
"""
import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attention import planted_inputs  # noqa: E402
from attention.registry import build_method  # noqa: E402
from harness.options import parse_spec  # noqa: E402
from profile_prefill import each_method  # noqa: E402

REPO = str(Path(__file__).resolve().parents[1])
GIB = float(1 << 30)


def live_at_peak(events: list[dict]) -> tuple[int, dict[int, dict]]:
    """(peak bytes, the allocations alive at it) from a device trace of torch.cuda.memory._snapshot(): blocks
    allocated during the trace count from 0 (what existed before is the caller's base)."""
    live, total, peak, at_peak = {}, 0, 0, {}
    for event in events:
        action, addr = event.get("action"), event.get("addr")
        if action == "alloc":
            live[addr] = event
            total += event["size"]
        elif action in ("free_requested", "free_completed") and addr in live:
            total -= live.pop(addr)["size"]
        if total > peak:
            peak, at_peak = total, dict(live)
    return peak, at_peak


def where(event: dict) -> str:
    """The innermost frame of this repository that made an allocation (file:line function), else the innermost."""
    frames = event.get("frames") or []
    ours = [f for f in frames if f.get("filename", "").startswith(REPO) and "memory_peak" not in f["filename"]]
    frame = (ours or frames or [{"filename": "?", "line": 0, "name": "?"}])[0]
    return f"{Path(frame['filename']).name}:{frame['line']} {frame['name']}"


def by_site(at_peak: dict[int, dict]) -> list[tuple[str, int, int]]:
    """(site, bytes, blocks) of the allocations alive at the peak, largest first."""
    sites = defaultdict(lambda: [0, 0])
    for event in at_peak.values():
        site = sites[where(event)]
        site[0] += event["size"]
        site[1] += 1
    return sorted(((k, v[0], v[1]) for k, v in sites.items()), key=lambda x: -x[1])


def profile(spec: str, length: int, chunk: int, dim: int, heads: int, kv_heads: int, top: int) -> None:
    q, k, v = planted_inputs(length, heads, kv_heads, dim)
    q = q[:, :, -chunk:].clone()
    torch.cuda.empty_cache()
    scale = 1 / math.sqrt(dim)
    method = build_method(*parse_spec(spec))
    method.prefill(q, k, v, scale, 0)  # compiles, fills per-shape caches
    method.stats.clear()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    method.prefill(q, k, v, scale, 0)  # timed apart from the traced call (the history's bookkeeping costs time)
    stop.record()
    torch.cuda.synchronize()
    method.stats.clear()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000)
    out = method.prefill(q, k, v, scale, 0)
    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak = torch.cuda.max_memory_allocated() - base
    traced, at_peak = live_at_peak(snapshot["device_traces"][torch.cuda.current_device()])
    stats = method.stats[-1] if method.stats else {}
    density = stats.get("density")
    density = float(torch.as_tensor(density).float().mean()) if density is not None else float("nan")
    inputs = sum(t.numel() * t.element_size() for t in (q, k, v)) / GIB
    print(f"== {spec} L={length} chunk={chunk} H={heads}/{kv_heads} D={dim}: inputs {inputs:.2f} GiB, output "
          f"{out.numel() * out.element_size() / GIB:.2f} GiB, peak above inputs {peak / GIB:.2f} GiB (traced "
          f"{traced / GIB:.2f}), density {density:.3f}, path {stats.get('path', '?')} "
          f"{stats.get('dense_fallback', '')}, {start.elapsed_time(stop):.1f} ms", flush=True)
    for site, size, blocks in by_site(at_peak)[:top]:
        print(f"   {size / GIB:8.3f} GiB  {blocks:5d} block(s)  {site}", flush=True)
    del out, q, k, v, method
    torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="minference;flexprefill;xattention;h2o",
                    help="method specs separated by ';' (a spec's options take commas)")
    ap.add_argument("--length", default="1m")
    ap.add_argument("--chunk", type=int, default=16384, help="query rows of the call (bench_long's chunk)")
    ap.add_argument("--shape", default="128:32:8", help="head_dim:heads:kv_heads (Llama-3.1-8B)")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args(argv)
    return each_method("memory_peak.py", args.methods, args.length, args.shape,
                       lambda spec, length, *shape: profile(spec, length, min(args.chunk, length), *shape, args.top))


if __name__ == "__main__":
    sys.exit(main())
