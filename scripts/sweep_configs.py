"""Compare tile configs of the sparse kernel paths (portable gather kernel, Hopper TMA kernel) on the GPU at fixed
densities, beside cuDNN and FlexAttention in the same process; print the best TMA config per length (configs run
through attention.kernels.config.override; a winner becomes a default in config.py, never an environment setting).

  PYTHONPATH=. python scripts/sweep_configs.py --lengths 8192,32768,131072 --dim 64 --out $OUT
  PYTHONPATH=. python scripts/sweep_configs.py --block-kernel --lengths 16384,32768 --dim 64 --heads 14,2 \
      --densities 0.1,0.25 --out $OUT      # the block-sparse kernel on random 128-token blocks (bench rows block-*)

Each row: time, time / (density x cuDNN dense time) (the issue-14 ratio; 1.0 = cuDNN's rate per computed cell),
and TFLOP/s over computed cells (4 * cells * D per head).
"""
import argparse
import math
import os
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.density import pattern_density  # noqa: E402
from attention.kernels.config import override  # noqa: E402
from attention.executor import run_pattern  # noqa: E402
from attention.kernels.hopper import launch, prepare_indices  # noqa: E402
from attention.pattern import SparsePattern  # noqa: E402
from scripts.bench_attention import Case, flex, planted_inputs, random_blocks, sdpa, sparse_runner  # noqa: E402

PORTABLE = [""]  # its default per length (block_config)
# BLOCK_M, BLOCK_N, warps, stages, warp_specialize (8 warps only with 128x128 tiles, as Triton's tutorial keeps)
# run 1 (results/bench/v4/run1): 3-4 stages with 4 warps and 128x128 with 4 warps lose; warp_specialize=True
# changes nothing on Hopper with triton 3.6
TMA = ["128,128,8,3,0", "128,64,4,2,0"]
# the block-sparse kernel's portable tiles (BLOCK_M, BLOCK_N, warps, stages): its default, 8 warps (no spills in
# the offline sm_90a compile, NOTES.md blockkernel), fewer stages, 64-row query tiles
BLOCK_PORTABLE = ["", "128,64,8,3", "128,64,4,2", "64,64,4,3"]


def timed(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=120, return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="8192,32768,131072")
    ap.add_argument("--densities", default="0.1")
    ap.add_argument("--tma", default=";".join(TMA))
    ap.add_argument("--portable", default=";".join(PORTABLE))
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", default="32,8", help="query heads,kv heads")
    ap.add_argument("--block-kernel", action="store_true",
                    help="sweep the block-sparse kernel on random 128-token blocks instead of SampleAttention's pattern"
                         " (portable configs: --portable, default BLOCK_PORTABLE)")
    ap.add_argument("--profile", action="store_true",
                    help="one call each of cuDNN and both sparse paths at the first length/density (run under ncu)")
    args = ap.parse_args()
    heads, kv_heads = (int(x) for x in args.heads.split(","))
    dim = args.dim
    scale = dim ** -0.5
    if args.profile:
        seq, dens = int(args.lengths.split(",")[0]), float(args.densities.split(",")[0])
        q, k, v = planted_inputs(seq, heads, kv_heads, dim)
        case = Case(q, k, v, seq, dens, scale, {})
        runner, _ = sparse_runner(case, "sample", {"density": str(dens), "r_w": str(dens / 4)})
        sdpa("cudnn")(case)()
        for path in ("tma", "portable"):
            with override(sparse_path=path):
                runner()
        torch.cuda.synchronize()
        return
    lines = []
    for seq in (int(x) for x in args.lengths.split(",")):
        q, k, v = planted_inputs(seq, heads, kv_heads, dim)
        shared = {}
        cudnn = timed(sdpa("cudnn")(Case(q, k, v, seq, None, scale, shared)))
        print(f"cudnn S={seq}: {cudnn:.3f} ms", flush=True)
        best = {}
        for dens in (float(x) for x in args.densities.split(",")):
            case = Case(q, k, v, seq, dens, scale, shared)
            flex_ms = timed(flex(case))
            if args.block_kernel:
                pattern = SparsePattern(blocks=random_blocks(seq, heads, dens), block=128)
                runner = (lambda p: lambda: run_pattern(q, k, v, p, scale))(pattern)
            else:
                runner, pattern = sparse_runner(case, "sample", {"density": str(dens), "r_w": str(dens / 4)})
            real = float(pattern_density(pattern, 1, heads, seq, seq, "cuda").mean())
            cells = real * heads * seq * (seq + 1) / 2
            print(f"flex   S={seq} d={dens}: {flex_ms:.3f} ms = {flex_ms / (dens * cudnn):.2f} x d x cudnn", flush=True)
            portable = (args.portable if args.portable != ";".join(PORTABLE) else ";".join(BLOCK_PORTABLE)
                        ) if args.block_kernel else args.portable
            portable_key = "block_sparse_blocks" if args.block_kernel else "sparse_blocks"
            for path, configs, key in (("tma", args.tma, "tma_blocks"), ("portable", portable, portable_key)):
                for config in configs.split(";"):
                    tiles = {key: {dim: tuple(int(x) for x in config.split(","))}} if config else {}
                    try:
                        with override(sparse_path=path, **tiles):
                            ms = timed(runner)
                    except Exception as err:  # e.g. out of shared memory, or no warp specialisation here
                        print(f"{path:8s} {config:14s} S={seq}: failed {type(err).__name__}: {str(err)[:160]}",
                              flush=True)
                        ms = math.inf
                    ratio = ms / (real * cudnn)
                    tflops = 4 * cells * dim / ms / 1e9
                    line = (f"{path:8s} {config:14s} S={seq:7d} d={dens:.2f} (real {real:.3f}) {ms:9.3f} ms "
                            f"ratio {ratio:5.2f} vs flex {flex_ms / ms:5.2f}x  {tflops:6.1f} TFLOP/s")
                    print(line, flush=True)
                    lines.append(line)
                    if path == "tma":
                        best.setdefault(config, 0.0)
                        best[config] += ms / (real * cudnn)
            if args.block_kernel:
                continue
            # the TMA path in two parts at its default config: index prep (sort, dedup, bounds), then the launch
            # (K/V copy + column gather + kernel) on prepared indices
            parts = dict(sink=pattern.sink, window=pattern.window, columns=pattern.columns, slashes=pattern.slashes)
            prep_ms = timed(lambda: prepare_indices(q, k, **parts))
            idx = prepare_indices(q, k, **parts)
            launch_ms = timed(lambda: launch(q, k, v, scale, idx))
            lines.append(f"tma default config S={seq} d={dens}: index prep {prep_ms:.3f} ms, launch (copy + gather +"
                         f" kernel) {launch_ms:.3f} ms = ratio {launch_ms / (real * cudnn):.2f}")
            print(lines[-1], flush=True)
        if best:
            winner = min(best, key=best.get)
            lines.append(f"best tma config at S={seq}: {winner}")
            print(lines[-1], flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    Path(args.out, "sweep.log").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
