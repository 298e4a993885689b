"""Block-sparse patterns (sink + window + kept blocks) on PyTorch FlexAttention block masks.

Chosen over a Triton kernel of our own by measurement (scripts/bench_attention.py / issue 4 note): FlexAttention
skips empty blocks, runs fully kept blocks without evaluating a mask, and only evaluates mask_mod on the
partial ones (the causal diagonal, window and sink edges). The BlockMask is built straight from block-level
tensors, never by evaluating mask_mod over all S x S positions (too slow at 128K).

On CUDA it runs compiled; elsewhere FlexAttention's eager path works too (slow, tests only); the
executor's exact PyTorch path remains the CPU default.
"""
import functools

import torch

from attention.pattern import SparsePattern


def supports(pattern: SparsePattern, q_len: int | None = None, k_len: int | None = None) -> bool:
    """True when the pattern is a block mask: no scattered columns or slashes, query blocks on block borders."""
    aligned = q_len is None or k_len is None or (k_len - q_len) % pattern.block == 0
    return pattern.columns is None and pattern.slashes is None and aligned


def block_tables(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device):
    """(partial, full) bool [B, H, nq, nk]: blocks with some / all of their cells kept (causal included)."""
    size = pattern.block
    n_q, n_k = -(-q_len // size), -(-k_len // size)
    offset = k_len - q_len  # queries are the last q_len positions
    q_first = torch.arange(n_q, device=device) * size + offset
    q_last = torch.clamp(q_first + size - 1, max=k_len - 1)
    k_first = torch.arange(n_k, device=device) * size
    k_last = torch.clamp(k_first + size - 1, max=k_len - 1)
    qf, ql, kf, kl = q_first[:, None], q_last[:, None], k_first[None, :], k_last[None, :]
    causal_any, causal_all = kf <= ql, kl <= qf
    sink_any, sink_all = kf < pattern.sink, kl < pattern.sink
    window_any, window_all = (qf - kl) < pattern.window, (ql - kf) < pattern.window
    kept = torch.zeros(batch, heads, n_q, n_k, dtype=torch.bool, device=device)
    if pattern.blocks is not None:
        # block rows count absolute query positions, like SparsePattern.keep_mask
        first_row = offset // size
        kept = kept | pattern.blocks.to(device)[:, :, first_row:first_row + n_q, :n_k]
    any_cell = causal_any & (sink_any | window_any | kept)
    all_cells = causal_all & (sink_all | window_all | kept)
    return any_cell & ~all_cells, all_cells


def _counts_and_indices(table: torch.Tensor):
    counts = table.sum(-1, dtype=torch.int32)
    # kept block indices first, in ascending order (stable sort of "not kept")
    indices = torch.sort((~table).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return counts, indices


def block_mask_of(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device):
    from torch.nn.attention.flex_attention import BlockMask

    partial, full = block_tables(pattern, batch, heads, q_len, k_len, device)
    blocks = pattern.blocks.to(device) if pattern.blocks is not None else None
    sink, window, size, offset = pattern.sink, pattern.window, pattern.block, k_len - q_len

    def mask_mod(b, h, q_idx, kv_idx):
        q_pos = q_idx + offset
        keep = (kv_idx < sink) | (q_pos - kv_idx < window)
        if blocks is not None:
            keep = keep | blocks[b if blocks.shape[0] > 1 else 0, h if blocks.shape[1] > 1 else 0,
                                 q_pos // size, kv_idx // size]
        return keep & (kv_idx <= q_pos)

    partial_counts, partial_indices = _counts_and_indices(partial)
    full_counts, full_indices = _counts_and_indices(full)
    return BlockMask.from_kv_blocks(partial_counts, partial_indices, full_counts, full_indices,
                                    BLOCK_SIZE=size, mask_mod=mask_mod, seq_lengths=(q_len, k_len))


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def flex_block_attention(q, k, v, pattern: SparsePattern, scale: float, compiled: bool | None = None):
    """Causal attention of q [B, Hq, Sq, D] over k/v [B, Hkv, Sk, D] restricted to the pattern."""
    from torch.nn.attention.flex_attention import flex_attention

    batch, heads, q_len, _ = q.shape
    if not supports(pattern, q_len, k.shape[2]):
        raise ValueError("flex_block_attention runs sink/window/block patterns only, queries block-aligned")
    mask = block_mask_of(pattern, batch, heads, q_len, k.shape[2], q.device)
    compiled = q.is_cuda if compiled is None else compiled
    run = _compiled_flex() if compiled else flex_attention
    return run(q, k, v, block_mask=mask, scale=scale, enable_gqa=heads != k.shape[1])
