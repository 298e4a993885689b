"""Where SampleAttention's stages 1+2 spend their time, against cuDNN's dense attention in the same process.

Per shape and length (planted random bf16 q/k, scripts/bench_attention.py planted_inputs; r_row = 0.05 strided rows):
cuDNN dense; the row plan (host + device preparation, cached per shape on the product path); pass 1, pass 2 and
both; the selection's thresholds (mass_threshold, area_threshold: device sorts) and select_columns (alpha 0.95, and
the area rule at density 0.05 / 0.1 / 0.2; its default threshold: the sort from AREA_SORT_FROM keys, the search
below) beside the area rule's in-kernel k-ary search (area_sort=False); the product path's stages (method.stages,
what `sampleattn run` executes before the sparse kernel) at its defaults and at density 0.1; build_pattern (what
bench_attention's `pattern_ms` times). Checks on the GPU that the default threshold keeps the columns the search
keeps. --configs times the two passes under other stage-1 tile settings
(attention.kernels.config.override scores_cfg) at the last length of the first shape.

  PYTHONPATH=. python scripts/bench_stage1.py --shapes 64:14:2,128:32:8 --lengths 32768,131072 --out $OUT
"""
import argparse
import csv
import json
import math
import sys
from pathlib import Path

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import sample_fused  # noqa: E402
from attention.density import base_cells  # noqa: E402
from attention.kernels.column_select import _split, area_threshold, mass_threshold, select_columns  # noqa: E402
from attention.kernels.config import override  # noqa: E402
from attention.kernels.stage1 import launch_column_scores, launch_row_stats, launch_sampled_scores, row_plan  # noqa: E402
from attention.methods.sample import strided_rows  # noqa: E402
from attention.registry import build_method  # noqa: E402
from scripts.bench_attention import launches_and_syncs, planted_inputs, provenance  # noqa: E402

CONFIGS = [(128, 64, 4, 3), (128, 128, 8, 3), (128, 128, 4, 4)]  # (pass-1 keys, pass-2 keys, warps, stages)


def bench(fn, warmup_ms, rep_ms):
    return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def cudnn(q, k, v, scale):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

    def call():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return call


