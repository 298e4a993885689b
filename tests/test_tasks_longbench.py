import json
import sys
import zipfile
from pathlib import Path

import pytest

from tasks import longbench, longbench_metrics
from tasks.base import TaskError, build_task
from tasks.render import chat_frame, text_ids
from tests.fixtures.longbench_scripted import run_scripted, text_script
from tests.fixtures.tokenizer import plain_tokenizer, smollm2_tokenizer

FIXTURES = "tests/fixtures/longbench"
OFFICIAL = Path(__file__).parent / "fixtures" / "longbench_official.json"


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def test_config_is_the_official_one_byte_for_byte():
    """Every dataset's prompt, max new tokens, chat use, stop, first-line rule and metric against the official
    pred.py / eval.py / config files, committed as a fixture with its source commit."""
    official = json.loads(OFFICIAL.read_text(encoding="utf-8"))
    assert official["_source"]["commit"] and official["_source"]["repository"].endswith("THUDM/LongBench")
    cfg = longbench.config()["datasets"]
    assert list(cfg) == list(official["dataset2prompt"])  # the 21 datasets, in pred.py's order
    for name, c in cfg.items():
        assert c["prompt"] == official["dataset2prompt"][name], name
        assert c["maxlen"] == official["dataset2maxlen"][name], name
        assert c["chat"] == (name not in official["no_chat_template"]), name
        assert c["stop"] == (["\n"] if name in official["stop_at_newline"] else []), name
        assert c["first_line"] == (name in official["first_line"]), name
        assert c["metric"] == official["dataset2metric"][name], name
    assert longbench.config()["longbench_e"] == official["longbench_e"]
    assert "asconcisely" in cfg["narrativeqa"]["prompt"]  # the official typo, kept


def test_dataset_groups():
    assert longbench.resolve_datasets("code", e=False) == ["lcc", "repobench-p"]
    assert "dureader" not in longbench.resolve_datasets("en", e=False)
    assert longbench.resolve_datasets("multi", e=True) == ["hotpotqa", "2wikimqa"]
    with pytest.raises(TaskError, match="LongBench-E"):
        longbench.resolve_datasets("dureader", e=True)


def test_loader_prompts_and_chat_frames(tok):
    task = build_task(f"longbench:datasets=qasper+trec,path={FIXTURES}")
    samples = list(task.samples(tok, [4000], n=0))
    assert [s.id for s in samples] == ["longbench-qasper-4000-0", "longbench-qasper-4000-1", "longbench-trec-4000-0"]
    qasper, trec = samples[0], samples[2]
    assert qasper.answer == ["the Penn Treebank", "Penn Treebank"] and qasper.max_new_tokens == 128
    before, after = chat_frame(tok)
    body = text_ids(tok, longbench.config()["datasets"]["qasper"]["prompt"].format(
        context="We evaluate our tagger on the Penn Treebank. " * 40 + "The results are in Table 2.",
        input="What dataset do the authors use?"))
    assert qasper.input_ids == before + body + after and not qasper.meta["truncated"]
    # few-shot datasets are fed without the chat template, as official pred.py does
    assert tok.decode(trec.input_ids).startswith("Please determine the type of the question below.")
    assert trec.meta["all_classes"] == ["City", "Individual", "Description of a person", "Date"]
    assert trec.max_new_tokens == 64


