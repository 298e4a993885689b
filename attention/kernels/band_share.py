"""Kept cells of MInference's executed pattern per (batch x head, 64-row query block), from the tiled kernel's own
block tile lists (band_tiles.block_tiles) and sorted columns: one launch, no [B*H, blocks, slots] temporaries.

attention.bands.BandPattern.kept_share needs the layer's kept share before it runs (the dense fallback decides on
it); its PyTorch form walks every run slot of every block in int64 temporaries (tens of ms at 128K). Here one
program per (block, batch x head) sums its tiles' causal cells in closed form, then its kept columns' cells except
those inside its tiles (the binary search the attention kernel uses), in int64.
"""
import torch
import triton
import triton.language as tl

from attention.kernels.band_tiles import BAND
from attention.kernels.bands_tiled import _covered


@triton.jit
def _ramp(x, lo, hi):
    """Causal cells of keys [lo, hi) in rows 0 .. x - 1 (int64): sum over i < x of clamp(i + 1 - lo, 0, hi - lo)."""
    width = tl.maximum(hi - lo, 0)
    y = tl.maximum(x - lo, 0)
    full = tl.maximum(y - width, 0)
    part = y - full
    return part * (part + 1) // 2 + full * width


@triton.jit(do_not_specialize=["q_off", "k_len", "m0", "n_rb", "blk_slots", "col_slots", "steps"])
def band_kept_cells_kernel(BLK_TILES, BLK_N, COLS, COL_HI, CELLS, q_off, k_len, m0, n_rb, blk_slots, col_slots,
                           steps, BAND: tl.constexpr, CHUNK: tl.constexpr, HAS_COLS: tl.constexpr):
    m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    block = bh * n_rb + m
    first = tl.maximum((m0 + m) * BAND, q_off).to(tl.int64)   # the block's first row (absolute)
    stop = tl.minimum((m0 + m + 1) * BAND, k_len).to(tl.int64)  # one past its last row
    offs = tl.arange(0, CHUNK)
    tiles = BLK_TILES + block * blk_slots
    n = tl.load(BLK_N + block)
    cells = tl.zeros([CHUNK], dtype=tl.int64)
    for i0 in range(0, n, CHUNK):
        ok = i0 + offs < n
        lo = tl.load(tiles + i0 + offs, mask=ok, other=0).to(tl.int64)
        hi = tl.minimum(lo + BAND, k_len)
        cells += tl.where(ok, _ramp(stop, lo, hi) - _ramp(first, lo, hi), 0)
    if HAS_COLS:  # sorted, repeats adjacent; [0, COL_HI) are at or before the block's last row
        c_hi = tl.load(COL_HI + block)
        for c0 in range(0, c_hi, CHUNK):
            slot = c0 + offs
            cols = tl.load(COLS + bh * col_slots + slot, mask=slot < c_hi, other=0)
            prev = tl.load(COLS + bh * col_slots + slot - 1, mask=(slot < c_hi) & (slot > 0), other=-1)
            ok = (slot < c_hi) & (cols != prev)
            ok &= ~_covered(tiles, n, cols, steps, BAND)
            c = cols.to(tl.int64)
            cells += tl.where(ok, stop - tl.maximum(c, first), 0)   # rows of the block at or after the column
    tl.store(CELLS + block, tl.sum(cells, axis=0))


def band_kept_cells(blk_tiles: torch.Tensor, blk_n: torch.Tensor, cols: torch.Tensor | None,
                    col_hi: torch.Tensor | None, q_len: int, k_len: int, m0: int) -> torch.Tensor:
    """int64 [B*H]: kept causal cells of each head's rows, from block_tiles' (tiles, count) for query blocks m0 ..
    and the sorted columns (int32 [B, H, C] from prepare_columns) with, per 64-row block, how many are at or before
    its last row (int32 [B, H, n_rb]); cols None: no columns."""
    rows, n_rb, blk_slots = blk_tiles.shape
    cells = torch.empty(rows, n_rb, dtype=torch.int64, device=blk_tiles.device)
    has_cols = cols is not None and cols.shape[-1] > 0
    dummy = torch.zeros(1, dtype=torch.int32, device=blk_tiles.device)
    band_kept_cells_kernel[(n_rb, rows)](
        blk_tiles, blk_n, cols if has_cols else dummy, col_hi if has_cols else dummy, cells,
        k_len - q_len, k_len, m0, n_rb, blk_slots, cols.shape[-1] if has_cols else 0,
        max(1, blk_slots.bit_length() + 1), BAND=BAND, CHUNK=64, HAS_COLS=has_cols, num_warps=2)
    return cells.sum(-1)
