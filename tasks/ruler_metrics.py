"""RULER's metrics, per sample (0..1), as in long_context_eval/eval/synthetic/constants.py and evaluate.py."""
import re

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """evaluate.py's postprocess_pred: strip, control characters to newlines, strip again."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: list[str]) -> float:
    """Share of the references found in the prediction, case-insensitive (niah, vt, cwe, fwe)."""
    said = prediction.lower()
    return sum(ref.lower() in said for ref in references) / len(references)


def string_match_part(prediction: str, references: list[str]) -> float:
    """1 if any reference is found in the prediction, case-insensitive (qa)."""
    said = prediction.lower()
    return float(any(ref.lower() in said for ref in references))


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}
# the metric of each generator family (eval/synthetic/constants.py's TASKS)
FAMILY_METRIC = {"niah": "string_match_all", "variable_tracking": "string_match_all",
                 "common_words_extraction": "string_match_all", "freq_words_extraction": "string_match_all",
                 "qa": "string_match_part"}
