"""LongBench v1 (Bai et al. 2023) and LongBench-E: official data, prompts, generation lengths and metrics.

Data: path=DIR holding the official JSONL files (the unzipped data.zip of the hub dataset THUDM/LongBench:
qasper.jsonl, qasper_e.jsonl, ...), or, without path, that data.zip from the hub (cached by huggingface_hub,
so a machine that fetched it once works offline). Prompts longer than the requested length are cut in the
middle (the official advice: both ends hold instructions); each sample records what was cut.

Generation and scoring follow official pred.py and eval.py: the official prompt templates byte for byte, the
chat template only where pred.py uses one, the official max new tokens, samsum stopped at the newline token, and
the raw decoded text scored (only the few-shot datasets keep just their first line, as eval.py does). Each
sample's meta["generation"] records these settings, and so each cell.
"""
import dataclasses
import json
import zipfile
from functools import cache
from pathlib import Path

from tasks import longbench_metrics
from tasks.base import Sample, Task, TaskError, register
from tasks.render import chat_frame, text_ids
from tasks.tabular import read_rows

HUB = "THUDM/LongBench"
GROUPS = {
    "single": ["narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh"],
    "multi": ["hotpotqa", "2wikimqa", "musique", "dureader"],
    "summ": ["gov_report", "qmsum", "multi_news", "vcsum"],
    "fewshot": ["trec", "triviaqa", "samsum", "lsht"],
    "synthetic": ["passage_count", "passage_retrieval_en", "passage_retrieval_zh"],
    "code": ["lcc", "repobench-p"],
}
ZH = {"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"}
MISSING = (f"get it with `hf download --repo-type dataset {HUB} data.zip` (it lands in the hub cache, where this "
           f"task looks), or pass longbench:path=DIR with the official JSONL files (data.zip unzipped)")


@cache
def config() -> dict:
    return json.loads((Path(__file__).parent / "data" / "longbench.json").read_text(encoding="utf-8"))


