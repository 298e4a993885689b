"""The peers' kernels under real CUDA (the CI runs them interpreted on the CPU): MInference's band kernels (the old
one and the tiled one in each configuration, on both paths) against fp32 masked attention, its run builder against
the PyTorch one, its tile builder against the official tile lists, the fused XAttention estimate against the plain
version, FlexPrefill's fused estimate (attention/kernels/flex_estimate.py) against its unfused and PyTorch paths,
and the peers' masks at their defaults against the official fixtures. Prints one line per check, exit 1
on any failure.

  PYTHONPATH=. python scripts/check_peers_gpu.py
  PYTHONPATH=. python scripts/check_peers_gpu.py --only-flexprefill   # FlexPrefill's checks and the fixtures
"""
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attention.bands as bands_module  # noqa: E402
import attention.methods.xattention as xattention_module  # noqa: E402
from attention.backend import use_backend  # noqa: E402
from attention.bands import BandPattern, band_runs_torch  # noqa: E402
from attention.kernels.band_tiles import block_tiles  # noqa: E402
from attention.kernels.bands import band_attention, band_runs  # noqa: E402
from attention.kernels.bands_tiled import BandConfig, band_tiled_attention  # noqa: E402
from attention.kernels.config import override, tma_supported  # noqa: E402
from attention.kernels.estimate_xattention import xattention_tile_scores  # noqa: E402
from attention.kernels.select_xattention import select_tiles_fused  # noqa: E402
from attention.methods.xattention import antidiagonal_tile_scores, first_chunk_rows, rank_tiles, select_tiles  # noqa: E402
from attention.reference import reference_attention  # noqa: E402
from attention.registry import build_method  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "peer_official_masks.pt"
failed = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        failed.append(name)


