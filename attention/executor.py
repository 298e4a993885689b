"""Runs a SparsePattern: the shared executor every sparse method calls.

Where attention.backend picks Triton (CUDA by default) sink/window/column/slash patterns go to the kernel under
attention/kernels/; block patterns on CUDA go to FlexAttention (attention/flex_blocks.py); everything else runs
the fp32-exact PyTorch path below, chunked over query rows to bound memory.
"""
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
