"""What the cell driver asks of a measure: RunMeasure (harness/running/runner.py) times a prefill, decodes and
scores; DiagnoseMeasure (harness/running/diagnose.py) measures each layer's mask."""
from typing import Protocol

from attention.method import AttentionMethod
from harness.models.loaded import LoadedModel
from harness.running.settings import RunOptions
from tasks.base import Sample, Task


class Measure(Protocol):
    file: str | None  # the run folder's JSON-lines file it appends to (None: cells.jsonl)
    unit: str         # what the progress bar counts

    def fields(self, method: AttentionMethod, options: RunOptions) -> dict:
        """What a cell records before it runs."""

    def __call__(self, loaded: LoadedModel, method: AttentionMethod, task: Task, sample: Sample,
                 options: RunOptions) -> dict:
        """What it measured, with a `status` (ok, error, oom)."""
