"""MInference's executed pattern (64-key bands) on each band kernel variant against cuDNN, in one process.

Per shape (head_dim:heads:kv_heads) and length: cuDNN's dense causal time, then MInference's pattern (random q/k
with planted key stripes, as scripts/bench_attention.py) at each --densities value and at its defaults, timed on
  old                  attention/kernels/bands.py (64x64 tiles, nested run loops, a hit-map load per tile)
  t<M>[p]-<path>-w<W>s<S> attention/kernels/bands_tiled.py: TILE_M query rows, p = adjacent unmasked tiles paired
                       into 128-key tiles, tma or portable loads, warps, stages
  block-tma-<bm>x<bn>  the block-sparse Hopper kernel on random 128-blocks of the same density (the peers' speed,
                       and with 64x64 tiles what 64-row query tiles cost that kernel)
(run1, results/bench/bands, also timed 128-row tiles and the bounds without columns or masked tiles.)
cell = kernel ms / (measured density x cuDNN ms), as bench_attention's cell_ratio; `tiles` = computed tile cells
/ kept cells of the variant's lists; `err` = max |out - old kernel's out| (the old kernel is the tested one).

  PYTHONPATH=. python scripts/bench_bands.py --lengths 131072,32768 --shapes 128:32:8,64:14:2 --out $OUT
"""
import argparse
import csv
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attention import planted_inputs, provenance, random_blocks, sdpa, Case  # noqa: E402
from attention.bands import BAND  # noqa: E402
from attention.kernels.bands import band_attention  # noqa: E402
from attention.kernels.bands_tiled import BandConfig, TiledBands, band_tiled_attention  # noqa: E402
from attention.kernels.block_sparse import block_sparse_attention  # noqa: E402
from attention.kernels.config import override  # noqa: E402
from attention.registry import build_method  # noqa: E402

FIELDS = ["gpu", "head_dim", "heads", "kv_heads", "seq_len", "setting", "measured_density", "variant", "kernel_ms",
          "cudnn_ms", "cell_ratio", "tile_cells_per_kept", "pair_tiles", "whole_tiles", "masked_tiles", "max_err_vs_old",
          "commit", "torch", "triton"]
# (TILE_M, pairs, path, warps, stages) per head dim; run1 (results/bench/bands) timed 128-row tiles: 1.2-2x slower
VARIANTS = {128: [(64, False, "tma", 4, 3), (64, False, "tma", 4, 2), (64, False, "tma", 4, 4),
                  (64, True, "tma", 4, 2), (64, True, "tma", 4, 3), (64, False, "portable", 4, 3)],
            64: [(64, False, "tma", 4, 3), (64, False, "tma", 4, 4), (64, True, "tma", 4, 2),
                 (64, True, "tma", 4, 3), (64, False, "portable", 4, 3)]}
# the block-sparse Hopper kernel's tiles timed beside (BLOCK_M, BLOCK_N, warps, stages, warp_specialize)
BLOCK_TILES = ((128, 128, 8, 3, 0), (128, 64, 4, 2, 0), (64, 64, 4, 3, 0))


def bench(fn, warmup_ms, rep_ms):
    """Median ms of CUDA-event-timed calls after one untimed call (compiles, caches), at least 3 and about rep_ms
    of them (the calls here take 5-500 ms: a device budget of minutes; triton's do_bench spends 5 more on its
    estimate and flushes L2, which does not matter at these sizes)."""
    fn()
    torch.cuda.synchronize()
    times = []
    while len(times) < 3 or (sum(times) < rep_ms and len(times) < 50):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def tile_stats(t: TiledBands, kept_cells: float) -> tuple[float, int, int, int]:
    paired, whole, masked = (int(t.counts[..., i].sum()) for i in range(3))
    return (2 * paired + whole + masked) * t.tile_m * BAND / kept_cells, paired, whole, masked


