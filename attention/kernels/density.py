"""Exact share of the causal area a sink/window/column/slash pattern computes, per (batch, head), on the device.

Counts the same disjoint key sets the sparse kernel uses, in closed form per column and per diagonal,
so it costs O(columns + diagonals) instead of building the [Sq, Sk] mask. Window and sink parts are plain ints.
"""
import torch

from attention.kernels.prefill import first_of_run, prepare_columns
from attention.pattern import SparsePattern


def _rows_from(first: int, q_off: int, k_len: int) -> int:
    return max(0, k_len - max(first, q_off))


def base_cells(q_len: int, k_len: int, window: int, sink: int) -> tuple[int, int]:
    """(cells kept by window + sink, causal cells) for queries at the last q_len of k_len positions."""
    q_off = k_len - q_len
    causal = (k_len * (k_len + 1) - q_off * (q_off + 1)) // 2
    # row i keeps min(window, i + 1) keys; rows with i + 1 < window (t = i + 1 in [q_off + 1, top]) fall short
    top = min(k_len, window - 1)
    short = max(0, top - q_off)
    win = window * q_len - (short * window - (top * (top + 1) - q_off * (q_off + 1)) // 2 if short else 0)
    sinks = sum(_rows_from(j + window, q_off, k_len) for j in range(min(sink, k_len)))
    return win + sinks, causal


def pattern_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """float32 [B, H]: kept cells / causal cells for queries at the last q_len of k_len positions."""
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
