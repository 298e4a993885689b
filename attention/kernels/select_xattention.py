"""XAttention's threshold selection in one launch: per query-tile row, the kept key tiles from the tile scores.

Does what attention.methods.xattention.rank_tiles + select_tiles do (their docstrings give the rule: forced tiles,
then the best others, ties to the lower tile index, while the held mass is below threshold x the row total; rows
of the first chunk lag one pick), one program per (row, batch x head): the row is sorted in registers as int64 keys
(the score's bits above the reversed tile index, so a descending sort is the stable descending sort), the running
sum is a scan, and the kept flags are stored back at the tiles' own positions. Since the held mass never falls
along the sorted row, the picks taken are a prefix of it: counted, not compared one by one, which makes the
first-chunk rows' lag a count plus one. Rows up to MAX_TILES tiles (512K tokens at block 128); longer rows take the
PyTorch path.
"""
import torch
import triton
import triton.language as tl

MAX_TILES = 4096  # a row of 4096 int64 keys is 32 KB of registers per program (8 warps: 32 per thread)


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
    # scores are >= 0: their bits (sign cleared, so -0.0 is 0) order like the values; the low word, NP - 1 - c,
    # puts the lower tile first among equal scores. Forced tiles sort after every other, padding after those.
    bits = (x.to(tl.int32, bitcast=True) & 0x7FFFFFFF).to(tl.int64)
    key = tl.where(real & ~forced, (bits << 32) | (NP - 1 - c), tl.where(real, -1 - c, -2 * NP - 1 - c))
    key = tl.sort(key, 0, descending=True)
    other = key >= 0
    col = tl.where(other, NP - 1 - (key & (NP - 1)), -1 - key)
    value = tl.where(other, (key >> 32).to(tl.int32).to(tl.float32, bitcast=True), 0.0)
    before = tl.cumsum(value, 0) - value           # mass of the better others, before each is taken
    slot = c
    free = n - 1 - tile0.to(tl.int32)              # slots that hold other (not forced) tiles
    below = (forced_mass + before) < limit
    taken_later = tl.sum((below & (slot < free)).to(tl.int32), 0)
    taken_first = tl.minimum((limit > 0).to(tl.int32) + tl.sum((below & (slot < free - 1)).to(tl.int32), 0), free)
    count = tl.where(first, taken_first, taken_later)
    keep = ((slot < count) | (col == r) | (col == 0)) & (col <= r)
    tl.store(KEEP + base + col, keep.to(tl.int8), mask=real)


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
        NP=np2, PER_HEAD=per_head, num_warps=4 if np2 <= 1024 else 8,
    )
    return keep
