"""The plan of a run: its grid (SweepSpec) validated once, with the methods and tasks built and the run options
resolved for this machine. Nothing is loaded or written before this passes.

`run` is the one-model, one-task case of the same grid, and `diagnose` the same grid without the dense baseline.
"""
import dataclasses
import sys

from attention.registry import AttentionMethod, build_method
from harness.models.device_map import check as check_device_map
from harness.models.loading import check
from harness.models.random_weights import check_tasks
from harness.options import InputError, alternatives, parse_specs
from harness.running import distributed
from harness.running.checks import check_lengths_fit, check_names
from harness.running.runner import resolve_device
from harness.running.settings import PREFILL_MODES, RunOptions, SweepSpec
from tasks.base import Task, build_task


def expand_alternatives(text: str) -> list:
    """'sample:alpha=0.8|0.95,r_w=0.08' -> two methods (alpha 0.8 and 0.95, both r_w 0.08)."""
    return [build_method(name, combo) for name, options in parse_specs(text) for combo in alternatives(options)]


@dataclasses.dataclass
class Plan:
    """A validated grid: the spec with its methods and tasks built, and the run options resolved."""
    spec: SweepSpec
    methods: list[AttentionMethod]
    tasks: list[Task]
    options: RunOptions

    def per_length(self) -> int:
        """Cells at each length."""
        return len(self.spec.models) * len(self.methods) * sum(t.count(self.spec.samples) for t in self.tasks)

    def total(self) -> int:
        return self.per_length() * len(self.spec.lengths)

    def total_tokens(self) -> int:
        """Prompt tokens over every cell (what the time estimate scales by)."""
        return self.per_length() * sum(self.spec.lengths)


def build_methods(spec: SweepSpec, add_dense: bool = True, quiet: bool = False) -> list:
    """The grid's methods, dense first; with add_dense, the dense baseline is added when missing."""
    methods = list({m.spec(): m for text in reversed(spec.methods) for m in reversed(expand_alternatives(text))
                     }.values())[::-1]  # a method listed twice runs once
    if add_dense and not any(m.name == "dense" for m in methods):
        if not quiet:
            print("note: adding the dense baseline (dense) so speedups and relative accuracy exist", file=sys.stderr)
        methods.insert(0, build_method("dense"))
    return sorted(methods, key=lambda m: m.name != "dense")  # dense first in every sample


def validate(spec: SweepSpec, add_dense: bool = True, quiet: bool = False) -> Plan:
    """Everything checkable without loading a model: numbers, lengths, device, methods, tasks, models. Raises
    InputError (one line) before anything is written."""
    check_names(spec.methods, spec.tasks)
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
    device = distributed.rank_device(resolve_device(spec.device))  # cuda:<LOCAL_RANK> per rank
    check_device_map(spec.device_map, device, distributed.current().world)
    methods = build_methods(spec, add_dense, quiet)
    tasks = [build_task(t) for t in spec.tasks]
    for task in tasks:
        task.count(spec.samples)  # loads what a task reads (LongBench's files): missing data fails before any write
    for model in spec.models:
        check(model)
        check_tasks(model, tasks)
    options = RunOptions.resolve(spec, device)
    if spec.prefill not in PREFILL_MODES or spec.prefill_chunk < 1:
        raise InputError("--prefill must be plain, chunked or chunked-nocache and --prefill-chunk at least 1")
    return Plan(spec, methods, tasks, options)
