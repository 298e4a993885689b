"""Each row's k-th largest fp32 value, exactly, with no sort: oracle top-k's threshold (attention.kv_filter).

A float's bits, with the lower 31 flipped when the sign is set, are a signed int32 in the floats' own order
(-inf < ... < -0 < +0 < ... < +inf). One program per row builds the k-th largest of those keys bit by bit from
the top: a bit stays set while at least k keys are >= the candidate, 32 counting passes in all, exact whatever
the ties. The answer is always a key the row holds, so `scores >= threshold` keeps the ties at the threshold.
Rows up to ON_CHIP_MAX keys are loaded once and held in registers for the 32 passes; longer rows are re-read
tile by tile each pass (from L2 while few rows are in flight).
"""
import torch
import triton
import triton.language as tl

ON_CHIP_MAX = 32768  # keys held in registers per program: 64 int32 per thread at 16 warps
TILE = 4096          # keys per step of the re-reading loop past ON_CHIP_MAX
INT32_MIN = tl.constexpr(-2147483648)


@triton.jit
def _order_key(x):
    """int32 image of fp32 x that orders as x does (-0 just below +0)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _count_at_least(base, stride_col, length, cand, keys, ON_CHIP: tl.constexpr, BLOCK: tl.constexpr):
    """How many of the row's first `length` keys are >= cand (int32 scalar)."""
    if ON_CHIP:
        total = tl.sum((keys >= cand).to(tl.int32), axis=0)
    else:
        offs = tl.arange(0, BLOCK)
        total = 0
        for start in range(0, length, BLOCK):
            ok = start + offs < length
            x = tl.load(base + (start + offs).to(tl.int64) * stride_col, mask=ok, other=0.0)
            total += tl.sum((ok & (_order_key(x) >= cand)).to(tl.int32), axis=0)
    return total


@triton.jit
def row_threshold_kernel(SCORES, BUDGETS, LENGTHS, OUT, n_cols, stride_row, stride_col,
                         HAS_LENGTHS: tl.constexpr, ON_CHIP: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = SCORES + row.to(tl.int64) * stride_row
    length = n_cols
    if HAS_LENGTHS:
        length = tl.minimum(tl.load(LENGTHS + row).to(tl.int32), n_cols)
    budget = tl.minimum(tl.maximum(tl.load(BUDGETS + row).to(tl.int32), 1), length)
    keys = tl.zeros([BLOCK], tl.int32)  # unused off chip
    if ON_CHIP:
        offs = tl.arange(0, BLOCK)
        ok = offs < length
        x = tl.load(base + offs.to(tl.int64) * stride_col, mask=ok, other=0.0)
        keys = tl.where(ok, _order_key(x), INT32_MIN)  # padding: below every float's key, never counted
    # the top bit (sign of the key): is the k-th largest >= +0?
    found = tl.where(_count_at_least(base, stride_col, length, 0, keys, ON_CHIP, BLOCK) >= budget, 0, INT32_MIN)
    for step in range(31):
        cand = found | (1 << (30 - step))
        if _count_at_least(base, stride_col, length, cand, keys, ON_CHIP, BLOCK) >= budget:
            found = cand
    bits = found ^ ((found >> 31) & 0x7FFFFFFF)
    tl.store(OUT + row, bits.to(tl.float32, bitcast=True))


def row_thresholds(scores: torch.Tensor, budgets: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 [N]: the budgets[n]-th largest of scores[n, :lengths[n]] (fp32 [N, S], any strides; budgets and
    lengths int [N]; lengths default S, budgets clamped to [1, length]). Ties count once each, as in a sort,
    so scores[n] >= out[n] keeps at least budgets[n] entries, all the ties at the threshold included."""
    assert scores.dim() == 2 and scores.dtype == torch.float32, "scores: fp32 [N, S]"
    rows, n_cols = scores.shape
    assert n_cols >= 1 and budgets.shape == (rows,) and (lengths is None or lengths.shape == (rows,))
    out = torch.empty(rows, dtype=torch.float32, device=scores.device)
    if rows == 0:
        return out
    on_chip = n_cols <= ON_CHIP_MAX
    block = triton.next_power_of_2(max(n_cols, 16)) if on_chip else TILE
    warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
    budgets = budgets.to(device=scores.device, dtype=torch.int32).contiguous()
    has_lengths = lengths is not None
    lengths = lengths.to(device=scores.device, dtype=torch.int32).contiguous() if has_lengths else budgets
    row_threshold_kernel[(rows,)](scores, budgets, lengths, out, n_cols, scores.stride(0), scores.stride(1),
                                  HAS_LENGTHS=has_lengths, ON_CHIP=on_chip, BLOCK=block, num_warps=warps)
    return out
