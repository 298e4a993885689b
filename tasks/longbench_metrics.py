"""LongBench v1 scoring as the official eval.py does it, on lm-eval's copies of the official metric functions.

lm-eval (and rouge, jieba, fuzzywuzzy, which its metrics need) is imported lazily, on first score.
code_sim is the one metric whose lm-eval copy drifted from the official (it skips blank lines the official keeps),
so its line selection is done here, the official way, before fuzzywuzzy's ratio. That ratio is the official one
only with python-Levenshtein installed: without it fuzzywuzzy silently falls back to difflib, whose ratio differs,
so code_sim refuses to run without it.
Predictions come in raw (as decoded): official eval.py strips nothing, and leading indentation or a blank first
line changes code_sim and the first-line datasets' scores.
"""
import importlib
import logging
import warnings
from functools import cache

from tasks.base import TaskError

PIP = "pip install lm-eval rouge jieba fuzzywuzzy python-Levenshtein"
LM_EVAL_NAMES = {"qa_f1": "qa_f1_score", "qa_f1_zh": "qa_f1_zh_score", "rouge": "rouge_score",
                 "rouge_zh": "rouge_zh_score", "classification": "classification_score",
                 "retrieval": "retrieval_score", "retrieval_zh": "retrieval_zh_score", "count": "count_score"}


@cache
def _lm_eval_metrics():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fuzzywuzzy warns when python-Levenshtein is absent
        try:
            module = importlib.import_module("lm_eval.tasks.longbench.metrics")
        except ImportError:
            raise TaskError(f"LongBench scoring needs lm-eval's LongBench metrics; run `{PIP}`") from None
    import jieba

    jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading on first use
    return module


def check_code_sim() -> None:
    """code_sim's official numbers need fuzzywuzzy on python-Levenshtein, not its difflib fallback."""
    _lm_eval_metrics()  # same optional dependencies, same one-line error
    from fuzzywuzzy import fuzz

    if fuzz.SequenceMatcher.__module__ != "fuzzywuzzy.StringMatcher":
        raise TaskError("LongBench code_sim (lcc, repobench-p) needs python-Levenshtein: without it fuzzywuzzy "
                        "falls back to difflib and scores differ from the official; "
                        "run `pip install python-Levenshtein`")


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """Official: the first line (after leading newlines) that is not a comment or a code fence."""
    from fuzzywuzzy import fuzz

    line = next((ln for ln in prediction.lstrip("\n").split("\n")
                 if "`" not in ln and "#" not in ln and "//" not in ln), "")
    return fuzz.ratio(line, ground_truth) / 100


def metric(name: str):
    if name == "code_sim":
        check_code_sim()
        return code_sim_score
    return getattr(_lm_eval_metrics(), LM_EVAL_NAMES[name])


def score(name: str, prediction: str, answers: list[str], all_classes=None, first_line: bool = False) -> float:
    """One prediction's score in 0..1: the best over the reference answers, as official eval.py scorer()."""
    if first_line:  # official: trec, triviaqa, samsum, lsht keep only the first generated line
        prediction = prediction.lstrip("\n").split("\n")[0]
    fn = metric(name)
    return max((float(fn(prediction, truth, all_classes=all_classes)) for truth in answers), default=0.0)


def bucket(length: int) -> str:
    """LongBench-E length bucket of a sample's official `length` field."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"
