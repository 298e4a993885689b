"""The task interface: a task renders token-exact prompts for a tokenizer and scores predictions."""
import dataclasses
import importlib
import pkgutil
from typing import ClassVar, Iterator


class TaskError(ValueError):
    """Bad task name/option or missing data; the message is one line naming the fix."""


@dataclasses.dataclass
class Sample:
    id: str                    # unique within a task and length, stable across runs (resume keys on it)
    task: str
    length: int                # the requested context length in tokens
    input_ids: list[int]       # the full prompt, chat template applied, exactly as fed to the model
    answer: str | list[str]    # reference answer(s)
    max_new_tokens: int = 32
    meta: dict = dataclasses.field(default_factory=dict)  # e.g. depth, dataset, truncation
    # Strings whose token ends generation, as official LongBench pred.py stops samsum: the last token of each
    # string's encoding is a stop id (kept in the prediction), never chosen as the first new token.
    stop: list[str] = dataclasses.field(default_factory=list)


class Task:
    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, **options: str):
        if options:
            raise TaskError(f"{self.name}: unknown option(s) {', '.join(options)}")

    def samples(self, tokenizer, lengths: list[int], n: int = 1, seed: int = 0) -> Iterator[Sample]:
        raise NotImplementedError

    def count(self, n: int) -> int:
        """How many samples samples() yields per length for n requested (a grid task yields more)."""
        return n

    def score(self, sample: Sample, prediction: str) -> dict[str, float]:
        """Metrics for one prediction; always includes 'score' (the task's headline metric, 0..1)."""
        raise NotImplementedError


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def available_tasks() -> dict[str, type[Task]]:
    import tasks

    for info in pkgutil.iter_modules(tasks.__path__):
        importlib.import_module(f"tasks.{info.name}")
    return dict(TASKS)


def build_task(spec: str) -> Task:
    """'needle' or 'needle:depths=5,needle=...' -> a Task."""
    name, _, rest = spec.partition(":")
    known = available_tasks()
    if name not in known:
        raise TaskError(f"unknown task {name!r}; choose from: {', '.join(sorted(known))}")
    options = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        if "=" not in item:
            raise TaskError(f"{name}: option {item!r} must be key=value")
        key, value = item.split("=", 1)
        options[key.strip()] = value.strip()
    return known[name](**options)
