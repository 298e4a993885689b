"""Plot results/bench/attention_<gpu>.csv (scripts/bench_attention.py):

  left    whole-prefill time vs length at 10% density: dense cuDNN / flash, FlexAttention, each sparse method
  middle  cell ratio (kernel time / (density x cuDNN time); 1.0 = cuDNN's rate per computed cell) vs density,
          for each length: SampleAttention's kernel (the dispatched path) solid, FlexAttention dashed, issue-14
          targets dotted
  right   pattern estimation vs kernel (executing the pattern) per sparse method at the longest length, 10%

  python scripts/plot_bench.py results/bench/attention_H200.csv
"""
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGETS = {8192: 1.6, 32768: 1.2, 131072: 1.0}  # issue 14: cell ratio per length


def num(x):
    return float(x) if x not in ("", None) else None


def main(path):
    rows = [r for r in csv.DictReader(open(path)) if ":" not in r["method"]]
    by = defaultdict(dict)
    for r in rows:
        by[r["method"]][(int(r["seq_len"]), float(r["density"]))] = r
    lengths = sorted({int(r["seq_len"]) for r in rows})
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(19, 5.5))
    for name in ("cudnn", "flash"):
        pts = [(s, num(by[name][(s, 1.0)]["ms"])) for s in lengths if (s, 1.0) in by[name]]
        if pts:
            left.plot(*zip(*pts), "o-", label=f"{name} (dense)")
    sparse = sorted(m for m in by if m not in ("cudnn", "flash"))
    for name in sparse:
        pts = [(s, num(by[name][(s, 0.1)]["ms"])) for s in lengths if (s, 0.1) in by[name]]
        if pts:
            left.plot(*zip(*pts), "s--" if name.startswith("kernel") or name == "flex" else "x:", label=f"{name} @10%")
    left.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms (median)",
             title="32 q / 8 kv heads, D=128, bf16, causal prefill")
    left.legend(fontsize=7)

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(lengths):
        c = colors[i % len(colors)]
        for name, style in (("sample", "o-"), ("flex", "s--")):
            pts = sorted((d, num(r["cell_ratio"])) for (ss, d), r in by[name].items() if ss == s and r["cell_ratio"])
            if pts:
                mid.plot(*zip(*pts), style, color=c, label=f"{name} {s // 1024}K")
        if s in TARGETS:
            mid.axhline(TARGETS[s], color=c, ls=":", lw=1)
    mid.set(xscale="log", yscale="log", xlabel="density", ylabel="kernel ms / (density x cuDNN ms)",
            title="cost per computed cell (1.0 = cuDNN): sample's kernel (dispatched path)\nvs FlexAttention;"
                  " dotted: issue-14 targets")
    mid.legend(fontsize=7, ncol=2)

    top = max(lengths)
    names = [m for m in sparse if (top, 0.1) in by[m] and by[m][(top, 0.1)]["pattern_ms"]]
    pattern = [num(by[m][(top, 0.1)]["pattern_ms"]) for m in names]
    kernel = [num(by[m][(top, 0.1)]["kernel_ms"]) for m in names]
    right.bar(names, kernel, label="kernel (executing the pattern)")
    right.bar(names, pattern, bottom=kernel, label="pattern estimation")
    right.set(ylabel="ms", title=f"S={top}, density 10%")
    right.tick_params(axis="x", rotation=30)
    right.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/bench/attention_H200.csv")
