"""Timers: CUDA events on the GPU (after warm-up, median of repeats), perf_counter on the CPU."""
import statistics
import time

import torch


def time_call(fn, device: str, repeats: int = 3, warmup: int = 1, sync=None):
    """Run fn warmup + repeats times; return (median ms, all timed ms, the last result).

    `sync` waits for the work: on a model split over GPUs, for every GPU it spans."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    cuda = device.startswith("cuda")
    for _ in range(max(1, repeats)):
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            (sync or (lambda: torch.cuda.synchronize(device)))()
            start.record()
            result = fn()
            stop.record()
            (sync or (lambda: torch.cuda.synchronize(device)))()
            times.append(start.elapsed_time(stop))
        else:
            begin = time.perf_counter()
            result = fn()
            times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times), times, result