def run_setting(args, writer, stamp, gpu, dim, heads, kv_heads, seq_len, q, k, v, cudnn_ms, setting):
    scale = 1 / math.sqrt(dim)
    opts = {} if setting == "defaults" else {"density": setting}
    method = build_method("minference", opts)
    pattern = method.build_pattern(q, k, scale)
    dens = float(method.density(pattern, q, k).mean())
    kept = dens * heads * seq_len * (seq_len + 1) / 2
    offsets, columns = pattern.band_offsets, pattern.columns
    base = {"gpu": gpu, "head_dim": dim, "heads": heads, "kv_heads": kv_heads, "seq_len": seq_len,
            "setting": setting, "measured_density": dens, "cudnn_ms": cudnn_ms, **stamp}

    def emit(variant, ms, extra=None):
        row = {**base, "variant": variant, "kernel_ms": ms, "cell_ratio": ms / (dens * cudnn_ms), **(extra or {})}
        writer.writerow(row)
        args.file.flush()
        print(f"D={dim} S={seq_len} {setting:>8} d={dens:.3f} {variant:28s} {ms:9.3f} ms cell {row['cell_ratio']:.2f}"
              + "".join(f" {key} {val:.3g}" if isinstance(val, float) else f" {key} {val}"
                        for key, val in (extra or {}).items()), flush=True)

    runs = pattern.runs(1, heads, seq_len, 0, q.device)
    ref = band_attention(q, k, v, scale, offsets, columns, runs=runs)
    if args.time_old:
        emit("old", bench(lambda: band_attention(q, k, v, scale, offsets, columns, runs=runs), args.warmup_ms,
                          args.rep_ms))
    built = {}
    for tile_m, pairs, path, warps, stages in VARIANTS[dim]:
        config = BandConfig(tile_m, pairs, warps, stages)
        name = f"t{tile_m}{'p' if pairs else ''}-{path}-w{warps}s{stages}"
        if (tile_m, pairs) not in built:
            built[tile_m, pairs] = TiledBands(offsets, columns, 1, heads, seq_len, seq_len, tile_m, q.device, pairs)
        t = built[tile_m, pairs]

        def call(t=t, use_tma=path == "tma", config=config):
            return band_tiled_attention(q, k, v, scale, offsets, columns, tiles=t, config=config, use_tma=use_tma)
        try:
            err = float((call().float() - ref.float()).abs().max())
            ms = bench(call, args.warmup_ms, args.rep_ms)
        except Exception as exc:  # a config that does not fit (shared memory): say so, go on
            print(f"{name}: failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        ratio, paired, whole, masked = tile_stats(t, kept)
        emit(name, ms, {"tile_cells_per_kept": ratio, "pair_tiles": paired, "whole_tiles": whole,
                        "masked_tiles": masked, "max_err_vs_old": err})
    if seq_len < args.bounds_from:
        return
    blocks = random_blocks(seq_len, heads, dens, device=q.device)
    for cfg in BLOCK_TILES:
        with override(sparse_path="tma", tma_blocks={dim: cfg}):
            ms = bench(lambda: block_sparse_attention(q, k, v, scale, blocks=blocks, block=128), args.warmup_ms,
                       args.rep_ms)
        emit(f"block-tma-{cfg[0]}x{cfg[1]}-w{cfg[2]}s{cfg[3]}", ms)
    torch.cuda.empty_cache()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="131072,32768")
    ap.add_argument("--shapes", default="128:32:8,64:14:2")
    ap.add_argument("--densities", default="0.1", help="MInference density settings (defaults always added)")
    ap.add_argument("--bounds-from", type=int, default=131072, help="time the block kernel from this length on")
    ap.add_argument("--time-old", action="store_true", help="also time the old band kernel (run1 has it)")
    ap.add_argument("--warmup-ms", type=float, default=0, help="unused (one untimed call instead)")
    ap.add_argument("--rep-ms", type=float, default=60)
    ap.add_argument("--out", default=os.environ.get("OUT", "results/bench/bands"))
    args = ap.parse_args(argv)
    gpu = torch.cuda.get_device_name().replace("NVIDIA ", "").replace(" ", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = provenance()
    print({**stamp, "gpu": gpu, "argv": sys.argv}, flush=True)
    with open(out / f"bands_{gpu}.csv", "w", newline="") as f:
        args.file = f
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for seq_len in (int(x) for x in args.lengths.split(",")):
            for shape in args.shapes.split(","):
                dim, heads, kv_heads = (int(x) for x in shape.split(":"))
                q, k, v = planted_inputs(seq_len, heads, kv_heads, dim)
                case = Case(q, k, v, seq_len, None, 1 / math.sqrt(dim))
                cudnn_ms = bench(sdpa("cudnn")(case), args.warmup_ms, args.rep_ms)
                case.cache.clear()
                print(f"-- D={dim} {heads}/{kv_heads} S={seq_len}: cuDNN {cudnn_ms:.3f} ms", flush=True)
                for setting in [*args.densities.split(","), "defaults"]:
                    run_setting(args, writer, stamp, gpu, dim, heads, kv_heads, seq_len, q, k, v, cudnn_ms,
                                setting)
                del q, k, v, case
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
