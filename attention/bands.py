"""BandPattern: a vertical-slash pattern executed the way MInference's kernel executes it.

Per 64-row query block (blocks counted from absolute position 0), each kept diagonal offset d contributes the
64-key range [64m - d, 64m + 64 - d) that the diagonal crosses in block m (clamped to start at >= 0). Taking
offsets from the largest down, a range that starts past the end of the current run + 64 starts a new run, one that
ends past it grows the run by one 64-key tile (so runs are whole tiles from their first range's start); every cell
of a run's tiles is computed (causal), which is 2-4x the cells of the exact diagonals at MInference's sizes. Kept
columns count everywhere (causal). This is csrc/vertical_slash_index.cu (convert_vertical_slash_indexes) of
microsoft/MInference, re-derived; tests/test_peer_fidelity.py compares the runs and masks with its output.

On the Triton path attention/kernels/band_tiles.py lists each query tile's 64-key tiles and
attention/kernels/bands_tiled.py runs them (TMA on Hopper); attention/kernels/bands.py builds the runs for the
kept share. Elsewhere band_runs_torch builds the same runs and the exact PyTorch executor runs the keep mask.
"""
from dataclasses import dataclass

import torch

from attention.backend import triton_enabled
from attention.density import causal_area
from attention.executor import torch_pattern_attention
from attention.indices import first_of_run, prepare_columns
from attention.pattern import SparsePattern

BAND = 64


