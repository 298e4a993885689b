"""Runs a SparsePattern: the shared executor every sparse method calls. It knows no method.

Where attention.backend picks Triton (CUDA by default) sink/window/column/slash patterns go to the kernel under
attention/kernels/ (prefill.py) and sink/window/block patterns to the block-sparse kernel (block_sparse.py); other
block patterns on CUDA go to FlexAttention (attention/flex_blocks.py); everything else runs the fp32-exact
PyTorch path below, chunked over query rows to bound memory. `dense_attention` is the dense
fallback's path and `split_heads` runs some query heads dense and the rest on any sparse path.
"""
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attention.backend import triton_enabled
from attention.kernels.config import HEAD_DIMS
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


def pattern_path(q, pattern: SparsePattern) -> str:
    """Which path run_pattern takes for these queries: 'own' (the pattern runs itself), 'sparse' (column/slash
    kernel), 'block' (block-sparse kernel), 'flex' (compiled FlexAttention) or 'torch' (exact PyTorch)."""
    if hasattr(pattern, "run"):  # a pattern with its own execution (attention/bands.py: MInference's runs)
        return "own"
    kernel = triton_enabled(q.device) and q.shape[-1] in HEAD_DIMS
    scattered = pattern.columns is not None or pattern.slashes is not None
    if kernel and pattern.blocks is None:
        return "sparse"
    if kernel and not scattered:
        return "block"  # BigBird, FlexPrefill, XAttention: tile lists built on the GPU, no host sync
    if pattern.blocks is not None and q.is_cuda and not scattered:
        return "flex"  # blocks at a head dim the kernels do not compile, or the torch backend on CUDA
    return "torch"


def run_pattern(q, k, v, pattern: SparsePattern, scale: float) -> torch.Tensor:
    path = pattern_path(q, pattern)
    if path == "own":
        return pattern.run(q, k, v, scale)
    if path == "sparse":
        from attention.kernels.prefill import sparse_attention  # imported lazily: triton is only needed here
        return sparse_attention(q, k, v, scale, sink=pattern.sink, window=pattern.window, columns=pattern.columns,
                                slashes=pattern.slashes)
    if path == "block":
        from attention.kernels.block_sparse import block_sparse_attention
        return block_sparse_attention(q, k, v, scale, sink=pattern.sink, window=pattern.window,
                                      blocks=pattern.blocks, block=pattern.block)
    if path == "flex":
        from attention.flex_blocks import flex_block_attention
        return flex_block_attention(q, k, v, pattern, scale)
    return torch_pattern_attention(q, k, v, pattern, scale)


def dense_attention(q, k, v, scale: float, backend: str = "cudnn") -> torch.Tensor:
    """Causal SDPA, the fallback's dense path: `backend` (cudnn, flash, efficient, auto) on CUDA, auto elsewhere."""
    chosen = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION}.get(backend) if q.is_cuda else None
    if chosen in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION) and q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # these reject enable_gqa on some versions
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    with sdpa_kernel([chosen]) if chosen is not None else nullcontext():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                                enable_gqa=q.shape[1] != k.shape[1])


def pattern_heads(pattern: SparsePattern, heads: torch.Tensor) -> SparsePattern:
    """The pattern of the query heads `heads` only (per-head tensors indexed; broadcast ones kept)."""
    def pick(x):
        return x if x is None or x.shape[1] == 1 else x.index_select(1, heads.to(x.device))
    return SparsePattern(sink=pattern.sink, window=pattern.window, columns=pick(pattern.columns),
                         slashes=pick(pattern.slashes), blocks=pick(pattern.blocks), block=pattern.block)


def split_heads(q, k, v, scale: float, dense: list[bool], run_sparse, backend: str = "cudnn") -> torch.Tensor:
    """Query heads marked dense through dense_attention, the others through run_sparse(q, k, v, heads) on their
    own q and kv heads expanded to one per query head (heads: long tensor of the query heads it gets)."""
    group = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    for want, run in ((True, lambda qs, ks, vs, h: dense_attention(qs, ks, vs, scale, backend)),
                      (False, run_sparse)):
        chosen = [h for h, d in enumerate(dense) if d == want]  # from the host: no sync
        if chosen:
            heads = torch.tensor(chosen, device=q.device)
            kv = heads // group
            out[:, heads] = run(q[:, heads], k[:, kv], v[:, kv], heads)
    return out
