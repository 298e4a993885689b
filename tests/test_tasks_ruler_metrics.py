"""RULER's metrics: values checked by hand, and against the official package's constants.py when installed."""
import importlib.util

import pytest

from tasks.ruler_metrics import postprocess, string_match_all, string_match_part

NUMBERS = ["2681158", "7761641", "1446216", "4545018"]
# (prediction, references, string_match_all, string_match_part), by hand
CASES = [
    ("2681158, 7761641, 1446216 and 4545018.", NUMBERS, 1.0, 1.0),           # the full list
    ("2681158 and 1446216", NUMBERS, 0.5, 1.0),                               # half the list
    ("The numbers are 7761641. I also remember 9999999.", NUMBERS, 0.25, 1.0),  # one, with extra text
    ("", NUMBERS, 0.0, 0.0),                                                  # empty answer
    ("FRANCE", ["France"], 1.0, 1.0),                                         # wrong case still matches
    ("It is in france, in Europe.", ["France", "Normandy"], 0.5, 1.0),        # qa: any one reference is enough
    ("Paris", ["France", "the French Republic"], 0.0, 0.0),                   # wrong answer
    ("IRAEI JLACN chgdl", ["IRAEI", "JLACN", "CHGDL", "OWUTD", "ECJWB"], 0.6, 1.0),
    ("2681158", ["26811580"], 0.0, 0.0),                                      # a reference longer than the reply
    ("26811580", ["2681158"], 1.0, 1.0),                                      # substring match, as official
]


@pytest.mark.parametrize("prediction,refs,match_all,match_part", CASES)
def test_metric_values_by_hand(prediction, refs, match_all, match_part):
    assert string_match_all(prediction, refs) == pytest.approx(match_all)
    assert string_match_part(prediction, refs) == pytest.approx(match_part)


def test_postprocess_strips_and_turns_control_characters_into_newlines():
    assert postprocess("  a\tb\x00c \n") == "a\nb\nc"
    assert postprocess("\n\n") == ""


@pytest.mark.skipif(importlib.util.find_spec("long_context_eval") is None,
                    reason="nvidia-long-context-eval is not installed (pip install --no-deps nvidia-long-context-eval==26.3)")
def test_agrees_with_the_official_metrics():
    from long_context_eval.eval.synthetic import constants

    preds = [postprocess(p) for p, *_ in CASES]
    refs = [r for _, r, *_ in CASES]
    official_all = constants.string_match_all_per_sample(preds, refs)
    official_part = constants.string_match_part_per_sample(preds, refs)
    assert [100 * string_match_all(p, r) for p, r in zip(preds, refs)] == pytest.approx(official_all)
    assert [100 * string_match_part(p, r) for p, r in zip(preds, refs)] == pytest.approx(official_part)
    ours = sum(string_match_all(p, r) for p, r in zip(preds, refs)) / len(preds) * 100
    assert round(ours, 2) == constants.string_match_all(preds, refs)
    assert constants.TASKS["qa"]["metric_fn"] is constants.string_match_part
    for family in ("niah", "variable_tracking", "common_words_extraction", "freq_words_extraction"):
        assert constants.TASKS[family]["metric_fn"] is constants.string_match_all
