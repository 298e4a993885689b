"""XAttention's estimate in one kernel: strided antidiagonal scores, their per-group softmax and the tile sums.

Query group m (tokens mS .. mS + S - 1, S = stride) meets key group g through sum_t q[mS + S - 1 - t] . k[gS + t]
(scaled by scale / S); each real query group takes a softmax over its causal real key groups, and the
probabilities are summed into (query tile, key tile) cells, tiles of `block` tokens. One program = BM query
groups of one (batch, query head): pass 1 streams the causal key groups for the row max and sum (online), pass 2
recomputes the scores and adds the normalised probabilities per tile. Scores are never written: 2x the dot
products of the single-pass form, no O(groups^2) buffer. The tokens of a group are read in place with a row
stride of S, so q and k are never reshaped; grouped-query heads read their kv head.
"""
import torch
import triton
import triton.language as tl

from attention.kernels.config import HEAD_DIMS, LOG2E, interpreter_f32
from attention.kernels.sparse import dot


@triton.jit
def _group_scores(q_base, k_base, m_pos, g_pos, q_ok, k_ok, offs_d, sq_s, sk_s, q_off, Sk,
                  STRIDE: tl.constexpr, F32: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    s = tl.zeros([BM, BN], dtype=tl.float32)
    for t in range(STRIDE):
        qp = m_pos + STRIDE - 1 - t                          # absolute query positions of this antidiagonal step
        qm = q_ok & (qp >= q_off) & (qp < Sk)                 # front padding and the tail past Sk read as zeros
        qt = tl.load(q_base + (qp - q_off)[:, None].to(tl.int64) * sq_s + offs_d[None, :], mask=qm[:, None], other=0.0)
        kp = g_pos + t
        km = k_ok & (kp < Sk)
        kt = tl.load(k_base + kp[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=km[:, None], other=0.0)
        s += dot(qt, tl.trans(kt), F32)
    return s


@triton.jit
def _key_block(q_base, k_base, m_idx, m_pos, q_real, g0, offs_d, sq_s, sk_s, q_off, Sk, n_groups, qk_scale,
               STRIDE: tl.constexpr, F32: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """(scaled scores [BM, BN], allowed [BM, BN]) of the query groups m_idx against key groups g0 .. g0 + BN - 1:
    what both passes recompute (allowed: real, causal key groups)."""
    g_idx = g0 + tl.arange(0, BN)
    g_pos = g_idx * STRIDE
    k_ok = (g_idx < n_groups) & (g_pos < Sk)
    s = _group_scores(q_base, k_base, m_pos, g_pos, q_real, k_ok, offs_d, sq_s, sk_s, q_off, Sk, STRIDE, F32, BM, BN)
    allowed = k_ok[None, :] & (g_idx[None, :] <= m_idx[:, None])
    return s * qk_scale, allowed


@triton.jit(do_not_specialize=["H", "GROUP", "Sq", "Sk", "q_off", "n_groups", "n_tiles"])
def xattention_tiles_kernel(
    Q, K, OUT, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s,
    H, GROUP, Sq, Sk, q_off, n_groups, n_tiles, qk_scale,
    HEAD_D: tl.constexpr, STRIDE: tl.constexpr, PER_TILE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    F32: tl.constexpr,
):
    mb = tl.num_programs(0) - 1 - tl.program_id(0)   # the last query groups have the most keys: start them first
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    q_base = Q + b * sq_b + h * sq_h
    k_base = K + b * sk_b + hk * sk_h
    offs_d = tl.arange(0, HEAD_D)
    m_idx = mb * BM + tl.arange(0, BM)
    m_pos = m_idx * STRIDE
    # a real query group holds a real query (position in [q_off, Sk)); others carry no mass
    q_real = (m_idx < n_groups) & (m_pos + STRIDE > q_off) & (m_pos < Sk)
    m_row = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_row = tl.zeros([BM], dtype=tl.float32)
    last = tl.minimum(mb * BM + BM, n_groups)           # key groups 0 .. last - 1 can be causal for this block
    for g0 in range(0, last, BN):
        s, allowed = _key_block(q_base, k_base, m_idx, m_pos, q_real, g0, offs_d, sq_s, sk_s, q_off, Sk, n_groups,
                                qk_scale, STRIDE, F32, BM, BN)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_row, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_row = l_row * tl.exp2(m_row - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
        m_row = m_new
    m_safe = tl.where(m_row == float("-inf"), 0.0, m_row)
    inv = tl.where(q_real & (l_row > 0), 1.0 / l_row, 0.0)
    q_tiles = mb * (BM // PER_TILE) + tl.arange(0, BM // PER_TILE)
    out_base = OUT + bh * n_tiles * n_tiles
    for g0 in range(0, last, BN):
        s, allowed = _key_block(q_base, k_base, m_idx, m_pos, q_real, g0, offs_d, sq_s, sk_s, q_off, Sk, n_groups,
                                qk_scale, STRIDE, F32, BM, BN)
        p = tl.where(allowed, tl.exp2(s - m_safe[:, None]), 0.0) * inv[:, None]
        by_key = tl.sum(tl.reshape(p, [BM, BN // PER_TILE, PER_TILE]), 2)                    # [BM, BN / pt]
        by_tile = tl.sum(tl.reshape(by_key, [BM // PER_TILE, PER_TILE, BN // PER_TILE]), 1)  # [BM / pt, BN / pt]
        k_tiles = g0 // PER_TILE + tl.arange(0, BN // PER_TILE)
        ok = (q_tiles[:, None] < n_tiles) & (k_tiles[None, :] < n_tiles)
        tl.store(out_base + q_tiles[:, None].to(tl.int64) * n_tiles + k_tiles[None, :], by_tile, mask=ok)
    # tiles past this block's last causal key group hold no mass: written here, so OUT needs no zero fill
    for g0 in range(tl.cdiv(last, BN) * BN, n_groups, BN):
        k_tiles = g0 // PER_TILE + tl.arange(0, BN // PER_TILE)
        ok = (q_tiles[:, None] < n_tiles) & (k_tiles[None, :] < n_tiles)
        tl.store(out_base + q_tiles[:, None].to(tl.int64) * n_tiles + k_tiles[None, :],
                 tl.zeros([BM // PER_TILE, BN // PER_TILE], dtype=tl.float32), mask=ok)


def supported(q, stride: int, block: int) -> bool:
    """Shapes the kernel takes: power-of-two head dim and groups per tile (<= 64)."""
    per_tile = block // stride
    d = q.shape[-1]
    return d in HEAD_DIMS and per_tile & (per_tile - 1) == 0 and per_tile <= 64


def xattention_tile_scores(q, k, scale: float, stride: int, block: int) -> torch.Tensor:
    """float32 [B, Hq, n, n], n = ceil(k_len / block): what attention.methods.xattention.antidiagonal_tile_scores
    computes (queries the last q_len of k_len positions), in one launch. Tiles past a query tile's last causal
    key group are written 0."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        q, k = q.contiguous(), k.contiguous()
    per_tile = block // stride
    n = triton.cdiv(k_len, block)
    n_groups = n * per_tile
    bm = max(per_tile, 64)
    bn = max(per_tile, 64)
    out = torch.empty(batch, heads, n, n, dtype=torch.float32, device=q.device)  # every tile written
    grid = (triton.cdiv(n_groups, bm), batch * heads)
    xattention_tiles_kernel[grid](
        q, k, out, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        heads, heads // kv_heads, q_len, k_len, k_len - q_len, n_groups, n, scale / stride * LOG2E,
        HEAD_D=head_dim, STRIDE=stride, PER_TILE=per_tile, BM=bm, BN=bn, F32=interpreter_f32(q),
        num_warps=4, num_stages=2,
    )
    return out
