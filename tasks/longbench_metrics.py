"""LongBench v1 scoring as the official eval.py does it, on lm-eval's copies of the official metric functions.

lm-eval (and rouge, jieba, fuzzywuzzy, which its metrics need) is imported lazily, on first score.
code_sim is the one metric whose lm-eval copy drifted from the official (it skips blank lines the official keeps),
so its line selection is done here, the official way, then fuzzywuzzy's fuzz.ratio on one of two backends:
fuzzywuzzy uses python-Levenshtein's ratio when that is installed and difflib's SequenceMatcher otherwise, and the
two differ (difflib's greedy matching blocks find fewer matches). The official requirements do not list
python-Levenshtein, and the result.json files published beside LongBench's predictions are reproduced exactly
only by the difflib fallback, so difflib is the default here (CODE_SIM_DEFAULT); `levenshtein` stays an option
(`longbench:code_sim=levenshtein`). Either is computed here explicitly, whatever fuzzywuzzy picked at import.
Predictions come in raw (as decoded): official eval.py strips nothing, and leading indentation or a blank first
line changes code_sim and the first-line datasets' scores.
"""
import difflib
import importlib
import logging
import warnings
from functools import cache

from tasks.base import TaskError

PIP = "pip install lm-eval rouge jieba fuzzywuzzy"
CODE_SIM_BACKENDS = ("difflib", "levenshtein")
CODE_SIM_DEFAULT = "difflib"  # how the published LongBench results were scored (fuzzywuzzy without Levenshtein)
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


def check_code_sim(backend: str = CODE_SIM_DEFAULT) -> None:
    """The backend is known and importable (python-Levenshtein only for `levenshtein`)."""
    if backend not in CODE_SIM_BACKENDS:
        raise TaskError(f"longbench: code_sim={backend!r} is not a code_sim backend; choose "
                        f"{' or '.join(CODE_SIM_BACKENDS)} (default {CODE_SIM_DEFAULT}: as the published results)")
    if backend == "levenshtein":
        try:
            importlib.import_module("Levenshtein")
        except ImportError:
            raise TaskError("longbench: code_sim=levenshtein needs python-Levenshtein; run "
                            "`pip install python-Levenshtein`, or drop the option for difflib (the published "
                            "results' backend)") from None


def _matcher_ratio(a: str, b: str, backend: str) -> float:
    if backend == "levenshtein":
        return importlib.import_module("Levenshtein").ratio(a, b)
    return difflib.SequenceMatcher(None, a, b).ratio()  # fuzzywuzzy's fallback: default isjunk and autojunk


def fuzz_ratio(a: str, b: str, backend: str = CODE_SIM_DEFAULT) -> int:
    """fuzzywuzzy 0.18 fuzz.ratio on the chosen backend: 100 for equal strings, 0 if either is empty, else
    round(100 x ratio) (Python's round, as fuzzywuzzy's utils.intr)."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * _matcher_ratio(a, b, backend)))


def code_sim_score(prediction: str, ground_truth: str, backend: str = CODE_SIM_DEFAULT, **_) -> float:
    """Official: the first line (after leading newlines) that is not a comment or a code fence."""
    line = next((ln for ln in prediction.lstrip("\n").split("\n")
                 if "`" not in ln and "#" not in ln and "//" not in ln), "")
    return fuzz_ratio(line, ground_truth, backend) / 100


def metric(name: str, code_sim: str = CODE_SIM_DEFAULT):
    if name == "code_sim":
        check_code_sim(code_sim)
        return lambda prediction, truth, **_: code_sim_score(prediction, truth, code_sim)
    return getattr(_lm_eval_metrics(), LM_EVAL_NAMES[name])


def score(name: str, prediction: str, answers: list[str], all_classes=None, first_line: bool = False,
          code_sim: str = CODE_SIM_DEFAULT) -> float:
    """One prediction's score in 0..1: the best over the reference answers, as official eval.py scorer()."""
    if first_line:  # official: trec, triviaqa, samsum, lsht keep only the first generated line
        prediction = prediction.lstrip("\n").split("\n")[0]
    fn = metric(name, code_sim)
    return max((float(fn(prediction, truth, all_classes=all_classes)) for truth in answers), default=0.0)


def bucket(length: int) -> str:
    """LongBench-E length bucket of a sample's official `length` field."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"
