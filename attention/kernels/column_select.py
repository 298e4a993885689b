"""Stage 2 on the device, no host sync: a per-row score threshold, then the kept indices compacted in ascending
order by a prefix sum in one Triton launch. The threshold comes from the kernel's k-ary search over the float bit
patterns (select_top; the fused area rule below AREA_SORT_FROM keys) or, in select_columns, from one segmented
device sort over all rows (mass_threshold; area_threshold from AREA_SORT_FROM keys), which walks the rows in
parallel where the search walks each row 8 times in one program.

Selection rules (the same as attention/kv_filter.py with a stable descending sort, ties broken by index):
  mass  the fewest entries, best first, whose summed score reaches alpha of the row's total; zero scores never
  area  best entries first while their summed area (cells they add to the mask) stays within a budget
  all   every entry (alpha >= 1)
Entries below `exclude` are left out (sinks for columns, the window for diagonals).

The fused column form also writes what the sparse kernel reads: the sinks first, then the kept columns, as one
sorted int32 list per head, the per-query-block column ranges (col_full, col_hi) and the exact density, so a
SampleAttention layer is two stage-1 passes, the threshold's sort (~12 launches, the mass rule and long area rule),
this one and the sparse kernel (attention/sample_fused.py).
"""
import math

import torch
import triton
import triton.language as tl

MODES = {"all": 0, "mass": 1, "area": 2}
BLOCK = 1024   # scores per tile
SPLITS = 16    # thresholds tested per pass: 2^31 bit patterns need ceil(31 / log2(17)) = 8 passes
AREA_SORT_FROM = 65536  # keys from which the area rule's threshold comes from a device sort (area_threshold): on an
# H200 the sort path took 1.19-1.29 ms at 128K against the search's 2.34, and 0.62-0.84 ms at 32K against 0.55
# (its ~12 launches; results/bench/stage1/bench_stage1_run2.log); 64K lies between, unmeasured


@triton.jit
def _area(idx, sink, window, q_off, k_len):
    # rows of the causal mask a key column adds outside sink and window: queries i >= max(j + window, q_off)
    a = k_len - tl.maximum(idx + window, q_off)
    return tl.where((idx >= sink) & (a > 0), a, 0).to(tl.int64)


@triton.jit
def _load(S, idx, n, exclude):
    s = tl.load(S + idx, mask=idx < n, other=0.0)
    s = tl.where((s > 0.0) & (idx >= exclude), s, 0.0)  # -0.0 and NaN become +0.0: bit patterns then sort as floats
    return s, s.to(tl.int32, bitcast=True).to(tl.int64)


