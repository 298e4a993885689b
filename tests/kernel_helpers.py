"""Shared helpers for kernel and SampleAttention tests: random inputs with planted stripes, a bf16 PyTorch baseline."""
import torch

from attention.reference import expand_kv


def random_qkv(seq, heads, kv_heads, dim, dtype=torch.bfloat16, seed=0, stripes=0.0):
    """Random q/k/v (never zeros); stripes > 0 plants that share of keys as columns every query leans towards."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, seq, dim, generator=g)
    k = torch.randn(1, kv_heads, seq, dim, generator=g)
    v = torch.randn(1, kv_heads, seq, dim, generator=g)
    if stripes:
        u = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)
        q += 2.0 * u
        hot = torch.rand(1, kv_heads, seq, 1, generator=g) < stripes
        k += hot * 4.0 * dim ** 0.5 * u
    return q.to(dtype), k.to(dtype), v.to(dtype)


def bf16_torch_attention(q, k, v, keep, scale):
    """Plain PyTorch masked attention with bf16 operands and bf16 softmax: the error bar kernels must match."""
    kx, vx = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
    s = (q @ kx.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, -1)).to(q.dtype) @ vx


def rel_err(x, ref):
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def kernel_attention(q, k, v, pattern, scale, out=None):
    """The Triton sparse prefill kernel run on a SparsePattern's parts (the launcher takes tensors only)."""
    from attention.kernels.prefill import sparse_attention

    return sparse_attention(q, k, v, scale, sink=pattern.sink, window=pattern.window, columns=pattern.columns,
                            slashes=pattern.slashes, out=out)