def one_case(seq, dim, heads, kv_heads, warmup, rep, log, configs=()):
    q, k, v = planted_inputs(seq, heads, kv_heads, dim)
    scale = dim ** -0.5
    rows = []

    def add(what, ms, **extra):
        rows.append({"seq_len": seq, "head_dim": dim, "heads": heads, "kv_heads": kv_heads, "what": what, "ms": ms,
                     **extra})
        log(f"  {what:38s} {ms:9.3f} ms  {json.dumps(extra) if extra else ''}")

    dense = bench(cudnn(q, k, v, scale), warmup, rep)
    add("cudnn", dense)
    sampled = strided_rows(seq, 0.05, q.device)
    add("row_plan (host+device, cached)", bench(lambda: row_plan(sampled, seq, seq, dim), warmup, rep),
        rows=int(sampled.numel()))
    plan = row_plan(sampled, seq, seq, dim)
    m, l = launch_row_stats(q, k, scale, plan)
    add("pass1", bench(lambda: launch_row_stats(q, k, scale, plan), warmup, rep))
    add("pass2", bench(lambda: launch_column_scores(q, k, scale, plan, m, l), warmup, rep))
    add("stage1", bench(lambda: launch_sampled_scores(q, k, scale, plan), warmup, rep))
    col = launch_sampled_scores(q, k, scale, plan)[0]
    for cfg in configs:
        with override(scores_cfg={dim: cfg}):
            plan2 = row_plan(sampled, seq, seq, dim)  # per-key-block bounds follow the pass-2 key block
            m2, l2 = launch_row_stats(q, k, scale, plan2)
            add(f"pass1 cfg={list(cfg)}", bench(lambda: launch_row_stats(q, k, scale, plan2), warmup, rep))
            add(f"pass2 cfg={list(cfg)}", bench(lambda: launch_column_scores(q, k, scale, plan2, m2, l2), warmup, rep))
            err = float((launch_column_scores(q, k, scale, plan2, m2, l2)[0] - col).norm() / col.norm())
            add(f"check cfg={list(cfg)}", 0.0, col_rel_err=err)
    window = math.ceil(0.08 * seq)  # the default r_w, as method.stages computes it
    base, causal = base_cells(seq, seq, window, 4)
    block_m = sample_fused.block_rows(q, seq)[1]
    flat = col.view(-1, seq)
    add("mass_threshold (sort)", bench(lambda: mass_threshold(flat, 0.95, 4), warmup, rep))
    add("select_columns alpha0.95", bench(lambda: select_columns(
        col, sink=4, window=window, q_len=seq, block_m=block_m, base_cells=base, causal_cells=causal, alpha=0.95),
        warmup, rep))
    common = dict(sink=4, window=window, q_len=seq, block_m=block_m, base_cells=base, causal_cells=causal)
    for density in (0.05, 0.1, 0.2):
        budget = max(0.0, density * causal - base)
        b_hi, b_lo = _split(budget)
        new = select_columns(col, budget=budget, **common)
        old = select_columns(col, budget=budget, area_sort=False, **common)
        same = all(torch.equal(x, y) for x, y in zip(new, old))
        if density == 0.1:
            add("area_threshold (sort)", bench(lambda: area_threshold(flat, b_hi, b_lo, 4, window, 0), warmup, rep))
            add("select_columns density0.1 (sort)", bench(lambda: select_columns(col, budget=budget, **common),
                                                          warmup, rep))
            add("select_columns density0.1 (search)", bench(
                lambda: select_columns(col, budget=budget, area_sort=False, **common), warmup, rep))
        add(f"check area sort == search d={density}", 0.0, same=same, kept=float(new[2][..., -1].float().mean()))
    for opts, label in (({}, "defaults"), ({"density": "0.1"}, "density0.1")):
        method = build_method("sample", opts)
        method.stages(q, k, scale)
        n, syncs = launches_and_syncs(lambda: method.stages(q, k, scale))
        add(f"method.stages {label}", bench(lambda: method.stages(q, k, scale), warmup, rep), launches=n, syncs=syncs)
        if label == "density0.1":
            add(f"build_pattern {label}", bench(lambda: method.build_pattern(q, k, scale), warmup, rep))
    for r in rows:
        r["share_of_cudnn"] = r["ms"] / dense
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="64:14:2,128:32:8")
    ap.add_argument("--lengths", default="32768,131072")
    ap.add_argument("--warmup-ms", type=float, default=25)
    ap.add_argument("--rep-ms", type=float, default=100)
    ap.add_argument("--configs", action="store_true", help="also time the passes under CONFIGS (first shape, last length)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
        lengths = [int(x) for x in args.lengths.split(",")]
    except ValueError:
        print("error: --shapes wants head_dim:heads:kv_heads,... and --lengths integers, e.g. 64:14:2 32768",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU (run it on the device machine)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "bench_stage1.log", "w")

    def log(line):
        print(line, flush=True)
        logf.write(line + "\n")
    prov = {**provenance(), "gpu": torch.cuda.get_device_name(), "command": " ".join(sys.argv)}
    log(json.dumps(prov))
    rows = []
    for dim, heads, kv_heads in shapes:
        for seq in lengths:
            log(f"-- D={dim} heads {heads}/{kv_heads} S={seq}")
            sweep = CONFIGS if args.configs and (dim, heads, kv_heads) == shapes[0] and seq == lengths[-1] else ()
            rows += one_case(seq, dim, heads, kv_heads, args.warmup_ms, args.rep_ms, log, sweep)
            torch.cuda.empty_cache()
    with open(out / "stage1_H200.csv", "w", newline="") as f:
        keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
        w = csv.DictWriter(f, fieldnames=keys + list(prov))
        w.writeheader()
        for r in rows:
            w.writerow({**r, **prov})
    return 0


if __name__ == "__main__":
    sys.exit(main())