def resolve_datasets(spec: str, e: bool) -> list[str]:
    """'all', 'en', group names and dataset names, joined by '+'."""
    known = list(config()["datasets"])
    allowed = config()["longbench_e"] if e else known
    names = []
    for item in spec.split("+"):
        if item == "all":
            names += allowed
        elif item == "en":
            names += [d for d in allowed if d not in ZH]
        elif item in GROUPS:
            names += [d for d in GROUPS[item] if d in allowed]
        elif item in allowed:
            names.append(item)
        else:
            raise TaskError(f"longbench: unknown dataset {item!r}{' for LongBench-E' if e else ''}; choose from "
                            f"all, en, {', '.join(GROUPS)}, {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def hub_zip() -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB, "data.zip", repo_type="dataset"))
    except Exception as err:  # noqa: BLE001 - offline, auth and HTTP errors all mean the same to the user
        first = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise TaskError(f"longbench: {HUB} data is not available ({first}); {MISSING}") from None


def load_rows(name: str, path: Path | None) -> list[dict]:
    if path is not None:
        for folder in (path, path / "data"):
            if (folder / f"{name}.jsonl").is_file():
                return read_rows(folder / f"{name}.jsonl")
        raise TaskError(f"longbench: {name}.jsonl not found in {path}; {MISSING}")
    with zipfile.ZipFile(hub_zip()) as archive:
        member = next((m for m in archive.namelist() if m.endswith(f"/{name}.jsonl") or m == f"{name}.jsonl"), None)
        if member is None:
            raise TaskError(f"longbench: {name}.jsonl is not in {HUB}/data.zip; {MISSING}")
        return [json.loads(line) for line in archive.read(member).decode("utf-8").splitlines() if line.strip()]


def middle_truncate(ids: list[int], budget: int) -> list[int]:
    """Official pred.py: keep the first and last halves of the budget."""
    if len(ids) <= budget:
        return ids
    half = budget // 2
    return ids[:half] + ids[len(ids) - (budget - half):]


def default_specials(tokenizer) -> list[int]:
    """The special tokens the tokenizer adds by default (BOS for most), as official pred.py's plain prompts get."""
    return tokenizer("", add_special_tokens=True)["input_ids"]


def generation(cfg: dict, max_new_tokens: int | None, tokenizer) -> dict:
    """One dataset's generation settings, as official pred.py uses them (recorded per sample, so per cell).

    chat_template: whether the prompt went through the tokenizer's chat template (pred.py's build_chat, skipped
    for the few-shot and code datasets; a tokenizer without one gets the plain prompt).
    """
    return {"max_new_tokens": max_new_tokens or cfg["maxlen"], "official_max_new_tokens": cfg["maxlen"],
            "stop": list(cfg["stop"]), "first_line": cfg["first_line"], "greedy": True,
            "chat_template": bool(cfg["chat"] and getattr(tokenizer, "chat_template", None))}


@dataclasses.dataclass
class LongBenchConfig:
    datasets: str = "all"       # all, en, a group (single multi summ fewshot synthetic code) or names, joined by '+'
    e: bool = False             # LongBench-E (13 datasets, length buckets) instead of LongBench v1
    path: str = ""              # a folder of the official JSONL files; empty: the hub's data.zip from the cache
    max_new_tokens: int | None = None  # None: each dataset's official budget (dataset2maxlen.json)
    code_sim: str = longbench_metrics.CODE_SIM_DEFAULT  # lcc, repobench-p: difflib (as the published results)
    # or levenshtein (fuzzywuzzy with python-Levenshtein)

    def validate(self):
        resolve_datasets(self.datasets, self.e)
        longbench_metrics.check_code_sim(self.code_sim)
        if self.path and not Path(self.path).expanduser().is_dir():
            raise TaskError(f"longbench: path {self.path} is not a folder; {MISSING}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise TaskError(f"longbench: max_new_tokens={self.max_new_tokens} must be a whole number >= 1")


@register
class LongBench(Task):
    name = "longbench"
    Config = LongBenchConfig
    description = ("LongBench v1 / LongBench-E with official prompts and metrics (options: datasets=all|en|single|"
                   "multi|summ|fewshot|synthetic|code|NAME+NAME, e=1 for LongBench-E, path=DIR, max_new_tokens=, "
                   "code_sim=difflib|levenshtein)")

    def __init__(self, options: LongBenchConfig | None = None):  # not `config`: that is the official table here
        super().__init__(options)
        cfg = self.config
        self.e = cfg.e
        self.datasets = resolve_datasets(cfg.datasets, cfg.e)
        self.path = Path(cfg.path).expanduser() if cfg.path else None
        self.max_new_tokens = cfg.max_new_tokens
        self.code_sim = cfg.code_sim
        self._rows: dict[str, list[dict]] = {}
        self._ids: dict[tuple, list[int]] = {}

    def rows(self, dataset: str) -> list[dict]:
        if dataset not in self._rows:
            self._rows[dataset] = load_rows(dataset + ("_e" if self.e else ""), self.path)
        return self._rows[dataset]

    def count(self, n):
        return sum(len(self.rows(d)) if n <= 0 else min(n, len(self.rows(d))) for d in self.datasets)

    def samples(self, tokenizer, lengths, n=1, seed=0):
        for dataset in self.datasets:
            cfg = config()["datasets"][dataset]
            rows = self.rows(dataset)
            before, after = chat_frame(tokenizer) if cfg["chat"] else (default_specials(tokenizer), [])
            for length in lengths:
                budget = length - len(before) - len(after)
                if budget < 16:
                    raise TaskError(f"longbench: length {length} leaves no room for a prompt")
                for k, row in enumerate(rows if n <= 0 else rows[:n]):
                    key = (id(tokenizer), dataset, k)
                    if key not in self._ids:  # tokenise each document once for all lengths
                        self._ids[key] = text_ids(tokenizer, cfg["prompt"].format(context=row["context"],
                                                                                  input=row["input"]))
                    full = self._ids[key]
                    ids = before + middle_truncate(full, budget) + after
                    meta = {"dataset": dataset, "longbench_e": self.e, "row": k, "_id": row.get("_id", ""),
                            "prompt_tokens": len(full), "input_tokens": len(ids),
                            "truncated": len(full) > budget, "dropped_tokens": max(0, len(full) - budget),
                            "length_words": row.get("length"), "language": row.get("language"),
                            "metric": cfg["metric"]}
                    if isinstance(row.get("length"), int):
                        meta["bucket"] = longbench_metrics.bucket(row["length"])
                    if cfg["metric"] == "code_sim":
                        meta["code_sim"] = self.code_sim  # the backend that scores it, recorded per cell
                    if cfg["metric"] == "classification":
                        meta["all_classes"] = list(row.get("all_classes") or [])
                    meta["generation"] = generation(cfg, self.max_new_tokens, tokenizer)
                    answers = [str(a) for a in row["answers"]]
                    yield Sample(id=f"longbench-{dataset}{'_e' if self.e else ''}-{length}-{k}", task=self.name,
                                 length=length, input_ids=ids, answer=answers,
                                 max_new_tokens=meta["generation"]["max_new_tokens"], meta=meta,
                                 stop=list(cfg["stop"]))

    def score(self, sample, prediction):
        """`prediction` is the raw decoded text, as official eval.py reads it from pred.py's output."""
        cfg = config()["datasets"][sample.meta["dataset"]]
        answers = sample.answer if isinstance(sample.answer, list) else [sample.answer]
        value = longbench_metrics.score(cfg["metric"], prediction, answers, sample.meta.get("all_classes"),
                                        cfg["first_line"], sample.meta.get("code_sim", self.code_sim))
        return {"score": value, cfg["metric"]: value}
