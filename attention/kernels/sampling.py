"""Stage 1, query-guided sampling: exact causal softmax of sampled query rows, reduced to per-key-column
(and per-diagonal) scores without ever holding the [rows, keys] matrix in memory.

Two passes over the keys: row_stats_kernel finds each sampled row's max and normaliser; column_scores_kernel
(one program per key block) recomputes the scores, normalises them and sums down the columns.
Rows come as a padded int32 buffer of query indices, -1 = unused; blocks of BLOCK rows, ascending per block.
"""
import triton
import triton.language as tl

from attention.kernels.sparse import NEG_INF, dot
POS_INF = tl.constexpr(float("inf"))


@triton.jit
def _exp2(x, HALF: tl.constexpr):
    # HALF: packed half-precision ex2 (two per MUFU op; ~1e-3 relative error, underflow below 2^-24), an
    # experiment for the SFU-bound share of stage 1 (config.half_exp); the default is fp32 exp2
    if HALF:
        return tl.inline_asm_elementwise(
            asm="""{
            .reg .b32 h;
            .reg .b16 lo, hi;
            cvt.rn.f16x2.f32 h, $3, $2;
            ex2.approx.f16x2 h, h;
            mov.b32 {lo, hi}, h;
            cvt.f32.f16 $0, lo;
            cvt.f32.f16 $1, hi;
            }""",
            constraints="=f,=f,f,f", args=[x], dtype=tl.float32, is_pure=True, pack=2)
    return tl.exp2(x)


