"""MInference's executed pattern as flat lists of 64-key tiles, for the tiled band kernel (bands_tiled.py).

A run of MInference (attention/bands.py) is whole 64-key tiles from its first range's start; walking the offsets
from the largest down, every event of the run builder adds exactly one tile: a new run its first tile (s - 64), a
run that grows its next one (the old end). So band_block_tiles_kernel emits each 64-row query block's tile starts
directly, ascending. The walk itself (walk_step) is shared with bands.band_runs_kernel, which stores whole runs.

A query tile of 128 rows holds two of MInference's blocks, m and m + 1; band_tile_lists merges their two sorted
lists into one (the union: a start both hold is computed once for all 128 rows) with two flag bits saying whose
rows keep it. An entry is start x 4 + flags (bit 0: the first 64 rows, bit 1: the last 64). Entries are split
like block_sparse's lists: tiles every row keeps whole (both flags, every key at or before the first row: no mask)
from slot 0, the others from the last slot backwards. With `pairs` (64-row tiles), two unmasked tiles next to each
other in one run become one 128-key entry listed first (half the softmax rescales of the accumulator per key).
All device-side (sort, cummax, searchsorted, scatter): no host sync.
"""
import torch
import triton
import triton.language as tl

BAND = 64         # MInference's block: rows per query block, keys per tile
RUN_BLOCKS = 64   # query blocks one walk program (band_block_tiles_kernel, bands.band_runs_kernel) takes together
NO_TILE = 1 << 29  # sorts past every real start (starts < 2^29: entries start x 4 + flags fit int32)


@triton.jit
def walk_step(d, end, re, started, BAND: tl.constexpr):
    """One offset d of the serial walk (offsets descending, so range ends ascend), for query blocks ending at `end`
    whose current run ends at `re` (`started` 0 before their first run). Returns (valid, s, fresh, gap, grow,
    first): whether the diagonal reaches the block, the range [s - 64, s) it crosses there; fresh: a run starts at
    s - 64; gap: after a finished run; grow: the run overlaps or touches the range and gains one tile (its old end);
    first: the block's first run starts (fresh == first | gap: the run builder reads that form, the tile walk the
    other, so that each kernel compiles to the SASS it had before the walk was shared). Then walk_end."""
    valid = d < end
    s = tl.maximum(end - d, BAND)
    fresh = valid & ((started == 0) | (s > re + BAND))
    first = valid & (started == 0)
    cont = valid & (started != 0)
    gap = cont & (s > re + BAND)
    grow = cont & (s <= re + BAND) & (s > re)
    return valid, s, fresh, gap, grow, first


@triton.jit
def walk_end(valid, s, fresh, grow, re, started, BAND: tl.constexpr):
    """(re, started) after walk_step's offset: the run's new end, and whether the block has a run."""
    return tl.where(fresh, s, tl.where(grow, re + BAND, re)), tl.maximum(started, valid.to(tl.int32))


@triton.jit
def walk_blocks(N_OFFS, n_slots, m0, n_rb, BAND: tl.constexpr, RB: tl.constexpr):
    """(bh, local, ok, end, out, n) of a walk program: its batch x head (64-bit: bh x blocks x slots passes 2^31 at
    1M tokens), its RB query blocks, which of them exist, one past each one's last row, each one's first output
    slot, and the head's offset count."""
    bh = tl.program_id(1).to(tl.int64)
    local = tl.program_id(0) * RB + tl.arange(0, RB)
    ok = local < n_rb
    end = (m0 + local + 1) * BAND
    out = bh * n_rb * n_slots + local.to(tl.int64) * n_slots
    return bh, local, ok, end, out, tl.load(N_OFFS + bh)


@triton.jit
def band_block_tiles_kernel(OFFS, N_OFFS, TILES, TILE_N, n_slots, offs_slots, m0, n_rb,
                            BAND: tl.constexpr, RB: tl.constexpr):
    bh, local, ok, end, out, n = walk_blocks(N_OFFS, n_slots, m0, n_rb, BAND, RB)
    re = tl.zeros([RB], dtype=tl.int32)
    cnt = tl.zeros([RB], dtype=tl.int32)
    started = tl.zeros([RB], dtype=tl.int32)
    for i in range(0, n):
        d = tl.load(OFFS + bh * offs_slots + i)
        valid, s, fresh, _, grow, _ = walk_step(d, end, re, started, BAND)
        tile = tl.where(fresh, s - BAND, re)         # a new run's first tile, or a growing run's next one
        emit = fresh | grow
        tl.store(TILES + out + cnt, tile, mask=emit & ok)
        cnt += emit.to(tl.int32)
        re, started = walk_end(valid, s, fresh, grow, re, started, BAND)
    tl.store(TILE_N + bh * n_rb + local, cnt, mask=ok)


