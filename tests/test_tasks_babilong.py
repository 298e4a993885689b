import json
import re
from pathlib import Path

import pandas
import pytest

from tasks.babilong import Babilong, compare_answers, config_name, prompts
from tasks.babilong_gen import GENERATORS, story
from tasks.base import TaskError, build_task
from tests.fixtures.longbench_scripted import run_scripted, text_script
from tests.fixtures.tokenizer import smollm2_tokenizer

FIXTURES = "tests/fixtures/babilong"
OFFICIAL = Path(__file__).parent / "fixtures" / "babilong_official.json"
PLACES = prompts()["labels"]["qa1"]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def test_official_answer_matching_on_hand_checked_outputs():
    labels = prompts()["labels"]
    assert compare_answers("office", "The most recent location of Mary is office.", "Where is Mary?", labels["qa1"])
    assert not compare_answers("office", "Mary is in the office or the kitchen.", "Where is Mary?", labels["qa1"])
    # only the first sentence counts
    assert not compare_answers("office", "kitchen. No wait, office.", "Where is Mary?", labels["qa1"])
    # labels named by the question never count against the answer
    assert compare_answers("bathroom", "Before the kitchen the apple was in the bathroom.",
                           "Where was the apple before the kitchen?", labels["qa3"])
    assert compare_answers("Fred", "fred", "Who did Mary give the apple to?", labels["qa5"])
    assert not compare_answers("Fred", "Mary", "Who did Jeff give the apple to?", labels["qa5"])
    # the official cut where a model starts writing another example
    assert compare_answers("garden", "garden\n<example>\nJohn went to the kitchen", "Where is John?", labels["qa1"])


def test_generator_is_deterministic_and_answers_are_labels():
    for qa in GENERATORS:
        assert story(qa, 7) == story(qa, 7)
        assert len({str(story(qa, s)) for s in range(10)}) > 5
        for seed in range(60):
            facts, question, answer = story(qa, seed)
            assert answer in prompts()["labels"][qa]
            assert answer.lower() not in question.lower()
            assert compare_answers(answer, f"{answer}.", question, prompts()["labels"][qa])


def _solve_qa1(facts, question):
    who = question.removeprefix("Where is ").rstrip("?")
    return [re.search(r"the (\w+)\.$", f).group(1) for f in facts if f.startswith(who + " ")][-1]


def _solve_qa4(facts, question):
    opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
    rel = set()
    for f in facts:
        a, d, b = re.match(r"The (\w+) is (\w+) of the (\w+)\.", f).groups()
        rel |= {(a, d, b), (b, opposite[d], a)}
    m = re.match(r"What is (\w+) of the (\w+)\?", question)
    if m:
        return next(a for a, d, b in rel if d == m[1] and b == m[2])
    b, d = re.match(r"What is the (\w+) (\w+) of\?", question).groups()
    return next(c for a, dd, c in rel if a == b and dd == d)


def test_generated_stories_answer_correctly_by_an_independent_solver():
    for seed in range(40):
        assert _solve_qa1(*story("qa1", seed)[:2]) == story("qa1", seed)[2]
        assert _solve_qa4(*story("qa4", seed)[:2]) == story("qa4", seed)[2]


def test_generated_samples_have_exact_lengths_and_facts_in_order(tok):
    task = build_task("babilong:qa=qa1+qa3")
    samples = list(task.samples(tok, [1000, 2048], n=2, seed=3))
    assert [s.id for s in samples][:2] == ["babilong-qa1-1000-0-s3", "babilong-qa1-1000-1-s3"]
    for s in samples:
        assert len(s.input_ids) == s.length
        text = tok.decode(s.input_ids)
        assert text.endswith(f"Question: {s.meta['question']}<|im_end|>\n<|im_start|>assistant\n")
        assert prompts()[s.meta["qa"]]["instruction"] in text
        assert s.meta["first_fact_token"] < s.meta["last_fact_token"] < s.length
        if s.meta["qa"] == "qa1":  # all facts made it into the essay text, in story order
            context = text.split("<context>")[1]
            facts = re.findall(r"(?:Mary|John|Daniel|Sandra) (?:moved to|went to|journeyed to|travelled to|went "
                               r"back to) the \w+\.", context)
            assert len(facts) == s.meta["facts"]
            assert _solve_qa1(facts, s.meta["question"]) == s.answer
    again = list(task.samples(tok, [1000, 2048], n=2, seed=3))
    assert [s.input_ids for s in again] == [s.input_ids for s in samples]


def test_generated_zero_length_is_facts_only(tok):
    s = next(build_task("babilong:qa=qa4").samples(tok, [0]))
    context = tok.decode(s.input_ids).split("<context>\n")[1].split("\n</context>")[0]
    assert all(sentence.startswith("The ") for sentence in context.split(". ")), context
    assert s.meta["tokens"] == len(s.input_ids)