@triton.jit
def row_stats_kernel(
    Q, K, ROWS, M_OUT, L_OUT,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s,
    H, GROUP, Sk, q_off, n_rows, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PACK: tl.constexpr, F32: tl.constexpr,
    HALF: tl.constexpr = False,
):
    # PACK query heads of one kv group share a program: their BLOCK_M rows each stack into one PACK*BLOCK_M tile,
    # so every key tile is read once for all of them (pass 1 is bound by re-reading K otherwise)
    rb = tl.num_programs(0) - 1 - tl.program_id(0)  # later rows see more keys: start them first
    pid = tl.program_id(1).to(tl.int64)  # 64-bit: b, heads x strides pass 2^31 at 1M tokens
    b = pid // (H // PACK)
    h0 = (pid % (H // PACK)) * PACK
    r = tl.arange(0, PACK * BLOCK_M)
    heads = h0 + r // BLOCK_M
    idx = rb * BLOCK_M + r % BLOCK_M
    rows = tl.load(ROWS + idx)
    ok = rows >= 0
    pos = q_off + rows
    offs_d = tl.arange(0, HEAD_D)
    q = tl.load(Q + b * sq_b + heads[:, None] * sq_h + rows[:, None].to(tl.int64) * sq_s + offs_d[None, :],
                mask=ok[:, None], other=0.0)
    k_base = K + b * sk_b + (h0 // GROUP) * sk_h
    last = tl.max(tl.where(ok, pos, -1), 0)
    m_i = tl.full([PACK * BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([PACK * BLOCK_M], dtype=tl.float32)
    # keys up to the block's first row are visible to every row: no mask there (padding rows compute garbage
    # statistics pass 2 never reads); the rest of the causal range is masked per row
    full = tl.minimum(tl.min(tl.where(ok, pos, Sk), 0) + 1, tl.maximum(last + 1, 0)) // BLOCK_N * BLOCK_N
    for start in range(0, full, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :])
        s = dot(q, tl.trans(k), F32) * qk_scale
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(_exp2(s - m_new[:, None], HALF), 1)
        m_i = m_new
    for start in range(full, last + 1, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=(offs_n < Sk)[:, None],
                    other=0.0)
        s = dot(q, tl.trans(k), F32) * qk_scale
        s = tl.where(ok[:, None] & (offs_n[None, :] <= pos[:, None]), s, NEG_INF)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(_exp2(s - m_safe[:, None], HALF), 1)
        m_i = m_new
    out = (b * H + heads) * n_rows + idx
    tl.store(M_OUT + out, m_i)
    tl.store(L_OUT + out, l_i)


@triton.jit
def _col_tile(col, q_base, k, ROWS, M_IN, L_IN, DIAG, rb, kb, bh, offs_n, kv_ok, offs_d, sq_s, Sk, q_off, n_rows,
              qk_scale, HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
              WITH_DIAG: tl.constexpr, F32: tl.constexpr, HALF: tl.constexpr):
    idx = rb * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = tl.load(ROWS + idx)
    ok = rows >= 0
    pos = q_off + rows
    q = tl.load(q_base + rows[:, None].to(tl.int64) * sq_s + offs_d[None, :], mask=ok[:, None], other=0.0)
    m = tl.load(M_IN + bh * n_rows + idx)
    l = tl.load(L_IN + bh * n_rows + idx)
    # p = exp2(s - m) / l = exp2(s - (m + log2 l)): the normaliser folded into the exponent; unused rows -> 0
    bias = tl.where(ok & (l > 0), m + tl.log2(tl.where(l > 0, l, 1.0)), POS_INF)
    s = dot(q, tl.trans(k), F32) * qk_scale
    if MASKED:
        keep = ok[:, None] & (offs_n[None, :] <= pos[:, None]) & kv_ok[None, :]
        p = tl.where(keep, _exp2(s - bias[:, None], HALF), 0.0)
    else:
        p = _exp2(s - bias[:, None], HALF)
    col += p
    if WITH_DIAG:
        # rows of a block are consecutive positions r0 + m here: row m, key n lie on diagonal r0 - k0 + m - n.
        # Shear the tile so each column t holds one diagonal, then sum down it.
        t = tl.arange(0, BLOCK_M + BLOCK_N)
        src = tl.arange(0, BLOCK_M)[:, None] - t[None, :] + (BLOCK_N - 1)
        inside = (src >= 0) & (src < BLOCK_N)
        sheared = tl.gather(p, tl.where(inside, src, 0), axis=1)
        diag_sum = tl.sum(tl.where(inside, sheared, 0.0), 0)
        r0 = q_off + tl.load(ROWS + rb * BLOCK_M)
        d = r0 - kb * BLOCK_N + t - (BLOCK_N - 1)
        tl.atomic_add(DIAG + bh * Sk + d, diag_sum, mask=(d >= 0) & (d < Sk) & (diag_sum != 0.0))
    return col


@triton.jit
def column_scores_kernel(
    Q, K, ROWS, M_IN, L_IN, FIRST_RB, FULL_RB, FULL_END, COL, DIAG,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s,
    H, GROUP, Sk, q_off, n_rows, n_rb, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WITH_DIAG: tl.constexpr,
    F32: tl.constexpr, HALF: tl.constexpr = False,
):
    kb = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # 64-bit: b, h x strides pass 2^31 at 1M tokens
    b = bh // H
    h = bh % H
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    kv_ok = offs_n < Sk
    offs_d = tl.arange(0, HEAD_D)
    k = tl.load(K + b * sk_b + (h // GROUP) * sk_h + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :],
                mask=kv_ok[:, None], other=0.0)
    q_base = Q + b * sq_b + h * sq_h
    col = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # summed down the rows once, after the loop
    lo = tl.load(FIRST_RB + kb)  # earlier row blocks end before this key block
    if WITH_DIAG:
        for rb in range(lo, n_rb):
            col = _col_tile(col, q_base, k, ROWS, M_IN, L_IN, DIAG, rb, kb, bh, offs_n, kv_ok, offs_d, sq_s, Sk, q_off,
                            n_rows, qk_scale, HEAD_D, BLOCK_M, BLOCK_N, True, True, F32, HALF)
    else:
        # row blocks [mid, end) have every row valid and at or past this key block's last key: no mask
        mid = tl.load(FULL_RB + kb)
        end = tl.maximum(tl.load(FULL_END), mid)
        for rb in range(lo, mid):
            col = _col_tile(col, q_base, k, ROWS, M_IN, L_IN, DIAG, rb, kb, bh, offs_n, kv_ok, offs_d, sq_s, Sk, q_off,
                            n_rows, qk_scale, HEAD_D, BLOCK_M, BLOCK_N, True, False, F32, HALF)
        for rb in range(mid, end):
            col = _col_tile(col, q_base, k, ROWS, M_IN, L_IN, DIAG, rb, kb, bh, offs_n, kv_ok, offs_d, sq_s, Sk, q_off,
                            n_rows, qk_scale, HEAD_D, BLOCK_M, BLOCK_N, False, False, F32, HALF)
        for rb in range(end, n_rb):
            col = _col_tile(col, q_base, k, ROWS, M_IN, L_IN, DIAG, rb, kb, bh, offs_n, kv_ok, offs_d, sq_s, Sk, q_off,
                            n_rows, qk_scale, HEAD_D, BLOCK_M, BLOCK_N, True, False, F32, HALF)
    tl.store(COL + bh * Sk + offs_n, tl.sum(col, 0), mask=kv_ok)
