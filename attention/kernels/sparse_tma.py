"""Hopper path of the sparse prefill kernel: every dense tile comes through a TMA tensor descriptor.

Same function as sparse.py (sink + window + columns + slashes, causal, grouped-query heads read in place), but
the columns were gathered beforehand into a contiguous per-query-head K/V buffer (attention/kernels/gather.py,
sorted, repeats dropped, sinks included). The column part is then a contiguous attention with a monotone causal
bound: slots [0, COL_FULL) every row of the query block may use (no mask, no index loads), [COL_FULL, COL_HI)
masked by the slot's key position. Window blocks are read straight from K/V through descriptors on the
[B*Hk*Sk, D] view; tiles that run past a head's last key are always masked by causality, so they never count.
Unmasked tiles use the cheap update (scale folded after the row max, one exp2 per cell, P@V accumulated in
place); masked tiles use the -inf-safe one. Slashes reuse the portable kernel's gathered loop.
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
@triton.jit(do_not_specialize=["Sq", "Sk", "col_slots", "q_off", "window", "n_qb", "delta_slots"])
def sparse_tma_kernel(
    desc_q, desc_k, desc_v, desc_kc, desc_vc, O, COLPOS, COL_FULL, COL_HI,
    K, V, DELTAS, N_DELTA, COLHIT, DIAGHIT,
    so_b, so_h, so_s,
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
    row_ok = offs_m < Sq
    pos = q_off + offs_m  # absolute key position of each query
    offs_d = tl.arange(0, HEAD_D)
    q = desc_q.load([bh * Sq + qb * BLOCK_M, 0])  # rows past Sq belong to the next head or are zero: never stored
    kv_row = (b * HK + hk) * Sk
    p_first = q_off + qb * BLOCK_M
    p_last = tl.minimum(p_first + BLOCK_M - 1, q_off + Sq - 1)

    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # gathered columns: a contiguous run of slots, unmasked up to the last whole tile every row may use
    if HAS_COLS:
        c_full = tl.load(COL_FULL + bh * n_qb + qb)
        c_hi = tl.load(COL_HI + bh * n_qb + qb)
        c_row = bh * col_slots
        full_tiles = (c_full // BLOCK_N) * BLOCK_N
        for c0 in tl.range(0, full_tiles, BLOCK_N, warp_specialize=WARP_SPEC):
            k = desc_kc.load([c_row + c0, 0])
            v = desc_vc.load([c_row + c0, 0])
            acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)
        for c0 in range(full_tiles, c_hi, BLOCK_N):
            slot = c0 + tl.arange(0, BLOCK_N)
            cpos = tl.load(COLPOS + c_row + slot)  # sorted key positions, padding = BIG
            k = desc_kc.load([c_row + c0, 0])
            v = desc_vc.load([c_row + c0, 0])
            diff = pos[:, None] - cpos[None, :]
            keep = (slot[None, :] < c_hi) & (diff >= window) & (diff >= 0)
            acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32)

    # local window (diagonal included): masked low edge, whole blocks every row sees, masked diagonal
    if window > 0:
        win_lo = (tl.maximum(p_first - window + 1, 0) // BLOCK_N) * BLOCK_N
        full_lo = tl.cdiv(tl.maximum(p_last - window + 1, 0), BLOCK_N) * BLOCK_N
        full_hi = tl.maximum((p_first + 1) // BLOCK_N * BLOCK_N, full_lo)
        for start in range(win_lo, tl.minimum(full_lo, p_last + 1), BLOCK_N):
            k = desc_k.load([kv_row + start, 0])
            v = desc_v.load([kv_row + start, 0])
            diff = pos[:, None] - (start + tl.arange(0, BLOCK_N))[None, :]
            acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, (diff < window) & (diff >= 0), qk_scale, F32)
        for start in tl.range(full_lo, full_hi, BLOCK_N, warp_specialize=WARP_SPEC):
            k = desc_k.load([kv_row + start, 0])
            v = desc_v.load([kv_row + start, 0])
            acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)
        for start in range(full_hi, p_last + 1, BLOCK_N):
            k = desc_k.load([kv_row + start, 0])
            v = desc_v.load([kv_row + start, 0])
            diff = pos[:, None] - (start + tl.arange(0, BLOCK_N))[None, :]
            acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, (diff < window) & (diff >= 0), qk_scale, F32)

    if HAS_SLASH:
        # slash_part computes scores with the scale inside the mask; same numbers as the portable kernel
        k_base = K + (b * HK + hk) * Sk * HEAD_D
        v_base = V + (b * HK + hk) * Sk * HEAD_D
        acc, m_i, l_i = slash_part(acc, m_i, l_i, q, k_base, v_base, DELTAS, N_DELTA, COLHIT, DIAGHIT, bh,
                                   delta_slots, p_first, pos, row_ok, offs_d, HEAD_D, HEAD_D, Sk, window, qk_scale,
                                   BLOCK_N, F32)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # a row with nothing allowed outputs zero, as the reference does
    out = acc / l_safe[:, None]
    tl.store(O + b * so_b + h * so_h + offs_m[:, None] * so_s + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])
