"""Attention benchmark on one GPU, in one process: dense SDPA (cuDNN, flash), FlexAttention with a random block mask
of equal density, every registered sparse method, and the sparse kernel's two paths on SampleAttention's pattern.

  PYTHONPATH=. python scripts/bench_attention.py --lengths 8192,32768,131072 --densities 0.05,0.1,0.2,0.5
  PYTHONPATH=. python scripts/bench_attention.py --shapes 128:32:8,64:14:2 --lengths 32768,131072 \
      --densities 0.05,0.1,0.2,0.5 --methods sample          # issue 23's kernel rows, D=128 and D=64

Rows per length: cudnn, flash, flex; block-<path> (our block-sparse kernel on flex's random blocks on each kernel
path, its tile lists built inside each timed call); kernel-<path> (SampleAttention's pattern through run_pattern on that path),
fused-<path> (the fused route's kernel alone on stage 2's output: the product path's kernel), and per method
the whole prefill (ms) exactly as `sampleattn run` executes it, fallback included (prefill_path, limits), at
each density and once at its defaults (<name>@defaults).

Methods come from the registry (attention.registry.available_methods): every method with `sparse = True` gets a row
per density when its config has a `density` option (one row per length otherwise, at its defaults). A method that
builds a SparsePattern (SparseMethod) is timed in two parts: pattern_ms (build_pattern: estimating the pattern)
and kernel_ms (run_pattern: executing it); ms is the whole prefill. Others (h2o: dense prefill + scoring) get
ms only. FlexAttention's pattern_ms is building its BlockMask. Methods without a fast path (reference-only
plans) are skipped with a note. Extra options per method (SampleAttention: window a quarter of the budget) are in
EXTRA_OPTIONS.

The peers (PEERS) also get a row at their defaults per length and head dim (--dims 64,128), with estimate_share =
pattern_ms / cuDNN dense ms, estimate_launches / estimate_syncs (CUDA kernels and host syncs of one build_pattern,
from the profiler and torch's sync-debug mode) and `published`, the paper's own speed figure with its GPU.

cell_ratio = kernel_ms / (measured density x cuDNN dense ms): 1.0 means cuDNN's throughput per computed cell
(issue 14's target). Times are CUDA-event medians after warm-up (triton.testing.do_bench, L2 flushed between
runs); inputs are random bf16 with planted key stripes.
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import sample_fused  # noqa: E402
from attention.executor import pattern_path, run_pattern  # noqa: E402
from attention.kernels.config import kernel_settings, override, sparse_path, tma_supported  # noqa: E402
from attention.method import SparseMethod  # noqa: E402
from attention.pattern import SparsePattern  # noqa: E402
from attention.methods.sample import fused_supported  # noqa: E402
from attention.registry import available_methods, build_method  # noqa: E402

# the peers: also timed at their defaults (one row per length and head dim), beside the published figure
PEERS = ("minference", "flexprefill", "xattention", "bigbird")
# each paper's own speed figure, marked with its GPU and where it is stated (no figure of ours is comparable 1:1:
# their models, lengths and baselines differ; it is here so a reader sees both)
PUBLISHED = {
    "minference": "up to 10x pre-filling at 1M tokens vs FlashAttention-2, one A100-80G (arXiv 2407.02490 abstract; "
                  "README: 2.9x at 128K with the SGLang/vLLM kernel, GPU not stated)",
    "flexprefill": "no single speed figure located in the sources searched (arXiv 2502.20766)",
    "xattention": "up to 13.5x attention computation (arXiv 2503.16428 abstract; GPU of that figure not located)",
    "bigbird": "no GPU prefill figure (a pattern, 2020)",
}
# extra string options per method at density d (beside density=d)
EXTRA_OPTIONS = {"sample": lambda d: {"r_w": str(d / 4), "r_row": "0.05"}}
SKIP = {"oracle-topk": "reference path only (fp32, chunked): never a speed candidate"}
FIELDS = ["gpu", "head_dim", "heads", "kv_heads", "method", "seq_len", "density", "measured_density", "kernel_path",
          "prefill_path", "limits", "pattern_ms", "kernel_ms", "ms", "estimate_share", "estimate_launches",
          "estimate_syncs", "cell_ratio", "speedup_vs_cudnn", "speedup_vs_flash", "kernel_speedup_vs_flex",
          "published", "commit", "torch", "triton", "kernel_settings"]


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


def random_blocks(seq_len, heads, density, block=128, seed=0, device="cuda"):
    """bool [1, H, n, n]: the diagonal block plus random lower blocks so kept/causal blocks ~= density."""
    n = triton.cdiv(seq_len, block)
    g = torch.Generator(device=device).manual_seed(seed)
    qb = torch.arange(n, device=device)[:, None]
    kb = torch.arange(n, device=device)[None, :]
    extra = max(0.0, (density * n * (n + 1) / 2 - n) / max(1, n * (n - 1) / 2))
    return ((kb < qb) & (torch.rand(1, heads, n, n, device=device, generator=g) < extra)) | (kb == qb)


def random_block_mask(seq_len, heads, density, block=128, seed=0, device="cuda"):
    """Causal BlockMask of random_blocks: the diagonal blocks masked, the others full."""
    from torch.nn.attention.flex_attention import BlockMask
    kept = random_blocks(seq_len, heads, density, block, seed, device)
    n = kept.shape[-1]
    kb = torch.arange(n, device=device)[None, :]
    full = kept & (kb < torch.arange(n, device=device)[:, None])
    full_num = full.sum(-1).to(torch.int32)
    full_idx = torch.where(full, kb, n).sort(-1).values
    full_idx = torch.where(full_idx < n, full_idx, 0).to(torch.int32)  # unused slots: any valid index
    diag_num = torch.ones(1, heads, n, dtype=torch.int32, device=device)
    diag_idx = torch.zeros(1, heads, n, n, dtype=torch.int32, device=device)
    diag_idx[..., 0] = torch.arange(n, device=device, dtype=torch.int32)

    def causal(b, h, q_idx, kv_idx):  # the compiled kernel calls it on diagonal blocks only; eager on all cells
        return (q_idx >= kv_idx) & kept[0, h, q_idx // block, kv_idx // block]
    return BlockMask.from_kv_blocks(diag_num, diag_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=causal,
                                    seq_lengths=(seq_len, seq_len))


def block_kernel(case):
    """Our block-sparse kernel (through run_pattern) on the same random blocks as the flex row."""
    pattern = SparsePattern(blocks=random_blocks(case.seq_len, case.q.shape[1], case.density), block=128)
    return lambda: run_pattern(case.q, case.k, case.v, pattern, case.scale)


def flex(case):
    global _flex
    from torch.nn.attention.flex_attention import flex_attention
    if _flex is None:
        _flex = torch.compile(flex_attention, dynamic=False)
    mask = random_block_mask(case.seq_len, case.q.shape[1], case.density)
    return lambda: _flex(case.q, case.k, case.v, block_mask=mask, scale=case.scale, enable_gqa=True)


def sparse_runner(case, name, opts):
    """(callable executing method `name`'s pattern on the case, the pattern); the pattern is built once."""
    method = build_method(name, opts)
    pattern = method.build_pattern(case.q, case.k, case.scale)
    return (lambda: run_pattern(case.q, case.k, case.v, pattern, case.scale)), pattern


def has_density(cls) -> bool:
    return any(f.name == "density" for f in dataclasses.fields(cls.Config))


def sparse_methods(wanted: list[str] | None):
    """Registered sparse methods to bench (all of them unless `wanted` names some), minus SKIP with a note."""
    chosen = {}
    for name, cls in sorted(available_methods().items()):
        if not getattr(cls, "sparse", False) or (wanted is not None and name not in wanted):
            continue
        if name in SKIP:
            print(f"skip {name}: {SKIP[name]}", flush=True)
            continue
        chosen[name] = cls
    return chosen


def bench(fn, warmup_ms, rep_ms):
    return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def method_row(case, name, cls, density, warmup_ms, rep_ms):
    """Time one method at one density (None = its defaults): pattern, kernel and whole prefill."""
    opts = {}
    if density is not None:
        opts = {"density": str(density), **EXTRA_OPTIONS.get(name, lambda d: {})(density)}
    method = build_method(name, opts)
    row = {"method": name, "density": density}
    if isinstance(method, SparseMethod):
        pattern = method.build_pattern(case.q, case.k, case.scale)
        row["estimate_launches"], row["estimate_syncs"] = launches_and_syncs(
            lambda: method.build_pattern(case.q, case.k, case.scale))
        row["pattern_ms"] = bench(lambda: method.build_pattern(case.q, case.k, case.scale), warmup_ms, rep_ms)
        row["kernel_ms"] = bench(lambda: run_pattern(case.q, case.k, case.v, pattern, case.scale), warmup_ms, rep_ms)
        path = pattern_path(case.q, pattern)
        row["kernel_path"] = {"own": "bands", "sparse": sparse_path(case.q, case.seq_len),
                              "block": f"block-{sparse_path(case.q, case.seq_len)}"}.get(path, path)
        row["measured_density"] = float(method.density(pattern, case.q, case.k).mean())

    def prefill():
        method.stats.clear()
        return method.prefill(case.q, case.k, case.v, case.scale)
    row["ms"] = bench(prefill, warmup_ms, rep_ms)  # the whole prefill: what `sampleattn run` executes
    if method.stats and "path" in method.stats[-1]:
        row["prefill_path"] = method.stats[-1]["path"]
        row["limits"] = method.stats[-1].get("limits", "")
    if "measured_density" not in row:
        stat = method.stats[-1].get("density", density) if method.stats else density
        row["measured_density"] = float(torch.as_tensor(stat, dtype=torch.float32).mean())
    return row


def kernels_and_syncs(fn) -> tuple[list, int]:
    """(the profiler's CUDA kernel events, host syncs) of one call of fn; syncs from torch's sync-debug warnings.
    scripts/bench_ttft.py counts through this too."""
    import warnings

    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught, profile(activities=[ProfilerActivity.CUDA]) as prof:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return kernels, sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def launches_and_syncs(fn) -> tuple[int, int]:
    """(CUDA kernel launches, host syncs) of one call."""
    kernels, syncs = kernels_and_syncs(fn)
    return len(kernels), syncs


def kernel_path_rows(case, density, paths, warmup_ms, rep_ms):
    """SampleAttention's pattern at this density on each kernel path explicitly (kernel only)."""
    opts = {"density": str(density), **EXTRA_OPTIONS["sample"](density)}
    method = build_method("sample", opts)
    pattern = method.build_pattern(case.q, case.k, case.scale)
    real = float(method.density(pattern, case.q, case.k).mean())
    rows = []
    for path in paths:
        with override(sparse_path=path):
            ms = bench(lambda: run_pattern(case.q, case.k, case.v, pattern, case.scale), warmup_ms, rep_ms)
            # the fused route on the same path: stage 2's list and ranges straight into the kernel (kernel only)
            selected, window = method.stages(case.q, case.k, case.scale)
            needed = selected.needed().tolist()
            fused = real_fused = None
            if fused_supported(case.q, case.k):
                fused = bench(lambda: sample_fused.attend(case.q, case.k, case.v, case.scale, window, selected,
                                                          needed), warmup_ms, rep_ms)
                real_fused = float(selected.density.mean())
        rows.append({"method": f"kernel-{path}", "density": density, "measured_density": real, "kernel_path": path,
                     "kernel_ms": ms, "ms": ms})
        if fused is not None:
            rows.append({"method": f"fused-{path}", "density": density, "measured_density": real_fused,
                         "kernel_path": path, "kernel_ms": fused, "ms": fused})
    return rows


def finish(rows, gpu, seq_len, base, dim=None):
    """Fill the derived columns of one length's rows against that length's cuDNN / flash / flex times."""
    for row in rows:
        row.update(gpu=gpu, seq_len=seq_len, head_dim=dim, published=PUBLISHED.get(row["method"], ""))
        if row.get("pattern_ms") and "cudnn" in base:
            row["estimate_share"] = row["pattern_ms"] / base["cudnn"]
        if row["density"] is None:
            row["density"] = round(row["measured_density"], 4)
        for ref, col in (("cudnn", "speedup_vs_cudnn"), ("flash", "speedup_vs_flash")):
            row[col] = base[ref] / row["ms"] if ref in base else ""
        kernel = row.get("kernel_ms")
        dens = row.get("measured_density")
        row["cell_ratio"] = kernel / (dens * base["cudnn"]) if kernel and dens and "cudnn" in base else ""
        flex_ms = base.get(("flex", row["density"]))
        row["kernel_speedup_vs_flex"] = flex_ms / kernel if flex_ms and kernel and row["method"] != "flex" else ""
    return rows


# (row name, method, options) timed on captured q/k: SampleAttention's variants, each peer at its defaults (its
# dense fallback deciding) and with dense_above=1 (its own sparse path, whatever the limits say)
REAL_MODEL_METHODS = (("sample_real", "sample", {}), ("sample_real_slash", "sample", {"pattern": "column_slash"}),
                      ("sample_real_block64", "sample", {"granularity": "64"}),
                      *((f"{peer}_real{suffix}", peer, opts) for peer in ("minference", "flexprefill", "xattention")
                        for suffix, opts in (("", {}), ("_raw", {"dense_above": "1"}))))


def real_model_rows(path, gpu, warmup_ms, rep_ms):
    """SampleAttention and the peers at their defaults on q/k/v captured from a real model (scripts/capture_qk.py):
    adaptive density, on the real model's shape."""
    data = torch.load(path)
    rows = []
    for layer, t in sorted(data["layers"].items()):
        q, k, v = (t[x].cuda() for x in ("q", "k", "v"))
        case = Case(q, k, v, q.shape[2], None, t["scale"], {})
        dense_ms = bench(sdpa("cudnn")(case), warmup_ms, rep_ms)
        for name, spec, opts in REAL_MODEL_METHODS:
            method = build_method(spec, opts)

            def call():
                method.stats.clear()
                return method.prefill(q, k, v, case.scale, layer)
            ms = bench(call, warmup_ms, rep_ms)
            last = method.stats[-1]
            real = float(torch.as_tensor(last["density"]).float().mean())
            fallback = last.get("dense_fallback", "")
            label = f"{name}:{data['model']}:L{layer}:H{q.shape[1]}/{k.shape[1]}:D{q.shape[3]}"
            rows.append({"gpu": gpu, "method": label, "seq_len": q.shape[2], "density": round(real, 4),
                         "measured_density": real, "ms": ms, "speedup_vs_cudnn": dense_ms / ms})
            print(f"{label:48s} density {real:.3f} {ms:.3f} ms (cudnn {dense_ms:.3f} ms, {dense_ms / ms:.2f}x)"
                  f"{' dense fallback: ' + str(fallback) if fallback else ''}", flush=True)
    return rows


GROUP = ("gpu", "head_dim", "heads", "kv_heads", "seq_len")  # a re-measured (shape, length) replaces its rows


def write(path, rows):
    """The csv with this run's rows: every (gpu, shape, length) group measured now replaces that group's old rows;
    the other groups' rows stay (a run of one length or shape, or one cut short, keeps the rest of the file)."""
    def group(row):
        return tuple(str(row.get(k, "")) for k in GROUP)
    fresh = {group(r) for r in rows}
    old = []
    if Path(path).exists():
        with open(path, newline="") as f:
            old = [r for r in csv.DictReader(f) if group(r) not in fresh]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old + rows)