@triton.jit
def select_kernel(
    S, OUT, COUNT, PREFIX, COL_FULL, COL_HI, DENSITY, THR,
    n, s_row, out_row, exclude, window, q_off, k_len, n_qb, block_m,
    alpha_hi, alpha_lo, budget_hi, budget_lo, base_cells, causal_cells,
    MODE: tl.constexpr, FUSED: tl.constexpr, BLOCK: tl.constexpr, NS: tl.constexpr, GIVEN: tl.constexpr = False,
):
    row = tl.program_id(0).to(tl.int64)
    s_base = S + row * s_row
    zero = tl.program_id(0).to(tl.int64) * 0
    offs = tl.arange(0, BLOCK)
    split = tl.arange(0, NS).to(tl.int64) + 1
    zf = zero.to(tl.float64)
    budget = (zf + budget_hi) + budget_lo  # fp32 arguments joined in fp64

    total = zf
    if MODE == 1:
        for t0 in range(0, n, BLOCK):
            s, bits = _load(s_base, t0 + offs, n, exclude)
            total += tl.sum(s.to(tl.float64), 0)
    target = total * (zf + alpha_hi) + total * (zf + alpha_lo)

    # threshold T (a bit pattern): mass: the largest t with sum(s >= t) >= target; area: the smallest t with
    # area(s > t) <= budget. Each pass tests NS evenly spaced candidates inside (lo, hi).
    lo = zero - 1
    hi = zero + 0x7F800000
    if MODE == 1:
        lo = zero
        hi = zero + 0x7F800001
        if GIVEN:  # the mass threshold came from a parallel sort on the device (mass_threshold): no search
            lo = zero + tl.load(THR + row)
            hi = lo + 1
    if MODE == 2:
        if GIVEN:  # the area threshold came from a parallel sort on the device (area_threshold): no search
            hi = zero + tl.load(THR + row)
            lo = hi - 1
    if MODE != 0:
        while hi - lo > 1:
            cand = lo + ((hi - lo) * split) // (NS + 1)
            if MODE == 1:
                acc = tl.zeros([NS], dtype=tl.float64)
                for t0 in range(0, n, BLOCK):
                    s, bits = _load(s_base, t0 + offs, n, exclude)
                    acc += tl.sum(tl.where(bits[:, None] >= cand[None, :], s[:, None], 0.0), 0).to(tl.float64)
                ok = acc >= target  # true for the low candidates
                lo_new = tl.max(tl.where(ok, cand, lo), 0)
                hi = tl.min(tl.where(ok, hi, cand), 0)
                lo = lo_new
            else:
                acc = tl.zeros([NS], dtype=tl.int64)
                for t0 in range(0, n, BLOCK):
                    idx = t0 + offs
                    s, bits = _load(s_base, idx, n, exclude)
                    a = _area(idx, exclude, window, q_off, k_len)
                    acc += tl.sum(tl.where(bits[:, None] > cand[None, :], a[:, None], 0), 0)
                ok = acc.to(tl.float64) <= budget  # true for the high candidates
                hi_new = tl.min(tl.where(ok, cand, hi), 0)
                lo = tl.max(tl.where(ok, lo, cand), 0)
                hi = hi_new
    thr = hi
    if MODE == 1:
        thr = lo
    thr_f = thr.to(tl.int32).to(tl.float32, bitcast=True).to(tl.float64)

    # what lies strictly above the threshold, then the ties at it taken in index order
    above = zero.to(tl.float64)
    if MODE != 0:
        for t0 in range(0, n, BLOCK):
            idx = t0 + offs
            s, bits = _load(s_base, idx, n, exclude)
            if MODE == 1:
                above += tl.sum(tl.where(bits > thr, s.to(tl.float64), 0.0), 0)
            else:
                above += tl.sum(tl.where(bits > thr, _area(idx, exclude, window, q_off, k_len), 0), 0).to(tl.float64)

    out_base = OUT + row * out_row
    kept = zero.to(tl.int32)
    ties = zero
    area_kept = zero
    for t0 in range(0, n, BLOCK):
        idx = t0 + offs
        inside = idx < n
        s, bits = _load(s_base, idx, n, exclude)
        a = _area(idx, exclude, window, q_off, k_len)
        if MODE == 0:
            keep = inside
        else:
            tie = inside & (bits == thr) & (idx >= exclude)
            if MODE == 1:
                rank = ties + tl.cumsum(tie.to(tl.int64), 0) - tie.to(tl.int64)
                keep_tie = tie & (thr > 0) & (above + thr_f * rank.to(tl.float64) < target)
                ties += tl.sum(tie.to(tl.int64), 0)
            else:
                run = ties + tl.cumsum(tl.where(tie, a, 0), 0)
                keep_tie = tie & (above + run.to(tl.float64) <= budget)
                ties += tl.sum(tl.where(tie, a, 0), 0)
            keep = inside & (idx >= exclude) & ((bits > thr) | keep_tie)
        if FUSED:
            keep = keep | (inside & (idx < exclude))  # the sinks lead the list the sparse kernel gathers
            area_kept += tl.sum(tl.where(keep, a, 0), 0)
        keep = tl.where(keep, 1, 0) != 0  # a fresh bool array (the interpreter rejects the combined mask)
        incl = kept + tl.cumsum(keep.to(tl.int32), 0)
        tl.store(out_base + incl - 1, idx.to(tl.int32), mask=keep)
        if FUSED:
            tl.store(PREFIX + row * n + idx, incl, mask=inside)
        kept += tl.sum(keep.to(tl.int32), 0)
    for t0 in range(0, n, BLOCK):
        slot = t0 + offs
        tl.store(out_base + slot, tl.full([BLOCK], -1, tl.int32), mask=(slot >= kept) & (slot < n))
    tl.store(COUNT + row, kept)

    if FUSED:
        # query block qb uses, for all its rows, the columns <= its first row - window (col_full), and for some
        # rows those <= its last row - window (col_hi): prefix counts at those keys
        tl.debug_barrier()
        for b0 in range(0, n_qb, BLOCK):
            qb = b0 + offs
            first = q_off + qb * block_m
            last = tl.minimum(first + block_m - 1, k_len - 1)
            x_full = tl.minimum(first - window, n - 1)
            x_hi = tl.minimum(last - window, n - 1)
            full = tl.load(PREFIX + row * n + x_full, mask=(qb < n_qb) & (x_full >= 0), other=0)
            high = tl.load(PREFIX + row * n + x_hi, mask=(qb < n_qb) & (x_hi >= 0), other=0)
            tl.store(COL_FULL + row * n_qb + qb, full, mask=qb < n_qb)
            tl.store(COL_HI + row * n_qb + qb, high, mask=qb < n_qb)
        dens = (zf + base_cells + area_kept.to(tl.float64)) / (zf + causal_cells)
        tl.store(DENSITY + row, dens.to(tl.float32))


