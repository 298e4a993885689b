"""XAttention's threshold selection in one launch: per query-tile row, the kept key tiles from the tile scores.

Does what attention.methods.xattention.rank_tiles + select_tiles do (their docstrings give the rule: forced tiles,
then the best others, ties to the lower tile index, while the held mass is below threshold x the row total; rows
of the first chunk lag one pick), one program per (row, batch x head): the row's scores are sorted in registers,
the running sum is a scan, and since the held mass never falls along the sorted row, the picks are a prefix of it:
counted (the first-chunk rows' lag is that count plus one). Back on the tiles, everything scoring above the last
pick is kept, and of the tiles tied with it the lowest-index ones, as many as the picks that score it: the stable
sort's choice, without sorting indices (fp32 keys sort in half the work of (score, index) int64 keys). Rows up to
MAX_TILES tiles; longer rows take the PyTorch path.
"""
import torch
import triton
import triton.language as tl

MAX_TILES = 1024  # 128K tokens at block 128: the row lengths run on the H200 (results/bench/xest); longer rows
                  # (2048-8192 tiles would take 8-16 warps per row) are not yet measured there


@triton.jit(do_not_specialize=["H", "n", "first_rows", "threshold"])
def xattention_select_kernel(SCORES, THRESHOLDS, KEEP, H, n, first_rows, threshold,
                             NP: tl.constexpr, PER_HEAD: tl.constexpr):
    r = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    c = tl.arange(0, NP)
    real = c < n
    base = bh * n * n + r.to(tl.int64) * n
    x = tl.load(SCORES + base + c, mask=real, other=0.0)
    first = r < first_rows
    tile0 = (r >= first_rows) & (r > 0)          # key tile 0 is forced besides the diagonal (later-chunk rows)
    forced = (c == r) | ((c == 0) & tile0)
    forced_mass = tl.sum(tl.where(c == r, x, 0.0), 0) + tl.sum(tl.where(c == 0, x, 0.0), 0) * tile0.to(tl.float32)
    total = tl.sum(x, 0)
    if PER_HEAD:
        limit = tl.load(THRESHOLDS + bh % H) * total
    else:
        limit = threshold * total
    # the other tiles' scores sorted best first (forced tiles score -1, padding -2: after every other)
    other = real & ~forced
    value = tl.sort(tl.where(other, x, tl.where(real, -1.0, -2.0)), 0, descending=True)
    value = tl.where(value >= 0, value, 0.0)
    before = tl.cumsum(value, 0) - value           # mass of the better others, before each is taken
    slot = c
    free = n - 1 - tile0.to(tl.int32)              # slots that hold other (not forced) tiles
    below = (forced_mass + before) < limit
    taken_later = tl.sum((below & (slot < free)).to(tl.int32), 0)
    taken_first = tl.minimum((limit > 0).to(tl.int32) + tl.sum((below & (slot < free - 1)).to(tl.int32), 0), free)
    count = tl.where(first, taken_first, taken_later)
    # back to the tiles: every score above the last pick's is taken, and of those equal to it the first
    # (lowest-index) ones, as many as the picks that score it (a stable sort's order among ties)
    last = tl.sum(tl.where(slot == count - 1, value, 0.0), 0)
    ties_taken = tl.sum(((slot < count) & (value == last)).to(tl.int32), 0)
    tie = other & (x == last)
    tie_rank = tl.cumsum(tie.to(tl.int32), 0) - tie.to(tl.int32)
    take = other & (count > 0) & ((x > last) | (tie & (tie_rank < ties_taken)))
    keep = (take | (c == r) | (c == 0)) & (c <= r)
    tl.store(KEEP + base + c, keep.to(tl.int8), mask=real)


def supported(n: int) -> bool:
    return n <= MAX_TILES


def select_tiles_fused(scores: torch.Tensor, threshold: float | torch.Tensor, first_rows: int) -> torch.Tensor:
    """bool [B, H, n, n] from float32 tile scores [B, H, n, n] (>= 0): attention.methods.xattention's
    select_tiles(rank_tiles(scores, first_rows), threshold), threshold a float or float32 [H] on the device."""
    batch, heads, n, _ = scores.shape
    scores = scores.contiguous()
    keep = torch.empty(batch, heads, n, n, dtype=torch.bool, device=scores.device)
    per_head = isinstance(threshold, torch.Tensor)
    thresholds = threshold.to(scores.device, torch.float32).contiguous() if per_head else scores
    np2 = triton.next_power_of_2(max(n, 2))
    xattention_select_kernel[(n, batch * heads)](
        scores, thresholds, keep.view(torch.int8), heads, n, first_rows, 0.0 if per_head else float(threshold),
        NP=np2, PER_HEAD=per_head, num_warps=4 if np2 <= 1024 else (8 if np2 <= 4096 else 16),
    )
    return keep
