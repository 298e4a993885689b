"""harness/running/prompt_cache.py: off unless SAMPLEATTN_PROMPT_CACHE is set; then a second build of the same
prompts is read back, and anything that shapes a prompt (length, seed, task options, tokenizer) misses."""
from harness.running.prompt_cache import cached_samples
from tasks.base import build_task
from tests.fixtures.tokenizer import plain_tokenizer


def counted(task, tokenizer, length, n, seed, calls):
    def build():
        calls.append((length, n, seed))
        return list(task.samples(tokenizer, [length], n, seed))
    return cached_samples(task, tokenizer, length, n, seed, build)


def test_off_without_the_variable(monkeypatch):
    monkeypatch.delenv("SAMPLEATTN_PROMPT_CACHE", raising=False)
    task, tok, calls = build_task("passkey"), plain_tokenizer(), []
    counted(task, tok, 200, 2, 0, calls)
    counted(task, tok, 200, 2, 0, calls)
    assert len(calls) == 2


def test_read_back_and_keyed_on_what_shapes_a_prompt(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMPLEATTN_PROMPT_CACHE", str(tmp_path / "prompts"))
    task, tok, calls = build_task("passkey"), plain_tokenizer(), []
    first = counted(task, tok, 200, 2, 0, calls)
    again = counted(task, tok, 200, 2, 0, calls)
    assert len(calls) == 1 and [s.input_ids for s in again] == [s.input_ids for s in first]
    assert [s.answer for s in again] == [s.answer for s in first] and len(first) == 2
    counted(task, tok, 240, 2, 0, calls)   # another length
    counted(task, tok, 200, 2, 1, calls)   # another seed
    counted(task, tok, 200, 3, 0, calls)   # another count
    assert len(calls) == 4
    needle = build_task("needle:depths=2")
    counted(needle, tok, 300, 1, 0, calls)
    counted(build_task("needle:depths=3"), tok, 300, 1, 0, calls)  # other options
    assert len(calls) == 6
    assert not list((tmp_path / "prompts").glob("*.tmp"))  # written whole
