"""--device-map: flag checks and plumbing on the CPU; on a host with 2 GPUs, every method split = one GPU."""
import json

import pytest
import torch

from harness.models import device_map
from harness.cli import main
from tiny_checkpoint import save_tiny_checkpoint
from tiny_models import tiny_model


def test_bad_combinations_are_one_line_errors():
    with pytest.raises(ValueError, match="several ranks"):
        device_map.check("auto", "cuda", world=2)
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        device_map.check("balanced", "cuda:1", world=1)
    device_map.check(None, "cuda:1", world=4)
    device_map.check("auto", "cpu", world=1)


def test_layers_per_device_reads_the_placement():
    model = tiny_model("llama")
    model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.norm": 1,
                           "lm_head": "cuda:1"}
    assert device_map.layers_per_device(model) == {"cuda:0": 1, "cuda:1": 1}
    assert [str(d) for d in device_map.placed_devices(model)] == ["cuda:0", "cuda:1"]


def test_device_map_flag_runs_and_is_stored_on_a_cpu_host(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tiny")
    assert main(["run", "--model", str(folder), "--methods", "dense", "--lengths", "256", "--device", "cpu",
                 "--device-map", "auto", "--max-new-tokens", "2", "--out", str(tmp_path / "runs"),
                 "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["spec"]["device_map"] == "auto"
    (cell,) = [json.loads(line) for line in (run / "cells.jsonl").read_text().splitlines()]
    assert cell["status"] == "ok"


two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


@two_gpus
@pytest.mark.parametrize("spec", ["dense", "sample", "sample:pattern=column_slash", "bigbird:block=64",
                                  "streaming:window=256", "h2o"])
def test_every_method_split_over_two_gpus_equals_one_gpu(spec):
    from attention import hf
    from harness.running.runner import greedy_decode
    from harness.running.plan import expand_alternatives

    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=128, vocab_size=1000, max_position_embeddings=8192)
    torch.manual_seed(0)
    with torch.device("cuda:0"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (1, 2048), device="cuda:0", generator=torch.Generator("cuda:0").manual_seed(0))

    @torch.inference_mode()
    def run(method):
        hf.install(model, method)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        hf.compress_cache(out.past_key_values, method)
        first = out.logits[:, -1].argmax(-1)
        return out.logits[:, -1].float().cpu(), greedy_decode(model, first, out.past_key_values, 2048, 4, set())

    single = run(expand_alternatives(spec)[0])
    model = device_map.dispatch(model, "balanced")
    assert len(device_map.placed_devices(model)) == 2
    split = run(expand_alternatives(spec)[0])
    torch.testing.assert_close(split[0], single[0], rtol=0, atol=1e-2)
    assert split[1] == single[1]
