"""The task interface: a task renders token-exact prompts for a tokenizer and scores predictions."""
import dataclasses
from typing import ClassVar, Iterator

from harness.options import InputError, build_config, parse_spec
from harness.registry import Registry

# built-in tasks: importing a module registers its tasks
BUILTINS = ("tasks.passkey", "tasks.needle", "tasks.babilong", "tasks.longbench", "tasks.ruler", "tasks.tokens")


class TaskError(InputError):
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


@dataclasses.dataclass
class NoOptions:
    """The Config of a task that takes no options."""


class Task:
    """A task: `Config` is a dataclass of its options (typed and validated, like a method's), built from
    'name:key=value,...' by build_task; the task reads them from self.config."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions
    timing_only: ClassVar[bool] = False  # prompts with no answer (the `tokens` task): cells are timed, not scored

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()
        validate = getattr(self.config, "validate", None)
        if validate is not None:
            validate()

    def samples(self, tokenizer, lengths: list[int], n: int = 1, seed: int = 0) -> Iterator[Sample]:
        raise NotImplementedError

    def count(self, n: int) -> int:
        """How many samples samples() yields per length for n requested (a grid task yields more)."""
        return n

    def score(self, sample: Sample, prediction: str) -> dict[str, float]:
        """Metrics for one prediction; always includes 'score' (the task's headline metric, 0..1)."""
        raise NotImplementedError


TASKS: Registry[Task] = Registry("task", BUILTINS, error=TaskError)
register = TASKS.register


def available_tasks() -> dict[str, type[Task]]:
    return TASKS.all()


def build_task(spec: str) -> Task:
    """'needle' or 'needle:depths=5,needle="..."' -> a Task (see harness.options for the grammar)."""
    try:
        name, options = parse_spec(spec)
    except InputError as err:
        raise TaskError(str(err)) from None
    cls = TASKS.get(name)
    return cls(build_config(cls.Config, options, name, TaskError))
