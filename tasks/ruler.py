"""RULER (Hsieh et al. 2024): NVIDIA's 13 synthetic long-context subtasks, token-exact, offline and seeded.

Templates, answer prefixes, generation budgets and subtask settings are read from the installed official package
(`long_context_eval/data/synthetic/constants.py` and `synthetic.yaml`); the generators follow its scripts
(tasks/ruler_gen.py) and the metrics its constants.py (tasks/ruler_metrics.py). The prompt is the task template in
the user turn of the model's chat template, then RULER's answer prefix opening the assistant turn (RULER appends it
after the model template); a model without a chat template gets RULER's 'base' template: BOS, task, prefix.

Length as RULER defines it (`fill=official`, the default): RULER's `max_seq_length` counts the tokens to generate,
so a prompt at length L holds at most L - tokens_to_generate tokens (the official generators stop adding haystack
there); ours fills that budget exactly. `fill=full` fills the prompt to all L tokens, as this harness did before
(about 3% more haystack at 4K, 25% at 1K): it does not sit beside published RULER tables.
"""
import dataclasses
import importlib
import random
from functools import cache

from tasks.base import Sample, Task, TaskError, register
from tasks.render import chat_frame, text_ids
from tasks.ruler_data import RULER_PACKAGE, _package_root
from tasks.ruler_gen import make_family
from tasks.ruler_metrics import FAMILY_METRIC, METRICS, postprocess

SUBTASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
            "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
FILLS = ("official", "full")
GROUPS = {"all": SUBTASKS, "niah": SUBTASKS[:8], "synthetic": SUBTASKS[:11], "qa": SUBTASKS[11:]}


@dataclasses.dataclass
class RulerConfig:
    tasks: str = "all"   # subtask names or groups (all, niah, synthetic, qa) joined by '+'
    samples: int = 0     # samples per subtask and length; 0: the run's --samples
    fill: str = "official"  # official: prompt <= length - tokens to generate, as RULER; full: prompt = length

    def validate(self):
        self.subtasks()
        if self.samples < 0:
            raise TaskError(f"ruler: samples={self.samples} must be a whole number >= 0")
        if self.fill not in FILLS:
            raise TaskError(f"ruler: fill={self.fill!r} is not one of {', '.join(FILLS)}")

    def subtasks(self) -> tuple[str, ...]:
        """The chosen subtasks, in RULER's order."""
        chosen = set()
        for name in filter(None, (t.strip() for t in self.tasks.split("+"))):
            if name not in GROUPS and name not in SUBTASKS:
                raise TaskError(f"ruler: unknown subtask {name!r}; choose from: {', '.join(SUBTASKS)} "
                                f"or a group ({', '.join(GROUPS)})")
            chosen.update(GROUPS.get(name, (name,)))
        if not chosen:
            raise TaskError("ruler: tasks= is empty; pass subtasks joined by '+', e.g. tasks=niah_single_1+vt")
        return tuple(t for t in SUBTASKS if t in chosen)


@dataclasses.dataclass(frozen=True)
class Official:
    family: str            # the generator family (synthetic.yaml's `task`)
    args: dict
    template: str
    answer_prefix: str
    tokens_to_generate: int
    metric: str


@cache
def official() -> dict[str, Official]:
    """Each subtask's settings, from the installed nvidia-long-context-eval."""
    import yaml

    root = _package_root("long_context_eval", RULER_PACKAGE, "RULER (its templates and data)")
    try:
        constants = importlib.import_module("long_context_eval.data.synthetic.constants").TASKS
        subtasks = yaml.safe_load((root / "synthetic.yaml").read_text())
    except (ImportError, OSError) as err:
        raise TaskError(f"ruler: cannot read RULER's settings ({err}); run `pip install --no-deps {RULER_PACKAGE}`")
    out = {}
    for name in SUBTASKS:
        family = subtasks[name]["task"]
        base = constants[family]
        out[name] = Official(family, dict(subtasks[name]["args"]), base["template"], base["answer_prefix"],
                             base["tokens_to_generate"], FAMILY_METRIC[family])
    return out