def _tiles(n: int) -> tuple[int, int]:
    """(scores per tile, warps). 4096-wide tiles with 16 warps measured slower on an H200 (3.6 ms vs 2.4 ms for
    32 rows of 128K: the [tile, SPLITS] candidate sums spill), so one size for all."""
    return BLOCK, 4


def _split(x: float) -> tuple[float, float]:
    """x as two fp32 kernel arguments whose fp64 sum is x to ~1e-15 (kernel float arguments are fp32)."""
    hi = float(torch.tensor(x, dtype=torch.float32))
    return hi, float(x - hi)


def _mode(alpha: float | None, budget: float | None) -> int:
    if (alpha is None) == (budget is None):
        raise ValueError("give exactly one of alpha (mass rule) or budget (area rule)")
    return MODES["area"] if budget is not None else (MODES["all"] if alpha >= 1.0 else MODES["mass"])


def select_top(scores: torch.Tensor, *, alpha: float | None = None, budget: float | None = None, exclude: int = 0,
               window: int = 0, q_len: int | None = None) -> torch.Tensor:
    """int32 like scores [..., N]: per row the kept indices ascending, -1 in unused slots at the end.

    mass (alpha) or area (budget; a key column's area follows from window and q_len as in the sparse mask)."""
    n = scores.shape[-1]
    rows = scores.reshape(-1, n).float().contiguous()
    out = torch.empty(rows.shape, dtype=torch.int32, device=scores.device)
    count = torch.empty(rows.shape[0], dtype=torch.int32, device=scores.device)
    q_len = n if q_len is None else q_len
    a_hi, a_lo = _split(alpha if alpha is not None else 1.0)
    b_hi, b_lo = _split(budget if budget is not None else 0.0)
    select_kernel[(rows.shape[0],)](
        rows, out, count, count, count, count, rows, count, n, rows.stride(0), out.stride(0), exclude, window,
        n - q_len, n,
        1, 1, a_hi, a_lo, b_hi, b_lo, 0.0, 1.0,
        MODE=_mode(alpha, budget), FUSED=False, BLOCK=_tiles(n)[0], NS=SPLITS, num_warps=_tiles(n)[1])
    return out.view(scores.shape)


