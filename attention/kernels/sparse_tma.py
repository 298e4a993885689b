"""Hopper path of the sparse prefill kernel: every K/V tile comes through a TMA tensor descriptor.

Same function as sparse.py (sink + window + columns + slashes, causal, grouped-query heads read in place), but
each query head's columns were gathered beforehand (attention/kernels/gather.py: sorted, repeats dropped, sinks
included) into a contiguous run of rows of a gather buffer with descriptors of its own; q, K and V are read in
place through descriptors over their own layout (hopper.matrix_of: head-major [B, H, S, D] or transformers'
[B, S, H, D]), so nothing is copied but the kept columns. Where (batch b, head h, position s) sits in a layout:
row b x rb + h x rh + s, column h x ch. Each query block walks four loops (each drains and refills the software
pipeline once; the column and window parts read different descriptors):

  unmasked: column tiles every row of the block may use; window tiles every row sees whole
            (scale folded after the row max, one exp2 per cell, P@V accumulated in place)
  masked:   the column tail (slot's key position checked per row: row - key >= window); the window's low edge
            and the diagonal (0 <= row - key < window)

Masked tiles may cover rows past the last column or past the head's last key: gather.py keeps those finite.
Slashes reuse the portable kernel's gathered loop.
"""
import triton
import triton.language as tl

from attention.kernels.sparse import NEG_INF, dot, slash_part


@triton.jit
def _dot_acc(a, b, acc, F32: tl.constexpr):
    if F32:  # the CPU interpreter has no bf16 math (see sparse.dot)
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)


@triton.jit
def _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32: tl.constexpr):
    # every cell allowed: at least one finite score per row, so m_new is finite
    s = dot(q, tl.trans(k), F32)
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _dot_acc(p.to(v.dtype), v, acc * alpha[:, None], F32)
    return acc, m_new, l_i


@triton.jit
def _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32: tl.constexpr):
    # masked cells exp2(-inf) = 0; a row with nothing allowed so far keeps m = -inf without NaN
    s = tl.where(keep, dot(q, tl.trans(k), F32) * qk_scale, NEG_INF)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _dot_acc(p.to(v.dtype), v, acc * alpha[:, None], F32)
    return acc, m_new, l_i


# lengths and offsets vary per call: specialising on them would compile a variant per shape
@triton.jit(do_not_specialize=["H", "GROUP", "HK", "Sq", "Sk", "col_slots", "q_off", "window", "n_qb", "delta_slots",
                               "q_rb", "q_rh", "kv_rb", "kv_rh"])
def sparse_tma_kernel(
    desc_q, desc_k, desc_v, desc_kc, desc_vc, O, COLPOS, COL_FULL, COL_HI,
    K, V, DELTAS, N_DELTA, COLHIT, DIAGHIT,
    so_b, so_h, so_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
    q_rb, q_rh, q_ch, kv_rb, kv_rh, kv_ch,
    H, GROUP, HK, Sq, Sk, col_slots, q_off, window, n_qb, delta_slots, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_COLS: tl.constexpr, HAS_SLASH: tl.constexpr, WARP_SPEC: tl.constexpr, F32: tl.constexpr,
):
    qb = tl.num_programs(0) - 1 - tl.program_id(0)  # the last query blocks have the most work: start them first
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_m < Sq
    pos = q_off + offs_m  # absolute key position of each query
    offs_d = tl.arange(0, HEAD_D)
    # rows past Sq belong to the next head or batch, or lie past the tensor (zeros): never stored
    q = desc_q.load([b * q_rb + h * q_rh + qb * BLOCK_M, h * q_ch])
    kv_row = b * kv_rb + hk * kv_rh  # descriptor row of key 0 of this kv head, at column kv_col
    kv_col = hk * kv_ch
    c_row = bh * col_slots
    p_first = q_off + qb * BLOCK_M
    p_last = tl.minimum(p_first + BLOCK_M - 1, q_off + Sq - 1)

    # tile counts of the five parts (columns: whole tiles below COL_FULL, then the tail up to COL_HI)
    n_cfull = 0
    n_ctail = 0
    if HAS_COLS:
        c_full = tl.load(COL_FULL + bh.to(tl.int64) * n_qb + qb)
        c_hi = tl.load(COL_HI + bh.to(tl.int64) * n_qb + qb)
        n_cfull = c_full // BLOCK_N
        n_ctail = tl.maximum(tl.cdiv(c_hi, BLOCK_N) - n_cfull, 0)
    win_lo = (tl.maximum(p_first - window + 1, 0) // BLOCK_N) * BLOCK_N
    full_lo = tl.cdiv(tl.maximum(p_last - window + 1, 0), BLOCK_N) * BLOCK_N
    full_hi = tl.maximum((p_first + 1) // BLOCK_N * BLOCK_N, full_lo)
    n_low = tl.cdiv(tl.maximum(tl.minimum(full_lo, p_last + 1) - win_lo, 0), BLOCK_N)
    n_wfull = (full_hi - full_lo) // BLOCK_N
    n_diag = tl.cdiv(tl.maximum(p_last + 1 - full_hi, 0), BLOCK_N)
    n_low = tl.where(window > 0, n_low, 0)  # window 0: no window tiles at all
    n_wfull = tl.where(window > 0, n_wfull, 0)
    n_diag = tl.where(window > 0, n_diag, 0)

    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    for t in tl.range(0, n_cfull, warp_specialize=WARP_SPEC):
        k = desc_kc.load([c_row + t * BLOCK_N, 0])
        v = desc_vc.load([c_row + t * BLOCK_N, 0])
        acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)
    for t in tl.range(0, n_wfull, warp_specialize=WARP_SPEC):
        k = desc_k.load([kv_row + full_lo + t * BLOCK_N, kv_col])
        v = desc_v.load([kv_row + full_lo + t * BLOCK_N, kv_col])
        acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)

    for u in range(0, n_ctail):  # padding slots hold BIG: past every row, never kept
        slot0 = (n_cfull + u) * BLOCK_N
        k = desc_kc.load([c_row + slot0, 0])
        v = desc_vc.load([c_row + slot0, 0])
        cpos = tl.load(COLPOS + bh.to(tl.int64) * col_slots + slot0 + offs_n, mask=slot0 + offs_n < col_slots,
                       other=0)
        keep = pos[:, None] - cpos[None, :] >= window
        acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32)
    for u in range(0, n_low + n_diag):
        start = tl.where(u < n_low, win_lo + u * BLOCK_N, full_hi + (u - n_low) * BLOCK_N)
        k = desc_k.load([kv_row + start, kv_col])
        v = desc_v.load([kv_row + start, kv_col])
        diff = pos[:, None] - (start + offs_n)[None, :]
        keep = (diff >= 0) & (diff < window)
        acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32)

    if HAS_SLASH:
        k_base = K + b.to(tl.int64) * sk_b + hk.to(tl.int64) * sk_h
        v_base = V + b.to(tl.int64) * sv_b + hk.to(tl.int64) * sv_h
        acc, m_i, l_i = slash_part(acc, m_i, l_i, q, k_base, v_base, DELTAS, N_DELTA, COLHIT, DIAGHIT, bh.to(tl.int64),
                                   delta_slots, p_first, pos, row_ok, offs_d, sk_s, sv_s, Sk, window, qk_scale,
                                   BLOCK_N, F32)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # a row with nothing allowed outputs zero, as the reference does
    out = acc / l_safe[:, None]
    tl.store(O + b.to(tl.int64) * so_b + h.to(tl.int64) * so_h + offs_m[:, None].to(tl.int64) * so_s
             + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None])
