"""random:<preset or config.json> models: built from the architecture with random weights, timing-only cells."""
import json

import pytest

from harness.models.loading import ModelError, load_model, resolve
from harness.models.random_weights import PRESETS, build_config
from harness.running.runner import RunOptions, execute_cell
from harness.running.plan import SweepSpec, validate
from tasks.base import build_task

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97, "max_position_embeddings": 512}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_their_architecture(preset):
    config = build_config(f"random:{preset}")
    assert config.num_hidden_layers == PRESETS[preset]["num_hidden_layers"]
    assert config.num_key_value_heads == PRESETS[preset]["num_key_value_heads"]
    assert resolve(f"random:{preset}")[2] == PRESETS[preset]["max_position_embeddings"]


def test_unknown_preset_or_missing_file_is_one_line():
    with pytest.raises(ModelError, match="not a preset") as err:
        resolve("random:no-such-model")
    assert "\n" not in str(err.value)


class Store(list):
    def append(self, cell):
        super().append(cell)


def test_tiny_config_runs_timing_only_cells_on_cpu(tiny_config):
    from attention.registry import build_method

    loaded = load_model(f"random:{tiny_config}", "cpu")
    assert loaded.model.config.num_hidden_layers == 2 and loaded.timing_only
    store = Store()
    methods = [build_method("dense"), build_method("sample", {"r_w": "0.2"})]
    task = build_task("tokens")
    for sample in task.samples(loaded.tokenizer, [96]):
        for method in methods:
            store.append(execute_cell(loaded, method, sample, RunOptions(device="cpu"), task))
    assert [cell["status"] for cell in store] == ["ok", "ok"]
    for cell in store:
        assert cell["timing_only"] and cell["ttft_ms"] > 0 and cell["prompt_tokens"] == 96
        assert "score" not in cell and "prediction" not in cell


def test_accuracy_tasks_are_refused(tiny_config):
    spec = SweepSpec(models=[f"random:{tiny_config}"], methods=["dense"], tasks=["passkey"], lengths=[64],
                     device="cpu")
    with pytest.raises(ValueError, match="use --task tokens") as err:
        validate(spec)
    assert "\n" not in str(err.value)
    validate(SweepSpec(models=[f"random:{tiny_config}"], methods=["dense"], tasks=["tokens"], lengths=[64],
                       device="cpu"))