def band_runs_torch(offsets: torch.Tensor, batch: int, heads: int, k_len: int, m0: int = 0):
    """Same contract as attention.kernels.bands.band_runs, in PyTorch (band_runs_of_blocks for blocks m0 on)."""
    n_blocks = -(-k_len // BAND)
    slots = max(1, min(n_blocks, offsets.shape[-1] + 1))
    return band_runs_of_blocks(offsets, batch, heads, k_len, torch.arange(m0, n_blocks, device=offsets.device), slots)


def band_runs_of_blocks(offsets: torch.Tensor, batch: int, heads: int, k_len: int, blocks: torch.Tensor,
                        slots: int):
    """(lo, hi, count) of the runs of the given absolute 64-row query blocks (long [n]): int32 [B*H, n, slots]
    run bounds in ascending order (0 past count) and int32 [B*H, n] counts, as the kernel's serial walk makes them
    (offsets largest first: a range starting past the run's end + 64 starts a run, one ending past it grows the run
    by a tile), in O(log slots) vectorised steps, not one step (~20 launches) per offset slot. slots: at least the
    most runs a block has (ceil(k_len / 64) or the offsets + 1 always are).

    Why the walk reduces to tables: in block m offset d makes the range starting at a = max(64m - d, 0); a run
    from rs grows while the next interval (rs + 64(t - 1), rs + 64t] holds a range start and ends at the first
    empty one; the next run starts at the first range start past that end. With y = 64m - key, "no range start
    in the interval" is "no offset in [y - 64, y)", so a run's end and the next run's start are functions of y
    alone, one table per head for every block; a block's runs are the chain from its first run's start,
    listed by pointer doubling."""
    device = offsets.device
    rows = batch * heads
    n_blocks = -(-k_len // BAND)
    pad = 2 * BAND  # index i holds y = i - pad: a run ends at most 128 keys past its block's first row
    width = n_blocks * BAND + pad
    d = offsets.expand(batch, heads, offsets.shape[-1]).reshape(rows, -1).long()
    d = torch.where((d >= 0) & (d < n_blocks * BAND), d + pad, width)         # larger offsets are never valid
    hit = torch.zeros(rows, width + 1, dtype=torch.bool, device=device).scatter_(1, d, True)[:, :width]
    count = torch.nn.functional.pad(hit.long().cumsum(-1), (1, 0))              # [rows, width + 1]: hits below i
    at = torch.arange(width, device=device)
    empty = count[:, :width] == count[:, (at - BAND).clamp(min=0)]               # no offset in [y - 64, y)
    # a run from y spans y, y - 64, ... down to the first empty interval w (every y < 0 is one); it ends at w - 64
    tile = torch.arange(width // BAND, device=device)[:, None]
    last = torch.where(empty.view(rows, -1, BAND), tile, -1).cummax(1).values
    end = (last * BAND + torch.arange(BAND, device=device) - BAND).view(rows, width).clamp(min=0)
    below = torch.nn.functional.pad(torch.where(hit, at, -1).cummax(-1).values, (1, 0), value=-1)  # last hit < i
    hop = below.gather(1, end)                                                   # the next run's start, or -1
    hop = torch.cat([torch.where(hop >= 0, hop, width), torch.full((rows, 1), width, device=device)], 1)
    blocks = blocks.to(device).long()
    first_row = blocks * BAND + pad                                              # y = 64m
    from_zero = count[:, first_row + BAND] > count[:, first_row]                 # an offset in [64m, 64m + 64)
    start = torch.where(from_zero, first_row, below[:, first_row])
    chain = torch.where(start >= 0, start, width)[..., None]                     # [rows, n, 1]
    while chain.shape[-1] < slots:  # chain[..., :2^t] -> [..., :2^(t+1)] through hop = psi^(2^t)
        chain = torch.cat([chain, hop[:, None, :].expand(-1, len(blocks), -1).gather(2, chain)], -1)
        if chain.shape[-1] < slots:
            hop = hop.gather(1, hop)
    chain = chain[..., :slots]
    real = chain < width
    ends = torch.cat([end, torch.zeros(rows, 1, dtype=end.dtype, device=device)], 1)
    run_end = ends[:, None, :].expand(-1, len(blocks), -1).gather(2, chain)
    lo = torch.where(real, first_row[:, None] - chain, 0)
    hi = torch.where(real, first_row[:, None] - run_end, 0)
    return lo.int(), hi.int(), real.sum(-1).int()


def band_runs(offsets: torch.Tensor, batch: int, heads: int, k_len: int, m0: int = 0):
    if triton_enabled(offsets.device):
        from attention.kernels.bands import band_runs as kernel_runs  # imported lazily: triton only where it runs

        return kernel_runs(offsets, batch, heads, k_len, m0)
    return band_runs_torch(offsets, batch, heads, k_len, m0)


def run_cover(lo, hi, count, k_len: int) -> torch.Tensor:
    """bool [BH, n_rb, k_len]: keys inside some run of each query block (small sizes: tests, keep masks)."""
    rows, n_rb, slots = lo.shape
    used = torch.arange(slots, device=lo.device) < count[..., None].long()
    diff = torch.zeros(rows, n_rb, k_len + 1, dtype=torch.long, device=lo.device)
    diff.scatter_add_(2, torch.where(used, lo.long().clamp(max=k_len), k_len), used.long())
    diff.scatter_add_(2, torch.where(used, hi.long().clamp(max=k_len), k_len), -used.long())
    return diff.cumsum(-1)[..., :k_len] > 0


@dataclass
class BandPattern(SparsePattern):
    """columns (any order, -1 unused) and band_offsets long [B, Hq, L] (-1 unused), run as MInference runs them."""
    band_offsets: torch.Tensor | None = None

    def keep_mask(self, batch, heads, q_len, k_len, device=None, q_start=None, q_positions=None):
        keep = super().keep_mask(batch, heads, q_len, k_len, device, q_start, q_positions)
        if q_positions is not None:
            q_pos = q_positions.to(device=device, dtype=torch.long)
        else:
            q_start = k_len - q_len if q_start is None else q_start
            q_pos = torch.arange(q_start, q_start + keep.shape[-2], device=device)
        # runs of the query rows' own blocks only: a few sampled rows never build [B*H, all blocks, k_len]
        blocks, block_of_row = torch.unique(q_pos // BAND, return_inverse=True)
        n_blocks = -(-k_len // BAND)
        slots = max(1, min(n_blocks, self.band_offsets.shape[-1] + 1))
        runs = band_runs_of_blocks(self.band_offsets.to(device), batch, heads, k_len, blocks, slots)
        cover = run_cover(*runs, k_len).view(batch, heads, -1, k_len)
        k_pos = torch.arange(k_len, device=device)
        return keep | (cover[:, :, block_of_row] & (k_pos[None, :] <= q_pos[:, None]))

    def runs(self, batch: int, heads: int, k_len: int, m0: int, device):
        """(lo, hi, count) of band_runs for these query blocks, built once per pattern and shape."""
        key = (batch, heads, k_len, m0, str(device))
        cache = self.__dict__.setdefault("_runs", {})
        if key not in cache:
            cache[key] = band_runs(self.band_offsets.to(device), batch, heads, k_len, m0)
        return cache[key]

    def block_lists(self, batch: int, heads: int, k_len: int, m0: int, device):
        """band_tiles.block_tiles' (tiles, count) for these query blocks, built once per pattern and shape: the
        kept share and the tiled kernel's lists both start from them."""
        from attention.kernels.band_tiles import block_tiles  # imported lazily: triton only where it runs

        key = (batch, heads, k_len, m0, str(device))
        cache = self.__dict__.setdefault("_blocks", {})
        if key not in cache:
            cache[key] = block_tiles(self.band_offsets.to(device), batch, heads, k_len, m0)
        return cache[key]

    def tiles(self, q, k_len: int, tile_m: int, pairs: bool):
        """attention.kernels.bands_tiled.TiledBands for these shapes, built once per pattern and shape."""
        from attention.kernels.bands_tiled import TiledBands  # imported lazily: triton only where it runs

        batch, heads, q_len = q.shape[:3]
        key = (batch, heads, q_len, k_len, tile_m, pairs, str(q.device))
        cache = self.__dict__.setdefault("_tiles", {})
        if key not in cache:
            blocks = self.block_lists(batch, heads, k_len, (k_len - q_len) // BAND, q.device)
            cache[key] = TiledBands(self.band_offsets, self.columns, batch, heads, q_len, k_len, tile_m, q.device,
                                    pairs, blocks=blocks)
        return cache[key]

    def run(self, q, k, v, scale: float) -> torch.Tensor:
        if triton_enabled(q.device) and q.shape[-1] in (16, 32, 64, 128, 256):
            from attention.kernels.bands_tiled import band_tiled_attention, band_tiled_path

            use_tma, config = band_tiled_path(q, k)
            batch, heads, q_len = q.shape[:3]
            k_len = k.shape[2]
            spans = query_spans(batch, heads, q_len, k_len, self.band_offsets.shape[-1])
            if len(spans) == 1:
                tiles = self.tiles(q, k_len, config.tile_m, config.pairs)
                return band_tiled_attention(q, k, v, scale, self.band_offsets, self.columns, tiles=tiles,
                                            config=config, use_tma=use_tma)
            # long prompts: each span's tile tables are built, run and freed before the next (not cached), so
            # they never take [B*H, all query blocks, slots] at once (~13 GB each at 1M with 6096 offsets)
            out = torch.empty_like(q)
            for first, stop in spans:
                band_tiled_attention(q[:, :, first:stop], k, v, scale, self.band_offsets, self.columns,
                                     config=config, use_tma=use_tma, out=out[:, :, first:stop],
                                     keys=k_len - q_len + stop)
            return out
        return torch_pattern_attention(q, k, v, self, scale)

    def kept_share(self, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
        """float32 [B, H] kept share of the causal area, in closed form over runs and columns: where Triton runs
        (one span), one launch over the tiled kernel's block lists (attention/kernels/band_share.py); otherwise in
        PyTorch, query blocks taken in chunks so that the [B*H, blocks, run slots] temporaries stay near
        SHARE_ELEMENTS."""
        q_off = k_len - q_len
        m0 = q_off // BAND
        rows = batch * heads
        n_rb = -(-k_len // BAND) - m0
        slots = max(1, min(n_rb + m0, self.band_offsets.shape[-1] + 1))
        whole = len(query_spans(batch, heads, q_len, k_len, self.band_offsets.shape[-1])) == 1
        if whole and triton_enabled(device):  # one launch over the tiled kernel's own block lists
            from attention.kernels.band_share import band_kept_cells

            blk_tiles, blk_n = self.block_lists(batch, heads, k_len, m0, device)
            cols = col_hi = None
            if self.columns is not None and self.columns.shape[-1]:
                c = prepare_columns(self.columns.to(device), batch, heads, k_len)
                last = ((m0 + torch.arange(n_rb, device=device) + 1) * BAND - 1).clamp(max=k_len - 1)
                col_hi = torch.searchsorted(c, last.expand(batch, heads, n_rb).contiguous(), right=True)
                cols, col_hi = c.to(torch.int32).contiguous(), col_hi.to(torch.int32).contiguous()
            kept = band_kept_cells(blk_tiles, blk_n, cols, col_hi, q_len, k_len, m0).double()
            return (kept / causal_area(q_len, k_len)).float().view(batch, heads)
        tables = None
        if self.columns is not None and self.columns.shape[-1]:
            # columns by prefix counts and position sums: all of the block's columns, minus those inside its runs
            c = prepare_columns(self.columns.to(device), batch, heads, k_len).view(rows, -1)
            real = first_of_run(c)
            at = torch.where(real, c, k_len)
            n_cols = torch.zeros(rows, k_len + 1, dtype=torch.long, device=device).scatter_add_(1, at, real.long())
            sum_cols = torch.zeros_like(n_cols).scatter_add_(1, at, torch.where(real, c, 0))
            tables = (torch.nn.functional.pad(n_cols.cumsum(-1), (1, 0))[:, None, :],    # columns < j
                      torch.nn.functional.pad(sum_cols.cumsum(-1), (1, 0))[:, None, :])  # their positions' sum
        kept = torch.zeros(rows, dtype=torch.float64, device=device)
        step = max(1, SHARE_ELEMENTS // (rows * slots))
        for b0 in range(0, n_rb, step):
            b1 = min(b0 + step, n_rb)
            if whole:  # the pattern's cached runs
                lo, hi, count = (t[:, b0:b1] for t in self.runs(batch, heads, k_len, m0, device))
            else:  # long prompts: this chunk's runs only (the whole table is ~13 GB each at 1M)
                lo, hi, count = band_runs(self.band_offsets.to(device), batch, heads,
                                          min((m0 + b1) * BAND, k_len), m0 + b0)
            blocks = m0 + torch.arange(b0, b1, device=device)
            first = (blocks * BAND).clamp(min=q_off)[None, :, None]                # first row of each block
            stop = ((blocks + 1) * BAND).clamp(max=k_len)[None, :, None]           # one past its last row
            used = torch.arange(lo.shape[-1], device=device) < count[..., None].long()
            run_lo, run_hi = lo.long(), hi.long().clamp(max=k_len)
            kept += ((ramp(stop, run_lo, run_hi) - ramp(first, run_lo, run_hi)) * used).sum((-2, -1)).double()
            if tables is not None:
                zero = torch.zeros_like(first)
                kept += column_cells(tables, zero, zero + k_len, first, stop, k_len).sum((-2, -1)).double()
                inside = column_cells(tables, run_lo.clamp(max=k_len), run_hi, first, stop, k_len) * used
                kept -= inside.sum((-2, -1)).double()
        return (kept / causal_area(q_len, k_len)).float().view(batch, heads)


SHARE_ELEMENTS = 1 << 24
SPAN_BYTES = 1 << 29  # past this, a [B*H, query blocks, slots] int32 table is built and used per span of blocks


def query_spans(batch: int, heads: int, q_len: int, k_len: int, n_offsets: int) -> list[tuple[int, int]]:
    """(first, stop) query rows of each span whose per-block tables ([B*H, blocks, slots] int32, slots up to the
    offsets + 1) take at most SPAN_BYTES; spans end on 128-row boundaries of absolute positions. One span up to
    about 128K tokens with 32 heads and MInference's 6096 offsets."""
    q_off = k_len - q_len
    n_rb = -(-k_len // BAND) - q_off // BAND
    slots = max(1, min(-(-k_len // BAND), n_offsets + 1))
    blocks = max(2, SPAN_BYTES // (batch * heads * slots * 4)) // 2 * 2  # whole 128-row tiles
    if n_rb <= blocks:
        return [(0, q_len)]
    width = blocks * BAND
    edges = [q_off, *range((q_off // width + 1) * width, k_len, width), k_len]
    return [(a - q_off, b - q_off) for a, b in zip(edges, edges[1:]) if b > a]


def column_cells(tables, a, b, first, stop, k_len: int) -> torch.Tensor:
    """Causal cells of the kept columns in keys [a, b) for rows [first, stop), from prefix tables (count of
    columns < j, sum of their positions), each [rows, 1, k_len + 1]."""
    prefix_n, prefix_c = tables

    def at(table, j):  # table[row, 0, j] for j [rows or 1, blocks, slots]
        j = j.clamp(0, k_len).expand(table.shape[0], -1, -1)
        return torch.gather(table.expand(-1, j.shape[1], -1), 2, j)

    b = torch.minimum(b, stop)
    mid = torch.maximum(a, torch.minimum(b, first))                    # [a, mid): every row of the block sees them
    top = torch.maximum(mid, b)                                         # [mid, top): rows from the column on
    early = (at(prefix_n, mid) - at(prefix_n, a)) * (stop - first)
    late = (at(prefix_n, top) - at(prefix_n, mid)) * stop - (at(prefix_c, top) - at(prefix_c, mid))
    return early + late


def ramp(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Causal cells of keys [lo, hi) in rows 0 .. x - 1: sum over i < x of clamp(i + 1 - lo, 0, hi - lo)."""
    width = (hi - lo).clamp(min=0)
    y = (x - lo).clamp(min=0)                       # rows at or past lo
    full = (y - width).clamp(min=0)                 # rows that see the whole range
    part = y - full                                 # rows that see 1, 2, ... keys
    return part * (part + 1) // 2 + full * width
