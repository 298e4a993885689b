"""Measure a model's density profiles (attention/profiles.py): each layer's mean selected density per method spec
and length, on one calibration prompt per length (the task's first sample), with the dense fallback off; on a GPU
also the whole prefill's time against dense cuDNN on the same prompt (the profile's `ratio`).

`sampleattn calibrate --model NAME` calls `measure` after timing the kernels; the result is merged into the
profile cache with `attention.profiles.save`.
"""
import statistics
from dataclasses import dataclass

import torch
from tqdm import tqdm

from attention import fallback, hf
from attention.method import SparseMethod
from attention.registry import available_methods, build_method
from harness.options import InputError, parse_specs
from tasks.base import build_task


def default_specs() -> list[str]:
    """Every sparse method whose density the host cannot know before estimating (at its defaults)."""
    specs = []
    for name, cls in sorted(available_methods().items()):
        if issubclass(cls, SparseMethod):
            method = cls()
            if not (method.predicted_is_exact and method.predicted_density(4096, 4096) is not None):
                specs.append(name)
    return specs


def parse_profile_specs(text: str) -> list[str]:
    """'defaults' or a comma list of method specs: each must be a sparse method whose density the estimate tells."""
    if text == "defaults":
        return default_specs()
    methods = [build_method(name, options) for name, options in parse_specs(text)]
    for method in methods:
        if not isinstance(method, SparseMethod):
            raise InputError(f"--profile {method.spec()}: not a sparse method with a selection to profile; "
                             f"choose from {','.join(default_specs())}")
    return [m.spec() for m in methods]


def prompt_ids(loaded, task_spec: str, length: int) -> torch.Tensor:
    """The calibration prompt of `length` tokens: the task's first sample (random ids for random weights)."""
    if loaded.timing_only:
        gen = torch.Generator().manual_seed(length)
        return torch.randint(0, loaded.tokenizer.vocab_size, (1, length), generator=gen)
    sample = next(iter(build_task(task_spec).samples(loaded.tokenizer, [length], n=1, seed=0)))
    return torch.tensor([sample.input_ids])


def layer_means(stats: list[dict], layers: int) -> list[float | None]:
    """Per layer: the mean over heads of the selected density its prefill recorded (None where none did)."""
    means: list[float | None] = [None] * layers
    for entry in stats:
        selected = entry.get("selected_density", entry.get("density"))
        if selected is None or entry.get("layer", layers) >= layers:
            continue
        means[entry["layer"]] = float(torch.as_tensor(selected, dtype=torch.float32).mean())
    return means


def prefill(model, ids) -> None:
    model(input_ids=ids, use_cache=False, logits_to_keep=1)


def prefill_ms(model, ids, reps: int) -> float:
    """Median CUDA-event milliseconds of the whole prefill; the caller has run it once untimed (compiles, row
    plans, estimate graphs)."""
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        prefill(model, ids)
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


@dataclass
class Measured:
    densities: dict[str, dict[int, list[float | None]]]  # spec -> length -> per-layer mean selected density
    ratios: dict[str, dict[int, float]]                  # spec -> length -> prefill ms / dense ms (GPU only)


@torch.no_grad()
def measure(loaded, lengths: list[int], specs: list[str], task_spec: str = "needle", reps: int = 3,
            progress: bool = True) -> Measured:
    """Per spec and length, for the loaded model on its device with the fallback off: each layer's mean selected
    density, and on CUDA the whole prefill's time over dense cuDNN's (medians of `reps`)."""
    model = loaded.model
    device = next(model.parameters()).device
    timed = device.type == "cuda"
    layers = model.config.num_hidden_layers
    found = Measured({spec: {} for spec in specs}, {spec: {} for spec in specs})
    bar = tqdm(total=len(lengths) * len(specs), desc="density profiles", unit="run", disable=not progress)
    for length in lengths:
        ids = prompt_ids(loaded, task_spec, length).to(device)
        if timed:
            with hf.install(model, build_method("dense", {"backend": "cudnn"})):
                prefill(model, ids)
                dense_ms = prefill_ms(model, ids, reps)
        for spec in specs:
            (name, options), = parse_specs(spec)
            with fallback.switched_off():
                method = build_method(name, options)
                with hf.install(model, method):
                    prefill(model, ids)  # the densities; on a GPU also the untimed first call of the timing
                    found.densities[spec][length] = layer_means(method.stats, layers)
                    if timed:
                        found.ratios[spec][length] = prefill_ms(model, ids, reps) / dense_ms
            bar.update()
    bar.close()
    return found
