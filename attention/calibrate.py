"""Calibration of the dense fallback's limits (attention/fallback.py) on this card, for one model shape.

Per length, on random bf16 q/k/v of the shape (head dim, query heads, kv heads):
  dense    causal SDPA (the fallback's dense path, cuDNN on CUDA)
  stages   SampleAttention's stages 1 + 2 at its defaults (sample_fused.select)
  sparse   SampleAttention's whole fused prefill at fixed densities (stages + kernel), fallback off
  split    half the heads dense and half on the sparse kernel (executor.split_heads) at the middle density:
           split_ms is what it costs beyond dense_ms / 2 + a + b x (the sparse half's density) / 2
The kernel's time is fitted as a + b x density (least squares over the densities, stages subtracted), so
  after  = (dense - a) / b            (the selection is spent: a head runs dense when its density reaches this)
  before = (dense - stages - a) / b   (nothing spent yet: the layer runs dense when its known density reaches this)
both clamped to [0, 1]. The result is a table for fallback.save_table / use_table, keyed by the device's name.
Timings are medians of CUDA events on a GPU (triton.testing.do_bench); on the CPU (interpreter) wall-clock medians,
which only exercise the code: they are not performance evidence.
"""
import math
import statistics
import time

import torch

from attention.backend import triton_enabled
from attention.executor import dense_attention, split_heads
from attention.fallback import gpu_kind
from attention.method import ConfigError
from attention.methods.sample import SampleAttention, SampleConfig

DENSITIES = (0.15, 0.35, 0.7)


def time_ms(fn, device, reps: int) -> float:
    """Median milliseconds of fn()."""
    if torch.device(device).type == "cuda":
        import triton  # GPU only: the CUDA-event timer

        return triton.testing.do_bench(fn, warmup=25, rep=max(50, 20 * reps), return_mode="median")
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def random_inputs(length: int, heads: int, kv_heads: int, head_dim: int, device, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, h, length, head_dim, device=device, generator=gen).to(torch.bfloat16)
               for h in (heads, kv_heads, kv_heads))
    return q, k, v


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of the least-squares line y = a + b x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - b * mx, b


def crossing(budget_ms: float, a: float, b: float) -> float:
    """The density at which a + b x reaches budget_ms, in [0, 1]."""
    if b <= 0:
        return 1.0 if a < budget_ms else 0.0
    return min(1.0, max(0.0, (budget_ms - a) / b))


def calibrate_length(length: int, heads: int, kv_heads: int, head_dim: int, device, densities=DENSITIES,
                     reps: int = 5) -> dict:
    q, k, v = random_inputs(length, heads, kv_heads, head_dim, device)
    scale = 1 / math.sqrt(head_dim)
    dense_ms = time_ms(lambda: dense_attention(q, k, v, scale), device, reps)
    method = SampleAttention(SampleConfig(dense_above=1.0))
    method.prefill(q, k, v, scale)  # builds the row plan (and compiles) outside the timing
    stages_ms = time_ms(lambda: method.stages(q, k, scale), device, reps)
    xs, ys = [], []
    for density in densities:
        fixed = SampleAttention(SampleConfig(density=density, dense_above=1.0))

        def run():
            fixed.stats.clear()
            return fixed.prefill(q, k, v, scale)
        total = time_ms(run, device, reps)
        xs.append(float(torch.as_tensor(fixed.stats[-1]["density"]).float().mean()))
        ys.append(total - stages_ms)
    a, b = fit_line(xs, ys)
    middle = SampleAttention(SampleConfig(density=densities[len(densities) // 2], dense_above=1.0))
    split_ms, half_density = time_split(q, k, v, scale, middle, device, reps)
    split_cost = max(0.0, split_ms - (dense_ms / 2 + a + b * half_density / 2))
    return {"head_dim": head_dim, "group": heads // kv_heads, "heads": heads, "length": length,
            "before": round(crossing(dense_ms - stages_ms, a, b), 4), "after": round(crossing(dense_ms, a, b), 4),
            "dense_ms": round(dense_ms, 4), "stages_ms": round(stages_ms, 4), "kernel_ms_at": round(a, 4),
            "kernel_ms_per_density": round(b, 4), "split_ms": round(split_cost, 4),
            "densities": [round(x, 4) for x in xs], "from": "calibrate"}


def time_split(q, k, v, scale, method, device, reps: int) -> tuple[float, float]:
    """(ms, mean density of the sparse half) of a layer with its even heads dense and its odd heads sparse."""
    from attention import sample_fused  # triton: only on the kernel path

    selected, window = method.stages(q, k, scale)
    half = [h % 2 == 0 for h in range(q.shape[1])]
    sparse_heads = torch.tensor([h for h, d in enumerate(half) if not d], device=q.device)
    needed = selected.needed().tolist() if selected.path == "tma" else None

    def sparse(qs, ks, vs, heads):
        return sample_fused.attend(qs, ks, vs, scale, window, selected.heads(heads), needed)
    ms = time_ms(lambda: split_heads(q, k, v, scale, half, sparse), device, reps)
    return ms, float(selected.density[0].index_select(0, sparse_heads).float().mean())


def calibrate(lengths: list[int], heads: int, kv_heads: int, head_dim: int, device, densities=DENSITIES,
              reps: int = 5, log=print) -> dict:
    """The limits table of this device for one shape: {"gpus": {device name: [row per length]}}."""
    if not triton_enabled(device):
        raise ConfigError(f"calibrate needs the Triton kernels on {device}; run it on a GPU (or force the "
                          "triton backend under TRITON_INTERPRET=1)")
    if heads % kv_heads:
        raise ConfigError(f"heads={heads} must be a multiple of kv_heads={kv_heads}")
    rows = []
    for length in lengths:
        row = calibrate_length(length, heads, kv_heads, head_dim, device, densities, reps)
        log(f"calibrate D={head_dim} {heads}/{kv_heads} heads L={length}: dense {row['dense_ms']:.3f} ms, stages "
            f"{row['stages_ms']:.3f} ms, kernel {row['kernel_ms_at']:.3f} + {row['kernel_ms_per_density']:.3f} x d "
            f"ms, split +{row['split_ms']:.3f} ms -> limits before {row['before']:.3f}, after {row['after']:.3f}")
        rows.append(row)
    return {"gpus": {gpu_kind(device): rows}}
