"""Launcher of stage 1 (kernels in sampling.py): sampled column / diagonal scores, the Triton side of
attention.scores.sampled_scores (which SampleAttention, H2O and the oracle call)."""
import dataclasses

import torch
import triton

from attention.kernels.config import LOG2E, half_exp, interpreter_f32, scores_config, scores_pack_limit
from attention.kernels.sampling import column_scores_kernel, row_stats_kernel

BLOCK = 64  # rows per sampled block (and keys per block with diagonals); slash sampling takes runs of BLOCK rows


def head_pack(group: int, head_dim: int) -> int:
    """Query heads per pass-1 program: the largest power of two dividing the group, at most
    config.scores_pack_limit(), with the stacked query tile within 64 KB."""
    limit = scores_pack_limit()
    pack = 1
    while pack < limit and group % (pack * 2) == 0 and (pack * 2) * BLOCK * head_dim * 2 <= 65536:
        pack *= 2
    return pack


def pad_rows(rows: torch.Tensor) -> torch.Tensor:
    """int32 buffer padded with -1 to a multiple of BLOCK."""
    rows = rows.to(torch.int32).flatten()
    pad = (-rows.numel()) % BLOCK
    return torch.cat([rows, rows.new_full((pad,), -1)]) if pad else rows.contiguous()


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """The sampled rows as the stage-1 kernels read them, built once per shape and reused by every layer."""
    rows: torch.Tensor      # int32, padded with -1 to a multiple of BLOCK
    first_rb: torch.Tensor  # int32 [key blocks]: first row block whose last row reaches each key block
    full_rb: torch.Tensor   # int32 [key blocks]: first row block (>= first_rb) whose first row is past the block
    full_end: torch.Tensor  # int32 [1]: row blocks before this one hold no unused (-1) row


def row_plan(rows: torch.Tensor, q_len: int, k_len: int, head_dim: int, with_diag: bool = False) -> RowPlan:
    rows = pad_rows(rows)
    n_rb = rows.numel() // BLOCK
    kb2 = BLOCK if with_diag else scores_config(head_dim)[1]
    # first row block whose last row reaches each key block (blocks are ascending)
    block_last = torch.where(rows >= 0, rows + (k_len - q_len), -1).view(n_rb, BLOCK).amax(1)
    block_last = torch.cummax(block_last, 0).values.contiguous()
    key_first = torch.arange(triton.cdiv(k_len, kb2), device=rows.device, dtype=block_last.dtype) * kb2
    first_rb = torch.searchsorted(block_last, key_first)
    # unmasked tiles in pass 2: every row of the block valid and at or past the key block's last key
    block_first = torch.where(rows >= 0, rows + (k_len - q_len), k_len).view(n_rb, BLOCK).amin(1)
    block_first = torch.cummax(block_first, 0).values.contiguous()
    full_rb = torch.maximum(torch.searchsorted(block_first, key_first + kb2 - 1), first_rb)
    full_end = (rows.view(n_rb, BLOCK) >= 0).all(1).int().cumprod(0).sum().view(1)
    return RowPlan(rows, first_rb.to(torch.int32), full_rb.to(torch.int32), full_end.to(torch.int32))


def launch_sampled_scores(q, k, scale: float, rows, with_diag: bool = False):
    """Sum over the sampled query rows of their exact causal softmax probabilities.

    q [B, Hq, Sq, D], k [B, Hkv, Sk, D]; rows: query indices into q (ascending within each BLOCK; -1 = unused),
    or a RowPlan of them (row_plan; two launches per call then, nothing else).
    Returns (columns [B, Hq, Sk] fp32, diagonals [B, Hq, Sk] fp32 or None), diagonal d = query pos - key pos.
    with_diag needs every BLOCK of rows to be consecutive positions (a run), padding only at a run's end.
    """
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        q, k = q.contiguous(), k.contiguous()
    plan = rows if isinstance(rows, RowPlan) else row_plan(rows, q.shape[2], k.shape[2], q.shape[3], with_diag)
    m, l = launch_row_stats(q, k, scale, plan)
    return launch_column_scores(q, k, scale, plan, m, l, with_diag)


def _common(q, k, plan: RowPlan) -> tuple:
    heads, q_len, k_len = q.shape[1], q.shape[2], k.shape[2]
    return (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            heads, heads // k.shape[1], k_len, k_len - q_len, plan.rows.numel())


def launch_row_stats(q, k, scale: float, plan: RowPlan):
    """Pass 1: each sampled row's max and normaliser (m, l fp32 [B*Hq, padded rows], log2 units); one launch.
    q, k with unit stride in the head dim."""
    batch, heads, _, head_dim = q.shape
    n_rows = plan.rows.numel()
    m = torch.empty(batch * heads, n_rows, dtype=torch.float32, device=q.device)
    l = torch.empty_like(m)
    kb1, _, warps, stages = scores_config(head_dim)
    pack = head_pack(heads // k.shape[1], head_dim)
    row_stats_kernel[(n_rows // BLOCK, batch * heads // pack)](
        q, k, plan.rows, m, l, *_common(q, k, plan), scale * LOG2E, HEAD_D=head_dim, BLOCK_M=BLOCK, BLOCK_N=kb1,
        PACK=pack, F32=interpreter_f32(q), HALF=half_exp(q), num_warps=max(warps, 2 * pack),
        num_stages=stages)
    return m, l


def launch_column_scores(q, k, scale: float, plan: RowPlan, m, l, with_diag: bool = False):
    """Pass 2: the sampled rows' probabilities (from pass 1's m, l) summed down each key column (and diagonal);
    one launch. Returns (columns [B, Hq, Sk] fp32, diagonals or None)."""
    batch, heads, _, head_dim = q.shape
    k_len = k.shape[2]
    _, kb2, warps, stages = scores_config(head_dim)
    kb2 = BLOCK if with_diag else kb2  # the diagonal shear is written for square BLOCK x BLOCK tiles
    col = torch.empty(batch, heads, k_len, dtype=torch.float32, device=q.device)
    diag = torch.zeros(batch, heads, k_len, dtype=torch.float32, device=q.device) if with_diag else col
    column_scores_kernel[(triton.cdiv(k_len, kb2), batch * heads)](
        q, k, plan.rows, m, l, plan.first_rb, plan.full_rb, plan.full_end, col, diag, *_common(q, k, plan),
        plan.rows.numel() // BLOCK, scale * LOG2E, HEAD_D=head_dim, BLOCK_M=BLOCK, BLOCK_N=kb2, WITH_DIAG=with_diag,
        F32=interpreter_f32(q), HALF=half_exp(q), num_warps=warps, num_stages=stages)
    return col, (diag if with_diag else None)
