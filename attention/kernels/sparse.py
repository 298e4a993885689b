"""Sparse prefill kernel: FlashAttention-style online softmax over local window + gathered key columns
(+ slash/diagonal stripes), each key counted once, causal, grouped-query heads read in place (never expanded).

One program = one block of BLOCK_M queries of one (batch, query head). Three disjoint key sets, by mask:
  window   i - window < j <= i
  columns  j in columns, i - j >= window             (gathered by index; the launcher adds the sinks here)
  slashes  i - j in slashes, i - j >= window, j not a column     (key blocks along diagonals)
"""
import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def dot(a, b, F32: tl.constexpr):
    # F32: Triton's CPU interpreter multiplies bf16 as raw bits, so tests upcast the (already rounded) operands
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    return tl.dot(a, b)


@triton.jit
def _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, MASKED: tl.constexpr = True, F32: tl.constexpr = False):
    # scores in log2 units; masked entries contribute exp2(-inf) = 0; fully masked rows keep m = -inf safely
    s = dot(q, tl.trans(k), F32) * qk_scale
    if MASKED:
        s = tl.where(keep, s, NEG_INF)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, F32)
    return acc, m_new, l_i


@triton.jit
def _window_block(acc, m_i, l_i, q, k_base, v_base, start, pos, row_ok, offs_d, sk_s, sv_s, Sk, window, qk_scale,
                  BLOCK_N: tl.constexpr, MASKED: tl.constexpr, F32: tl.constexpr):
    offs_n = start + tl.arange(0, BLOCK_N)
    if MASKED:
        kv_ok = offs_n < Sk
        k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
        diff = pos[:, None] - offs_n[None, :]
        keep = (diff < window) & (diff >= 0) & row_ok[:, None]
        return _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, True, F32)
    k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :])
    v = tl.load(v_base + offs_n[:, None].to(tl.int64) * sv_s + offs_d[None, :])
    return _online_step(acc, m_i, l_i, q, k, v, row_ok[:, None], qk_scale, False, F32)


@triton.jit
def slash_part(acc, m_i, l_i, q, k_base, v_base, DELTAS, N_DELTA, COLHIT, DIAGHIT, bh, delta_slots, p_first, pos,
               row_ok, offs_d, sk_s, sv_s, Sk, window, qk_scale, BLOCK_N: tl.constexpr, F32: tl.constexpr):
    """Slash stripes (shared by both kernels): key blocks along kept diagonals, keys that are columns skipped."""
    nd = tl.load(N_DELTA + bh)
    for t in range(0, nd):
        delta = tl.load(DELTAS + bh * delta_slots + t)
        offs_n = p_first - delta * BLOCK_N + tl.arange(0, BLOCK_N)
        kv_ok = (offs_n >= 0) & (offs_n < Sk)
        k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
        diff = pos[:, None] - offs_n[None, :]
        cand = kv_ok[None, :] & (diff >= window) & (diff >= 0) & row_ok[:, None]
        on_diag = tl.load(DIAGHIT + bh * Sk + diff, mask=cand, other=0)
        is_col = tl.load(COLHIT + bh * Sk + offs_n, mask=kv_ok, other=0)
        keep = cand & (on_diag != 0) & (is_col[None, :] == 0)
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, True, F32)
    return acc, m_i, l_i


# lengths and offsets vary per call: specialising on them would compile a variant per shape
@triton.jit(do_not_specialize=["H", "GROUP", "Sq", "Sk", "q_off", "window", "col_slots", "n_qb", "delta_slots"])
def sparse_fwd_kernel(
    Q, K, V, O, COLS, COL_FULL, COL_HI, DELTAS, N_DELTA, COLHIT, DIAGHIT,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
    H, GROUP, Sq, Sk, q_off, window, col_slots, n_qb, delta_slots, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_COLS: tl.constexpr, HAS_SLASH: tl.constexpr, F32: tl.constexpr,
):
    qb = tl.num_programs(0) - 1 - tl.program_id(0)  # the last query blocks have the most work: start them first
    bh = tl.program_id(1).to(tl.int64)  # 64-bit from here: b, h, hk x strides pass 2^31 at 1M tokens
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < Sq
    pos = q_off + offs_m  # absolute key position of each query
    offs_d = tl.arange(0, HEAD_D)
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None].to(tl.int64) * sq_s + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    p_first = q_off + qb * BLOCK_M
    p_last = tl.minimum(p_first + BLOCK_M - 1, q_off + Sq - 1)

    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # local window (diagonal included): masked edge blocks, unmasked blocks every row sees whole, masked diagonal
    if window > 0:
        win_lo = (tl.maximum(p_first - window + 1, 0) // BLOCK_N) * BLOCK_N
        full_lo = tl.cdiv(tl.maximum(p_last - window + 1, 0), BLOCK_N) * BLOCK_N
        full_hi = tl.maximum((p_first + 1) // BLOCK_N * BLOCK_N, full_lo)
        for start in range(win_lo, tl.minimum(full_lo, p_last + 1), BLOCK_N):
            acc, m_i, l_i = _window_block(acc, m_i, l_i, q, k_base, v_base, start, pos, row_ok, offs_d, sk_s, sv_s,
                                          Sk, window, qk_scale, BLOCK_N, True, F32)
        for start in range(full_lo, full_hi, BLOCK_N):
            acc, m_i, l_i = _window_block(acc, m_i, l_i, q, k_base, v_base, start, pos, row_ok, offs_d, sk_s, sv_s,
                                          Sk, window, qk_scale, BLOCK_N, False, F32)
        for start in range(full_hi, p_last + 1, BLOCK_N):
            acc, m_i, l_i = _window_block(acc, m_i, l_i, q, k_base, v_base, start, pos, row_ok, offs_d, sk_s, sv_s,
                                          Sk, window, qk_scale, BLOCK_N, True, F32)

    # selected columns, gathered by index; COLS is sorted: [0, COL_FULL) every row of the block may use,
    # [COL_FULL, COL_HI) only some rows (the rest are inside their window or in their future); repeats skipped
    if HAS_COLS:
        c_full = tl.load(COL_FULL + bh * n_qb + qb)
        c_hi = tl.load(COL_HI + bh * n_qb + qb)
        for c0 in range(0, c_hi, BLOCK_N):
            slot = c0 + tl.arange(0, BLOCK_N)
            cols = tl.load(COLS + bh * col_slots + slot, mask=slot < c_hi, other=0)
            prev = tl.load(COLS + bh * col_slots + slot - 1, mask=(slot < c_hi) & (slot > 0), other=-1)
            ok = (slot < c_hi) & (cols != prev)
            k = tl.load(k_base + cols[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            if c0 + BLOCK_N <= c_full:
                acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, ok[None, :], qk_scale, True, F32)
            else:
                diff = pos[:, None] - cols[None, :]
                keep = ok[None, :] & (diff >= window) & (diff >= 0) & row_ok[:, None]
                acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, True, F32)

    # slash stripes: key block starting delta * BLOCK_N before this query block holds diagonals near delta*BLOCK_N
    if HAS_SLASH:
        acc, m_i, l_i = slash_part(acc, m_i, l_i, q, k_base, v_base, DELTAS, N_DELTA, COLHIT, DIAGHIT, bh, delta_slots,
                                   p_first, pos, row_ok, offs_d, sk_s, sv_s, Sk, window, qk_scale, BLOCK_N, F32)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # a row with nothing allowed outputs zero, as the reference does
    out = acc / l_safe[:, None]
    tl.store(O + b * so_b + h * so_h + offs_m[:, None].to(tl.int64) * so_s + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])
