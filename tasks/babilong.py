"""BABILong: bAbI facts hidden in long background text (Kuratov et al. 2024).

Sources: source=gen (default: seeded offline stories in Paul Graham essays, exact token lengths; qa1-qa5),
source=hub (RMT-team/babilong) or hub1k (RMT-team/babilong-1k-samples) through `datasets`,
or path=FILE_OR_DIR with the official rows (input, question, target) as JSON, JSONL or parquet (qa1-qa20).
Prompts, labels and answer matching are the official ones (booydar/babilong prompts.py and metrics.py), and so is
generation (scripts/run_model_on_babilong.py: greedy, 20 new tokens, no stop strings, decoded output stripped).
"""
import dataclasses
import json
import random
import typing
from functools import cache
from pathlib import Path

from tasks.babilong_gen import story
from tasks.base import Sample, Task, TaskError, register
from tasks.haystack import haystack
from tasks.render import assemble_at, chat_frame, text_ids
from tasks.tabular import read_rows

QAS = ["qa1", "qa2", "qa3", "qa4", "qa5"]  # the default set, and the generator's
OFFICIAL_QAS = [f"qa{i}" for i in range(1, 21)]  # in the official data
HUB = {"hub": "RMT-team/babilong", "hub1k": "RMT-team/babilong-1k-samples"}
CONFIGS = ["0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k"]


@cache
def prompts() -> dict:
    return json.loads((Path(__file__).parent / "data" / "babilong_prompts.json").read_text(encoding="utf-8"))


def config_name(length: int) -> str:
    """Official split name for a token length: 0 -> 0k, 4096 (or 4000) -> 4k."""
    name = f"{round(length / 1024)}k" if length >= 512 else "0k"
    if length and name == "0k" or name not in CONFIGS:
        raise TaskError(f"babilong: no official split for length {length}; use one of {', '.join(CONFIGS)} "
                        "(as 0, 1024, 2048, ...) or the offline generator (source=gen)")
    return name


def preprocess_output(output: str) -> str:
    """Official: lower-case, first sentence, cut where the model starts inventing more prompt."""
    output = output.lower().split(".")[0]
    for marker in ("<context>", "<example>", "Question"):
        output = output.split(marker)[0]
    return output


def compare_answers(target: str, output: str, question: str, task_labels) -> bool:
    """Official BABILong matching: the target must be the only label in the first sentence, not counting
    labels that the question itself mentions; a comma-separated target longer than 3 characters (qa8's
    "apple,milk"; not qa19's "n,w", itself a label) needs exactly its parts."""
    output = preprocess_output(output)
    target = target.lower()
    labels = {label.lower() for label in task_labels}
    in_question = {label for label in labels if label in question.lower()}
    in_output = {label for label in labels if label in output} - in_question
    if "," in target and len(target) > 3:
        parts = target.split(",")
        return all(part in in_output for part in parts) and len(in_output) == len(parts)
    return target in in_output and len(in_output) == 1


def split_prompt(qa: str) -> tuple[str, str]:
    """The official template around {context}: (text before, text after with {question})."""
    cfg = prompts()[qa]
    before, after = prompts()["template"].split("{context}")
    return before.format(**cfg), after


def find_local(path: Path, cfg: str, qa: str) -> Path:
    if path.is_file():
        return path
    exts = (".jsonl", ".json", ".parquet")
    patterns = [f"{cfg}/{qa}", f"{cfg}/{qa}-*", f"{cfg}/{qa}/*", f"{qa}/{cfg}", f"{qa}/{cfg}-*", f"{cfg}_{qa}",
                f"{qa}_{cfg}"]
    for pattern in patterns:
        for ext in exts:
            found = sorted(path.glob(f"**/{pattern}{ext}"))
            if found:
                return found[0]
    raise TaskError(f"babilong: no {cfg}/{qa} file (.jsonl/.json/.parquet) under {path}; expected e.g. "
                    f"{path}/{cfg}/{qa}.jsonl")


