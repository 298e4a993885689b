"""Runs a SparsePattern: the shared executor every sparse method calls.

On CUDA it dispatches to the Triton kernel under attention/kernels/ when it supports the pattern (sink, window,
columns, slashes; not block masks); elsewhere it runs the fp32-exact PyTorch path below, chunked over query rows
to bound memory. ATTENTION_BACKEND=triton (or use_backend("triton")) forces the kernel, e.g. on the CPU under
TRITON_INTERPRET=1 in tests; =torch forces the PyTorch path.
"""
import os
from contextlib import contextmanager

import torch

from attention.pattern import SparsePattern
from attention.reference import attention_probs, expand_kv

ROW_CHUNK = 512
_forced: list[str] = []


def backend() -> str:
    """'auto', 'triton' or 'torch': the innermost use_backend, else $ATTENTION_BACKEND, else auto."""
    return _forced[-1] if _forced else os.environ.get("ATTENTION_BACKEND", "auto")


@contextmanager
def use_backend(name: str):
    if name not in ("auto", "triton", "torch"):
        raise ValueError(f"backend {name!r} is not one of auto, triton, torch")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def triton_enabled(device: torch.device) -> bool:
    """Whether Triton kernels run for tensors on `device` under the current backend choice."""
    choice = backend()
    return choice == "triton" or (choice == "auto" and device.type == "cuda")


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
        from attention.kernels import sparse_attention  # imported lazily: triton is only needed here
        return sparse_attention(q, k, v, pattern, scale)
    if pattern.blocks is not None and q.is_cuda:
        # block patterns (BigBird) run on compiled FlexAttention: as fast as our kernel at equal density
        from attention.kernels.flex_blocks import flex_block_attention, supports

        if supports(pattern):
            return flex_block_attention(q, k, v, pattern, scale)
    return torch_pattern_attention(q, k, v, pattern, scale)
