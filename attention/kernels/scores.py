"""Launcher for stage 1: sampled column / diagonal scores (the whole-row column scores H2O reuses too)."""
import os

import torch
import triton

from attention.kernels.prefill import LOG2E, interpreter_f32
from attention.kernels.sampling import column_scores_kernel, row_stats_kernel

BLOCK = 64  # rows per sampled block (and keys per block with diagonals); slash sampling takes runs of BLOCK rows


def scores_config(head_dim: int) -> tuple[int, int, int, int]:
    """(keys per block in pass 1, in pass 2, num_warps, num_stages); ATTN_SCORES_CFG="64,64,4,3" overrides it
    for head dim 128. Default = the H100 sweep's best (results/bench/v2/sweep.log): 128-key blocks in both passes."""
    if os.environ.get("ATTN_SCORES_CFG") and head_dim == 128:
        return tuple(int(x) for x in os.environ["ATTN_SCORES_CFG"].split(","))
    return (128, 128, 4, 3) if head_dim <= 128 else (64, 64, 8, 3)


def head_pack(group: int, head_dim: int) -> int:
    """Query heads per pass-1 program (ATTN_SCORES_PACK, default 1): the largest power of two dividing the group,
    at most that, with the stacked query tile within 64 KB. Packing 4 heads measured no faster on the H100 at 128K
    and slower at 32K (results/bench/NOTES.md, v3), so it is off by default."""
    limit = int(os.environ.get("ATTN_SCORES_PACK", "1"))
    pack = 1
    while pack < limit and group % (pack * 2) == 0 and (pack * 2) * BLOCK * head_dim * 2 <= 65536:
        pack *= 2
    return pack


def pad_rows(rows: torch.Tensor) -> torch.Tensor:
    """int32 buffer padded with -1 to a multiple of BLOCK."""
    rows = rows.to(torch.int32).flatten()
    pad = (-rows.numel()) % BLOCK
    return torch.cat([rows, rows.new_full((pad,), -1)]) if pad else rows.contiguous()


def sampled_scores(q, k, scale: float, rows: torch.Tensor, with_diag: bool = False):
    """Sum over the sampled query rows of their exact causal softmax probabilities.

    q [B, Hq, Sq, D], k [B, Hkv, Sk, D]; rows: query indices into q (ascending within each BLOCK; -1 = unused).
    Returns (columns [B, Hq, Sk] fp32, diagonals [B, Hq, Sk] fp32 or None), diagonal d = query pos - key pos.
    with_diag needs every BLOCK of rows to be consecutive positions (a run), padding only at a run's end.
    """
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        q, k = q.contiguous(), k.contiguous()
    rows = pad_rows(rows.to(q.device))
    n_rows = rows.numel()
    n_rb = n_rows // BLOCK
    q_off = k_len - q_len
    bh = batch * heads
    m = torch.empty(bh, n_rows, dtype=torch.float32, device=q.device)
    l = torch.empty_like(m)
    kb1, kb2, warps, stages = scores_config(head_dim)
    kb2 = BLOCK if with_diag else kb2  # the diagonal shear is written for square BLOCK x BLOCK tiles
    common = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
              heads, heads // kv_heads, k_len, q_off, n_rows)
    pack = head_pack(heads // kv_heads, head_dim)
    row_stats_kernel[(n_rb, bh // pack)](q, k, rows, m, l, *common, scale * LOG2E, HEAD_D=head_dim, BLOCK_M=BLOCK,
                                         BLOCK_N=kb1, PACK=pack, F32=interpreter_f32(q),
                                         num_warps=max(warps, 2 * pack), num_stages=stages)
    # first row block whose last row reaches each key block (blocks are ascending)
    block_last = torch.where(rows >= 0, rows + q_off, -1).view(n_rb, BLOCK).amax(1)
    block_last = torch.cummax(block_last, 0).values.contiguous()
    n_kb = triton.cdiv(k_len, kb2)
    key_first = torch.arange(n_kb, device=q.device, dtype=block_last.dtype) * kb2
    first_rb = torch.searchsorted(block_last, key_first).to(torch.int32)
    col = torch.empty(batch, heads, k_len, dtype=torch.float32, device=q.device)
    diag = torch.zeros(batch, heads, k_len, dtype=torch.float32, device=q.device) if with_diag else col
    column_scores_kernel[(n_kb, bh)](q, k, rows, m, l, first_rb, col, diag, *common, n_rb, scale * LOG2E,
                                     HEAD_D=head_dim, BLOCK_M=BLOCK, BLOCK_N=kb2, WITH_DIAG=with_diag,
                                     F32=interpreter_f32(q), num_warps=warps, num_stages=stages)
    return col, (diag if with_diag else None)
