"""Plot results/bench/attention_<gpu>.csv: time vs length at one density, and speedup vs cuDNN against density.

  python scripts/plot_bench.py results/bench/attention_H100_80GB_HBM3.csv
"""
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIXED = ["flex", "sample_kernel", "sample_stages", "sample"]


def main(path):
    rows = [r for r in csv.DictReader(open(path)) if ":" not in r["method"]]
    by = defaultdict(dict)
    for r in rows:
        by[r["method"]][(int(r["seq_len"]), float(r["density"]))] = r
    lengths = sorted({int(r["seq_len"]) for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name in ["cudnn", "flash"]:
        left.plot(lengths, [float(by[name][(s, 1.0)]["ms"]) for s in lengths], "o-", label=f"{name} (dense)")
    for name in FIXED:
        pts = [(s, float(by[name][(s, 0.1)]["ms"])) for s in lengths if (s, 0.1) in by[name]]
        left.plot(*zip(*pts), "s--", label=f"{name} @10%")
    pts = [(s, float(r["ms"])) for (s, _), r in sorted(by["sample_adaptive"].items())]
    if pts:
        left.plot(*zip(*pts), "x:", label="sample alpha=0.95 (adaptive)")
    left.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms (median)",
             title="32 q / 8 kv heads, D=128, bf16, causal prefill")
    left.legend(fontsize=8)
    top = max(lengths)
    densities = sorted({d for (s, d) in by["sample_kernel"] if s == top})
    for name in FIXED:
        right.plot(densities, [float(by[name][(top, d)]["speedup_vs_cudnn"]) for d in densities], "o-", label=name)
    right.plot(densities, [1 / d for d in densities], "k:", label="ideal 1/density")
    right.plot(densities, [1 / (1.2 * d) for d in densities], "r:", label="target 1/(1.2 density)")
    right.set(xscale="log", yscale="log", xlabel="density", ylabel="speedup vs cuDNN dense",
              title=f"S={top}")
    right.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/bench/attention_H100_80GB_HBM3.csv")
