import pytest

from harness.models import ModelError, find_embedded_gguf, resolve
from harness.runner import RunOptions, run_cell
from attention.registry import build_method
from tasks import build_task


def test_embedded_gguf_is_found_without_importing_its_package():
    path = find_embedded_gguf("smollm2-135m")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.parametrize("name,message", [
    ("no-such-model", "unknown model 'no-such-model'"),
    ("/tmp/definitely/missing.gguf", "does not exist"),
])
def test_bad_model_names_give_one_line_errors(name, message):
    with pytest.raises(ModelError, match=message):
        resolve(name)


def test_gguf_model_answers_a_passkey_greedily(smollm2):
    assert smollm2.dtype == "float32" and smollm2.max_context == 8192
    sample = next(build_task("passkey").samples(smollm2.tokenizer, [300], n=1, seed=3))
    assert len(sample.input_ids) == 300
    result = run_cell(smollm2, build_method("dense"), sample, RunOptions(device="cpu"))
    assert sample.answer in result["prediction"]
    assert result["ttft_ms"] > 0 and result["prompt_tokens"] == 300
