"""Sweeps: a grid of models x methods (x method settings) x tasks x lengths x samples, validated once.

`run` is the one-model, one-task case of the same grid, and `diagnose` the same grid without the dense baseline.
"""
import dataclasses
import os
import sys
from pathlib import Path

from attention.methods import BUILTIN_NAMES as METHOD_NAMES
from harness.options import InputError, alternatives, parse_lengths, parse_spec, parse_specs
from tasks.base import TASKS

PROMPT_BYTES_PER_TOKEN = 44  # at least: a Python list of token ids (8 B pointer + 28 B int) and its int64 tensor


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_lengths_fit(lengths: list[int]) -> None:
    """A length whose prompt alone cannot be held in this machine's memory is refused before anything is built
    (--beyond-context lets any length through the model's context check, not through this one)."""
    memory = physical_memory()
    if not memory:
        return
    too_big = [n for n in lengths if n * PROMPT_BYTES_PER_TOKEN > memory]
    if too_big:
        n = too_big[0]
        raise InputError(f"--lengths {n}: a prompt of {n:,} tokens needs at least {n * PROMPT_BYTES_PER_TOKEN / 2**30:.0f} "
                         f"GiB just for its token ids, more than this machine's {memory / 2**30:.0f} GiB; pass "
                         "shorter lengths")


# defaults of the grid flags; the CLI leaves them None so that --resume can tell a given flag from a default
DEFAULTS = {"model": "smollm2-135m", "models": "smollm2-135m", "task": "passkey", "methods": "dense",
            "lengths": "1024,2048", "samples": 1, "seed": 0, "device": "auto"}


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
    prefill: str = "plain"         # hook(scale): plain | chunked | chunked-nocache (harness/models/long_prefill.py)
    prefill_chunk: int = 16384
    batch_size: int = 1            # accuracy cells: samples of one cell group per prefill and decode (running/batch.py)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"sweep file: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
        data = dict(data)
        for key in ("models", "methods", "tasks"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        data["lengths"] = parse_lengths(data.get("lengths", []))
        missing = [k for k in ("models", "methods", "tasks") if not data.get(k)]
        if missing:
            raise InputError(f"sweep: missing {', '.join(missing)}")
        return cls(**data)


def expand_alternatives(text: str) -> list:
    """'sample:alpha=0.8|0.95,r_w=0.08' -> two methods (alpha 0.8 and 0.95, both r_w 0.08)."""
    from attention.registry import build_method

    return [build_method(name, combo) for name, options in parse_specs(text) for combo in alternatives(options)]


@dataclasses.dataclass
class Plan:
    """A validated grid: the spec with its methods and tasks built, and the run options resolved."""
    spec: SweepSpec
    methods: list
    tasks: list
    options: object  # runner.RunOptions

    def total(self) -> int:
        spec = self.spec
        return len(spec.models) * len(spec.lengths) * len(self.methods) * sum(t.count(spec.samples) for t in self.tasks)


def build_methods(spec: SweepSpec, add_dense: bool = True, quiet: bool = False) -> list:
    """The grid's methods, dense first; with add_dense, the dense baseline is added when missing."""
    from attention.registry import build_method

    methods = list({m.spec(): m for text in reversed(spec.methods) for m in reversed(expand_alternatives(text))
                     }.values())[::-1]  # a method listed twice runs once
    if add_dense and not any(m.name == "dense" for m in methods):
        if not quiet:
            print("note: adding the dense baseline (dense) so speedups and relative accuracy exist", file=sys.stderr)
        methods.insert(0, build_method("dense"))
    return sorted(methods, key=lambda m: m.name != "dense")  # dense first in every sample


def check_names(methods: list[str], tasks: list[str]) -> None:
    """Unknown method and task names (of method and task specs), refused before anything imports torch (a tenth
    of a second, not seconds). A method registered by a plugin already imported is known too."""
    registry = sys.modules.get("attention.registry")  # imported only if a plugin has registered a method
    plugins = set(registry.METHODS._entries) if registry else set()
    for text in methods:
        for name, _ in parse_specs(text):
            if name not in METHOD_NAMES and name not in plugins:
                raise InputError(f"unknown method {name!r}; choose from: {', '.join(sorted({*METHOD_NAMES, *plugins}))}")
    for text in tasks:
        TASKS.get(parse_spec(text)[0])  # task modules import no torch


def validate(spec: SweepSpec, add_dense: bool = True, quiet: bool = False) -> Plan:
    """Everything checkable without loading a model: numbers, lengths, device, methods, tasks, models. Raises
    InputError (one line) before anything is written."""
    check_names(spec.methods, spec.tasks)
    from harness.models.loading import check
    from harness.models.random_weights import check_tasks
    from harness.running.runner import RunOptions, resolve_device
    from tasks.base import build_task

    for name in ("samples", "repeats", "max_new_tokens", "batch_size"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if spec.warmup is not None and spec.warmup < 0:
        raise InputError("--warmup must be 0 or more")
    bad = [n for n in spec.lengths if n < 1]
    if bad or not spec.lengths:
        raise InputError(f"--lengths: {bad[0] if bad else 'none'} given; every length must be at least 1 token")
    check_lengths_fit(spec.lengths)
    from harness.running import distributed
    from harness.models.device_map import check as check_device_map

    device = distributed.rank_device(resolve_device(spec.device))  # hook(scale): cuda:<LOCAL_RANK> per rank
    check_device_map(spec.device_map, device, distributed.current().world)  # hook(scale)
    methods = build_methods(spec, add_dense, quiet)
    tasks = [build_task(t) for t in spec.tasks]
    for task in tasks:
        task.count(spec.samples)  # loads what a task reads (LongBench's files): missing data fails before any write
    for model in spec.models:
        check(model)
        check_tasks(model, tasks)
    gpu = device.startswith("cuda")
    options = RunOptions(device=device, repeats=spec.repeats or (3 if gpu else 1),
                         warmup=spec.warmup if spec.warmup is not None else (1 if gpu else 0),
                         max_new_tokens=spec.max_new_tokens, beyond_context=spec.beyond_context,
                         seed=spec.seed, prefill=spec.prefill, prefill_chunk=spec.prefill_chunk)  # hook(scale)
    if spec.prefill not in ("plain", "chunked", "chunked-nocache") or spec.prefill_chunk < 1:
        raise InputError("--prefill must be plain, chunked or chunked-nocache and --prefill-chunk at least 1")
    return Plan(spec, methods, tasks, options)


def load_spec_file(path: str) -> dict:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise InputError(f"sweep file {path} does not exist; pass a YAML file (see scripts/sweeps/)")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"sweep file {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise InputError(f"sweep file {path} must hold a mapping of models, methods, tasks, lengths, ...")
    data.pop("name", None)
    return data