def descending_offsets(offsets: torch.Tensor, batch: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets int32 [B*H, L] sorted descending with -1 last, their counts int32 [B*H]): what the walks read."""
    d = offsets.expand(batch, heads, offsets.shape[-1]).reshape(batch * heads, -1)
    d = torch.where(d >= 0, d, -1).sort(-1, descending=True).values
    n_offs = (d >= 0).sum(-1).to(torch.int32)
    return d.to(torch.int32).contiguous(), n_offs


def block_tiles(offsets: torch.Tensor, batch: int, heads: int, k_len: int, m0: int = 0):
    """(tiles, count): int32 [B*H, n_rb, slots] ascending tile starts of query blocks m0 .. ceil(k_len/64) - 1
    (unused slots NO_TILE) and int32 [B*H, n_rb] their counts, from offsets long [B, H, L] (any order, -1 unused).
    A block ending at e holds at most e / 64 tiles and one per offset: slots = min(blocks, L)."""
    device = offsets.device
    n_rb = triton.cdiv(k_len, BAND) - m0
    d, n_offs = descending_offsets(offsets, batch, heads)
    slots = max(1, min(n_rb + m0, d.shape[-1]))
    tiles = torch.full((batch * heads, n_rb, slots), NO_TILE, dtype=torch.int32, device=device)
    count = torch.empty(batch * heads, n_rb, dtype=torch.int32, device=device)
    band_block_tiles_kernel[(triton.cdiv(n_rb, RUN_BLOCKS), batch * heads)](
        d, n_offs, tiles, count, slots, d.shape[-1], m0, n_rb, BAND=BAND, RB=RUN_BLOCKS)
    return tiles, count


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return x.cumsum(-1, dtype=torch.int32) - x.int()


def tile_lists(tiles: torch.Tensor, count: torch.Tensor, m0: int, tile_m: int, pairs: bool = False):
    """(entries int32 [BH, n_qt, slots'], counts int32 [BH, n_qt, 3]) for query tiles of tile_m (64 or 128) rows
    from block_tiles' output: counts[..., 0] unmasked 128-key pairs from slot 0 (pairs and 64-row tiles only),
    counts[..., 1] unmasked 64-key tiles after them, counts[..., 2] masked ones from the last slot backwards (see
    the module docstring)."""
    rows, n_rb, slots = tiles.shape
    group = tile_m // BAND
    n_qt = triton.cdiv(n_rb, group)
    first = (m0 + torch.arange(n_qt, device=tiles.device, dtype=torch.int32) * group) * BAND  # tile's first row
    if group == 1:
        starts, flags = tiles, torch.full_like(tiles, 3)
    else:
        starts, flags = union(tiles, n_qt)
        slots = starts.shape[-1]
    real = starts < NO_TILE
    whole = real & (flags == 3) & (starts + BAND <= first[None, :, None])  # every row keeps every key: no mask
    masked = real & ~whole
    head = torch.zeros_like(whole)
    if pairs and group == 1:
        head, tail = pair_up(starts, whole)
        whole = whole & ~head & ~tail
    n_head = head.sum(-1, dtype=torch.int32)
    at_head = head.cumsum(-1, dtype=torch.int32) - 1
    at_whole = n_head[..., None] + whole.cumsum(-1, dtype=torch.int32) - 1
    at_masked = slots - masked.cumsum(-1, dtype=torch.int32)
    at = torch.where(head, at_head, torch.where(whole, at_whole, torch.where(masked, at_masked, slots))).long()
    entries = torch.zeros(rows, n_qt, slots + 1, dtype=torch.int32, device=tiles.device)
    entries.scatter_(2, at, torch.where(real, starts * 4 + flags, 0))
    counts = torch.stack((n_head, whole.sum(-1, dtype=torch.int32), masked.sum(-1, dtype=torch.int32)), -1)
    return entries[..., :slots].contiguous(), counts.contiguous()


def pair_up(starts: torch.Tensor, whole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(head, tail): bool like starts; along each run of adjacent unmasked tiles (ascending starts 64 apart), the
    1st, 3rd, ... tile heads a 128-key pair whose tail is the next one (an odd run's last tile stays single)."""
    follows = torch.zeros_like(whole)
    follows[..., 1:] = whole[..., 1:] & whole[..., :-1] & (starts[..., 1:] == starts[..., :-1] + BAND)
    index = torch.arange(starts.shape[-1], device=starts.device)
    run_first = torch.where(follows, 0, index).cummax(-1).values
    even = (index - run_first) % 2 == 0
    tail = follows & ~even
    has_next = torch.zeros_like(whole)
    has_next[..., :-1] = follows[..., 1:]
    return whole & even & has_next, tail


def union(tiles: torch.Tensor, n_qt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts, flags) int32 [BH, n_qt, 2 x slots]: per pair of blocks the sorted union of their tile starts
    (NO_TILE past the end), flag bit 0 where the first block keeps the start, bit 1 where the second does."""
    rows, n_rb, slots = tiles.shape
    if n_rb % 2:  # an empty block after the last one
        tiles = torch.nn.functional.pad(tiles, (0, 0, 0, 1), value=NO_TILE)
    a = tiles[:, 0::2].reshape(-1, slots).contiguous()
    b = tiles[:, 1::2].reshape(-1, slots).contiguous()
    b_below = torch.searchsorted(b, a, out_int32=True)  # starts of b before each of a
    a_dup = (b.gather(-1, b_below.clamp(max=slots - 1).long()) == a) & (a < NO_TILE)
    a_below = torch.searchsorted(a, b, out_int32=True)
    b_dup = (a.gather(-1, a_below.clamp(max=slots - 1).long()) == b) & (b < NO_TILE)
    index = torch.arange(slots, device=tiles.device, dtype=torch.int32)
    # place in the union = distinct starts below it: own index + the other's below - repeats below
    at_a = index + b_below - _exclusive_cumsum(a_dup)
    at_b = index + a_below - _exclusive_cumsum(b_dup)
    drop = 2 * slots
    merged = torch.full((a.shape[0], drop + 1), NO_TILE, dtype=torch.int32, device=tiles.device)
    merged_flags = torch.zeros_like(merged)
    at_a = torch.where(a < NO_TILE, at_a, drop).long()
    at_b = torch.where((b < NO_TILE) & ~b_dup, at_b, drop).long()
    merged.scatter_(1, at_a, a)
    merged_flags.scatter_(1, at_a, 1 + 2 * a_dup.int())
    merged.scatter_(1, at_b, b)
    merged_flags.scatter_(1, at_b, torch.full_like(b, 2))
    return merged[:, :drop].view(rows, n_qt, drop), merged_flags[:, :drop].view(rows, n_qt, drop)