def largest_fitting(size, lo: int, top: int, limit: int) -> int:
    """The largest n in [lo, top] with size(n) <= limit, for a size that grows with n and size(lo) <= limit.

    Each probe tokenizes a whole prompt, so the search guesses where the limit falls from the tokens per unit seen
    so far (about 6 probes at 32K, where doubling then bisecting took about 25) and bisects a bracket that a guess
    failed to halve; for a growing size it lands on the same n as any search."""
    fits = {lo: size(lo)}  # probed n that fit, with their sizes
    hi, size_hi = top + 1, None  # the smallest n known not to fit (top + 1 stands for beyond the data)
    while hi - lo > 1:
        width = hi - lo
        if size_hi is not None:  # interpolate inside the bracket
            rate = (size_hi - fits[lo]) / (hi - lo)
        else:  # extrapolate: the tokens per unit between the two largest fits (or per unit so far)
            below = [n for n in fits if n < lo]
            rate = (fits[lo] - fits[max(below)]) / (lo - max(below)) if below else fits[lo] / max(lo, 1)
        guess = lo + int((limit - fits[lo]) / rate) + 1 if rate > 0 else lo + width // 2
        guess = min(max(guess, lo + 1), hi - 1)
        for n in ([guess] if size_hi is None else [guess, (lo + hi) // 2]):
            if not lo < n < hi or (n != guess and hi - lo <= width // 2):
                continue  # the bisection step only where the guess did not halve a known bracket
            tokens = size(n)
            if tokens <= limit:
                lo, fits[n] = n, tokens
            else:
                hi, size_hi = n, tokens
    return lo


def pack(tokenizer, length: int, family, spec) -> tuple[list[int], object, int]:
    """The prompt of exactly `length` tokens with the largest haystack that fits, and its draft and size n.

    Token ids: chat frame before + head (template and context) + pad (token prefix of more haystack, filling
    what is left) + tail (the question) + chat frame after + answer prefix.
    """
    before, after = chat_frame(tokenizer)
    chat = bool(getattr(tokenizer, "chat_template", None))
    sizes = {}

    def size(n):
        if n not in sizes:
            draft = family.render(spec, n)
            prefix = draft.answer_prefix.lstrip() if chat else draft.answer_prefix
            parts = (text_ids(tokenizer, draft.head), text_ids(tokenizer, draft.tail), text_ids(tokenizer, prefix))
            sizes[n] = (len(before) + len(after) + sum(len(p) for p in parts), draft, parts)
        return sizes[n][0]

    lo = family.min_units(spec)
    if size(lo) > length:
        raise ValueError(f"needs {size(lo)} tokens at its smallest, more than the requested {length}")
    lo = largest_fitting(size, lo, family.max_units(), length)
    used, draft, (head, tail, prefix) = sizes[lo]
    pad = text_ids(tokenizer, draft.pad)[:length - used]
    if used + len(pad) != length:
        raise ValueError(f"the haystack ran out {length - used - len(pad)} tokens short of {length}")
    return before + head + pad + tail + after + prefix, draft, lo


@register
class Ruler(Task):
    name = "ruler"
    description = ("RULER's 13 subtasks (NVIDIA), official templates and metrics, token-exact; options: "
                   f"tasks=all|niah|synthetic|qa or names joined by '+' ({' '.join(SUBTASKS)}), "
                   "samples=N per subtask and length (0: the run's --samples), "
                   "fill=official (prompt <= length - tokens to generate, as RULER counts length) or full")

    Config = RulerConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.subtasks = self.config.subtasks()

    def _per_task(self, n: int) -> int:
        return self.config.samples or n

    def count(self, n):
        return self._per_task(n) * len(self.subtasks)

    def samples(self, tokenizer, lengths, n=1, seed=0):
        settings = official()
        for length in lengths:
            for subtask in self.subtasks:
                cfg = settings[subtask]
                family = make_family(cfg.family, cfg.args, cfg.template, cfg.answer_prefix)
                for i in range(self._per_task(n)):
                    yield self.sample(tokenizer, length, subtask, cfg, family, i, seed)

    def sample(self, tokenizer, length, subtask, cfg, family, i, seed) -> Sample:
        # The content (keys, values, question, ...) comes from (subtask, seed, i) alone: the same at every length.
        rng = random.Random(f"ruler-{subtask}-{seed}-{i}")
        spec = family.spec(rng, length, i, lambda text: len(text_ids(tokenizer, text)))
        budget = length - cfg.tokens_to_generate if self.config.fill == "official" else length
        try:
            ids, draft, units = pack(tokenizer, budget, family, spec)
        except ValueError as err:
            leaves = (f" (length {length} leaves {budget} prompt tokens after RULER's {cfg.tokens_to_generate} "
                      "to generate; fill=full uses all of it)") if budget != length else ""
            raise TaskError(f"ruler: {subtask} at length {length}: {err}{leaves}") from None
        meta = {"subtask": subtask, "metric": cfg.metric, "haystack_units": units, "fill": self.config.fill,
                **draft.meta}
        return Sample(f"ruler-{subtask}-{length}-{i}", self.name, length, ids, list(draft.answers),
                      cfg.tokens_to_generate, meta)

    def score(self, sample, prediction):
        metric = sample.meta["metric"]
        value = METRICS[metric](postprocess(prediction), list(sample.answer))
        return {"score": value, metric: value}
