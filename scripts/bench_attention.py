"""Attention kernel benchmark on one GPU, in one process: dense SDPA (cuDNN, flash), FlexAttention with a random
block mask of equal density, SampleAttention stages 1+2, its sparse kernel, and both together.

  PYTHONPATH=. python scripts/bench_attention.py --lengths 8192,32768,131072 --densities 0.05,0.1,0.2,0.5

Times are CUDA-event medians after warm-up (triton.testing.do_bench, L2 flushed between runs). Inputs are random
bf16 with planted key stripes; fixed densities come from SampleAttention's density budget with a window of a
quarter of the budget. Add a method by adding an entry to METHODS: name -> (kind, factory(case) -> callable).
The peers (minference, flexprefill, xattention) get three rows each: whole prefill, pattern estimation alone
(_stages) and executor alone (_kernel), at each density solved by their own `density=` budget.
"""
import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.executor import run_pattern  # noqa: E402
from attention.registry import build_method  # noqa: E402


@dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    seq_len: int
    density: float | None
    scale: float
    cache: dict = field(default_factory=dict)  # per-length objects shared between methods (expanded kv)


def planted_inputs(seq_len, heads, kv_heads, dim, seed=0, stripes=0.01):
    """Random bf16 q/k/v where ~1% of keys are stripes every query leans towards (shared direction u)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(1, heads, seq_len, dim, device="cuda", generator=g)
    k = torch.randn(1, kv_heads, seq_len, dim, device="cuda", generator=g)
    v = torch.randn(1, kv_heads, seq_len, dim, device="cuda", generator=g)
    u = torch.nn.functional.normalize(torch.randn(dim, device="cuda", generator=g), dim=0)
    q += 2.0 * u
    hot = torch.rand(1, kv_heads, seq_len, 1, device="cuda", generator=g) < stripes
    k += hot * 30.0 * u
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


def expanded(case):
    if "kv" not in case.cache:
        groups = case.q.shape[1] // case.k.shape[1]
        case.cache["kv"] = (case.k.repeat_interleave(groups, 1), case.v.repeat_interleave(groups, 1))
    return case.cache["kv"]


def sdpa(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    chosen = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]

    def factory(case):
        k, v = expanded(case)  # these backends take equal head counts; expansion stays outside the timing

        def call():
            with sdpa_kernel([chosen]):
                return torch.nn.functional.scaled_dot_product_attention(case.q, k, v, is_causal=True, scale=case.scale)
        return call
    return factory


_flex = None


def random_block_mask(seq_len, heads, density, block=128, seed=0, device="cuda"):
    """Causal BlockMask keeping the diagonal block plus random lower blocks so kept/causal blocks ~= density."""
    from torch.nn.attention.flex_attention import BlockMask
    n = triton.cdiv(seq_len, block)
    g = torch.Generator(device=device).manual_seed(seed)
    qb = torch.arange(n, device=device)[:, None]
    kb = torch.arange(n, device=device)[None, :]
    below = kb < qb
    extra = max(0.0, (density * n * (n + 1) / 2 - n) / max(1, n * (n - 1) / 2))
    full = below & (torch.rand(1, heads, n, n, device=device, generator=g) < extra)
    full_num = full.sum(-1).to(torch.int32)
    full_idx = torch.where(full, kb, n).sort(-1).values
    full_idx = torch.where(full_idx < n, full_idx, 0).to(torch.int32)  # unused slots: any valid index
    diag_num = torch.ones(1, heads, n, dtype=torch.int32, device=device)
    diag_idx = torch.zeros(1, heads, n, n, dtype=torch.int32, device=device)
    diag_idx[..., 0] = torch.arange(n, device=device, dtype=torch.int32)

    kept = full | (kb == qb)

    def causal(b, h, q_idx, kv_idx):  # the compiled kernel calls it on diagonal blocks only; eager on all cells
        return (q_idx >= kv_idx) & kept[0, h, q_idx // block, kv_idx // block]
    return BlockMask.from_kv_blocks(diag_num, diag_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=causal,
                                    seq_lengths=(seq_len, seq_len))


def flex(case):
    global _flex
    from torch.nn.attention.flex_attention import flex_attention
    if _flex is None:
        _flex = torch.compile(flex_attention, dynamic=False)
    mask = random_block_mask(case.seq_len, case.q.shape[1], case.density)
    return lambda: _flex(case.q, case.k, case.v, block_mask=mask, scale=case.scale, enable_gqa=True)


def sample_method(case):
    key = ("sample", case.density)
    if key not in case.cache:
        opts = {"density": str(case.density), "r_w": str(case.density / 4), "r_row": "0.05"}
        case.cache[key] = build_method("sample", opts)
    return case.cache[key]


def sample_stages(case):
    method = sample_method(case)
    return lambda: method.build_pattern(case.q, case.k, case.scale)


def sample_kernel(case):
    method = sample_method(case)
    pattern = method.build_pattern(case.q, case.k, case.scale)
    return lambda: run_pattern(case.q, case.k, case.v, pattern, case.scale)


def sample_total(case):
    method = sample_method(case)

    def call():
        method.stats.clear()
        return method.prefill(case.q, case.k, case.v, case.scale)
    return call


def sample_adaptive(case):
    """SampleAttention at its defaults (alpha=0.95, r_w=0.08): the density is whatever the inputs call for."""
    method = case.cache.setdefault(("sample", None), build_method("sample"))

    def call():
        method.stats.clear()
        return method.prefill(case.q, case.k, case.v, case.scale)
    return call


def baseline(name):
    """A baseline method's whole prefill (pattern + executor) at the case's density; h2o: dense + its scoring."""
    def factory(case):
        opts = {"density": str(case.density)} if case.density is not None else {}
        method = case.cache.setdefault((name, case.density), build_method(name, opts))

        def call():
            method.stats.clear()
            return method.prefill(case.q, case.k, case.v, case.scale)
        return call
    return factory


PEERS = ("minference", "flexprefill", "xattention")


def peer_method(name, case):
    opts = {"density": str(case.density)} if case.density is not None else {}
    return case.cache.setdefault((name, case.density), build_method(name, opts))


def peer_stages(name):
    """A peer's pattern estimation alone (scores, selection and the per-layer density solve)."""
    def factory(case):
        method = peer_method(name, case)
        return lambda: method.build_pattern(case.q, case.k, case.scale)
    return factory


