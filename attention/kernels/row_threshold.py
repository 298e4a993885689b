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
TILE = 4096          # keys per step of the re-reading loop past ON_CHIP_MAX, and of the finish kernel's writes
INT32_MIN = tl.constexpr(-2147483648)


@triton.jit
def _order_key(x):
    """int32 image of fp32 x that orders as x does (-0 just below +0)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _count_at_least(base, stride_col, length, scale, cand, keys, ON_CHIP: tl.constexpr, BLOCK: tl.constexpr):
    """How many of the row's first `length` keys (of x * scale) are >= cand (int32 scalar)."""
    if ON_CHIP:
        total = tl.sum((keys >= cand).to(tl.int32), axis=0)
    else:
        offs = tl.arange(0, BLOCK)
        hits = tl.zeros([BLOCK], tl.int32)
        for start in range(0, length, BLOCK):
            ok = start + offs < length
            x = tl.load(base + (start + offs).to(tl.int64) * stride_col, mask=ok, other=0.0)
            hits += (ok & (_order_key(x * scale) >= cand)).to(tl.int32)
        total = tl.sum(hits, axis=0)
    return total


@triton.jit
def _kth_key(base, stride_col, length, budget, scale, ON_CHIP: tl.constexpr, BLOCK: tl.constexpr):
    """The budget-th largest key of x * scale over the row's first `length` entries (1 <= budget <= length)."""
    keys = tl.zeros([BLOCK], tl.int32)  # unused off chip
    if ON_CHIP:
        offs = tl.arange(0, BLOCK)
        ok = offs < length
        x = tl.load(base + offs.to(tl.int64) * stride_col, mask=ok, other=0.0)
        keys = tl.where(ok, _order_key(x * scale), INT32_MIN)  # padding: below every float's key, never counted
    # the top bit (sign of the key): is the k-th largest >= +0?
    found = tl.where(_count_at_least(base, stride_col, length, scale, 0, keys, ON_CHIP, BLOCK) >= budget,
                     0, INT32_MIN)
    for step in range(31):
        cand = found | (1 << (30 - step))
        if _count_at_least(base, stride_col, length, scale, cand, keys, ON_CHIP, BLOCK) >= budget:
            found = cand
    return found


@triton.jit
def row_threshold_kernel(SCORES, BUDGETS, LENGTHS, OUT, n_cols, stride_row, stride_col,
                         HAS_LENGTHS: tl.constexpr, ON_CHIP: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = SCORES + row.to(tl.int64) * stride_row
    length = n_cols
    if HAS_LENGTHS:
        length = tl.minimum(tl.load(LENGTHS + row).to(tl.int32), n_cols)
    budget = tl.minimum(tl.maximum(tl.load(BUDGETS + row).to(tl.int32), 1), length)
    found = _kth_key(base, stride_col, length, budget, 1.0, ON_CHIP, BLOCK)
    bits = found ^ ((found >> 31) & 0x7FFFFFFF)
    tl.store(OUT + row, bits.to(tl.float32, bitcast=True))


@triton.jit
def topk_finish_kernel(SCORES, KEEP, BUDGETS, LENGTHS, n_cols, width, stride_row, stride_col, stride_keep, scale,
                       ON_CHIP: tl.constexpr, BLOCK: tl.constexpr, WRITE: tl.constexpr):
    """Row n of raw q.k products, in place: x * scale where kept (top budget of its first `length`, ties
    included), -inf elsewhere across all n_cols; KEEP[n, :width] = kept."""
    row = tl.program_id(0)
    base = SCORES + row.to(tl.int64) * stride_row
    length = tl.minimum(tl.load(LENGTHS + row).to(tl.int32), width)
    budget = tl.minimum(tl.maximum(tl.load(BUDGETS + row).to(tl.int32), 1), length)
    found = _kth_key(base, stride_col, length, budget, scale, ON_CHIP, BLOCK)
    offs = tl.arange(0, WRITE)
    for start in range(0, n_cols, WRITE):  # every read of the row precedes this loop: safe in place
        cols = start + offs
        x = tl.load(base + cols.to(tl.int64) * stride_col, mask=cols < length, other=0.0) * scale
        kept = (cols < length) & (_order_key(x) >= found)
        tl.store(base + cols.to(tl.int64) * stride_col, tl.where(kept, x, float("-inf")), mask=cols < n_cols)
        tl.store(KEEP + row.to(tl.int64) * stride_keep + cols, kept.to(tl.int8), mask=cols < width)


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


def topk_finish(raw: torch.Tensor, budgets: torch.Tensor, lengths: torch.Tensor, width: int, scale: float):
    """raw fp32 [N, S] (q.k products, unscaled; any strides) rewritten in place to the masked, scaled scores
    oracle-topk feeds its softmax: raw * scale where row n keeps it (the budgets[n] largest of its first
    lengths[n] <= width entries, ties at the threshold included), -inf elsewhere. Returns keep bool [N, width].
    The same values as (raw * scale), causal -inf, row_topk_keep, masked_fill: one read and one write of the row."""
    assert raw.dim() == 2 and raw.dtype == torch.float32 and 1 <= width <= raw.shape[1]
    rows, n_cols = raw.shape
    keep = torch.empty(rows, width, dtype=torch.bool, device=raw.device)
    if rows == 0:
        return keep
    on_chip = width <= ON_CHIP_MAX
    # widths grow chunk by chunk: a floor of 1,024 keeps it to 6 compiled variants up to 32K, not 12
    block = triton.next_power_of_2(max(width, 1024)) if on_chip else TILE
    warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
    topk_finish_kernel[(rows,)](
        raw, keep.view(torch.int8), budgets.to(device=raw.device, dtype=torch.int32).contiguous(),
        lengths.to(device=raw.device, dtype=torch.int32).contiguous(), n_cols, width, raw.stride(0), raw.stride(1),
        keep.stride(0), scale, ON_CHIP=on_chip, BLOCK=block, WRITE=min(block, TILE), num_warps=warps)
    return keep
