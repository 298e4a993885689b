"""XAttention's estimate on the GPU, part by part, against cuDNN's dense attention in the same process.

Per (head dim, heads, length): cuDNN causal attention; the previous estimate (two-pass score kernel loaded from
--old, a copy of the former attention/kernels/estimate_xattention.py, and the PyTorch rank_tiles + select_tiles);
the one-pass score kernel (defaults and a sweep of tile settings); the fused selection; the whole default
build_pattern; its kernel launches (profiler, eager); and how the masks compare: the old path against the new one
on the same random q/k (cells that differ), and the score grids (largest relative difference). Writes one JSON
line per case to --out.

  python scripts/bench_xattention_estimate.py --old /path/to/old_estimate_xattention.py --out $OUT/xest.jsonl
"""
import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.kernels.config import override  # noqa: E402
from attention.kernels.estimate_xattention import tile_config, xattention_tile_scores  # noqa: E402
from attention.kernels.select_xattention import select_tiles_fused  # noqa: E402
from attention.methods.xattention import first_chunk_rows, rank_tiles, select_tiles  # noqa: E402
from attention.registry import build_method  # noqa: E402

SWEEP = {64: [(128, 128, 8, 3, False), (128, 128, 8, 3, True), (128, 128, 8, 4, True), (128, 256, 8, 3, False),
              (128, 256, 8, 3, True)],
         128: [(128, 128, 8, 3, False), (128, 128, 8, 3, True), (128, 128, 8, 2, True), (128, 256, 8, 2, False),
               (128, 256, 8, 2, True)]}  # (BM, BN, num_warps, num_stages, FLAT)


def timed(fn, reps: int) -> float:
    """Median ms of `reps` runs after two warm-ups (CUDA events)."""
    fn()
    fn()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def launches(fn) -> int:
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA" and "Memcpy" not in e.name
               and "Memset" not in e.name) or -1


