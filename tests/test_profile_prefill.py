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


def test_each_method_parses_the_shape_runs_every_spec_and_survives_an_out_of_memory_one(monkeypatch, capsys):
    from scripts.profile_prefill import each_method

    assert each_method("x.py", "a", "1k", "64:14:2", None) == 2 or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    calls = []

    def run(spec, *shape):
        calls.append((spec, *shape))
        if spec == "big":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB\nmore")

    code = each_method("x.py", "sample:density=0.05,r_w=0.00625;big;minference", "1m", "128:32:8", run)
    assert code == 0 and [c[0] for c in calls] == ["sample:density=0.05,r_w=0.00625", "big", "minference"]
    assert calls[0][1:] == (1 << 20, 128, 32, 8)
    assert "== big: out of memory (CUDA out of memory. Tried to allocate 8 GiB)" in capsys.readouterr().out