def peer_kernel(name):
    """A peer's pattern on the executor alone (our Triton kernel or FlexAttention), pattern built once."""
    def factory(case):
        pattern = peer_method(name, case).build_pattern(case.q, case.k, case.scale)
        return lambda: run_pattern(case.q, case.k, case.v, pattern, case.scale)
    return factory


def peer_density(name, case):
    method = peer_method(name, case)
    method.stats.clear()
    method.prefill(case.q, case.k, case.v, case.scale)
    return float(method.stats[-1]["density"].mean())


# name -> (kind, factory(case) -> zero-argument callable to time). kind: "dense" (one row per length),
# "fixed" (one row per requested density), "adaptive" (one row per length, density measured).
METHODS = {
    "cudnn": ("dense", sdpa("cudnn")),
    "flash": ("dense", sdpa("flash")),
    "flex": ("fixed", flex),
    "sample_stages": ("fixed", sample_stages),
    "sample_kernel": ("fixed", sample_kernel),
    "sample": ("fixed", sample_total),
    "sample_adaptive": ("adaptive", sample_adaptive),
    "bigbird": ("fixed", baseline("bigbird")),      # FlexAttention block mask on CUDA
    "streaming": ("fixed", baseline("streaming")),  # sink + window on the SampleAttention kernel
    "h2o": ("dense", baseline("h2o")),              # dense prefill + fused column-score kernel
    **{f"{peer}{part}": ("fixed", make(peer)) for peer in PEERS
       for part, make in (("", baseline), ("_stages", peer_stages), ("_kernel", peer_kernel))},
}


def measured_density(case):
    """Density the sample method reached on this case (mean over heads)."""
    method = sample_method(case) if case.density is not None else case.cache[("sample", None)]
    method.stats.clear()
    method.prefill(case.q, case.k, case.v, case.scale)
    return float(method.stats[-1]["density"].mean())


