"""Where SampleAttention's stages 1+2 spend their time, against cuDNN's dense attention in the same process.

Per shape and length (planted random bf16 q/k, scripts/bench_attention.py planted_inputs; r_row = 0.05 strided rows):
cuDNN dense; the row plan (host + device preparation, cached per shape on the product path); pass 1, pass 2 and
both passes per exp2 split (poly 0 / 1 / 2, attention/kernels/stage1.py POLY_EXP); the mass threshold sort and the
selection kernel (alpha 0.95, and the area rule at density 0.1); the product path's stages (method.stages, what
`sampleattn run` executes before the sparse kernel) at its defaults and at density 0.1; build_pattern (what
bench_attention's `pattern_ms` times). Checks on the GPU that every poly variant selects the same columns as poly 0.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import sample_fused  # noqa: E402
from attention.density import base_cells  # noqa: E402
from attention.kernels.column_select import mass_threshold, select_columns  # noqa: E402
from attention.kernels.stage1 import launch_column_scores, launch_row_stats, launch_sampled_scores, row_plan  # noqa: E402
from attention.methods.sample import strided_rows  # noqa: E402
from attention.registry import build_method  # noqa: E402
from scripts.bench_attention import launches_and_syncs, planted_inputs, provenance  # noqa: E402

POLYS = (0, 1, 2)


def bench(fn, warmup_ms, rep_ms):
    return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def cudnn(q, k, v, scale):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

    def call():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return call


def same_selection(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def one_case(seq, dim, heads, kv_heads, warmup, rep, log):
    q, k, v = planted_inputs(seq, heads, kv_heads, dim)
    scale = dim ** -0.5
    rows = []

    def add(what, ms, **extra):
        rows.append({"seq_len": seq, "head_dim": dim, "heads": heads, "kv_heads": kv_heads, "what": what, "ms": ms,
                     **extra})
        log(f"  {what:34s} {ms:9.3f} ms  {json.dumps(extra) if extra else ''}")

    dense = bench(cudnn(q, k, v, scale), warmup, rep)
    add("cudnn", dense)
    sampled = strided_rows(seq, 0.05, q.device)
    add("row_plan (host+device, cached)", bench(lambda: row_plan(sampled, seq, seq, dim), warmup, rep),
        rows=int(sampled.numel()))
    plan = row_plan(sampled, seq, seq, dim)
    window = math.ceil(0.08 * seq)  # the default r_w, as method.stages computes it
    base, causal = base_cells(seq, seq, window, 4)
    budget = max(0.0, 0.1 * causal - base)
    block_m = sample_fused.block_rows(q, seq)[1]
    picks = {}
    for poly in POLYS:
        m, l = launch_row_stats(q, k, scale, plan, poly)
        add(f"pass1 poly={poly}", bench(lambda: launch_row_stats(q, k, scale, plan, poly), warmup, rep))
        add(f"pass2 poly={poly}", bench(lambda: launch_column_scores(q, k, scale, plan, m, l, False, poly), warmup, rep))
        add(f"stage1 poly={poly}", bench(lambda: launch_sampled_scores(q, k, scale, plan, False, poly), warmup, rep))
        col = launch_sampled_scores(q, k, scale, plan, False, poly)[0]
        for rule, kw in (("alpha0.95", {"alpha": 0.95}), ("density0.1", {"budget": budget})):
            picks[poly, rule] = select_columns(col, sink=4, window=window, q_len=seq, block_m=block_m,
                                               base_cells=base, causal_cells=causal, **kw)
        picks[poly, "col"] = col
    for poly in POLYS[1:]:
        ref = picks[0, "col"]
        err = float(((picks[poly, "col"] - ref).norm() / ref.norm()))
        add(f"check poly={poly} vs 0", 0.0, col_rel_err=err,
            same_alpha=same_selection(picks[poly, "alpha0.95"], picks[0, "alpha0.95"]),
            same_density=same_selection(picks[poly, "density0.1"], picks[0, "density0.1"]),
            finite=bool(torch.isfinite(picks[poly, "col"]).all()))
    col = picks[0, "col"]
    flat = col.view(-1, seq)
    add("mass_threshold (sort)", bench(lambda: mass_threshold(flat, 0.95, 4), warmup, rep))
    for rule, kw in (("alpha0.95", {"alpha": 0.95}), ("density0.1", {"budget": budget})):
        add(f"select_columns {rule}", bench(lambda: select_columns(
            col, sink=4, window=window, q_len=seq, block_m=block_m, base_cells=base, causal_cells=causal, **kw),
            warmup, rep))
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
            rows += one_case(seq, dim, heads, kv_heads, args.warmup_ms, args.rep_ms, log)
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
