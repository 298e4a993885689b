import sys
import zipfile

import pytest

from tasks import longbench, longbench_metrics
from tasks.base import TaskError, build_task
from tasks.render import chat_frame, text_ids
from tests.fixtures.tokenizer import smollm2_tokenizer

FIXTURES = "tests/fixtures/longbench"


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def test_official_config_table():
    cfg = longbench.config()["datasets"]
    assert len(cfg) == 21 and len(longbench.config()["longbench_e"]) == 13
    assert all("{context}" in c["prompt"] for c in cfg.values())
    # official dataset2maxlen.json and eval.py dataset2metric, spot-checked by hand
    assert {d: cfg[d]["maxlen"] for d in ("qasper", "hotpotqa", "gov_report", "trec", "lcc", "passage_count")} == \
        {"qasper": 128, "hotpotqa": 32, "gov_report": 512, "trec": 64, "lcc": 64, "passage_count": 32}
    assert {d: cfg[d]["metric"] for d in ("dureader", "lsht", "passage_retrieval_zh", "repobench-p")} == \
        {"dureader": "rouge_zh", "lsht": "classification", "passage_retrieval_zh": "retrieval_zh",
         "repobench-p": "code_sim"}
    assert [d for d, c in cfg.items() if not c["chat"]] == ["trec", "triviaqa", "samsum", "lsht", "lcc",
                                                           "repobench-p"]


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
