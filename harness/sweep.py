"""Sweeps: a grid of models x methods (x method settings) x tasks x lengths x samples, resumable.

`run` is the one-model, one-task case of the same grid.
"""
import dataclasses
import sys
from pathlib import Path

from attention.registry import AttentionMethod, ConfigError, build_method
from harness.options import alternatives, parse_specs
from harness.models import resolve
from harness.random_models import check_tasks
from tasks.base import build_task


@dataclasses.dataclass
class SweepSpec:
    models: list[str]
    methods: list[str]          # method specs; 'name:key=a|b|c' expands into one method per value
    tasks: list[str]
    lengths: list[int]
    samples: int = 1
    seed: int = 0
    device: str = "auto"
    repeats: int | None = None
    warmup: int | None = None
    max_new_tokens: int | None = None
    beyond_context: bool = False  # run lengths above the model's context (timing only; accuracy is meaningless)
    device_map: str | None = None  # hook(scale): auto | balanced: one model split over the visible GPUs
    prefill: str = "plain"         # hook(scale): plain | chunked | chunked-nocache (harness/long_prefill.py)
    prefill_chunk: int = 16384

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"sweep file: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
        data = dict(data)
        for key in ("models", "methods", "tasks"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        if isinstance(data.get("lengths"), (str, int)):
            data["lengths"] = [data["lengths"]]
        from harness.cli import parse_lengths

        data["lengths"] = parse_lengths(",".join(str(x) for x in data.get("lengths", [])))
        missing = [k for k in ("models", "methods", "tasks") if not data.get(k)]
        if missing:
            raise ConfigError(f"sweep: missing {', '.join(missing)}")
        return cls(**data)


def expand_alternatives(text: str) -> list[AttentionMethod]:
    """'sample:alpha=0.8|0.95,r_w=0.08' -> two methods (alpha 0.8 and 0.95, both r_w 0.08)."""
    methods = []
    for name, options in parse_specs(text):
        for combo in alternatives(options):
            methods.append(build_method(name, combo))
    return methods


def build_methods(spec: SweepSpec):
    methods = [m for text in spec.methods for m in expand_alternatives(text)]
    if not any(m.name == "dense" for m in methods):
        print("note: adding the dense baseline (dense) so speedups and relative accuracy exist", file=sys.stderr)
        methods.insert(0, build_method("dense"))
    return sorted(methods, key=lambda m: m.name != "dense")  # dense first in every sample


def validate(spec: SweepSpec):
    """Everything checkable without loading a model: methods, tasks, models, device, numbers."""
    from harness.runner import RunOptions, resolve_device

    methods = build_methods(spec)
    tasks = [build_task(t) for t in spec.tasks]
    for model in spec.models:
        resolve(model)
        check_tasks(model, tasks)
    from harness import distributed

    device = distributed.rank_device(resolve_device(spec.device))  # hook(scale): cuda:<LOCAL_RANK> per rank
    from harness.device_map import check as check_device_map

    check_device_map(spec.device_map, device, distributed.current().world)  # hook(scale)
    for name in ("samples", "repeats", "max_new_tokens"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if spec.warmup is not None and spec.warmup < 0:
        raise ConfigError("--warmup must be 0 or more")
    gpu = device.startswith("cuda")
    options = RunOptions(device=device, repeats=spec.repeats or (3 if gpu else 1),
                         warmup=spec.warmup if spec.warmup is not None else (1 if gpu else 0),
                         max_new_tokens=spec.max_new_tokens, beyond_context=spec.beyond_context,
                         prefill=spec.prefill, prefill_chunk=spec.prefill_chunk)  # hook(scale)
    if spec.prefill not in ("plain", "chunked", "chunked-nocache") or spec.prefill_chunk < 1:
        raise ConfigError("--prefill must be plain, chunked or chunked-nocache and --prefill-chunk at least 1")
    return methods, tasks, options


def total_cells(spec: SweepSpec, methods, tasks) -> int:
    return len(spec.models) * len(spec.lengths) * len(methods) * sum(t.count(spec.samples) for t in tasks)


def execute(spec: SweepSpec, store, done: set[str], progress: bool = True, share=None) -> dict:
    """Run every cell not in `done` (of those, only this rank's `share` when given); the model is loaded once
    per model."""
    from tqdm.auto import tqdm

    from harness.models import load_model
    from harness.runner import run_grid

    methods, tasks, options = validate(spec)
    counts: dict[str, int] = {}
    with tqdm(total=total_cells(spec, methods, tasks), unit="cell", disable=not progress, smoothing=0.1) as bar:
        for model_name in spec.models:
            loaded = load_model(model_name, options.device, device_map=spec.device_map)  # hook(scale)
            for task in tasks:
                bar.set_description(f"{model_name}/{task.name}")
                run_grid(loaded, methods, task, spec.lengths, options, store, spec.samples, spec.seed, done,
                         bar=bar, counts=counts, share=share)
            del loaded
    return counts


def load_spec_file(path: str) -> dict:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"sweep file {path} does not exist; pass a YAML file (see scripts/sweeps/)")
    data = yaml.safe_load(file.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must hold a mapping of models, methods, tasks, lengths, ...")
    data.pop("name", None)
    return data