def test_middle_truncation_keeps_both_ends_and_records_it(tok):
    task = build_task(f"longbench:datasets=qasper,path={FIXTURES}")
    s = next(task.samples(tok, [300]))
    before, after = chat_frame(tok)
    full = text_ids(tok, longbench.config()["datasets"]["qasper"]["prompt"].format(
        context="We evaluate our tagger on the Penn Treebank. " * 40 + "The results are in Table 2.",
        input="What dataset do the authors use?"))
    budget = 300 - len(before) - len(after)
    assert len(s.input_ids) == 300
    assert s.input_ids[len(before):len(before) + budget // 2] == full[:budget // 2]
    assert s.input_ids[len(before) + budget // 2:-len(after)] == full[-(budget - budget // 2):]
    assert s.meta["truncated"] and s.meta["dropped_tokens"] == len(full) - budget
    assert s.meta["prompt_tokens"] == len(full)


def test_longbench_e_buckets(tok):
    task = build_task(f"longbench:e=1,datasets=qasper,path={FIXTURES}")
    samples = list(task.samples(tok, [1000], n=0))
    assert [s.meta["bucket"] for s in samples] == ["0-4k", "4-8k", "8k+"]
    assert samples[0].id == "longbench-qasper_e-1000-0"


def test_official_metrics_on_hand_checked_examples():
    score = longbench_metrics.score
    # qa_f1: normalised tokens [cat sat on mat] vs [cat on mat]: P=3/4, R=1
    assert score("qa_f1", "The cat sat on the mat.", ["a cat on the mat"]) == pytest.approx(6 / 7)
    assert score("qa_f1", "nothing", ["a cat on the mat", "Nothing."]) == 1.0
    # rouge-L: LCS "the cat" = 2 of 3 words each side
    assert score("rouge", "the cat sat", ["the cat ran"]) == pytest.approx(2 / 3, abs=1e-6)
    assert score("rouge_zh", "今天天气很好", ["今天天气很好"]) == pytest.approx(1.0)
    assert score("qa_f1_zh", "北京", ["北京"]) == 1.0
    classes = ["Location", "Human", "Human being", "Date"]
    assert score("classification", "Human being", ["Human being"], classes) == 1.0  # "Human" is dropped
    # Location, Human and Human being all appear; none is part of the truth "Location", so 1/3
    assert score("classification", "Location or Human being", ["Location"], classes) == pytest.approx(1 / 3)
    assert score("classification", "Location or Date", ["Location"], classes) == 0.5
    assert score("retrieval", "Paragraph 3, maybe Paragraph 7", ["Paragraph 3"]) == 0.5
    assert score("retrieval_zh", "段落5", ["段落5"]) == 1.0
    assert score("count", "There are 12 unique paragraphs", ["12"]) == 1.0
    assert score("count", "5 or 12", ["12"]) == 0.5
    assert score("count", "none", ["12"]) == 0.0


def test_first_line_rule_for_few_shot_datasets():
    classes = ["Location", "Human being"]
    assert longbench_metrics.score("classification", "\nHuman being\nLocation", ["Human being"], classes,
                                   first_line=True) == 1.0
    assert longbench_metrics.score("classification", "\nHuman being\nLocation", ["Human being"], classes) == 0.5


def test_code_sim_follows_the_official_line_choice():
    score = longbench_metrics.score
    assert score("code_sim", "\n# a comment\n    return total\n", ["    return total"]) == 1.0
    # official: after leading newlines, a blank-but-spaces line is the prediction; lm-eval's copy skips it.
    # fuzz.ratio("   ", "x = 1"): 2 matched spaces of 3 + 5 characters -> 50
    assert score("code_sim", "\n   \nx = 1", ["x = 1"]) == 0.5
    from lm_eval.tasks.longbench.metrics import code_sim_score as lm_eval_code_sim

    assert lm_eval_code_sim("\n   \nx = 1", "x = 1") == 1.0


def test_score_uses_sample_metric(tok):
    task = build_task(f"longbench:datasets=trec+passage_retrieval_en+lcc,path={FIXTURES}")
    trec, retrieval, lcc = task.samples(tok, [2000])
    assert task.score(trec, "Individual\nCity") == {"score": 1.0, "classification": 1.0}
    assert task.score(retrieval, "Paragraph 2")["retrieval"] == 1.0
    assert task.score(lcc, "    return total")["score"] == 1.0


def test_hub_zip_is_read_when_no_path(tok, tmp_path, monkeypatch):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/qasper.jsonl", open(f"{FIXTURES}/qasper.jsonl", encoding="utf-8").read())
    monkeypatch.setattr(longbench, "hub_zip", lambda: archive)
    samples = list(build_task("longbench:datasets=qasper").samples(tok, [1000], n=0))
    assert [s.meta["_id"] for s in samples] == ["fx0001", "fx0002"]


def test_missing_data_and_missing_lm_eval_are_one_line_errors(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskError, match="THUDM/LongBench.*path=DIR") as err:
        next(build_task("longbench:datasets=qasper").samples(tok, [1000]))
    assert "\n" not in str(err.value)
    with pytest.raises(TaskError, match="narrativeqa.jsonl not found"):
        next(build_task(f"longbench:datasets=narrativeqa,path={FIXTURES}").samples(tok, [1000]))
    with pytest.raises(TaskError, match="not a folder"):
        build_task(f"longbench:path={tmp_path / 'nothing'}")
    longbench_metrics._lm_eval_metrics.cache_clear()
    monkeypatch.setitem(sys.modules, "lm_eval.tasks.longbench.metrics", None)
    with pytest.raises(TaskError, match="pip install lm-eval rouge jieba fuzzywuzzy"):
        longbench_metrics.score("qa_f1", "a", ["a"])
    longbench_metrics._lm_eval_metrics.cache_clear()


def test_count_matches_samples_per_length(tok):
    task = build_task(f"longbench:datasets=qasper+trec,path={FIXTURES}")
    assert task.count(5) == len(list(task.samples(tok, [800], n=5))) == 3
    assert task.count(1) == 2 and task.count(0) == 3


def test_bad_option_values_are_task_errors():
    with pytest.raises(TaskError, match="e='maybe'"):
        build_task(f"longbench:e=maybe,path={FIXTURES}")
    with pytest.raises(TaskError, match="max_new_tokens"):
        build_task(f"longbench:max_new_tokens=lots,path={FIXTURES}")
    with pytest.raises(TaskError, match="max_new_tokens"):
        build_task("needle:max_new_tokens=0")
    with pytest.raises(TaskError, match="unknown option"):
        build_task("babilong:colour=blue")


def test_generation_settings_are_recorded_per_sample(tok):
    samsum, qasper, lcc = build_task(f"longbench:datasets=samsum+qasper+lcc,path={FIXTURES}").samples(tok, [4000])
    assert samsum.stop == ["\n"] and qasper.stop == [] and lcc.stop == []
    assert samsum.meta["generation"] == {"max_new_tokens": 128, "official_max_new_tokens": 128, "stop": ["\n"],
                                         "first_line": True, "greedy": True, "chat_template": False}
    assert qasper.meta["generation"]["chat_template"] and not lcc.meta["generation"]["chat_template"]
    plain = next(build_task(f"longbench:datasets=qasper,path={FIXTURES}").samples(plain_tokenizer(), [4000]))
    assert not plain.meta["generation"]["chat_template"]  # no template to apply: the plain prompt, as recorded
    short = next(build_task(f"longbench:datasets=qasper,max_new_tokens=7,path={FIXTURES}").samples(tok, [4000]))
    assert short.max_new_tokens == 7 and short.meta["generation"]["official_max_new_tokens"] == 128


@pytest.fixture(scope="module")
def by_dataset(tok):
    task = build_task(f"longbench:datasets=lcc+trec+samsum+multifieldqa_zh+qasper,path={FIXTURES}")
    return task, {s.meta["dataset"]: s for s in task.samples(tok, [4000])}


# (dataset, decoded text, official score worked by hand, score of the stripped text the runner used to score)
# code_sim is fuzz.ratio of the first line (after leading newlines) without `, # or //: with python-Levenshtein
# that is round(100 x 2 x LCS / (len a + len b)) / 100; the reference line is "    return total" (16 characters).
REAL_LOOKING = [
    ("lcc", "    return total\n\ndef sub(a, b):", 1.0, 0.86),  # stripped "return total": 2*12/28 -> 86
    ("lcc", "\n    return total", 1.0, 0.86),                   # a leading blank line is skipped
    ("lcc", "    # done\n    return total", 1.0, 1.0),         # comment lines are skipped
    ("lcc", "    return total  ", 0.94, 0.86),                 # trailing spaces: 2*16/34 -> 94
    ("lcc", "   ", 0.32, 0.0),                                 # whitespace only: 2*3/19 -> 32; "" scores 0
    ("trec", "\nIndividual\nQuestion: Who is he ?", 1.0, 1.0),  # first line after leading newlines
    ("trec", " \nIndividual", 0.0, 1.0),                        # official: the first line " " holds no class
    ("trec", "Individual ", 1.0, 1.0),
    ("multifieldqa_zh", "\n是北京大学。  ", 2 / 3, 2 / 3),   # jieba: 是|北京大学|。 -> P 1/2, R 1
    ("qasper", "\n\nPenn Treebank  ", 1.0, 1.0),               # normalised tokens [penn, treebank]
    ("qasper", "  \n ", 0.0, 0.0),
]


@pytest.mark.parametrize("dataset,text,official,stripped", REAL_LOOKING)
def test_runner_scores_the_raw_decoded_text(tok, by_dataset, dataset, text, official, stripped):
    task, samples = by_dataset
    script = text_script(tok, text)
    assert tok.decode([ids[0] for ids in script]) == text
    result = run_scripted(task, samples[dataset], tok, script)
    assert result["status"] == "ok" and result["prediction"] == text  # stored raw
    assert result["score"] == pytest.approx(official)
    assert task.score(samples[dataset], text.strip())["score"] == pytest.approx(stripped)


def test_samsum_stops_at_the_newline_token_as_official_pred_py(tok, by_dataset):
    task, samples = by_dataset
    newline = tok.encode("\n", add_special_tokens=False)[-1]
    summary = text_script(tok, "Amanda will bring Jerry cookies.")
    script = [[newline, summary[0][0]], *summary[1:], [newline], *text_script(tok, "Dialogue: Kate: Hi")]
    result = run_scripted(task, samples["samsum"], tok, script)
    # generate(min_length=prompt+1): the newline may not come first, so the second choice does; the newline
    # that ends generation stays in the prediction, as in pred.py's output
    assert result["prediction"] == "Amanda will bring Jerry cookies.\n"
    assert result["new_tokens"] == len(summary) + 1
    # rouge-L F (rouge 1.0.1): LCS [Amanda, Jerry] = 2 of 5 words on each side: P = R = 0.4
    assert result["score"] == pytest.approx(0.4, abs=1e-6)
    # without a stop (trec) a newline first token is kept and generation runs on
    trec = run_scripted(task, samples["trec"], tok, [[newline, summary[0][0]], *summary, [newline]])
    assert trec["prediction"] == "\nAmanda will bring Jerry cookies.\n"


def lcs(a: str, b: str) -> int:
    row = [0] * (len(b) + 1)
    for ch in a:
        prev = 0
        for j, other in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if ch == other else max(row[j], row[j - 1])
    return row[-1]


# (first line of the prediction, reference line): pairs on which difflib's greedy blocks and Levenshtein's
# ratio (2 x LCS / (len a + len b)) give different fuzz.ratio; the last is over 200 characters (difflib autojunk)
DISAGREE = [("bcac", "a cb"),
            ("if (a > b) { return a; }", "return a > b ? a : b;"),
            ("    self.assertEqual(x, y) " * 9, "self.assertEqual(y, x)  " * 9)]


@pytest.mark.parametrize("prediction,truth", DISAGREE)
def test_code_sim_scores_difflib_by_default_as_the_published_results(prediction, truth, monkeypatch):
    import difflib

    from fuzzywuzzy import fuzz

    by_difflib = round(100 * difflib.SequenceMatcher(None, prediction, truth).ratio())
    by_levenshtein = round(100 * 2 * lcs(prediction, truth) / (len(prediction) + len(truth)))
    assert by_difflib != by_levenshtein  # the pair tells the backends apart
    assert longbench_metrics.score("code_sim", prediction, [truth]) == by_difflib / 100
    assert longbench_metrics.score("code_sim", prediction, [truth], code_sim="levenshtein") == by_levenshtein / 100
    # fuzzywuzzy itself: with python-Levenshtein, and with the difflib fallback it takes without it
    assert fuzz.ratio(prediction, truth) == by_levenshtein
    monkeypatch.setattr(fuzz, "SequenceMatcher", difflib.SequenceMatcher)
    assert fuzz.ratio(prediction, truth) == by_difflib


def test_code_sim_backend_is_a_task_option_recorded_per_sample(tok, monkeypatch):
    lcc = next(build_task(f"longbench:datasets=lcc,path={FIXTURES}").samples(tok, [4000]))
    assert lcc.meta["code_sim"] == "difflib"
    task = build_task(f"longbench:datasets=lcc,code_sim=levenshtein,path={FIXTURES}")
    lcc = next(task.samples(tok, [4000]))
    assert lcc.meta["code_sim"] == "levenshtein"
    assert task.score(lcc, "bcac")["score"] == longbench_metrics.score("code_sim", "bcac", lcc.answer,
                                                                       code_sim="levenshtein")
    with pytest.raises(TaskError, match="code_sim='fast'.*difflib or levenshtein"):
        build_task(f"longbench:code_sim=fast,path={FIXTURES}")
    monkeypatch.setitem(sys.modules, "Levenshtein", None)  # not installed: only the option that needs it fails
    with pytest.raises(TaskError, match="pip install python-Levenshtein"):
        build_task(f"longbench:datasets=code,code_sim=levenshtein,path={FIXTURES}")
    build_task(f"longbench:datasets=code,path={FIXTURES}")  # difflib needs nothing more