"""MInference's execution of a vertical-slash pattern, as its kernel does it: per 64-row query block, every kept
diagonal offset d becomes the 64-key range [start - d, start - d + 64) the diagonal crosses in that block; ranges
that overlap or touch are merged, growing by whole 64-key tiles from the first range's start, and computed as
whole (causal) tiles; kept columns outside the ranges are gathered by index.

Two kernels, one program each per (query blocks, batch x head):
  band_runs_kernel       the merged ranges (runs) of each query block, from the head's offsets sorted descending;
                         a serial pass over the offsets, vectorised over RB query blocks (band_tiles.walk_step,
                         the walk the tiled kernel's tile lists are built by)
  band_attention_kernel  online softmax over the runs' tiles (keys that are kept columns skipped there), then
                         the kept columns (causal), each key counted once
Launchers take tensors and ints; the preparation is device-side (sort, searchsorted, scatter): no host sync.
BandPattern executes on the tiled kernel (bands_tiled.py, 2-3x faster on the H200); band_runs still gives the
kept share past one span (attention/bands.py), and band_attention stays as the baseline scripts/bench_bands.py and
check_peers_gpu.py compare with.
"""
import torch
import triton
import triton.language as tl

from attention.indices import hit_map, prepare_columns
from attention.kernels.band_tiles import BAND, RUN_BLOCKS, descending_offsets, walk_blocks, walk_end, walk_step
from attention.kernels.config import LOG2E, interpreter_f32
from attention.kernels.sparse import _online_step


@triton.jit
def band_runs_kernel(OFFS, N_OFFS, RUN_LO, RUN_HI, RUN_N, n_slots, offs_slots, m0, n_rb,
                     BAND: tl.constexpr, RB: tl.constexpr):
    bh, local, ok, end, out, n = walk_blocks(N_OFFS, n_slots, m0, n_rb, BAND, RB)
    rs = tl.zeros([RB], dtype=tl.int32)
    re = tl.zeros([RB], dtype=tl.int32)
    cnt = tl.zeros([RB], dtype=tl.int32)
    started = tl.zeros([RB], dtype=tl.int32)
    for i in range(0, n):
        d = tl.load(OFFS + bh * offs_slots + i)
        valid, s, _, gap, grow, first = walk_step(d, end, re, started, BAND)
        tl.store(RUN_LO + out + cnt, rs, mask=gap & ok)  # a gap: the run before is finished
        tl.store(RUN_HI + out + cnt, re, mask=gap & ok)
        cnt += gap.to(tl.int32)
        fresh = first | gap                              # a run starts at s - 64 (walk_step's fresh, as read here)
        rs = tl.where(fresh, s - BAND, rs)
        re, started = walk_end(valid, s, fresh, grow, re, started, BAND)
    tl.store(RUN_LO + out + cnt, rs, mask=(started != 0) & ok)
    tl.store(RUN_HI + out + cnt, re, mask=(started != 0) & ok)
    tl.store(RUN_N + bh * n_rb + local, cnt + started, mask=ok)


def band_runs(offsets: torch.Tensor, batch: int, heads: int, k_len: int, m0: int = 0):
    """(lo, hi, count): int32 [B*H, n_rb, slots] run bounds and int32 [B*H, n_rb] run counts for query blocks
    m0 .. ceil(k_len / 64) - 1, from offsets long [B, H, L] (any order, -1 = unused)."""
    device = offsets.device
    n_rb = triton.cdiv(k_len, BAND) - m0
    d, n_offs = descending_offsets(offsets, batch, heads)
    slots = max(1, min(n_rb + m0, d.shape[-1] + 1))
    lo = torch.zeros(batch * heads, n_rb, slots, dtype=torch.int32, device=device)
    hi = torch.zeros_like(lo)
    count = torch.zeros(batch * heads, n_rb, dtype=torch.int32, device=device)
    band_runs_kernel[(triton.cdiv(n_rb, RUN_BLOCKS), batch * heads)](
        d, n_offs, lo, hi, count, slots, d.shape[-1], m0, n_rb, BAND=BAND, RB=RUN_BLOCKS)
    return lo, hi, count


