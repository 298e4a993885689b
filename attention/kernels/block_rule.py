"""What the portable and the Hopper block-sparse kernels share: the program's query tile and its tile list, the
cell rule on one partial key tile, and the output rows' store. Triton inlines these helpers: each kernel compiles
to the SASS it had when they were written out in both (checked offline for sm_90).

A cell (query at absolute position i, key j) is kept when j <= i, j < Sk, and j < sink, or i - j < window, or the
pattern block (i // block, j // block) is kept. ALIGNED: the tile lies inside one pattern block, so one entry of
the block table decides the whole tile; otherwise the table is read per cell.
"""
import triton
import triton.language as tl


@triton.jit
def query_tile(H, GROUP, Sq, q_off, qt0, BLOCK_M: tl.constexpr, WIDE: tl.constexpr):
    """(span_row, qt, b, h, hk, offs_m, row_ok, pos) of this program: its list row in the span (the last query
    tiles first: they have the most work), query tile, batch, head, kv head, query rows, which of them are < Sq,
    and their absolute positions. WIDE: b, h, hk 64-bit (they feed pointer offsets), else 32-bit (TMA
    coordinates)."""
    span_row = tl.num_programs(0) - 1 - tl.program_id(0)
    qt = qt0 + span_row
    bh = tl.program_id(1)
    if WIDE:
        bh = bh.to(tl.int64)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = qt * BLOCK_M + tl.arange(0, BLOCK_M)
    return span_row, qt, b, h, hk, offs_m, offs_m < Sq, q_off + offs_m


@triton.jit
def tile_list(COUNTS, LISTS, b, h, sl_b, sl_h, span_row, n_qt, n_kt):
    """(n_full, n_part, entries) of the program's list row (sl_*: 0 where the lists are shared across batch or
    heads): full key tiles from entries[0] on, partial ones from entries[n_kt - 1] backwards."""
    list_row = (b.to(tl.int64) * sl_b + h.to(tl.int64) * sl_h) * n_qt + span_row
    return tl.load(COUNTS + list_row * 2), tl.load(COUNTS + list_row * 2 + 1), LISTS + list_row * n_kt


@triton.jit
def store_rows(O, acc, l_i, b, h, offs_m, offs_d, row_ok, so_b, so_h, so_s):
    """The normalised output rows of the tile, in O's dtype; rows past Sq are never stored."""
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # a row with nothing allowed outputs zero, as the reference does
    out = acc / l_safe[:, None]
    tl.store(O + b.to(tl.int64) * so_b + h.to(tl.int64) * so_h + offs_m[:, None].to(tl.int64) * so_s
             + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None])


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