def show(row):
    def fmt(key, spec):
        value = row.get(key)
        return format(value, spec) if isinstance(value, float) else "-"
    print(f"{row['method']:16s} S={row['seq_len']:7d} d={row['density']:<6} real {fmt('measured_density', '.3f')}"
          f" pattern {fmt('pattern_ms', '8.3f')} kernel {fmt('kernel_ms', '8.3f')} total {fmt('ms', '9.3f')} ms"
          f" cell {fmt('cell_ratio', '5.2f')} vs flex {fmt('kernel_speedup_vs_flex', '5.2f')}", flush=True)


def targets(rows) -> None:
    """Issue 23's targets beside what was measured (benchmark output, never asserted)."""
    print("\ntargets (not asserted):")
    for r in rows:
        dim, seq, method = r.get("head_dim"), r["seq_len"], r["method"]
        if method.startswith("fused-") and r.get("cell_ratio") != "" and seq in (32768, 131072):
            need = 1.0 if seq == 131072 else 1.2
            print(f"  D={dim} S={seq} {method} d={r['density']}: cell ratio {r['cell_ratio']:.2f} (<= {need})")
        if method == "sample" and seq == 131072 and r["density"] == 0.1 and r.get("speedup_vs_cudnn") != "":
            print(f"  D={dim} S={seq} whole sample d=0.1: {r['speedup_vs_cudnn']:.2f}x cuDNN (>= 6)")
        if method == "sample" and seq == 131072 and r.get("pattern_ms") and "estimate_share" in r:
            print(f"  D={dim} S={seq} sample d={r['density']}: stages {r['estimate_share']:.3f} of cuDNN (<= 0.05)")


