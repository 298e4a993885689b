"""A knob solved for a target density on the device: bisection whose steps never read a value back to the host.

A bisection on the host costs one sync per step (24 a layer), which stalls the launch queue; here each step
compares on the device (torch.where), so a layer's solve costs launches but no sync. The knob's
density must be non-decreasing in it and computable from a 0-dim device tensor (FlexPrefill's gamma, XAttention's
threshold: both go through cumulative sums compared with the knob).
"""
from typing import Callable

import torch


def bisect_on_device(density_of: Callable[[torch.Tensor], torch.Tensor], target: float, low: float, high: float,
                     steps: int = 12, device=None, geometric: bool = False) -> torch.Tensor:
    """The knob x in [low, high] (a 0-dim float32 tensor on device) whose density_of(x) is closest to target.

    12 steps resolve the range to 1/4096 of its width: finer than the kept share can change at the lengths we
    run (a tile of 128 x 128 cells is 1/2048 of the causal area at 64K). geometric: halve the range's log instead
    (low > 0), for a knob spanning orders of magnitude whose large values cost more to evaluate (MInference's
    ratio: its lists, and the serial walk over them, grow with it)."""
    if geometric and not low > 0:
        raise ValueError(f"a geometric bisection needs low > 0, got {low}")
    lo = torch.full((), low, dtype=torch.float32, device=device)  # a fill, not a host copy: capturable in a graph
    hi = torch.full((), high, dtype=torch.float32, device=device)
    for _ in range(steps):
        mid = (lo * hi).sqrt() if geometric else (lo + hi) / 2
        below = density_of(mid).float().reshape(()) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    d_lo, d_hi = density_of(lo).float().reshape(()), density_of(hi).float().reshape(())
    return torch.where((d_lo - target).abs() < (d_hi - target).abs(), lo, hi)
