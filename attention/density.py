"""Density, the share of the causal area a pattern computes, per (batch, head), on the device: defined here once.

Sink/window/column/slash patterns are counted in closed form over the same disjoint key sets the sparse kernel
uses (O(columns + diagonals), never the [Sq, Sk] mask; window and sink parts are plain ints); block patterns
from per-block causal cell counts (`blocks_density`, which the block-selecting peers use too); mixed patterns by
an exact count of the mask in row chunks; a dense keep mask by counting it (`mask_density`); oracle-topk's
per-row budget in closed form (`row_topk_density`).
"""
import torch

from attention.indices import first_of_run, prepare_columns
from attention.pattern import SparsePattern
from attention.reference import causal_mask


def causal_area(q_len: int, k_len: int) -> int:
    """Causal cells of queries at the last q_len of k_len positions."""
    q_off = k_len - q_len
    return (k_len * (k_len + 1) - q_off * (q_off + 1)) // 2


def _rows_from(first: int, q_off: int, k_len: int) -> int:
    return max(0, k_len - max(first, q_off))


def base_cells(q_len: int, k_len: int, window: int, sink: int) -> tuple[int, int]:
    """(cells kept by window + sink, causal cells) for queries at the last q_len of k_len positions."""
    q_off = k_len - q_len
    causal = causal_area(q_len, k_len)
    # row i keeps min(window, i + 1) keys; rows with i + 1 < window (t = i + 1 in [q_off + 1, top]) fall short
    top = min(k_len, window - 1)
    short = max(0, top - q_off)
    win = window * q_len - (short * window - (top * (top + 1) - q_off * (q_off + 1)) // 2 if short else 0)
    sinks = sum(_rows_from(j + window, q_off, k_len) for j in range(min(sink, k_len)))
    return win + sinks, causal


def window_for_density(length: int, sink: int, density: float) -> int:
    """Smallest window whose sink + window share of a length x length causal prefill reaches `density`."""
    low, high = 1, max(length, 1)
    while low < high:  # the kept share grows with the window
        mid = (low + high) // 2
        kept, causal = base_cells(length, length, mid, sink)
        low, high = (low, mid) if kept >= density * causal else (mid + 1, high)
    return low


def block_cells(q_len: int, k_len: int, block: int, device=None) -> torch.Tensor:
    """Causal (query, key) cells inside each block x block tile, queries the last q_len of k_len positions
    (tiles counted from absolute position 0), in closed form: float64 [n, n], n = ceil(k_len / block)."""
    n = -(-k_len // block)
    tile = torch.arange(n, device=device, dtype=torch.float64)
    start = tile * block
    width = torch.clamp(start + block, max=k_len) - start                    # keys (and positions) per tile
    row_lo = torch.clamp(start, min=k_len - q_len)                           # first query row in each tile
    row_hi = start + width                                                   # one past the last
    n_rows = (row_hi - row_lo).clamp(min=0)
    below = n_rows[:, None] * width[None, :] * (tile[:, None] > tile[None, :])
    # diagonal tile: a row at position i sees i + 1 - start keys of its own tile
    own = (row_lo + row_hi + 1 - 2 * start) * n_rows / 2
    return below + torch.diag(own)


DENSITY_CHUNK = 1 << 25  # table entries counted at once: a whole float64 copy of a 1M-token table is 16 GiB


def blocks_density(blocks: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Kept share of the causal area of a blocks-only pattern: bool [B, H, n, n] and block_cells -> float32 [B, H].
    Counted in row chunks of at most DENSITY_CHUNK entries (one chunk up to ~128K tokens with 32 heads); the
    counts are whole numbers in float64, so the chunking changes no bit of the result."""
    rows = max(1, DENSITY_CHUNK // max(1, blocks[..., :1, :].numel()))
    kept = sum((blocks[..., r:r + rows, :].double() * cells[r:r + rows]).sum((-2, -1))
               for r in range(0, blocks.shape[-2], rows))
    return (kept / cells.sum()).float()


def block_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """Kept share of a blocks-only pattern from per-block causal cell counts: float [B, H]."""
    blocks = pattern.blocks.to(device)
    cells = block_cells(q_len, k_len, pattern.block, device)
    if blocks.shape[-2:] != cells.shape:  # a table not over absolute key tiles: count its mask instead
        return exact_density(pattern, batch, heads, q_len, k_len, device)
    return blocks_density(blocks, cells).expand(batch, heads).clone()


def mask_density(keep: torch.Tensor) -> torch.Tensor:
    """Share of the causal area a dense keep mask [..., Sq, Sk] keeps, per leading index: float [...]."""
    q_len, k_len = keep.shape[-2:]
    causal_cells = causal_mask(q_len, k_len, keep.device).sum()
    return keep.sum(dim=(-2, -1)).float() / causal_cells


def row_topk_density(share: float, length: int, device=None) -> torch.Tensor:
    """oracle-topk's kept share: query i keeps ceil(share * (i + 1)) keys (at least one; ties may add a few)."""
    pos = torch.arange(length, device=device)  # the same fp32 arithmetic as oracle-topk's own budget
    kept = torch.ceil(share * (pos + 1)).clamp(min=1).double().sum()
    return (kept / causal_area(length, length)).float()


def exact_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device,
                  chunk: int = 256) -> torch.Tensor:
    """Kept share of any pattern by counting its mask in row chunks (exact; O(S^2) work, O(chunk x S) memory)."""
    kept = torch.zeros(batch, heads, device=device, dtype=torch.float64)
    for start in range(k_len - q_len, k_len, chunk):
        stop = min(start + chunk, k_len)
        keep = pattern.keep_mask(batch, heads, stop - start, k_len, device, q_start=start)
        kept += keep.sum((-2, -1)).double()
    return (kept / causal_area(q_len, k_len)).float()


def pattern_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """float32 [B, H]: kept cells / causal cells for queries at the last q_len of k_len positions."""
    if hasattr(pattern, "kept_share"):  # a pattern that counts its own cells (attention/bands.py)
        return pattern.kept_share(batch, heads, q_len, k_len, device)
    if pattern.blocks is not None:
        only_blocks = not pattern.sink and not pattern.window and pattern.columns is None and pattern.slashes is None
        fn = block_density if only_blocks else exact_density
        return fn(pattern, batch, heads, q_len, k_len, device)
    q_off = k_len - q_len
    window, sink = max(int(pattern.window), 0), max(int(pattern.sink), 0)
    base, causal = base_cells(q_len, k_len, window, sink)
    kept = torch.full((batch, heads), float(base), dtype=torch.float64, device=device)
    cols = None
    if pattern.columns is not None and pattern.columns.shape[-1]:
        cols = prepare_columns(pattern.columns.to(device), batch, heads, k_len)
        real = first_of_run(cols) & (cols >= sink)
        rows = (k_len - torch.clamp(cols + window, min=q_off)).clamp(min=0)
        kept += torch.where(real, rows, 0).sum(-1).double()
    if pattern.slashes is not None and pattern.slashes.shape[-1]:
        d = prepare_columns(pattern.slashes.to(device), batch, heads, k_len)
        real = first_of_run(d) & (d >= window)
        d = torch.where(real, d, 0)
        lo = torch.clamp(q_off - d, min=0).clamp(min=sink)  # keys j = i - d in [lo, hi)
        hi = k_len - d
        span = (hi - lo).clamp(min=0)
        if cols is not None:  # keys already counted as columns (first of each run, at or past the sinks)
            c = torch.where(first_of_run(cols) & (cols >= sink), cols, -1).sort(-1).values.contiguous()
            inside = (torch.searchsorted(c, hi.contiguous()) - torch.searchsorted(c, lo.contiguous())).clamp(min=0)
            span = torch.where(hi > lo, span - inside, 0)
        kept += torch.where(real, span, 0).double().sum(-1)
    return (kept / causal).float()
