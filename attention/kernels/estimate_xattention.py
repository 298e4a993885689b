"""XAttention's estimate scores in one launch: strided antidiagonal scores, their per-group softmax and tile sums.

Query group m (tokens mS .. mS + S - 1, S = stride) meets key group g through sum_t q[mS + S - 1 - t] . k[gS + t]
(scaled by scale / S); each real query group takes a softmax over its causal real key groups, and the
probabilities are summed into (query tile, key tile) cells, tiles of `block` tokens.

One pass over the scores (the reduced GEMM is computed once): a program takes BM query groups of one (batch, head),
streams their causal key groups BN at a time with an online max and sum, and writes, per query group and key tile,
the partial sum of exp(s - m_ref) and the running max m_ref it was taken against into scratch rows of its own;
after the last key block it rescales the partials by exp(m_ref - m_final) / l_final and sums them over the groups
of each query tile. The kernel is persistent (about one program per SM, each walking work items heaviest first),
so the scratch is programs x BM x tiles floats, bounded at any length (1M tokens, 132 programs: ~0.5 GB), where a
per-group buffer for the whole grid would grow as n^2 / block. The tokens of a group are read in place with a row
stride of S, so q and k are never reshaped; grouped-query heads read their kv head. Offsets that can pass 2^31
are 64-bit.
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
def _online_block(s, g0, m_idx, m_row, l_row, k_ok, part_base, mref_base, rows, cols, n_cols, qk_scale,
                  PER_TILE: tl.constexpr, BM: tl.constexpr, TN: tl.constexpr):
    """One key block's scores into the online max and sum; its partial tile sums and their max into scratch."""
    g_idx = g0 + tl.arange(0, TN * PER_TILE)
    s = tl.where(k_ok[None, :] & (g_idx[None, :] <= m_idx[:, None]), s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_row, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    l_row = l_row * tl.exp2(m_row - m_safe) + tl.sum(p, 1)
    by_key = tl.sum(tl.reshape(p, [BM, TN, PER_TILE]), 2)                      # [BM, TN]
    tl.store(part_base + rows[:, None] * n_cols + (g0 // PER_TILE + cols)[None, :], by_key)
    tl.store(mref_base + rows * (n_cols // TN) + g0 // (TN * PER_TILE), m_safe)
    return m_new, l_row


@triton.jit(do_not_specialize=["BH", "H", "GROUP", "Sk", "q_off", "n_groups", "n_tiles", "n_qblocks", "n_cols"])
def xattention_tiles_kernel(
    Q, K, OUT, PART, MREF, sq_b, sq_h, sq_s, sk_b, sk_h, sk_s,
    BH, H, GROUP, Sk, q_off, n_groups, n_tiles, n_qblocks, n_cols, qk_scale,
    HEAD_D: tl.constexpr, STRIDE: tl.constexpr, PER_TILE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    F32: tl.constexpr, FLAT: tl.constexpr = True,
):
    TN: tl.constexpr = BN // PER_TILE   # key tiles per key block
    TM: tl.constexpr = BM // PER_TILE   # query tiles per query block
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    # this program's scratch: partial sums [BM, n_cols] and the max each key block's partials were taken against
    part_base = PART + pid.to(tl.int64) * BM * n_cols
    mref_base = MREF + pid.to(tl.int64) * BM * (n_cols // TN)
    offs_d = tl.arange(0, HEAD_D)
    rows = tl.arange(0, BM)
    cols = tl.arange(0, TN)
    n_items = n_qblocks * BH
    for round in range(0, tl.cdiv(n_items, programs)):
        # items go heaviest first (the last query blocks have the most keys), dealt in a snake so that the
        # program taking a round's heaviest item takes the next round's lightest: the programs' loads even out
        item = round * programs + tl.where(round % 2 == 0, pid, programs - 1 - pid)
        if item < n_items:
            tl.debug_barrier()  # every thread is done reading the previous item's scratch before it is overwritten
            mb = n_qblocks - 1 - item // BH
            bh = (item % BH).to(tl.int64)
            b = bh // H
            h = bh % H
            q_base = Q + b * sq_b + h * sq_h
            k_base = K + b * sk_b + (h // GROUP) * sk_h
            m_idx = mb * BM + rows
            m_pos = m_idx * STRIDE
            # a real query group holds a real query (position in [q_off, Sk)); others carry no mass
            q_real = (m_idx < n_groups) & (m_pos + STRIDE > q_off) & (m_pos < Sk)
            m_row = tl.full([BM], float("-inf"), dtype=tl.float32)
            l_row = tl.zeros([BM], dtype=tl.float32)
            last = tl.minimum(mb * BM + BM, n_groups)   # key groups 0 .. last - 1 can be causal for this block
            if FLAT:
                # one loop over (key block, antidiagonal step) pairs: the operand pipeline runs through the key
                # blocks instead of refilling at each one; the block's softmax work runs at its last step
                s = tl.zeros([BM, BN], dtype=tl.float32)
                for it in range(0, tl.cdiv(last, BN) * STRIDE):
                    t = it % STRIDE
                    g0 = (it // STRIDE) * BN
                    g_pos = (g0 + tl.arange(0, BN)) * STRIDE
                    k_ok = (g0 + tl.arange(0, BN) < n_groups) & (g_pos < Sk)
                    qp = m_pos + STRIDE - 1 - t
                    qm = q_real & (qp >= q_off) & (qp < Sk)
                    qt = tl.load(q_base + (qp - q_off)[:, None].to(tl.int64) * sq_s + offs_d[None, :],
                                 mask=qm[:, None], other=0.0)
                    kp = g_pos + t
                    kt = tl.load(k_base + kp[:, None].to(tl.int64) * sk_s + offs_d[None, :],
                                 mask=(k_ok & (kp < Sk))[:, None], other=0.0)
                    s = tl.where(t == 0, 0.0, s)
                    if F32:
                        s = tl.dot(qt.to(tl.float32), tl.trans(kt.to(tl.float32)), s)
                    else:
                        s = tl.dot(qt, tl.trans(kt), s)
                    if t == STRIDE - 1:
                        m_row, l_row = _online_block(s, g0, m_idx, m_row, l_row, k_ok, part_base, mref_base, rows,
                                                     cols, n_cols, qk_scale, PER_TILE, BM, TN)
            else:
                for g0 in range(0, last, BN):
                    g_pos = (g0 + tl.arange(0, BN)) * STRIDE
                    k_ok = (g0 + tl.arange(0, BN) < n_groups) & (g_pos < Sk)
                    s = _group_scores(q_base, k_base, m_pos, g_pos, q_real, k_ok, offs_d, sq_s, sk_s, q_off, Sk,
                                      STRIDE, F32, BM, BN)
                    m_row, l_row = _online_block(s, g0, m_idx, m_row, l_row, k_ok, part_base, mref_base, rows,
                                                 cols, n_cols, qk_scale, PER_TILE, BM, TN)
            tl.debug_barrier()  # the partials written by every thread are visible to the reads below
            m_fin = tl.where(m_row == float("-inf"), 0.0, m_row)
            inv = tl.where(q_real & (l_row > 0), 1.0 / l_row, 0.0)
            q_tiles = mb * TM + tl.arange(0, TM)
            out_base = OUT + bh * n_tiles * n_tiles
            for g0 in range(0, last, BN):
                part = tl.load(part_base + rows[:, None] * n_cols + (g0 // PER_TILE + cols)[None, :])
                ref = tl.load(mref_base + rows * (n_cols // TN) + g0 // BN)
                # ref <= m_fin for every key block that held mass; the clamp keeps empty ones (ref 0) finite
                weight = tl.exp2(tl.minimum(ref - m_fin, 0.0)) * inv
                by_tile = tl.sum(tl.reshape(part * weight[:, None], [TM, PER_TILE, TN]), 1)    # [TM, TN]
                k_tiles = g0 // PER_TILE + cols
                ok = (q_tiles[:, None] < n_tiles) & (k_tiles[None, :] < n_tiles)
                tl.store(out_base + q_tiles[:, None].to(tl.int64) * n_tiles + k_tiles[None, :], by_tile, mask=ok)
            # tiles past this block's last causal key group hold no mass: written here, so OUT needs no zero fill
            for g0 in range(tl.cdiv(last, BN) * BN, n_groups, BN):
                k_tiles = g0 // PER_TILE + cols
                ok = (q_tiles[:, None] < n_tiles) & (k_tiles[None, :] < n_tiles)
                tl.store(out_base + q_tiles[:, None].to(tl.int64) * n_tiles + k_tiles[None, :],
                         tl.zeros([TM, TN], dtype=tl.float32), mask=ok)


def supported(q, stride: int, block: int) -> bool:
    """Shapes the kernel takes: power-of-two head dim and groups per tile (<= 64)."""
    per_tile = block // stride
    d = q.shape[-1]
    return d in HEAD_DIMS and per_tile & (per_tile - 1) == 0 and per_tile <= 64


def tile_config(head_dim: int, per_tile: int) -> tuple[int, int, int, int, bool]:
    """(BM, BN, num_warps, num_stages, FLAT): 128 x 128 score tiles (64 FLOP per byte of q and k streamed from L2,
    twice the 64 x 64 tiles' intensity), three pipeline stages (H200, results/bench/xest/run1: 15.3 ms against
    20.5 with two at 128K D128); FLAT runs one loop over (key block, step) pairs."""
    bm = bn = max(per_tile, 128)
    return bm, bn, 8, 3, False


def program_count(device: torch.device, items: int) -> int:
    """One persistent program per SM (at most one fits with these tiles), never more than there are items."""
    if device.type == "cuda":
        return max(1, min(items, torch.cuda.get_device_properties(device).multi_processor_count))
    return max(1, min(items, 4))


def xattention_tile_scores(q, k, scale: float, stride: int, block: int,
                           tiles: tuple[int, int, int, int, bool] | None = None) -> torch.Tensor:
    """float32 [B, Hq, n, n], n = ceil(k_len / block): what attention.methods.xattention.antidiagonal_tile_scores
    computes (queries the last q_len of k_len positions), in one launch. Tiles past a query tile's last causal
    key group are written 0. `tiles` overrides tile_config (benchmark sweeps)."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        q, k = q.contiguous(), k.contiguous()
    per_tile = block // stride
    n = triton.cdiv(k_len, block)
    n_groups = n * per_tile
    bm, bn, warps, stages, flat = tiles or tile_config(head_dim, per_tile)
    n_qblocks = triton.cdiv(n_groups, bm)
    n_cols = triton.cdiv(n_groups, bn) * (bn // per_tile)
    programs = program_count(q.device, n_qblocks * batch * heads)
    out = torch.empty(batch, heads, n, n, dtype=torch.float32, device=q.device)  # every tile written
    part = torch.empty(programs, bm, n_cols, dtype=torch.float32, device=q.device)
    mref = torch.empty(programs, bm, n_cols // (bn // per_tile), dtype=torch.float32, device=q.device)
    xattention_tiles_kernel[(programs,)](
        q, k, out, part, mref, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        batch * heads, heads, heads // kv_heads, k_len, k_len - q_len, n_groups, n, n_qblocks, n_cols,
        scale / stride * LOG2E,
        HEAD_D=head_dim, STRIDE=stride, PER_TILE=per_tile, BM=bm, BN=bn, F32=interpreter_f32(q), FLAT=flat,
        num_warps=warps, num_stages=stages,
    )
    return out