def shapes_of(args) -> list[tuple[int, int, int]]:
    """(head dim, query heads, kv heads) to bench: --shapes "128:32:8,64:14:2", else --dim/--heads/--kv-heads."""
    if not args.shapes:
        dims = [int(d) for d in args.dims.split(",") if d] if args.dims else [args.dim]
        return [(dim, args.heads, args.kv_heads) for dim in dims]
    out = []
    for part in args.shapes.split(","):
        dim, heads, kv = (int(x) for x in part.split(":"))
        out.append((dim, heads, kv))
    return out


def provenance() -> dict:
    commit = os.environ.get("SAMPLEATTN_GIT_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    return {"commit": commit, "torch": torch.__version__, "triton": triton.__version__,
            "kernel_settings": json.dumps(kernel_settings(), sort_keys=True)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="8192,32768,131072")
    ap.add_argument("--densities", default="0.05,0.1,0.2,0.5")
    ap.add_argument("--methods", help="comma list of registered sparse methods (default: all)")
    ap.add_argument("--paths", default="tma,portable", help="kernel paths to time on the sample pattern ('' = none)")
    ap.add_argument("--shapes", help='head_dim:heads:kv_heads list, e.g. "128:32:8,64:14:2" (Llama-8B, Qwen2.5-0.5B)')
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dims", help="comma list of head dims, each with --heads/--kv-heads (or use --shapes)")
    ap.add_argument("--no-flex", action="store_true", help="skip the FlexAttention rows (compiles per shape)")
    ap.add_argument("--warmup-ms", type=float, default=100)
    ap.add_argument("--rep-ms", type=float, default=400)
    ap.add_argument("--qk", help="q/k/v captured by scripts/capture_qk.py: adds adaptive-density rows")
    ap.add_argument("--out", default=os.environ.get("OUT", "results/bench"))
    args = ap.parse_args(argv)
    gpu = torch.cuda.get_device_name().replace("NVIDIA ", "").replace(" ", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"attention_{gpu}.csv"
    methods = sparse_methods(args.methods.split(",") if args.methods else None)
    densities = [float(x) for x in args.densities.split(",") if x]
    paths = [p for p in args.paths.split(",") if p]
    if "tma" in paths and not tma_supported(torch.empty(1, device="cuda")):
        paths.remove("tma")
    stamp = provenance()
    rows = []
    for dim, heads, kv_heads in shapes_of(args):
        for seq_len in (int(x) for x in args.lengths.split(",") if x):
            length_rows = bench_length(args, seq_len, dim, heads, kv_heads, methods, densities, paths)
            rows += [{**row, "head_dim": dim, "heads": heads, "kv_heads": kv_heads, **stamp}
                     for row in finish(length_rows[1], gpu, seq_len, length_rows[0], dim)]
            write(path, rows)  # after every length: a run cut short keeps what it measured
            torch.cuda.empty_cache()
    if args.qk:
        rows += real_model_rows(args.qk, gpu, args.warmup_ms, args.rep_ms)
        write(path, rows)
    targets(rows)
    print(f"wrote {path}")


def bench_length(args, seq_len, dim, heads, kv_heads, methods, densities, paths):
    """(cuDNN / flash / flex base times, rows) of one length and shape."""
    q, k, v = planted_inputs(seq_len, heads, kv_heads, dim)
    shared = {}
    scale = 1 / math.sqrt(dim)
    base, length_rows = {}, []

    def add(row):
        length_rows.append(row)
        show({**row, "seq_len": seq_len, "density": row["density"] if row["density"] is not None else "-"})

    print(f"-- D={dim} heads {heads}/{kv_heads} S={seq_len}", flush=True)
    for name in ("cudnn", "flash"):
        ms = bench(sdpa(name)(Case(q, k, v, seq_len, None, scale, shared)), args.warmup_ms, args.rep_ms)
        base[name] = ms
        add({"method": name, "density": 1.0, "measured_density": 1.0, "kernel_ms": ms, "ms": ms})
    shared.clear()  # expanded kv: only the dense backends need it
    for density in densities:
        case = Case(q, k, v, seq_len, density, scale, shared)
        if not args.no_flex:
            mask_ms = bench(lambda: random_block_mask(seq_len, heads, density), args.warmup_ms, args.rep_ms)
            ms = bench(flex(case), args.warmup_ms, args.rep_ms)
            base[("flex", density)] = ms
            add({"method": "flex", "density": density, "measured_density": density, "kernel_path": "flex",
                 "pattern_ms": mask_ms, "kernel_ms": ms, "ms": ms + mask_ms})
        for path in paths or [sparse_path(q, seq_len)]:  # tile lists included: built in every timed call
            with override(sparse_path=path):
                ms = bench(block_kernel(case), args.warmup_ms, args.rep_ms)
            add({"method": f"block-{path}", "density": density, "measured_density": density,
                 "kernel_path": f"block-{path}", "kernel_ms": ms, "ms": ms})
        for row in kernel_path_rows(case, density, paths, args.warmup_ms, args.rep_ms) if paths else []:
            add(row)
        for name, cls in methods.items():
            if has_density(cls):
                add(method_row(case, name, cls, density, args.warmup_ms, args.rep_ms))
    for name, cls in methods.items():  # every method at its defaults (sample: adaptive alpha; the peers beside
        case = Case(q, k, v, seq_len, None, scale, shared)  # their published figure)
        row = method_row(case, name, cls, None, args.warmup_ms, args.rep_ms)
        add({**row, "method": name if not has_density(cls) or name in PEERS else f"{name}@defaults"})
    return base, length_rows


if __name__ == "__main__":
    main()
