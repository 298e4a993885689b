"""Runs a SparsePattern: the shared executor every sparse method calls.

Where attention.backend picks Triton (CUDA by default) sink/window/column/slash patterns go to the kernel under
attention/kernels/; block patterns on CUDA go to FlexAttention (attention/flex_blocks.py); everything else runs
the fp32-exact PyTorch path below, chunked over query rows to bound memory.
"""
import os

import torch

from attention.backend import triton_enabled
from attention.pattern import SparsePattern
from attention.reference import attention_probs, expand_kv

ROW_CHUNK = 512


def torch_pattern_attention(q, k, v, pattern: SparsePattern, scale: float) -> torch.Tensor:
    """Exact masked attention computed in fp32 over query-row chunks; output in q's dtype."""
    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    out = torch.empty_like(q)
    v_expanded = expand_kv(v.float(), heads)
    for start in range(0, q_len, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, q_len)
        keep = pattern.keep_mask(batch, heads, stop - start, k_len, q.device, q_start=k_len - q_len + start)
        probs = attention_probs(q[:, :, start:stop], k, keep, scale, causal=False)
        out[:, :, start:stop] = torch.einsum("bhqk,bhkd->bhqd", probs, v_expanded).to(q.dtype)
    return out


def run_pattern(q, k, v, pattern: SparsePattern, scale: float) -> torch.Tensor:
    if hasattr(pattern, "run"):  # a pattern with its own execution (attention/bands.py: MInference's runs)
        return pattern.run(q, k, v, scale)
    if pattern.blocks is None and triton_enabled(q.device) and q.shape[-1] in (16, 32, 64, 128, 256):
        from attention.kernels.prefill import sparse_attention  # imported lazily: triton is only needed here
        return sparse_attention(q, k, v, scale, sink=pattern.sink, window=pattern.window, columns=pattern.columns,
                                slashes=pattern.slashes)
    if pattern.blocks is not None and q.is_cuda:
        # block patterns (BigBird) run on compiled FlexAttention: as fast as our kernel at equal density
        from attention.flex_blocks import flex_block_attention, supports

        if supports(pattern):
            return flex_block_attention(q, k, v, pattern, scale)
    return torch_pattern_attention(q, k, v, pattern, scale)


# ---- dense fallback: when a sparse layer should run dense attention instead ----------------------------------
# The selected density above which the sparse path is predicted no faster than dense attention at that length,
# from the kernel benchmark (cuDNN dense vs stages + sparse kernel in one process; results/bench/NOTES.md, "never
# slower"): sparse / dense time ~= stages(L) + ratio(L) * density, so sparse pays while
# density < (1 - stages(L)) / ratio(L). Interpolated in log2(length); below the first length 0 (always dense),
# above the last the last. H100/H200, D=128, 32/8 heads, bf16; a method's `dense_above` option overrides it
# (-1 = this table, 0 = always dense, 1 = never). It applies where the Triton path runs (CUDA by default).
# Measured on an H200 (scratch run of 2026-11-26, results/bench/NOTES.md): at 16K/32K/64K/128K the fixed share
# (stages + kernel intercept) is 0.31/0.19/0.14/0.06 of cuDNN and the kernel costs 1.6/1.75/1.8/2.0 x density.
# 8K: not re-measured with the fused stages; the H100 kernel bench (v3) had sparse slower than cuDNN there.
DENSE_LIMITS: tuple[tuple[int, float], ...] = (
    (8192, 0.0),
    (16384, 0.43),
    (32768, 0.46),
    (65536, 0.47),
    (131072, 0.47),
)


def dense_limit(length: int, dense_above: float = -1.0) -> float:
    """Selected density above which dense is predicted faster at this length (dense_above >= 0 overrides)."""
    import math

    if dense_above >= 0:
        return dense_above
    if length <= DENSE_LIMITS[0][0]:
        return DENSE_LIMITS[0][1]
    for (l0, d0), (l1, d1) in zip(DENSE_LIMITS, DENSE_LIMITS[1:]):
        if length <= l1:
            t = (math.log2(length) - math.log2(l0)) / (math.log2(l1) - math.log2(l0))
            return d0 + t * (d1 - d0)
    return DENSE_LIMITS[-1][1]


def run_dense(density: float, length: int, dense_above: float = -1.0) -> bool:
    """True when a layer whose selected (or predicted) density is `density` should run dense attention."""
    limit = dense_limit(length, dense_above)
    return limit < 1.0 and density >= limit


def dense_attention(q, k, v, scale: float, backend: str = "cudnn") -> torch.Tensor:
    """Causal SDPA, the fallback's dense path: `backend` (cudnn, flash, efficient, auto) on CUDA, auto elsewhere."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION}.get(backend) if q.is_cuda else None
    if chosen in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION) and q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # these reject enable_gqa on some versions
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    with sdpa_kernel([chosen]) if chosen is not None else nullcontext():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                                enable_gqa=q.shape[1] != k.shape[1])


# ---- sampled columns in four launches (SampleAttention's column pattern on the Triton path) --------------------
_plans: dict = {}


def fused_columns_supported(q, k) -> bool:
    return triton_enabled(q.device) and q.shape[-1] in (16, 32, 64, 128, 256) and q.shape[2] <= k.shape[2]


def row_plan(key: tuple, rows_fn, q_len: int, k_len: int, head_dim: int, device):
    """Stage-1 rows as the kernels read them, built once per (key, shape) and reused by every layer."""
    from attention.kernels.scores import row_plan as build, scores_config

    full = (*key, q_len, k_len, head_dim, str(device), scores_config(head_dim))
    if full not in _plans:
        if len(_plans) > 64:
            _plans.clear()
        _plans[full] = build(rows_fn(), q_len, k_len, head_dim)
    return _plans[full]


def select_fused(q, k, scale: float, plan, *, sink: int, window: int, base: int, causal: int,
                 alpha: float | None = None, budget: float | None = None):
    """Stage 1 on a row plan + fused stage 2: (cols, col_full, col_hi, density [B, H]); three launches."""
    from attention.kernels.scores import sampled_scores
    from attention.kernels.select import block_m_for, select_columns

    col, _ = sampled_scores(q, k, scale, plan)
    return select_columns(col, sink=min(sink, k.shape[2]), window=window, q_len=q.shape[2],
                          block_m=block_m_for(q.shape[-1], q.shape[2]), base_cells=base, causal_cells=causal,
                          alpha=alpha, budget=budget)


def run_fused(q, k, v, scale: float, window: int, selected) -> torch.Tensor:
    """The sparse kernel over window + a select_fused result (sinks are in its column list): one launch on the
    portable kernel; with ATTN_SPARSE_PATH=tma the TMA kernel's own index preparation and gather come first."""
    from attention.kernels.select import block_m_for, column_attention

    cols, col_full, col_hi, _ = selected
    # the TMA kernel only when asked: in the whole model (random Llama-8B, 128K, density 0.1, H200) it was slower
    # than this path at the default 8% window (7.9 s vs 6.0 s) though faster at a 2.5% window (results/bench/NOTES.md)
    if os.environ.get("ATTN_SPARSE_PATH") == "tma":
        from attention.kernels.hopper import sparse_attention_tma

        return sparse_attention_tma(q, k, v, scale, window=window, columns=cols)
    return column_attention(q, k, v, scale, window=window, cols=cols, col_full=col_full, col_hi=col_hi,
                            block_m=block_m_for(q.shape[-1], q.shape[2]))