def bench(fn, warmup_ms, rep_ms):
    return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def real_model_rows(path, gpu, warmup_ms, rep_ms):
    """SampleAttention at its defaults on q/k/v captured from a real model (scripts/capture_qk.py): adaptive density."""
    data = torch.load(path)
    rows = []
    for layer, t in sorted(data["layers"].items()):
        q, k, v = (t[x].cuda() for x in ("q", "k", "v"))
        case = Case(q, k, v, q.shape[2], None, t["scale"], {})
        dense_ms = bench(sdpa("cudnn")(case), warmup_ms, rep_ms)
        for name, opts in (("sample_real", {}), ("sample_real_slash", {"pattern": "column_slash"}),
                           ("sample_real_block64", {"granularity": "64"})):
            method = build_method("sample", opts)

            def call():
                method.stats.clear()
                return method.prefill(q, k, v, case.scale, layer)
            ms = bench(call, warmup_ms, rep_ms)
            real = float(method.stats[-1]["density"].mean())
            label = f"{name}:{data['model']}:L{layer}:H{q.shape[1]}/{k.shape[1]}:D{q.shape[3]}"
            rows.append({"gpu": gpu, "method": label, "seq_len": q.shape[2], "density": round(real, 4),
                         "measured_density": real, "ms": ms, "speedup_vs_cudnn": dense_ms / ms,
                         "speedup_vs_flash": "", "speedup_vs_flex": ""})
            print(f"{label:40s} density {real:.3f} {ms:.3f} ms (cudnn {dense_ms:.3f} ms)", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="8192,32768,131072")
    ap.add_argument("--densities", default="0.05,0.1,0.2,0.5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--warmup-ms", type=float, default=100)
    ap.add_argument("--rep-ms", type=float, default=500)
    ap.add_argument("--qk", help="q/k/v captured by scripts/capture_qk.py: adds adaptive-density rows")
    ap.add_argument("--out", default=os.environ.get("OUT", "results/bench"))
    args = ap.parse_args(argv)
    gpu = torch.cuda.get_device_name().replace("NVIDIA ", "").replace(" ", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"attention_{gpu}.csv"
    names = [m for m in args.methods.split(",") if m]
    rows = []
    for seq_len in (int(x) for x in args.lengths.split(",") if x):
        q, k, v = planted_inputs(seq_len, args.heads, args.kv_heads, args.dim)
        base = {}
        shared = {}
        for name in names:
            kind, factory = METHODS[name]
            dense = kind == "dense"
            for density in ([None] if kind != "fixed" else [float(x) for x in args.densities.split(",")]):
                case = Case(q, k, v, seq_len, density, 1 / math.sqrt(args.dim), shared)
                ms = bench(factory(case), args.warmup_ms, args.rep_ms)
                peer = name.split("_")[0]
                real = (measured_density(case) if name.startswith("sample") else
                        peer_density(peer, case) if peer in PEERS else (density or 1.0))
                row = {"gpu": gpu, "method": name, "seq_len": seq_len,
                       "density": 1.0 if dense else (density if density is not None else round(real, 4)),
                       "measured_density": real, "ms": ms}
                if dense:
                    base[name] = ms
                if name == "flex":
                    base[("flex", density)] = ms
                rows.append(row)
                print(f"{name:14s} S={seq_len:7d} density={row['density']:.2f} (measured {row['measured_density']:.3f})"
                      f" {ms:9.3f} ms", flush=True)
        shared.clear()
        for row in rows:
            if row["seq_len"] != seq_len:
                continue
            for ref, col in (("cudnn", "speedup_vs_cudnn"), ("flash", "speedup_vs_flash")):
                row[col] = base[ref] / row["ms"] if ref in base else ""
            flex_ms = base.get(("flex", row["density"]))
            row["speedup_vs_flex"] = flex_ms / row["ms"] if flex_ms and row["method"] != "flex" else ""
        del q, k, v
        torch.cuda.empty_cache()
    if args.qk:
        rows += real_model_rows(args.qk, gpu, args.warmup_ms, args.rep_ms)
    fields = ["gpu", "method", "seq_len", "density", "measured_density", "ms", "speedup_vs_cudnn", "speedup_vs_flash",
              "speedup_vs_flex"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
