"""Exact share of the causal area a sink/window/column/slash pattern computes, per (batch, head), on the device.

Counts the same disjoint key sets the sparse kernel uses, in closed form per column and per diagonal,
so it costs O(columns + diagonals) instead of building the [Sq, Sk] mask.
"""
import torch

from attention.kernels.prefill import BIG, prepare_columns
from attention.pattern import SparsePattern


def pattern_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """float32 [B, H]: kept cells / causal cells for queries at the last q_len of k_len positions."""
    q_off = k_len - q_len
    rows = torch.arange(q_off, k_len, device=device, dtype=torch.float64)
    causal = (rows + 1).sum()
    window, sink = max(int(pattern.window), 0), max(int(pattern.sink), 0)
    kept = torch.clamp(rows + 1, max=window).sum().expand(batch, heads).clone()

    def rows_from(first: torch.Tensor) -> torch.Tensor:  # how many queries i in [q_off, k_len) satisfy i >= first
        return (k_len - torch.clamp(first, min=q_off)).clamp(min=0)

    if sink:
        j = torch.arange(min(sink, k_len), device=device, dtype=torch.float64)
        kept += rows_from(j + window).sum()
    cols = None
    if pattern.columns is not None and pattern.columns.shape[-1]:
        cols = prepare_columns(pattern.columns.to(device), batch, heads, k_len)
        real = (cols < BIG) & (cols >= sink)
        kept += torch.where(real, rows_from(cols.double() + window), 0.0).sum(-1)
    if pattern.slashes is not None and pattern.slashes.shape[-1]:
        d = prepare_columns(pattern.slashes.to(device), batch, heads, k_len)
        real = (d < BIG) & (d >= window)
        d = torch.where(real, d, 0)
        lo = torch.clamp(q_off - d, min=0).clamp(min=sink)  # keys j = i - d in [lo, hi)
        hi = k_len - d
        span = (hi - lo).clamp(min=0)
        if cols is not None:
            c = torch.where(cols >= sink, cols, -1).sort(-1).values.contiguous()  # keys already counted as columns
            inside = (torch.searchsorted(c, hi.contiguous()) - torch.searchsorted(c, lo.contiguous())).clamp(min=0)
            span = torch.where(hi > lo, span - inside, 0)
        kept += torch.where(real, span, 0).double().sum(-1)
    return (kept / causal).float()
