"""The block-sparse cell rule on one partial key tile, shared by the portable and the Hopper block-sparse kernels.

A cell (query at absolute position i, key j) is kept when j <= i, j < Sk, and j < sink, or i - j < window, or the
pattern block (i // block, j // block) is kept. ALIGNED: the tile lies inside one pattern block, so one entry of
the block table decides the whole tile; otherwise the table is read per cell.
"""
import triton
import triton.language as tl


@triton.jit
def partial_tile_keep(pos, offs_n, start, tile_first, Sk, sink, window, blocks_base, sb_r, block, n_rows, n_cols,
                      HAS_BLOCKS: tl.constexpr, ALIGNED: tl.constexpr):
    """bool [BLOCK_M, BLOCK_N]: which cells of the key tile at `start` (keys offs_n) the query rows `pos` keep;
    tile_first = the absolute position of the tile's first query row."""
    diff = pos[:, None] - offs_n[None, :]
    live = (diff >= 0) & (offs_n < Sk)[None, :]
    keep = (offs_n[None, :] < sink) | (diff < window)
    if HAS_BLOCKS:
        if ALIGNED:  # the tile lies inside one pattern block: one entry decides it
            br = tl.minimum(tile_first // block, n_rows - 1)
            bc = tl.minimum(start // block, n_cols - 1)
            hit = tl.load(blocks_base + br.to(tl.int64) * sb_r + bc).to(tl.int32)
            keep = keep | ((diff * 0 + hit) != 0)
        else:
            br = tl.minimum(pos // block, n_rows - 1)
            bc = tl.minimum(offs_n // block, n_cols - 1)
            hit = tl.load(blocks_base + br[:, None].to(tl.int64) * sb_r + bc[None, :], mask=live, other=0)
            keep = keep | (hit != 0)
    return keep & live