@triton.jit(do_not_specialize=["H", "GROUP", "Sq", "Sk", "q_off", "m0", "n_rb", "n_slots", "col_slots"])
def band_attention_kernel(
    Q, K, V, O, RUN_LO, RUN_HI, RUN_N, COLS, COL_HI, COLHIT,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s,
    H, GROUP, Sq, Sk, q_off, m0, n_rb, n_slots, col_slots, qk_scale,
    HEAD_D: tl.constexpr, BAND: tl.constexpr, HAS_COLS: tl.constexpr, F32: tl.constexpr,
):
    local = tl.num_programs(0) - 1 - tl.program_id(0)  # the last query blocks have the most work: start them first
    bh = tl.program_id(1).to(tl.int64)  # 64-bit from here: b, h, hk x strides pass 2^31 at 1M tokens
    b = bh // H
    h = bh % H
    hk = h // GROUP
    pos = (m0 + local) * BAND + tl.arange(0, BAND)      # absolute positions of this block's rows
    row_ok = (pos >= q_off) & (pos < Sk)
    offs_d = tl.arange(0, HEAD_D)
    q = tl.load(Q + b * sq_b + h * sq_h + (pos - q_off)[:, None].to(tl.int64) * sq_s + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    acc = tl.zeros([BAND, HEAD_D], dtype=tl.float32)
    m_i = tl.full([BAND], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BAND], dtype=tl.float32)
    offs = tl.arange(0, BAND)

    runs = bh * n_rb * n_slots + local * n_slots
    for r in range(0, tl.load(RUN_N + bh * n_rb + local)):
        lo = tl.load(RUN_LO + runs + r)
        hi = tl.load(RUN_HI + runs + r)
        for start in range(lo, hi, BAND):
            keys = start + offs
            kv_ok = keys < Sk
            k = tl.load(k_base + keys[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
            v = tl.load(v_base + keys[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
            keep = kv_ok[None, :] & (keys[None, :] <= pos[:, None]) & row_ok[:, None]
            if HAS_COLS:  # kept columns are computed below, once
                hit = tl.load(COLHIT + bh * Sk + keys, mask=kv_ok, other=0)
                keep = keep & (hit == 0)[None, :]
            acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, True, F32)

    if HAS_COLS:  # COLS sorted; [0, COL_HI) are at or before this block's last row; repeats skipped
        c_hi = tl.load(COL_HI + bh * n_rb + local)
        for c0 in range(0, c_hi, BAND):
            slot = c0 + offs
            cols = tl.load(COLS + bh * col_slots + slot, mask=slot < c_hi, other=0)
            prev = tl.load(COLS + bh * col_slots + slot - 1, mask=(slot < c_hi) & (slot > 0), other=-1)
            ok = (slot < c_hi) & (cols != prev)
            k = tl.load(k_base + cols[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            keep = ok[None, :] & (cols[None, :] <= pos[:, None]) & row_ok[:, None]
            acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, True, F32)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(O + b * so_b + h * so_h + (pos - q_off)[:, None].to(tl.int64) * so_s + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])


def band_attention(q, k, v, scale: float, offsets: torch.Tensor, columns: torch.Tensor | None,
                   out: torch.Tensor | None = None, runs=None) -> torch.Tensor:
    """Attention over MInference's executed pattern: offsets long [B, H, L] run as merged 64-key ranges per
    64-row query block, columns long [B, H, C] (-1 = unused) gathered; queries are the last q_len of k_len.
    runs: band_runs' output for these query blocks when the caller has it already."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q) if out is None else out
    device = q.device
    q_off = k_len - q_len
    m0 = q_off // BAND
    lo, hi, count = runs if runs is not None else band_runs(offsets.to(device), batch, heads, k_len, m0)
    n_rb, slots = lo.shape[1], lo.shape[2]
    has_cols = columns is not None and columns.shape[-1] > 0
    cols = col_hi = colhit = torch.zeros(1, dtype=torch.int32, device=device)
    col_slots = 0
    if has_cols:
        c = prepare_columns(columns.to(device), batch, heads, k_len)
        col_slots = c.shape[-1]
        last = ((m0 + torch.arange(n_rb, device=device) + 1) * BAND - 1).clamp(max=k_len - 1)
        col_hi = torch.searchsorted(c, last.expand(batch, heads, n_rb).contiguous(), right=True)
        cols, col_hi = c.to(torch.int32).contiguous(), col_hi.to(torch.int32).contiguous()
        colhit = hit_map(columns.to(device), batch, heads, k_len, device)
    band_attention_kernel[(n_rb, batch * heads)](
        q, k, v, out, lo, hi, count, cols, col_hi, colhit,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        heads, heads // kv_heads, q_len, k_len, q_off, m0, n_rb, slots, col_slots, scale * LOG2E,
        HEAD_D=head_dim, BAND=BAND, HAS_COLS=has_cols, F32=interpreter_f32(q), num_warps=4, num_stages=2,
    )
    return out
