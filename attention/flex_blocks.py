"""Block-sparse patterns (sink + window + kept blocks) on PyTorch FlexAttention block masks.

Since 2026-12-03 the executor runs block patterns on our Triton kernel (attention/kernels/block_sparse.py: two
launches per layer, where this path builds a BlockMask and passes dynamo's guards, ~190 launches per layer at 16K);
this path remains for what the kernel does not take (head dims it does not compile, the torch backend on CUDA)
and as the comparison the benchmarks keep. The first choice, by measurement (results/bench/v1, H100, 32 heads, bf16):
random 128x128 block masks at 128K ran at 1.45 / 1.64 / 1.38 x density x cuDNN dense time for densities
0.05 / 0.1 / 0.2 (18.7 / 42.4 / 71.3 ms vs 258 ms), and our Triton sparse kernel, at equal density on its own
column pattern, was no faster (0.79-0.99x flex's speed): a new kernel has little to win.
FlexAttention skips empty tiles, runs fully kept tiles without a mask and evaluates mask_mod only on partial
ones (the causal diagonal, window and sink edges, finer pattern blocks).
The BlockMask is built from block-level tables, never by evaluating mask_mod over all S x S positions.
Tiles are 128 tokens whatever the pattern's block: compiled with 64-token blocks it failed on an H100
(torch 2.11); smaller or unaligned pattern blocks are resolved by mask_mod inside partial tiles.

On CUDA it runs compiled; elsewhere FlexAttention's eager path works too (slow, tests only); the
executor's exact PyTorch path remains the CPU default.
"""
import functools

import torch

from attention.pattern import SparsePattern


TILE = 128  # the block mask's granularity: torch 2.11's compiled kernel failed on H100 with 64-token blocks


def supports(pattern: SparsePattern) -> bool:
    """True when the pattern is a block mask: no scattered columns or slashes."""
    return pattern.columns is None and pattern.slashes is None


def _kept_block_counts(blocks: torch.Tensor, size: int, q_first, q_last, k_first, k_last):
    """(kept, overlapped) pattern blocks per (query tile, key tile), by a summed-area table of the block table."""
    n_rows, n_cols = blocks.shape[-2:]
    area = torch.nn.functional.pad(blocks.int().cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    r0, r1 = (q_first // size).clamp(max=n_rows - 1)[:, None], (q_last // size).clamp(max=n_rows - 1)[:, None] + 1
    c0, c1 = (k_first // size)[None, :], (k_last // size)[None, :] + 1
    kept = area[..., r1, c1] - area[..., r0, c1] - area[..., r1, c0] + area[..., r0, c0]
    return kept, (r1 - r0) * (c1 - c0)


def block_tables(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device, tile: int = TILE):
    """(partial, full) bool [B, H, nq, nk] over tile x tile blocks: tiles that may hold kept cells (mask_mod
    decides there), and tiles whose every causal cell is kept (run without a mask).

    Any tile with a kept cell is partial or full; a full tile has all its cells kept. Positions are absolute
    (queries are the last q_len of k_len), so tiles need not line up with the pattern's blocks.
    """
    n_q, n_k = -(-q_len // tile), -(-k_len // tile)
    q_first = torch.arange(n_q, device=device) * tile + (k_len - q_len)
    q_last = torch.clamp(q_first + tile - 1, max=k_len - 1)
    k_first = torch.arange(n_k, device=device) * tile
    k_last = torch.clamp(k_first + tile - 1, max=k_len - 1)
    qf, ql, kf, kl = q_first[:, None], q_last[:, None], k_first[None, :], k_last[None, :]
    causal_any, causal_all = kf <= ql, kl <= qf
    sink_any, sink_all = kf < pattern.sink, kl < pattern.sink
    window_any, window_all = (qf - kl) < pattern.window, (ql - kf) < pattern.window
    blocks_any = blocks_all = torch.zeros(1, 1, 1, 1, dtype=torch.bool, device=device)
    if pattern.blocks is not None:
        kept, overlapped = _kept_block_counts(pattern.blocks.to(device), pattern.block, q_first, q_last,
                                              k_first, k_last)
        blocks_any, blocks_all = kept > 0, kept == overlapped
    any_cell = causal_any & (sink_any | window_any | blocks_any)
    all_cells = causal_all & (sink_all | window_all | blocks_all)
    return (any_cell & ~all_cells).expand(batch, heads, n_q, n_k), all_cells.expand(batch, heads, n_q, n_k)


def _counts_and_indices(table: torch.Tensor):
    counts = table.sum(-1, dtype=torch.int32)
    # kept block indices first, in ascending order (stable sort of "not kept")
    indices = torch.sort((~table).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return counts, indices


def block_mask_of(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device, tile: int = TILE):
    from torch.nn.attention.flex_attention import BlockMask

    partial, full = block_tables(pattern, batch, heads, q_len, k_len, device, tile)
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
                                    BLOCK_SIZE=tile, mask_mod=mask_mod, seq_lengths=(q_len, k_len))


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def flex_block_attention(q, k, v, pattern: SparsePattern, scale: float, compiled: bool | None = None,
                         tile: int = TILE):
    """Causal attention of q [B, Hq, Sq, D] over k/v [B, Hkv, Sk, D] restricted to the pattern."""
    from torch.nn.attention.flex_attention import flex_attention

    batch, heads, q_len, _ = q.shape
    if not supports(pattern):
        raise ValueError("flex_block_attention runs sink/window/block patterns only (no columns or slashes)")
    mask = block_mask_of(pattern, batch, heads, q_len, k.shape[2], q.device, tile)
    compiled = q.is_cuda if compiled is None else compiled
    run = _compiled_flex() if compiled else flex_attention
    return run(q, k, v, block_mask=mask, scale=scale, enable_gqa=heads != k.shape[1])
