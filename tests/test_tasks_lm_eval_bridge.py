import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from tasks.base import TaskError
from tasks.lm_eval_bridge import run_lm_eval
from tests.fixtures.tokenizer import smollm2_tokenizer

DOCS = [{"question": f"Is {i} an even number?", "choices": ["yes", "no"], "label": i % 2} for i in range(6)]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture
def local_task(tmp_path):
    """An lm-eval YAML task reading a local JSONL file (offline)."""
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps(d) for d in DOCS))
    (tmp_path / "tiny.yaml").write_text(f"""task: tiny_even
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
""")
    return tmp_path


def _expected_accuracy(model, tok):
    """Choose the answer with the higher log-likelihood of ' yes' / ' no' after the question, by hand."""
    right = 0
    for doc in DOCS:
        context = tok(doc["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            whole = tok(doc["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            cont = whole[len(context):]
            with torch.no_grad():
                logp = model(torch.tensor([whole[:-1]])).logits[0].log_softmax(-1)
            scores.append(sum(logp[len(context) - 1 + k, t].item() for k, t in enumerate(cont)))
        right += int(max(range(2), key=scores.__getitem__) == doc["label"])
    return right / len(DOCS)


def test_runs_a_local_lm_eval_task_on_the_given_model(model, tok, local_task, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(local_task / "cache"))
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        results = run_lm_eval(model, tok, "tiny_even", include_path=str(local_task))
    finally:
        hook.remove()
    assert calls, "lm-eval did not run the model it was given"
    got = results["results"]["tiny_even"]
    assert got["acc,none"] == pytest.approx(_expected_accuracy(model, tok))
    assert results["n-samples"]["tiny_even"]["effective"] == len(DOCS)


def test_unknown_task_and_missing_lm_eval(model, tok, local_task, monkeypatch):
    with pytest.raises(TaskError, match="no_such_task_xyz.*include_path"):
        run_lm_eval(model, tok, "no_such_task_xyz", include_path=str(local_task))
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(TaskError, match="pip install lm-eval"):
        run_lm_eval(model, tok, "tiny_even")


def test_lm_eval_prefills_go_through_the_installed_attention_method(model, tok, local_task, monkeypatch):
    from attention import hf
    from attention.registry import build_method

    monkeypatch.setenv("HF_DATASETS_CACHE", str(local_task / "cache"))
    method = build_method("dense")
    prefills = []
    real = method.prefill
    monkeypatch.setattr(method, "prefill", lambda *a, **k: prefills.append(1) or real(*a, **k))
    hf.install(model, method)
    try:
        results = run_lm_eval(model, tok, "tiny_even", include_path=str(local_task))
    finally:
        model.set_attn_implementation("sdpa")  # the model fixture is shared with the other tests
    assert prefills, "lm-eval's forward passes did not reach the installed method"
    assert results["results"]["tiny_even"]["acc,none"] == pytest.approx(_expected_accuracy(model, tok))
