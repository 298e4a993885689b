"""scripts/profile_prefill.py's kernel table: GPU time and calls per kernel name, largest first; CPU events ignored."""
from types import SimpleNamespace

import torch

from scripts.profile_prefill import kernel_table


def event(name, us, device=torch.autograd.DeviceType.CUDA):
    return SimpleNamespace(name=name, device_time_total=us, device_type=device)


def test_kernels_are_summed_by_name_largest_first_and_host_events_left_out():
    events = [event("walk", 300.0), event("sort", 100.0), event("walk", 200.0), event("sort", 50.0),
              event("aten::add", 9999.0, torch.autograd.DeviceType.CPU), event("kernel_x", 400.0)]
    busy, kernels, rows = kernel_table(events)
    assert kernels == 5 and abs(busy - 1.05) < 1e-9
    assert [(n, round(ms, 3), c) for n, ms, c in rows] == [("walk", 0.5, 2), ("kernel_x", 0.4, 1), ("sort", 0.15, 2)]