def load_hub(repo: str, cfg: str, qa: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise TaskError("babilong: source=hub needs `pip install datasets`; or pass path=FILE_OR_DIR, "
                        "or use the offline generator (source=gen)") from None
    try:
        return list(datasets.load_dataset(repo, cfg, split=qa))
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise TaskError(f"babilong: cannot load {repo} {cfg}/{qa} ({first}); run once online to cache it, pass "
                        "path=FILE_OR_DIR with the official JSON/JSONL/parquet, or use source=gen") from None


@dataclasses.dataclass
class BabilongConfig:
    qa: str = "+".join(QAS)     # tasks joined by '+': qa1-qa5 generated, qa1-qa20 from the official data
    source: typing.Literal["gen", "hub", "hub1k"] = "gen"  # gen: offline generator; hub/hub1k: RMT-team datasets
    path: str = ""              # official rows (JSON/JSONL/parquet), a file or a folder; overrides source
    haystack: str = ""          # a folder of .txt files for the generator instead of the Paul Graham essays
    max_new_tokens: int = 20    # official run_model_on_babilong.py: 20

    def validate(self):
        bad = [q for q in self.qa.split("+") if q not in OFFICIAL_QAS]
        if bad:
            raise TaskError(f"babilong: unknown qa {', '.join(bad)}; choose from qa1 ... qa20, joined by '+'")
        ungenerated = [q for q in self.qa.split("+") if q not in QAS]
        if not self.path and self.source == "gen" and ungenerated:
            raise TaskError(f"babilong: the offline generator makes qa1-qa5 only, not {', '.join(ungenerated)}; "
                            "use source=hub, hub1k or path=FILE_OR_DIR for the official data")
        if self.path and not Path(self.path).expanduser().exists():
            raise TaskError(f"babilong: path {self.path} does not exist; give the official BABILong JSON/JSONL/"
                            f"parquet file or folder, or use source=hub ({HUB['hub']}) or source=gen")
        if self.max_new_tokens < 1:
            raise TaskError(f"babilong: max_new_tokens={self.max_new_tokens} must be a whole number >= 1")


@register
class Babilong(Task):
    name = "babilong"
    Config = BabilongConfig
    description = ("BABILong (options: qa=qa1+qa2 (qa1-qa5 generated, qa1-qa20 official), source=gen|hub|hub1k, "
                   "path=FILE_OR_DIR, haystack=/dir, max_new_tokens=20)")

    def __init__(self, config=None):
        super().__init__(config)
        cfg = self.config
        self.qas = cfg.qa.split("+")
        self.source = "local" if cfg.path else cfg.source
        self.path = Path(cfg.path).expanduser() if cfg.path else None
        self.folder = cfg.haystack or None
        self.max_new_tokens = cfg.max_new_tokens

    def count(self, n):
        # n <= 0 asks for every official row, a number known only once a split is loaded
        return n * len(self.qas) if n > 0 else 0

    def samples(self, tokenizer, lengths, n=1, seed=0):
        for length in lengths:
            for qa in self.qas:
                if self.source == "gen":
                    yield from self._generated(tokenizer, length, qa, n, seed)
                else:
                    yield from self._official(tokenizer, length, qa, n)

    def _generated(self, tokenizer, length, qa, n, seed):
        head, tail = split_prompt(qa)
        hay = haystack(tokenizer, self.folder) if length else None
        for i in range(n):
            # The story depends on (seed, qa, i) only, so sample i asks the same thing at every length, as the
            # official splits do; where it lands in which essay depends on the length too.
            facts, question, answer = story(qa, f"{seed}-{qa}-{i}")
            rng = random.Random(f"babilong-{seed}-{qa}-{length}-{i}")
            sid = f"babilong-{qa}-{length}-{i}" + (f"-s{seed}" if seed else "")
            meta = {"qa": qa, "question": question, "source": "gen", "facts": len(facts),
                    "generation": self.generation(tokenizer)}
            if not length:  # 0k: the facts alone, as in the official 0k split
                before, after = chat_frame(tokenizer)
                ids = before + text_ids(tokenizer, head + " ".join(facts) + tail.format(question=question)) + after
                yield Sample(sid, self.name, length, ids, answer, self.max_new_tokens, {**meta, "tokens": len(ids)})
                continue
            start = rng.choice(hay.starts)
            filler, breaks = hay.window(start, length)
            depths = sorted(rng.random() for _ in facts)
            try:
                ids, positions = assemble_at(tokenizer, length, head, filler,
                                             [(d, " " + f) for d, f in zip(depths, facts)],
                                             tail.format(question=question), breaks)
            except ValueError as err:
                raise TaskError(f"babilong: {qa} at length {length}: {err}") from None
            meta |= {"first_fact_token": positions[0], "last_fact_token": positions[-1]}
            yield Sample(sid, self.name, length, ids, answer, self.max_new_tokens, meta)

    def _official(self, tokenizer, length, qa, n):
        cfg = config_name(length)
        if self.source == "local":
            rows = read_rows(find_local(self.path, cfg, qa))
            origin = str(self.path)
        else:
            rows, origin = load_hub(HUB[self.source], cfg, qa), HUB[self.source]
        head, tail = split_prompt(qa)
        before, after = chat_frame(tokenizer)
        for k, row in enumerate(rows if n <= 0 else rows[:n]):
            text = (head + row["input"].strip() + tail.format(question=row["question"])).strip()
            ids = before + text_ids(tokenizer, text) + after
            yield Sample(f"babilong-{qa}-{cfg}-{k}", self.name, length, ids, row["target"], self.max_new_tokens,
                         {"qa": qa, "question": row["question"], "source": origin, "config": cfg,
                          "tokens": len(ids), "generation": self.generation(tokenizer)})

    def generation(self, tokenizer) -> dict:
        """Generation settings, as official run_model_on_babilong.py uses them (recorded per sample and cell)."""
        return {"max_new_tokens": self.max_new_tokens, "official_max_new_tokens": 20, "stop": [], "greedy": True,
                "chat_template": bool(getattr(tokenizer, "chat_template", None))}

    def score(self, sample, prediction):
        output = prediction.strip()  # official run_model_on_babilong.py strips the decoded text before matching
        labels = prompts()["labels"][sample.meta["qa"]]
        return {"score": float(compare_answers(sample.answer, output, sample.meta["question"], labels)),
                "contains": float(sample.answer.lower() in output.lower())}
