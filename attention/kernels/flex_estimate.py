"""FlexPrefill's estimate as a fixed chain of launches: what attention.methods.flexprefill's scores_from + select do
(their docstrings give the rule), for inputs whose whole causal tile grid is ranked at once.

1. `pool_blocks` (1 launch per tensor): block means in fp32 (queries front-padded to the key length, then scaled).
2. `flex_statistics` (2 launches, after the stage-1 column / diagonal sums of the last rows):
   - one program per (batch, head): the column and diagonal mass (sums / rows, zero-padded to whole tiles as the
     method pads them) written as int64 sort keys, the tile sums (tile 0 made inf for the ranking), and the head
     choice: the last queries' mean against the pooled keys, its softmax, sqrt JS divergence from the column tile
     mass, < tau;
   - one program per (query tiles, head): softmax over each query tile's causal key tiles of pooled queries x
     pooled keys (fp32 dots), written as sort keys, causal cells only, in the flat tril order.
   A key is row << 32 | (0x7FFFFFFF - fp32 bits of the value): for values >= 0, ascending keys are each row's
   values in descending order, rows one after another, so one stable sort ranks every row at once (ties: the lower
   position first, the stable order the method's `ranked` uses).
3. `flex_rank`: torch.sort of the whole key buffer (one aten sort).
4. `flex_select` (2 launches): per row, the running sum of the sorted values (accumulated in fp64 and rounded to
   fp32, as torch's CPU cumsum does) against its limit (gamma for mass rows, gamma x n for grid rows): a mass row's
   count gives its token budget, tile budget, and the top tiles (a register sort of the row's n tile sums, ties to
   the lower index); a grid row gives its last kept entry (key, position). Then per (query tiles, head) the mask:
   tile (r, c), c <= r, kept when its column c or its diagonal r - c is, or the head is query-aware and its grid
   key comes at or before the last kept one in the stable order (no scatter, no gather of an order); the cut also
   writes each head's query-aware share over the batch (the method's knob).
5. `flex_solve` (3 launches, density= only): the gamma of the method's device bisection, from a histogram of each
   head's cells over the step at which each tile is first kept (see the section below).
Launches per layer, at every length: pool 2 + stage 1 2 (+ its zero fill) + statistics 2 + sort 1 + select 2 = 10;
13 with density= (CPU count of the CUDA path, a sort counted once: tests/test_flex_estimate.py). No host sync.
Sorted rows are walked in CHUNK entries (one program per row); the grid's dots are fp32 (IEEE), as torch's matmul.
"""
import torch
import triton
import triton.language as tl

from attention.kernels.config import HEAD_DIMS
from attention.kernels.head_choice import TINY

MAX_TILES = 2048   # tile sums of a row sorted in registers (256K tokens at block 128)
MAX_BLOCK = 1024   # tokens per tile the per-head kernel loads at once
CHUNK = 4096       # sorted entries per step of the running sum (16 a thread at 8 warps)


def supported(head_dim: int, block: int, n: int) -> bool:
    return head_dim in HEAD_DIMS and 1 <= block <= MAX_BLOCK and 1 <= n <= MAX_TILES


@triton.jit
def _sort_key(row, value):
    """int64: row << 32 | (0x7FFFFFFF - fp32 bits of value >= 0)."""
    bits = value.to(tl.int32, bitcast=True).to(tl.int64)
    return (row.to(tl.int64) << 32) | (0x7FFFFFFF - bits)


@triton.jit
def _key_value(key):
    """fp32 value of a sort key (inverse of _sort_key)."""
    return (0x7FFFFFFF - (key - ((key >> 32) << 32))).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit(do_not_specialize=["H", "S", "pad", "n", "block"])