def cudnn_ms(q, k, v, scale, reps) -> float:
    """cuDNN's causal attention, kv heads expanded outside the timing (it takes equal head counts)."""
    k, v = k.repeat_interleave(q.shape[1] // k.shape[1], 1), v.repeat_interleave(q.shape[1] // k.shape[1], 1)

    def dense():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return timed(dense, reps)


def load_old(path: str):
    spec = importlib.util.spec_from_file_location("old_estimate_xattention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def case(dim, heads, kv_heads, seq, old, reps, sweep):
    gen = torch.Generator(device="cuda").manual_seed(seq + dim)
    q = torch.randn(1, heads, seq, dim, device="cuda", generator=gen).bfloat16()
    k = torch.randn(1, kv_heads, seq, dim, device="cuda", generator=gen).bfloat16()
    v = torch.randn(1, kv_heads, seq, dim, device="cuda", generator=gen).bfloat16()
    scale = dim ** -0.5
    stride, block, threshold = 16, 128, 0.8   # the method's defaults
    first_rows = first_chunk_rows(seq, seq, block)
    row = {"head_dim": dim, "heads": heads, "kv_heads": kv_heads, "seq_len": seq, "stride": stride,
           "threshold": threshold, "tiles_default": list(tile_config(dim, block // stride))}
    row["cudnn_ms"] = cudnn_ms(q, k, v, scale, max(3, reps // 2))
    new_scores = xattention_tile_scores(q, k, scale, stride, block)
    row["new_scores_ms"] = timed(lambda: xattention_tile_scores(q, k, scale, stride, block), reps)
    row["new_select_ms"] = timed(lambda: select_tiles_fused(new_scores, threshold, first_rows), reps)
    new_mask = select_tiles_fused(new_scores, threshold, first_rows)
    method = build_method("xattention", {})
    row["method_ms"] = timed(lambda: method.build_pattern(q, k, scale), reps)
    blocks = method.build_pattern(q, k, scale).blocks
    row["method_equals_kernels"] = bool(torch.equal(blocks, new_mask))
    with override(estimate_graphs=False):
        eager = build_method("xattention", {})
        row["eager_method_ms"] = timed(lambda: eager.build_pattern(q, k, scale), reps)
        row["eager_launches"] = launches(lambda: eager.build_pattern(q, k, scale))
    torch_mask = select_tiles(rank_tiles(new_scores, first_rows), threshold)
    row["torch_select_ms"] = timed(lambda: select_tiles(rank_tiles(new_scores, first_rows), threshold), reps)
    row["select_kernel_vs_torch_cells"] = int((torch_mask != new_mask).sum())
    del torch_mask
    if old is not None:
        old_scores = old.xattention_tile_scores(q, k, scale, stride, block)
        row["old_scores_ms"] = timed(lambda: old.xattention_tile_scores(q, k, scale, stride, block), reps)
        old_mask = select_tiles(rank_tiles(old_scores, first_rows), threshold)
        row["old_vs_new_mask_cells"] = int((old_mask != new_mask).sum())
        row["cells"] = old_mask.numel()
        row["score_max_rel_diff"] = float(((old_scores - new_scores).abs() / old_scores.abs().clamp(min=1e-30))
                                          .masked_fill(old_scores == 0, 0).max())
        row["score_max_abs_diff"] = float((old_scores - new_scores).abs().max())
        del old_scores, old_mask
    row["density_causal"] = float(new_mask.float().sum() / (new_mask.shape[-1] * (new_mask.shape[-1] + 1) / 2
                                                              * heads))
    if sweep:
        row["sweep_ms"] = {}
        for tiles in SWEEP[dim]:
            try:
                row["sweep_ms"][str(tiles)] = timed(lambda: xattention_tile_scores(q, k, scale, stride, block, tiles),
                                                    reps)
            except Exception as err:  # e.g. out of shared memory for this setting: recorded, the sweep goes on
                row["sweep_ms"][str(tiles)] = f"failed: {str(err)[:120]}"
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    for key in ("new_scores_ms", "new_select_ms", "method_ms", "eager_method_ms"):
        row[key.replace("_ms", "_share")] = row[key] / row["cudnn_ms"]
    return row


def million(dim, heads, kv_heads, reps):
    """The estimate alone at 2^20 tokens (no dense reference: about 16 s per call): time and peak memory."""
    seq, stride, block = 1 << 20, 16, 128
    gen = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(1, heads, seq, dim, device="cuda", generator=gen).bfloat16()
    k = torch.randn(1, kv_heads, seq, dim, device="cuda", generator=gen).bfloat16()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    row = {"head_dim": dim, "heads": heads, "kv_heads": kv_heads, "seq_len": seq}
    scores = xattention_tile_scores(q, k, dim ** -0.5, stride, block)
    row["new_scores_ms"] = timed(lambda: xattention_tile_scores(q, k, dim ** -0.5, stride, block), reps)
    row["scores_finite"] = bool(torch.isfinite(scores).all())
    try:
        row["new_select_ms"] = timed(lambda: select_tiles_fused(scores, 0.8, 0), reps)
        mask = select_tiles_fused(scores, 0.8, 0)
        row["density_causal"] = float(mask.float().sum() / (mask.shape[-1] * (mask.shape[-1] + 1) / 2 * heads))
        two = scores[:, :2].contiguous()  # two heads against the PyTorch selection (8192-tile rows)
        row["select_kernel_vs_torch_cells_2_heads"] = int((select_tiles(rank_tiles(two, 0), 0.8) != mask[:, :2]).sum())
    except Exception as err:  # recorded: the method would take the PyTorch path there
        row["new_select_ms"] = f"failed: {str(err)[:160]}"
    row["peak_above_inputs_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="", help="path of the former estimate kernel file (two-pass) to compare")
    parser.add_argument("--out", required=True, help="JSON lines file to write")
    parser.add_argument("--lengths", default="32768,131072")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--million", action="store_true", help="also the estimate alone at 1M tokens, D128 32/8")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_xattention_estimate: needs a CUDA GPU; run it on the device machine", file=sys.stderr)
        sys.exit(2)
    old = load_old(args.old) if args.old else None
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": os.environ.get("SAMPLEATTN_GIT_COMMIT", ""), "command": " ".join(sys.argv)}
    print(json.dumps(meta), flush=True)
    with open(args.out, "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for seq in sorted((int(x) for x in args.lengths.split(",")), reverse=True):  # the long cases first
            for dim, heads, kv_heads in ((128, 32, 8), (64, 14, 2)):
                torch.cuda.reset_peak_memory_stats()
                row = case(dim, heads, kv_heads, seq, old, args.reps, sweep=seq >= 131072)
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
        if args.million:
            row = million(128, 32, 8, 3)
            f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