def plain_attention(q, k, v, keep, scale):
    """Masked attention in plain PyTorch at the inputs' precision (bf16 matmuls; TF32 for fp32, as tl.dot)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        scores = (q @ k.transpose(-1, -2)) * scale
        probs = torch.softmax(scores.float().masked_fill(~keep, float("-inf")), -1).to(q.dtype)
        return probs @ v
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def bands(q_len, k_len, dim, dtype):
    g = torch.Generator(device="cuda").manual_seed(dim + q_len)
    q = torch.randn(1, 8, q_len, dim, device="cuda", generator=g).to(dtype)
    k = torch.randn(1, 2, k_len, dim, device="cuda", generator=g).to(dtype)
    v = torch.randn(1, 2, k_len, dim, device="cuda", generator=g).to(dtype)
    offsets = torch.randint(0, k_len, (1, 8, 300), device="cuda", generator=g)
    offsets[..., :100] = torch.arange(100, device="cuda")
    columns = torch.randint(0, k_len, (1, 8, 200), device="cuda", generator=g)
    columns[..., :30] = torch.arange(30, device="cuda")
    m0 = (k_len - q_len) // 64
    got, want = band_runs(offsets, 1, 8, k_len, m0), band_runs_torch(offsets, 1, 8, k_len, m0)
    used = torch.arange(got[0].shape[-1], device="cuda") < got[2][..., None]
    check(f"band runs {q_len}/{k_len}", torch.equal(got[2], want[2]) and torch.equal(got[0][used], want[0][used])
          and torch.equal(got[1][used], want[1][used]))
    pattern = BandPattern(columns=columns, band_offsets=offsets)
    keep = pattern.keep_mask(1, 8, q_len, k_len, "cuda")
    out = band_attention(q, k, v, dim ** -0.5, offsets, columns)
    ref = reference_attention(q.float(), k.float(), v.float(), keep, dim ** -0.5)
    low = plain_attention(q, k, v, keep, dim ** -0.5)
    err, base = (out.float() - ref).abs().max().item(), (low.float() - ref).abs().max().item()
    check(f"band attention {q_len}/{k_len} D{dim} {dtype}", not out.isnan().any() and err <= max(2 * base, 1e-4),
          f"err {err:.2e} (plain {dtype} {base:.2e}) density {keep.float().mean().item():.3f}")
    for config in (BandConfig(64, False, 4, 3), BandConfig(64, True, 4, 3), BandConfig(128, False, 4, 2)):
        for use_tma in (False, True) if tma_supported(q) else (False,):
            out = band_tiled_attention(q, k, v, dim ** -0.5, offsets, columns, config=config, use_tma=use_tma)
            err = (out.float() - ref).abs().max().item()
            check(f"band tiled {config} {'tma' if use_tma else 'portable'} {q_len}/{k_len} D{dim} {dtype}",
                  not out.isnan().any() and err <= max(2 * base, 1e-4), f"err {err:.2e} (plain {dtype} {base:.2e})")


def xattention(q_len, k_len, dim, stride):
    g = torch.Generator(device="cuda").manual_seed(dim)
    q = torch.randn(1, 8, q_len, dim, device="cuda", generator=g).bfloat16()
    k = torch.randn(1, 2, k_len, dim, device="cuda", generator=g).bfloat16()
    got = xattention_tile_scores(q, k, dim ** -0.5, stride, 128)
    want = antidiagonal_tile_scores(q, k, dim ** -0.5, stride, 128)
    err = (got - want).abs().max().item()
    check(f"xattention estimate {q_len}/{k_len} D{dim} S{stride}", err < 2e-3 * want.abs().max().item(),
          f"max err {err:.2e} of {want.abs().max().item():.2e}")
    first_rows = first_chunk_rows(q_len, k_len, 128)
    for threshold in (0.5, 0.8, 0.95):
        fused = select_tiles_fused(got, threshold, first_rows)
        plain = select_tiles(rank_tiles(got, first_rows), threshold)
        differ = int((fused != plain).sum())  # only cells whose held mass is within rounding of the threshold
        check(f"xattention selection {q_len}/{k_len} t{threshold}", differ <= 1e-4 * plain.numel(),
              f"{differ} of {plain.numel()} cells differ")


def flexprefill_fused(q_len, k_len, dim, options):
    """The fused chain against the unfused Triton path and the PyTorch path on the same q/k. Cells may differ only
    where a running sum lies within rounding of gamma (the paths sum in other orders: fp32 scans on CUDA, fp64 in
    the fused cut); a density= solve may then land one bisection step apart."""
    g = torch.Generator(device="cuda").manual_seed(q_len + dim)
    q = (torch.randn(1, 8, q_len, dim, device="cuda", generator=g) * 2).bfloat16()
    k = torch.randn(1, 2, k_len, dim, device="cuda", generator=g).bfloat16()
    runs = {}
    for label, backend, fused in (("fused", "auto", True), ("unfused", "auto", False), ("torch", "torch", True)):
        method = build_method("flexprefill", options)
        with use_backend(backend), override(flex_fused=fused):
            blocks = method.build_pattern(q, k, dim ** -0.5).blocks
        runs[label] = (blocks, method.knobs["query_aware"].float().cpu(), float(method.knobs["gamma"]))
    assert build_method("flexprefill", options).fused(q, k)
    blocks, aware, gamma = runs["fused"]
    for label in ("unfused", "torch"):
        other, other_aware, other_gamma = runs[label]
        differ = int((blocks != other).sum())
        # a count one entry apart moves at most a grid tile, or a whole tile column / diagonal where it crosses a
        # multiple of the block (budget = tokens // block + 1): two of those at most; a bug differs by far more
        ok = differ <= max(1e-4 * blocks.numel(), 2 * blocks.shape[-1]) and torch.equal(aware, other_aware)
        if "density" in options:  # the same solve, or one step of 1/4096 apart when a share sits on the target
            ok = torch.equal(aware, other_aware) and abs(gamma - other_gamma) <= 1 / 4096
        check(f"flexprefill fused vs {label} {q_len}/{k_len} D{dim} {options}", ok,
              f"{differ} of {blocks.numel()} cells differ, gamma {gamma} vs {other_gamma}")


def fixtures():
    data = torch.load(FIXTURE)
    q, k, scale = data["q"].float().cuda(), data["k"].float().cuda(), data["scale"]
    for case in ("default_3000", "default_2048"):
        c = data["xattention"]["cases"][case]
        n = c["length"]
        blocks = build_method("xattention", {}).build_pattern(q[:, :, :n], k[:, :, :n], scale).blocks[0].cpu()
        check(f"xattention official {case}", torch.equal(blocks, c["blocks"]), f"diff {(blocks != c['blocks']).sum()}")
    for case in ("default_3000", "default_2100"):
        c = data["flexprefill"]["cases"][case]
        n = c["length"]
        blocks = build_method("flexprefill", {}).build_pattern(q[:, :, :n], k[:, :, :n], scale).blocks[0].cpu()
        check(f"flexprefill official {case}", torch.equal(blocks, c["blocks"]), f"diff {(blocks != c['blocks']).sum()}")
    c = data["minference"]["cases"]["config_sparse_3000"]
    n = c["length"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(c["config"]["best_pattern"], f)
    pattern = build_method("minference", {"config": f.name}).build_pattern(q[:, :, :n], k[:, :, :n], scale)
    lo, hi, count = band_runs(pattern.band_offsets, 1, q.shape[1], n)
    ok = True
    for h, head in enumerate(c["heads"]):
        for block, starts in enumerate(head["bands"]):
            ours = [t for r in range(int(count[h, block])) for t in range(int(lo[h, block, r]), int(hi[h, block, r]), 64)]
            ok &= ours == starts.tolist()
    check("minference official runs config_sparse_3000", ok)
    tiles, count = block_tiles(pattern.band_offsets, 1, q.shape[1], n)
    same = all(tiles[h, block, :int(count[h, block])].tolist() == starts.tolist()
               for h, head in enumerate(c["heads"]) for block, starts in enumerate(head["bands"]))
    check("minference official tiles config_sparse_3000", same)


def long_prompt_paths(length=16384, heads=14, kv_heads=2, dim=64, device="cuda"):
    """What runs past 128K on smaller tables, at a real size: MInference's kept share from the tiled kernel's block
    lists against its PyTorch closed form, its per-span run against the one-span run, XAttention's estimate in head
    chunks against the whole layer."""
    gen = torch.Generator(device=device).manual_seed(length)
    q = torch.randn(1, heads, length, dim, device=device, dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, kv_heads, length, dim, device=device, dtype=torch.bfloat16, generator=gen)
    v = torch.randn_like(k)
    scale = 1 / math.sqrt(dim)
    pattern = build_method("minference", {}).build_pattern(q, k, scale)
    on_lists = pattern.kept_share(1, heads, length, length, q.device)
    on_runs = BandPattern(columns=pattern.columns.cpu(), band_offsets=pattern.band_offsets.cpu()).kept_share(
        1, heads, length, length, torch.device("cpu"))
    err = float((on_lists.cpu() - on_runs).abs().max())
    check(f"minference kept share on block lists {length} H={heads}/{kv_heads}", err <= 1e-6, f"max diff {err:.1e}")
    whole = pattern.run(q, k, v, scale)
    saved = bands_module.SPAN_BYTES
    blocks = -(-length // 64)
    slots = min(blocks, pattern.band_offsets.shape[-1] + 1)
    bands_module.SPAN_BYTES = heads * slots * 4 * max(2, blocks // 4)  # about four spans
    try:
        spans = len(bands_module.query_spans(1, heads, length, length, pattern.band_offsets.shape[-1]))
        split = BandPattern(columns=pattern.columns, band_offsets=pattern.band_offsets).run(q, k, v, scale)
    finally:
        bands_module.SPAN_BYTES = saved
    err = float((split.float() - whole.float()).abs().max())
    check(f"minference run in {spans} spans = one span {length}", spans > 1 and err == 0, f"max diff {err:.1e}")
    n = -(-length // 128)
    want = xattention_module.estimated_tiles(q, k, scale, 16, 128, 0.9, first_chunk_rows(length, length, 128))
    saved = xattention_module.ESTIMATE_BYTES
    xattention_module.ESTIMATE_BYTES = 2 * n * n * 4 * 2  # two heads per chunk
    try:
        got = xattention_module.estimated_tiles(q, k, scale, 16, 128, 0.9, first_chunk_rows(length, length, 128))
    finally:
        xattention_module.ESTIMATE_BYTES = saved
    differ = int((got != want).sum())
    check(f"xattention estimate in head chunks = whole {length} H={heads}/{kv_heads}", differ == 0 and want.any(),
          f"{differ} of {want.numel()} tiles differ")


if __name__ == "__main__":
    only_flex = sys.argv[1:] == ["--only-flexprefill"]  # the FlexPrefill checks and the official fixtures alone
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    for args in () if only_flex else ((2048, 2048, 128, torch.bfloat16), (1000, 3000, 64, torch.bfloat16),
                                      (777, 777, 64, torch.float32)):
        bands(*args)
    for args in () if only_flex else ((4096, 4096, 128, 16), (3000, 5000, 64, 8)):
        xattention(*args)
    for args in ((8192, 8192, 128, {}), (5000, 7000, 64, {}), (8192, 8192, 128, {"density": "0.1"}),
                 (6100, 6100, 64, {"density": "0.3", "tau": "0.3"})):
        flexprefill_fused(*args)
    fixtures()
    if not only_flex:
        long_prompt_paths()
    print("all ok" if not failed else f"FAILED: {failed}")
    sys.exit(1 if failed else 0)
