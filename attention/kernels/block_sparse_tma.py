"""Hopper path of the block-sparse kernel: the same tile lists and cell rule as block_sparse.py, every q, K and V
tile through a TMA descriptor over the tensors in place (hopper.matrix_of: head-major or transformers' [B, S, H, D]).

Where (batch b, head h, position s) sits: row b x rb + h x rh + s, column h x ch. Partial key tiles may reach rows
past the head's last key (the next head's or batch's rows, finite, or zeros past the tensor): their cells are
masked, so they add exp2(-inf) x finite = 0. Full tiles lie inside [0, Sk) by construction of the lists.
"""
import triton
import triton.language as tl

from attention.kernels.block_rule import partial_tile_keep, query_tile, store_rows, tile_list
from attention.kernels.sparse import NEG_INF
from attention.kernels.sparse_tma import _step_full, _step_masked


@triton.jit(do_not_specialize=["H", "GROUP", "Sq", "Sk", "q_off", "sink", "window", "block", "n_rows", "n_cols",
                               "n_qt", "n_kt", "qt0", "q_rb", "q_rh", "kv_rb", "kv_rh"])
def block_sparse_tma_kernel(
    desc_q, desc_k, desc_v, O, COUNTS, LISTS, BLOCKS,
    so_b, so_h, so_s, sl_b, sl_h, sb_b, sb_h, sb_r, q_rb, q_rh, q_ch, kv_rb, kv_rh, kv_ch,
    H, GROUP, Sq, Sk, q_off, sink, window, block, n_rows, n_cols, n_qt, n_kt, qt0, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_BLOCKS: tl.constexpr,
    ALIGNED: tl.constexpr, WARP_SPEC: tl.constexpr, F32: tl.constexpr,
):
    # this span's query tiles qt0 .. qt0 + n_qt - 1 (list rows 0 .. n_qt - 1); b, h 32-bit: TMA coordinates
    span_row, qt, b, h, hk, offs_m, row_ok, pos = query_tile(H, GROUP, Sq, q_off, qt0, BLOCK_M, False)
    offs_d = tl.arange(0, HEAD_D)
    # rows past Sq belong to the next head or batch, or lie past the tensor (zeros): never stored
    q = desc_q.load([b * q_rb + h * q_rh + qt * BLOCK_M, h * q_ch])
    kv_row = b * kv_rb + hk * kv_rh  # descriptor row of key 0 of this kv head, at column kv_col
    kv_col = hk * kv_ch
    n_full, n_part, entries = tile_list(COUNTS, LISTS, b, h, sl_b, sl_h, span_row, n_qt, n_kt)

    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    for i in tl.range(0, n_full, warp_specialize=WARP_SPEC):  # every causal cell kept: no mask
        start = tl.load(entries + i).to(tl.int32) * BLOCK_N
        k = desc_k.load([kv_row + start, kv_col])
        v = desc_v.load([kv_row + start, kv_col])
        acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)

    blocks_base = BLOCKS + b.to(tl.int64) * sb_b + h.to(tl.int64) * sb_h
    for i in range(0, n_part):  # the cell rule evaluated here
        start = tl.load(entries + n_kt - 1 - i).to(tl.int32) * BLOCK_N
        k = desc_k.load([kv_row + start, kv_col])
        v = desc_v.load([kv_row + start, kv_col])
        offs_n = start + tl.arange(0, BLOCK_N)
        keep = partial_tile_keep(pos, offs_n, start, q_off + qt * BLOCK_M, Sk, sink, window, blocks_base, sb_r, block,
                                 n_rows, n_cols, HAS_BLOCKS, ALIGNED)
        acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32)

    store_rows(O, acc, l_i, b, h, offs_m, offs_d, row_ok, so_b, so_h, so_s)