def select_columns(col: torch.Tensor, *, sink: int, window: int, q_len: int, block_m: int, base_cells: int,
                   causal_cells: int, alpha: float | None = None, budget: float | None = None,
                   area_sort: bool | None = None):
    """Fused column selection for the sparse kernel, from column scores fp32 [B, H, Sk]. The area rule's threshold
    comes from area_threshold's sort from AREA_SORT_FROM keys, else from the kernel's search; area_sort=True/False
    forces one (scripts/bench_stage1.py times both).

    Returns (cols int32 [B, H, Sk]: sinks then kept columns ascending, -1 after; col_full, col_hi int32
    [B, H, n_qb] for query blocks of block_m rows; density fp32 [B, H], the exact share of the causal area)."""
    batch, heads, k_len = col.shape
    col = col.contiguous()
    n_qb = triton.cdiv(q_len, block_m)
    rows = batch * heads
    dev = col.device
    cols = torch.empty(batch, heads, k_len, dtype=torch.int32, device=dev)
    prefix = torch.empty(rows, k_len, dtype=torch.int32, device=dev)
    col_full = torch.empty(batch, heads, n_qb, dtype=torch.int32, device=dev)
    col_hi = torch.empty_like(col_full)
    count = torch.empty(rows, dtype=torch.int32, device=dev)
    dens = torch.empty(batch, heads, dtype=torch.float32, device=dev)
    a_hi, a_lo = _split(alpha if alpha is not None else 1.0)
    b_hi, b_lo = _split(budget if budget is not None else 0.0)
    mode = _mode(alpha, budget)
    area_sort = k_len >= AREA_SORT_FROM if area_sort is None else area_sort
    given = mode == MODES["mass"] or (mode == MODES["area"] and area_sort)
    thr = count
    if given and mode == MODES["mass"]:
        thr = mass_threshold(col.view(rows, k_len), alpha, min(sink, k_len))
    elif given:
        thr = area_threshold(col.view(rows, k_len), b_hi, b_lo, min(sink, k_len), window, k_len - q_len)
    select_kernel[(rows,)](
        col, cols, count, prefix, col_full, col_hi, dens, thr, k_len, k_len, k_len, min(sink, k_len), window,
        k_len - q_len, k_len, n_qb, block_m, a_hi, a_lo, b_hi, b_lo, float(base_cells), float(causal_cells),
        MODE=mode, FUSED=True, BLOCK=_tiles(k_len)[0], NS=SPLITS, GIVEN=given, num_warps=_tiles(k_len)[1])
    return cols, col_full, col_hi, dens


def mass_threshold(scores: torch.Tensor, alpha: float, exclude: int) -> torch.Tensor:
    """int64 [rows]: the bit pattern of the mass rule's threshold per row, the largest t with sum(s >= t) >= alpha x
    total over the kernel's scores (non-positive, NaN and the first `exclude` entries count as 0): the value at the
    first sorted position whose running sum reaches the target. A segmented sort and a cumsum run over all rows in
    parallel, where the kernel's k-ary search walks each row 8 times in one program."""
    keys = torch.arange(scores.shape[-1], device=scores.device)
    s = torch.where((scores > 0) & (keys >= exclude), scores, 0.0)
    ranked = s.sort(-1, descending=True).values
    csum = ranked.double().cumsum(-1)
    target = csum[:, -1:] * alpha
    first = torch.searchsorted(csum, target).clamp(max=scores.shape[-1] - 1)
    return ranked.gather(-1, first).view(torch.int32).long().flatten().contiguous()


def area_threshold(scores: torch.Tensor, budget_hi: float, budget_lo: float, exclude: int, window: int,
                   q_off: int) -> torch.Tensor:
    """int64 [rows]: the bit pattern of the area rule's threshold per row, the smallest t with area(s > t) <= the
    budget, as select_kernel's k-ary search finds it (non-positive, NaN and the first `exclude` entries count as 0;
    the budget is the kernel's, fp64(budget_hi) + fp64(fp32(budget_lo))): the value at the first sorted position
    whose running area passes the budget, 0 when every entry fits. Ties there do not move it (the running area
    before their group is the same in any order). One segmented sort over all rows, where the search walks each
    row 8 times in one program (2.3 ms at 128K: results/bench/stage1)."""
    n = scores.shape[-1]
    keys = torch.arange(n, device=scores.device)
    s = torch.where((scores > 0) & (keys >= exclude), scores, 0.0)
    area = (n - torch.clamp(keys + window, min=q_off)).clamp(min=0)  # the kernel's _area, one row for all
    area = torch.where(keys >= exclude, area, 0).to(torch.int32)
    ranked, order = s.sort(-1, descending=True)
    csum = area[order].cumsum(-1, dtype=torch.int64)
    budget = float(budget_hi) + float(torch.tensor(budget_lo, dtype=torch.float32))  # the kernel's fp64 sum
    # integer running areas pass the budget where they pass its floor; first: the first sorted position that does
    limit = torch.full((s.shape[0], 1), min(math.floor(budget), 2**62), dtype=torch.int64, device=s.device)
    first = torch.searchsorted(csum, limit, right=True)
    past = first.clamp(max=n - 1)
    bits = ranked.gather(-1, past).view(torch.int32).long()
    return torch.where(first < n, bits, 0).flatten().contiguous()