def pool_kernel(X, OUT, sx_b, sx_h, sx_s, H, S, pad, n, block, scale, HEAD_D: tl.constexpr, BT: tl.constexpr):
    t = tl.program_id(0)
    bh = tl.program_id(1)
    base = X + (bh // H).to(tl.int64) * sx_b + (bh % H).to(tl.int64) * sx_h
    d = tl.arange(0, HEAD_D)
    acc = tl.zeros([HEAD_D], tl.float32)
    start = t * block                              # positions after `pad` front zeros
    end = tl.minimum(start + block, S + pad)
    for p0 in range(start, end, BT):
        p = p0 + tl.arange(0, BT)
        real = (p < end) & (p >= pad)
        x = tl.load(base + (p - pad)[:, None].to(tl.int64) * sx_s + d[None, :], mask=real[:, None], other=0.0)
        acc += tl.sum(x.to(tl.float32), 0)
    tl.store(OUT + (bh.to(tl.int64) * n + t) * HEAD_D + d, acc / (end - start) * scale)


def pool_blocks(x: torch.Tensor, block: int, length: int, scale: float = 1.0) -> torch.Tensor:
    """fp32 [B, H, ceil(length / block), D]: x [B, H, S, D] front-padded with zeros to `length` tokens, averaged over
    consecutive blocks (a short last block over its real tokens), times scale: peer_estimation.block_pool_mean of
    the padded x, in one launch."""
    batch, heads, seq, dim = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    n = triton.cdiv(length, block)
    out = torch.empty(batch, heads, n, dim, dtype=torch.float32, device=x.device)
    pool_kernel[(n, batch * heads)](x, out, x.stride(0), x.stride(1), x.stride(2), heads, seq, length - seq, n, block,
                                    scale, HEAD_D=dim, BT=min(64, triton.next_power_of_2(block)), num_warps=4)
    return out


@triton.jit(do_not_specialize=["H", "GROUP", "k_len", "n", "block", "rows"])
def flex_head_kernel(COLS, DIAGS, TAIL, PK, KEYS, TILES, AWARE, st_b, st_h, st_s, H, GROUP, k_len, n, block, rows,
                     scale, tau, tiny, HEAD_D: tl.constexpr, BP: tl.constexpr, TB: tl.constexpr, TR: tl.constexpr):
    bh = tl.program_id(0)
    bh64 = bh.to(tl.int64)
    width = n * block
    cols_base = COLS + bh64 * k_len
    diags_base = DIAGS + bh64 * k_len
    off = width - k_len                        # diagonal mass sits at the near end: zeros first
    e = tl.arange(0, BP)
    t_in = tl.arange(0, TB)
    # mass rows as sort keys, and their tile sums (tile 0 inf: always ranked first)
    for t0 in range(0, n, TB):
        t = t0 + t_in
        j = t[:, None] * block + e[None, :]
        ok = (t[:, None] < n) & (e[None, :] < block)
        col = tl.load(cols_base + j, mask=ok & (j < k_len), other=0.0) / rows
        diag = tl.load(diags_base + (j - off), mask=ok & (j >= off), other=0.0) / rows
        tl.store(KEYS + (2 * bh64) * width + j, _sort_key(2 * bh, col), mask=ok)
        tl.store(KEYS + (2 * bh64 + 1) * width + j, _sort_key(2 * bh + 1, diag), mask=ok)
        col_tiles = tl.where(t == 0, float("inf"), tl.sum(col, 1))
        diag_tiles = tl.where(t == 0, float("inf"), tl.sum(diag, 1))
        tl.store(TILES + (2 * bh64) * n + t, col_tiles, mask=t < n)
        tl.store(TILES + (2 * bh64 + 1) * n + t, diag_tiles, mask=t < n)
    # head choice: mean of the last queries (x scale) against the pooled keys of this head's kv head
    d = tl.arange(0, HEAD_D)
    tail = TAIL + (bh // H).to(tl.int64) * st_b + (bh % H).to(tl.int64) * st_h
    mean_q = tl.zeros([HEAD_D], tl.float32)
    for r0 in range(0, rows, TR):
        r = r0 + tl.arange(0, TR)
        x = tl.load(tail + r[:, None].to(tl.int64) * st_s + d[None, :], mask=(r < rows)[:, None], other=0.0)
        mean_q += tl.sum(x.to(tl.float32), 0)
    mean_q = mean_q / rows * scale
    keys = PK + ((bh // H) * (H // GROUP) + (bh % H) // GROUP).to(tl.int64) * n * HEAD_D
    top = tl.full([TB], float("-inf"), tl.float32)
    for t0 in range(0, n, TB):
        t = t0 + t_in
        kt = tl.load(keys + t[:, None] * HEAD_D + d[None, :], mask=(t < n)[:, None], other=0.0)
        top = tl.maximum(top, tl.where(t < n, tl.sum(kt * mean_q[None, :], 1), float("-inf")))
    m = tl.max(top, 0)
    total = tl.zeros([TB], tl.float32)
    for t0 in range(0, n, TB):
        t = t0 + t_in
        kt = tl.load(keys + t[:, None] * HEAD_D + d[None, :], mask=(t < n)[:, None], other=0.0)
        total += tl.where(t < n, tl.exp(tl.sum(kt * mean_q[None, :], 1) - m), 0.0)
    total_sum = tl.sum(total, 0)
    acc = tl.zeros([TB], tl.float32)
    for t0 in range(0, n, TB):
        t = t0 + t_in
        kt = tl.load(keys + t[:, None] * HEAD_D + d[None, :], mask=(t < n)[:, None], other=0.0)
        p = tl.where(t < n, tl.exp(tl.sum(kt * mean_q[None, :], 1) - m) / total_sum, 0.0)
        j = t[:, None] * block + e[None, :]
        ok = (t[:, None] < n) & (e[None, :] < block)
        q = tl.sum(tl.load(cols_base + j, mask=ok & (j < k_len), other=0.0) / rows, 1)
        mid = tl.maximum((p + q) / 2, tiny)
        acc += tl.where(p > 0, 0.5 * p * tl.log(p / mid), 0.0) + tl.where(q > 0, 0.5 * q * tl.log(q / mid), 0.0)
    distance = tl.sqrt(tl.maximum(tl.sum(acc, 0), 0.0))
    tl.store(AWARE + bh, (distance < tau).to(tl.int8))


@triton.jit(do_not_specialize=["H", "GROUP", "n", "row0", "cells"])
def flex_grid_kernel(PQ, PK, GRID, H, GROUP, n, row0, cells,
                     HEAD_D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    mb = tl.program_id(0)
    bh = tl.program_id(1)
    rows = mb * BM + tl.arange(0, BM)
    d = tl.arange(0, HEAD_D)
    queries = tl.load(PQ + (bh.to(tl.int64) * n + rows[:, None]) * HEAD_D + d[None, :], mask=(rows < n)[:, None],
                      other=0.0)
    keys = PK + ((bh // H) * (H // GROUP) + (bh % H) // GROUP).to(tl.int64) * n * HEAD_D
    last = tl.minimum(mb * BM + BM, n)        # key tiles 0 .. last - 1 are causal for some row of this block
    m = tl.full([BM], float("-inf"), tl.float32)
    for c0 in range(0, last, BN):
        c = c0 + tl.arange(0, BN)
        kt = tl.load(keys + c[:, None] * HEAD_D + d[None, :], mask=(c < n)[:, None], other=0.0)
        s = tl.dot(queries, tl.trans(kt), input_precision="ieee")
        s = tl.where(c[None, :] <= rows[:, None], s, float("-inf"))
        m = tl.maximum(m, tl.max(s, 1))
    m = tl.where(rows < n, m, 0.0)
    total = tl.zeros([BM], tl.float32)
    for c0 in range(0, last, BN):
        c = c0 + tl.arange(0, BN)
        kt = tl.load(keys + c[:, None] * HEAD_D + d[None, :], mask=(c < n)[:, None], other=0.0)
        s = tl.dot(queries, tl.trans(kt), input_precision="ieee")
        total += tl.sum(tl.where(c[None, :] <= rows[:, None], tl.exp(s - m[:, None]), 0.0), 1)
    total = tl.where(rows < n, total, 1.0)
    out = GRID + bh.to(tl.int64) * cells
    first = rows.to(tl.int64) * (rows + 1) // 2      # flat position of (r, 0) among the causal cells
    for c0 in range(0, last, BN):
        c = c0 + tl.arange(0, BN)
        kt = tl.load(keys + c[:, None] * HEAD_D + d[None, :], mask=(c < n)[:, None], other=0.0)
        s = tl.dot(queries, tl.trans(kt), input_precision="ieee")
        causal = (c[None, :] <= rows[:, None]) & (rows[:, None] < n)
        p = tl.exp(tl.where(causal, s, float("-inf")) - m[:, None]) / total[:, None]
        tl.store(out + first[:, None] + c[None, :], _sort_key(row0 + bh, p), mask=causal)


def flex_statistics(tail, columns, diagonals, pooled_q, pooled_k, scale: float, block: int, tau: float):
    """(keys int64 [B*H*2*n*block + B*H*n(n+1)/2], tiles fp32 [B, H, 2, n] (tile 0 inf), query_aware bool [B, H]).
    tail: the last `rows` queries [B, H, rows, D]; columns, diagonals: their causal softmax summed per key column /
    diagonal [B, H, k_len] fp32; pooled_q [B, H, n, D] (x scale), pooled_k [B, Hkv, n, D] fp32 block means."""
    batch, heads, rows, dim = tail.shape
    k_len = columns.shape[-1]
    n = pooled_k.shape[2]
    group = heads // pooled_k.shape[1]
    if tail.stride(-1) != 1:
        tail = tail.contiguous()
    columns, diagonals = columns.contiguous(), diagonals.contiguous()
    pooled_q, pooled_k = pooled_q.contiguous(), pooled_k.contiguous()
    mass_rows, cells = batch * heads * 2, n * (n + 1) // 2
    keys = torch.empty(mass_rows * n * block + batch * heads * cells, dtype=torch.int64, device=tail.device)
    tiles = torch.empty(batch, heads, 2, n, dtype=torch.float32, device=tail.device)
    aware = torch.empty(batch, heads, dtype=torch.bool, device=tail.device)
    bp = triton.next_power_of_2(block)
    flex_head_kernel[(batch * heads,)](
        columns, diagonals, tail, pooled_k, keys, tiles, aware.view(torch.int8), tail.stride(0), tail.stride(1),
        tail.stride(2), heads, group, k_len, n, block, rows, scale, tau, TINY,
        HEAD_D=dim, BP=bp, TB=max(1, 4096 // max(bp, dim)), TR=16, num_warps=8)  # 118 registers at D128
    grid = keys[mass_rows * n * block:]  # the grid rows after the mass rows: sort-key rows mass_rows + (b, h)
    # 32 x 32 fp32 tiles: 146 registers at D128 (184 at D256) and no spill on sm_90 (64 x 64 spilled 1.3 KB)
    flex_grid_kernel[(triton.cdiv(n, 32), batch * heads)](
        pooled_q, pooled_k, grid, heads, group, n, mass_rows, cells, HEAD_D=dim, BM=32, BN=32, num_warps=4)
    return keys, tiles, aware


def flex_rank(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted keys, their positions): every row's stable descending order of values at once."""
    return torch.sort(keys, stable=True)


@triton.jit(do_not_specialize=["mass_rows", "width", "cells", "n", "block", "low", "high", "H", "batch"])
def flex_cut_kernel(SORTED, ORDER, TILES, AWARE, KEEP, LAST, LIMITS, SHARE, mass_rows, width, cells, n, block, low,
                    high, H, batch, CHUNK: tl.constexpr, NP: tl.constexpr):
    row = tl.program_id(0)
    grid_row = row >= mass_rows
    base = tl.where(grid_row, mass_rows.to(tl.int64) * width + (row - mass_rows).to(tl.int64) * cells,
                    row.to(tl.int64) * width)
    length = tl.where(grid_row, cells, width)
    limit = tl.load(LIMITS + grid_row.to(tl.int32))
    carry = tl.zeros([], tl.float64)
    count = tl.zeros([], tl.int32)
    offs = tl.arange(0, CHUNK)
    c0 = tl.zeros([], tl.int32)
    # values >= 0: the running sum never falls, so the count stops growing once it passes the limit
    while (c0 < length) & (carry.to(tl.float32) <= limit):
        ok = c0 + offs < length
        value = tl.where(ok, _key_value(tl.load(SORTED + base + c0 + offs, mask=ok, other=0)), 0.0)
        running = tl.cumsum(value.to(tl.float64), 0) + carry
        carry = tl.max(running, 0)
        count += tl.sum((ok & (running.to(tl.float32) <= limit)).to(tl.int32), 0)
        c0 += CHUNK
    if grid_row:
        # the kept prefix is the first max(count, 1) entries: its last one's key and position
        slot = base + tl.maximum(count, 1) - 1
        head = row - mass_rows
        tl.store(LAST + 2 * head, tl.load(SORTED + slot))
        tl.store(LAST + 2 * head + 1, tl.load(ORDER + slot))
        if head < H:  # batch 0's program: the head's query-aware share over the batch (the knobs' mean(0))
            aware = tl.zeros([], tl.float32)
            for b in range(0, batch):
                aware += (tl.load(AWARE + b * H + head) != 0).to(tl.float32)
            tl.store(SHARE + head, aware / batch)
    else:
        tokens = count + 1
        budget = tl.minimum(tl.maximum(tokens // block + 1, low), high)
        budget = tl.where(low <= high, budget, high)
        budget = tl.where(tl.load(AWARE + row // 2) != 0, tl.minimum(low, n), budget)
        # the budget's best tiles: all above the last pick's sum, and of those tied with it the lowest-index ones
        c = tl.arange(0, NP)
        real = c < n
        x = tl.load(TILES + row.to(tl.int64) * n + c, mask=real, other=-1.0)
        value = tl.sort(x, 0, descending=True)
        last = tl.sum(tl.where(c == budget - 1, value, 0.0), 0)
        ties_taken = tl.sum(((c < budget) & (value == last)).to(tl.int32), 0)
        tie = real & (x == last)
        tie_rank = tl.cumsum(tie.to(tl.int32), 0) - tie.to(tl.int32)
        keep = real & (budget > 0) & ((x > last) | (tie & (tie_rank < ties_taken)))
        tl.store(KEEP + row.to(tl.int64) * n + c, keep.to(tl.int8), mask=real)


@triton.jit(do_not_specialize=["n", "grid_start", "cells"])
def flex_mask_kernel(KEYS, KEEP, AWARE, LAST, OUT, n, grid_start, cells, BR: tl.constexpr, BC: tl.constexpr):
    rb = tl.program_id(0)
    bh = tl.program_id(1)
    bh64 = bh.to(tl.int64)
    rows = rb * BR + tl.arange(0, BR)
    aware = tl.load(AWARE + bh).to(tl.int32)
    last_key = tl.load(LAST + 2 * bh64)
    last_pos = tl.load(LAST + 2 * bh64 + 1)
    first = grid_start + bh64 * cells + rows.to(tl.int64) * (rows + 1) // 2
    for c0 in range(0, n, BC):
        c = c0 + tl.arange(0, BC)
        inside = (rows[:, None] < n) & (c[None, :] < n)
        causal = inside & (c[None, :] <= rows[:, None])
        column = tl.load(KEEP + (2 * bh64) * n + c, mask=c < n, other=0) != 0
        diagonal = tl.load(KEEP + (2 * bh64 + 1) * n + (rows[:, None] - c[None, :]), mask=causal, other=0) != 0
        pos = first[:, None] + c[None, :]
        wanted = causal & (c[None, :] * 0 + aware > 0)   # a whole block (the interpreter takes no scalar mask)
        key = tl.load(KEYS + pos, mask=wanted, other=0)
        chosen = wanted & ((key < last_key) | ((key == last_key) & (pos <= last_pos)))
        keep = causal & (column[None, :] | diagonal | chosen)
        tl.store(OUT + (bh64 * n + rows[:, None]) * n + c[None, :], keep.to(tl.int8), mask=inside)


def flex_select(keys, sorted_keys, order, tiles, aware, limits, block: int, low: int,
                high: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bool [B, H, n, n] the tiles FlexPrefill keeps, fp32 [H] each head's query-aware share over the batch), from
    flex_statistics' keys / tiles / aware, flex_rank's (sorted_keys, order), and limits fp32 [2] = (gamma, gamma x n)
    on the device; low / high: the tile budget's clamp (ceil(min_budget / block), min(ceil(max_budget / block), n)
    or n)."""
    batch, heads, _, n = tiles.shape
    cells = n * (n + 1) // 2
    mass_rows = batch * heads * 2
    width = n * block
    keep = torch.empty(batch, heads, 2, n, dtype=torch.int8, device=tiles.device)
    last = torch.empty(batch * heads, 2, dtype=torch.int64, device=tiles.device)
    share = torch.empty(heads, dtype=torch.float32, device=tiles.device)
    np2 = triton.next_power_of_2(max(n, 2))
    flex_cut_kernel[(mass_rows + batch * heads,)](
        sorted_keys, order, tiles, aware.view(torch.int8), keep, last, limits, share, mass_rows, width, cells, n,
        block, low, high, heads, batch, CHUNK=CHUNK, NP=np2, num_warps=8)
    blocks = torch.empty(batch, heads, n, n, dtype=torch.bool, device=tiles.device)
    flex_mask_kernel[(triton.cdiv(n, 32), batch * heads)](
        keys, keep, aware.view(torch.int8), last, blocks.view(torch.int8), n, mass_rows * width, cells,
        BR=32, BC=64, num_warps=4)
    return blocks, share


# ------------------------------------------------------------------ density=: the gamma solve in three launches
#
# The method solves gamma by attention.device_solve.bisect_on_device(share, target, 0, 1) (12 steps): every gamma
# it evaluates is a multiple of 1/4096 (halvings of [0, 1] in fp32 are exact). Each tile is kept from some gamma on
# (the budgets, the grid cut and so the mask only grow with gamma), so each tile has a first step k* in 0 .. 4096
# (NEVER past it); the kept cells at k / 4096 are the cells of the tiles with k* <= k. Three launches replace the
# bisection's 14 selections and density reductions: the first steps of every column / diagonal / grid entry (from
# the sorted running sums), a histogram of each head's cells over k* (integer-valued fp64 atomics: exact in any
# order), and one program that runs the bisection on the histograms and writes gamma and its limits.
STEPS = 12
RESOLUTION = 1 << STEPS
NEVER = RESOLUTION + 1


@triton.jit(do_not_specialize=["mass_rows", "width", "cells", "n", "block", "low", "high"])
def flex_first_step_kernel(SORTED, ORDER, TILES, AWARE, KPOS, KTILE, KGRID, HIST, mass_rows, width, cells, n, block,
                           low, high, CHUNK: tl.constexpr, NP: tl.constexpr, RES: tl.constexpr,
                           NEVER_K: tl.constexpr, BINS: tl.constexpr):
    row = tl.program_id(0)
    grid_row = row >= mass_rows
    grid_start = mass_rows.to(tl.int64) * width
    base = tl.where(grid_row, grid_start + (row - mass_rows).to(tl.int64) * cells, row.to(tl.int64) * width)
    length = tl.where(grid_row, cells, width)
    carry = tl.zeros([], tl.float64)
    offs = tl.arange(0, CHUNK)
    if grid_row:
        head = row - mass_rows
        for b0 in range(0, RES + 1, BINS):  # this head's histogram starts empty
            bins = b0 + tl.arange(0, BINS)
            tl.store(HIST + head.to(tl.int64) * (RES + 1) + bins, tl.zeros([BINS], tl.float64), mask=bins <= RES)
        for c0 in range(0, length, CHUNK):
            ok = c0 + offs < length
            value = tl.where(ok, _key_value(tl.load(SORTED + base + c0 + offs, mask=ok, other=0)), 0.0)
            running = tl.cumsum(value.to(tl.float64), 0) + carry
            carry = tl.max(running, 0)
            # slot p >= 1 is kept once its running sum <= gamma x n (fp32, exact at k / RES): from k = ceil(sum RES / n)
            first = tl.ceil(running.to(tl.float32).to(tl.float64) * RES / n)
            k = tl.where(first > RES, NEVER_K, first.to(tl.int32))
            k = tl.where(c0 + offs == 0, 0, k)   # the best entry is always kept
            pos = tl.load(ORDER + base + c0 + offs, mask=ok, other=0) - grid_start
            tl.store(KGRID + pos, k, mask=ok)
    else:
        # mass row: k_i = the first step whose gamma covers the running sum of the i best entries
        for c0 in range(0, length, CHUNK):
            i = c0 + offs
            ok = i < length
            value = tl.where(ok, _key_value(tl.load(SORTED + base + i, mask=ok, other=0)), 0.0)
            running = tl.cumsum(value.to(tl.float64), 0) + carry
            carry = tl.max(running, 0)
            first = tl.ceil(running.to(tl.float32) * RES)
            k = tl.where(first > RES, NEVER_K, first.to(tl.int32))
            rank = (i + 2) // block             # the budget passes tile rank r once count >= r x block - 1
            tl.store(KPOS + row.to(tl.int64) * n + rank, k, mask=ok & ((i + 2) % block == 0) & (rank < n))
        tl.debug_barrier()  # the stores above are visible to the loads below
        c = tl.arange(0, NP)
        real = c < n
        need = c * block - 1                    # entries the count must reach for tile rank c
        from_count = tl.load(KPOS + row.to(tl.int64) * n + c, mask=real & (need > 0), other=0)
        k = tl.where(c < low, 0, tl.where(c >= high, NEVER_K, tl.where(need > 0, from_count, 0)))
        k = tl.where(low <= high, k, tl.where(c < high, 0, NEVER_K))
        aware = tl.load(AWARE + row // 2) != 0
        k = tl.where(aware, tl.where(c < tl.minimum(low, n), 0, NEVER_K), k)
        # tile ranks: tile sums ranked best first, ties to the lower index (keys: inverted bits over the index)
        x = tl.load(TILES + row.to(tl.int64) * n + c, mask=real, other=0.0)
        bits = x.to(tl.int32, bitcast=True).to(tl.int64)
        key = tl.where(real, ((0x7FFFFFFF - bits) << 32) | c.to(tl.int64), 0x7FFFFFFFFFFFFFFF)
        ranked = tl.sort(key, 0)
        tile = (ranked - ((ranked >> 32) << 32)).to(tl.int32)
        tl.store(KTILE + row.to(tl.int64) * n + tile, k, mask=real)


@triton.jit(do_not_specialize=["n", "cells", "q_len", "k_len", "block"])
def flex_histogram_kernel(KTILE, KGRID, AWARE, HIST, n, cells, q_len, k_len, block, RES: tl.constexpr,
                          NEVER_K: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    rb = tl.program_id(0)
    bh = tl.program_id(1)
    bh64 = bh.to(tl.int64)
    rows = rb * BR + tl.arange(0, BR)
    aware = tl.load(AWARE + bh).to(tl.int32)
    # causal cells per tile (attention.density.block_cells): rows of query tile r times the key tile's width below
    # the diagonal (every tile there is whole), the triangle on it
    start = rows.to(tl.int64) * block
    width = tl.minimum(start + block, k_len) - start
    row_lo = tl.maximum(start, k_len - q_len)
    row_hi = start + width
    n_rows = tl.maximum(row_hi - row_lo, 0)
    own = (row_lo + row_hi + 1 - 2 * start) * n_rows // 2
    first = bh64 * cells + rows.to(tl.int64) * (rows + 1) // 2
    for c0 in range(0, rb * BR + BR, BC):
        c = c0 + tl.arange(0, BC)
        causal = (rows[:, None] < n) & (c[None, :] <= rows[:, None])
        column = tl.load(KTILE + (2 * bh64) * n + c, mask=c < n, other=NEVER_K)
        diagonal = tl.load(KTILE + (2 * bh64 + 1) * n + (rows[:, None] - c[None, :]), mask=causal, other=NEVER_K)
        grid = tl.load(KGRID + first[:, None] + c[None, :], mask=causal & (c[None, :] * 0 + aware > 0), other=NEVER_K)
        k = tl.minimum(tl.minimum(column[None, :], diagonal), grid)
        weight = tl.where(c[None, :] == rows[:, None], own[:, None], n_rows[:, None] * block)
        tl.atomic_add(HIST + bh64 * (RES + 1) + k, weight.to(tl.float64), mask=causal & (k <= RES))


@triton.jit
def _solve_share(HIST, k, BH, total, RES: tl.constexpr):
    """Mean over (batch, head) of the kept share at step k: per head fp32(kept cells / causal cells), HIST holding
    each head's cells kept by step k (prefix sums)."""
    acc = tl.zeros([], tl.float32)
    for bh in range(0, BH):
        acc += (tl.load(HIST + bh * (RES + 1) + k) / total).to(tl.float32)
    return acc / BH


@triton.jit(do_not_specialize=["BH", "n", "q_len", "k_len"])
def flex_solve_kernel(HIST, LIMITS, BH, n, q_len, k_len, target, STEPS_N: tl.constexpr, RES: tl.constexpr,
                      BINS: tl.constexpr):
    # each head's histogram into the cells kept by step k (running sums of whole numbers in fp64: exact)
    for bh in range(0, BH):
        carry = tl.zeros([], tl.float64)
        for b0 in range(0, RES + 1, BINS):
            bins = b0 + tl.arange(0, BINS)
            ptr = HIST + bh * (RES + 1) + bins
            running = tl.cumsum(tl.load(ptr, mask=bins <= RES, other=0.0), 0) + carry
            tl.store(ptr, running, mask=bins <= RES)
            carry = tl.max(running, 0)
    tl.debug_barrier()  # the running sums stored above are visible to the loads below
    total = (q_len.to(tl.int64) * (2 * k_len.to(tl.int64) - q_len + 1) // 2).to(tl.float64)  # causal cells
    lo = tl.zeros([], tl.float32)
    hi = tl.zeros([], tl.float32) + 1.0
    for _ in range(STEPS_N):
        mid = (lo + hi) / 2
        below = _solve_share(HIST, (mid * RES).to(tl.int32), BH, total, RES) < target
        lo = tl.where(below, mid, lo)
        hi = tl.where(below, hi, mid)
    d_lo = _solve_share(HIST, (lo * RES).to(tl.int32), BH, total, RES)
    d_hi = _solve_share(HIST, (hi * RES).to(tl.int32), BH, total, RES)
    gamma = tl.where(tl.abs(d_lo - target) < tl.abs(d_hi - target), lo, hi)
    tl.store(LIMITS, gamma)
    tl.store(LIMITS + 1, gamma * n)


def flex_solve(sorted_keys, order, tiles, aware, block: int, low: int, high: int, q_len: int, k_len: int,
               target: float) -> torch.Tensor:
    """fp32 [2] (gamma, gamma x n) on the device: the gamma that attention.device_solve.bisect_on_device (12 steps
    over [0, 1]) finds for the mean kept share of flex_select's masks, in three launches and no host sync."""
    batch, heads, _, n = tiles.shape
    cells = n * (n + 1) // 2
    mass_rows = batch * heads * 2
    width = n * block
    device = tiles.device
    first_rank = torch.empty(mass_rows, n, dtype=torch.int32, device=device)
    first_tile = torch.empty(mass_rows, n, dtype=torch.int32, device=device)
    first_grid = torch.empty(batch * heads * cells, dtype=torch.int32, device=device)
    hist = torch.empty(batch * heads, RESOLUTION + 1, dtype=torch.float64, device=device)
    np2 = triton.next_power_of_2(max(n, 2))
    flex_first_step_kernel[(mass_rows + batch * heads,)](
        sorted_keys, order, tiles, aware.view(torch.int8), first_rank, first_tile, first_grid, hist, mass_rows, width,
        cells, n, block, low, high, CHUNK=CHUNK, NP=np2, RES=RESOLUTION, NEVER_K=NEVER, BINS=1024, num_warps=8)
    flex_histogram_kernel[(triton.cdiv(n, 32), batch * heads)](
        first_tile, first_grid, aware.view(torch.int8), hist, n, cells, q_len, k_len, block, RES=RESOLUTION,
        NEVER_K=NEVER, BR=32, BC=64, num_warps=4)
    limits = torch.empty(2, dtype=torch.float32, device=device)
    flex_solve_kernel[(1,)](hist, limits, batch * heads, n, q_len, k_len, target, STEPS_N=STEPS, RES=RESOLUTION,
                            BINS=1024, num_warps=4)
    return limits
