"""Compare block configs of the sparse kernel and of stage 1 on the GPU at fixed density; write the best as env.

  PYTHONPATH=. python scripts/sweep_configs.py --lengths 32768,131072 --out $OUT   (then: source $OUT/best.env)
"""
import argparse
import os
import sys
from pathlib import Path

import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.executor import run_pattern  # noqa: E402
from attention.kernels.scores import sampled_scores  # noqa: E402
from attention.registry import build_method  # noqa: E402
from attention.methods.sample import strided_rows  # noqa: E402
from scripts.bench_attention import planted_inputs  # noqa: E402

SPARSE = ["128,64,8,3", "128,64,4,3", "128,128,8,2", "64,64,4,3", "128,64,8,2", "128,64,8,4"]
SCORES = ["64,64,4,3", "128,128,4,3", "128,128,8,3", "64,128,4,3", "128,64,4,2"]


def timed(fn):
    return triton.testing.do_bench(fn, warmup=30, rep=150, return_mode="median")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="32768,131072")
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    totals = {("sparse", c): 0.0 for c in SPARSE} | {("scores", c): 0.0 for c in SCORES}
    for seq in (int(x) for x in args.lengths.split(",")):
        q, k, v = planted_inputs(seq, 32, 8, 128)
        method = build_method("sample", {"density": str(args.density), "r_w": str(args.density / 4)})
        pattern = method.build_pattern(q, k, 128 ** -0.5)
        rows = strided_rows(seq, 0.05, "cuda")
        for kind, configs, var, fn in (
                ("sparse", SPARSE, "ATTN_SPARSE_BLOCKS", lambda: run_pattern(q, k, v, pattern, 128 ** -0.5)),
                ("scores", SCORES, "ATTN_SCORES_CFG", lambda: sampled_scores(q, k, 128 ** -0.5, rows))):
            for config in configs:
                os.environ[var] = config
                try:
                    ms = timed(fn)
                except Exception as err:  # e.g. out of shared memory for a big tile
                    print(f"{kind} {config} S={seq}: failed {type(err).__name__}: {str(err)[:80]}", flush=True)
                    ms = float("inf")
                totals[(kind, config)] += ms / seq ** 2  # weight lengths equally
                print(f"{kind:6s} {config:12s} S={seq:7d} {ms:9.3f} ms", flush=True)
                os.environ.pop(var)
    best = {kind: min((c for (kk, c) in totals if kk == kind), key=lambda c: totals[(kind, c)])
            for kind in ("sparse", "scores")}
    text = f"export ATTN_SPARSE_BLOCKS={best['sparse']}\nexport ATTN_SCORES_CFG={best['scores']}\n"
    Path(args.out, "best.env").write_text(text)
    print("best:", best)


if __name__ == "__main__":
    main()