def test_local_official_jsonl_json_and_parquet(tok, tmp_path):
    task = build_task(f"babilong:qa=qa1,path={FIXTURES}")
    rows = list(task.samples(tok, [4096], n=0))
    assert [s.answer for s in rows] == ["office", "hallway"]
    assert rows[0].id == "babilong-qa1-4k-0" and rows[0].meta["config"] == "4k"
    text = tok.decode(rows[0].input_ids)
    assert "<context>\nSome noise. Mary went to the kitchen." in text and text.count("<|im_start|>user") == 1
    assert task.score(rows[0], "The most recent location of Mary is office.")["score"] == 1.0
    assert task.score(rows[0], "The most recent location of Mary is kitchen.")["score"] == 0.0
    assert len(list(task.samples(tok, [4096], n=1))) == 1
    qa2 = list(build_task(f"babilong:qa=qa2,path={FIXTURES}").samples(tok, [0], n=0))
    assert [s.answer for s in qa2] == ["bedroom"]
    pandas.DataFrame([{"input": "Bill went to the garden.", "question": "Where is Bill?", "target": "garden"}]) \
        .to_parquet(tmp_path / "qa1.parquet")
    (tmp_path / "8k").mkdir()
    (tmp_path / "qa1.parquet").rename(tmp_path / "8k" / "qa1.parquet")
    got = list(build_task(f"babilong:qa=qa1,path={tmp_path}").samples(tok, [8192], n=0))
    assert [s.answer for s in got] == ["garden"]


def test_lengths_map_to_official_splits():
    assert [config_name(x) for x in (0, 1024, 2000, 4096, 32768, 131072)] == ["0k", "1k", "2k", "4k", "32k", "128k"]
    for bad in (100, 3000, 200000):
        with pytest.raises(TaskError, match="no official split"):
            config_name(bad)


def test_missing_data_gives_one_line_errors(tok, tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        build_task("babilong:path=/no/such/babilong")
    with pytest.raises(TaskError, match=r"expected e\.g\. .*/4k/qa1\.jsonl") as err:
        next(build_task(f"babilong:qa=qa1,path={tmp_path}").samples(tok, [4096]))
    assert "\n" not in str(err.value)
    with pytest.raises(TaskError, match="unknown qa"):
        build_task("babilong:qa=qa21")
    with pytest.raises(TaskError, match="generator makes qa1-qa5 only, not qa9; use source=hub"):
        build_task("babilong:qa=qa1+qa9")
    with pytest.raises(TaskError, match="source="):
        build_task("babilong:source=web")


def test_hub_source_offline_names_the_dataset_and_the_alternatives(tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = build_task("babilong:qa=qa1,source=hub1k")
    with pytest.raises(TaskError, match="RMT-team/babilong-1k-samples .*path=FILE_OR_DIR.*source=gen") as err:
        next(task.samples(tok, [4096]))
    assert "\n" not in str(err.value)


def test_count_matches_samples_per_length(tok):
    task = build_task("babilong:qa=qa2+qa5")
    assert task.count(2) == len(list(task.samples(tok, [600], n=2))) == 4


def test_generated_sample_asks_the_same_story_at_every_length(tok):
    task = build_task("babilong:qa=qa2")
    short, long = task.samples(tok, [0, 1500], n=1)
    assert (short.meta["question"], short.answer, short.meta["facts"]) == \
        (long.meta["question"], long.answer, long.meta["facts"])
    assert len(long.input_ids) == 1500 and len(short.input_ids) < 1500


def test_prompts_and_labels_are_the_official_ones_for_qa1_to_qa20():
    official = json.loads(OFFICIAL.read_text(encoding="utf-8"))
    assert official["_source"]["commit"] and official["_source"]["repository"].endswith("booydar/babilong")
    assert prompts()["template"] == official["DEFAULT_TEMPLATE"]
    assert list(official["DEFAULT_PROMPTS"]) == [f"qa{i}" for i in range(1, 21)]
    for qa, prompt in official["DEFAULT_PROMPTS"].items():
        assert prompts()[qa] == prompt, qa
    assert prompts()["labels"] == official["TASK_LABELS"]
    assert Babilong().max_new_tokens == official["max_new_tokens"]


def test_multi_target_answers_as_official_compare_answers():
    labels = prompts()["labels"]
    question = "What is Daniel carrying?"
    # qa8: a comma-separated target longer than 3 characters needs exactly its parts among the output's labels
    assert compare_answers("apple,milk", "apple,milk", question, labels["qa8"])
    assert compare_answers("apple,milk", "Milk and apple.", question, labels["qa8"])
    assert not compare_answers("apple,milk", "apple", question, labels["qa8"])
    assert not compare_answers("apple,milk", "apple, milk, football", question, labels["qa8"])
    assert compare_answers("nothing", "nothing", question, labels["qa8"])
    # qa19's "n,w" is itself a label (3 characters): the single-label rule
    assert compare_answers("n,w", "n,w", "How do you go from the kitchen to the hallway?", labels["qa19"])
    assert not compare_answers("n,w", "n,w or s,e", "How do you go from the kitchen to the hallway?", labels["qa19"])


def test_official_qa8_rows_scored_through_the_runner(tok):
    task = build_task(f"babilong:qa=qa8,path={FIXTURES}")
    carrying, empty = task.samples(tok, [1024], n=0)
    assert carrying.answer == "apple,milk" and carrying.meta["config"] == "1k"
    assert carrying.meta["generation"] == {"max_new_tokens": 20, "official_max_new_tokens": 20, "stop": [],
                                           "greedy": True, "chat_template": True}
    assert prompts()["qa8"]["examples"] in tok.decode(carrying.input_ids)
    for sample, text, score in [(carrying, "  apple, milk\n", 1.0), (carrying, "\nApple. Then milk.", 0.0),
                                (empty, "nothing ", 1.0)]:
        result = run_scripted(task, sample, tok, text_script(tok, text))
        assert result["prediction"] == text and result["score"] == score
