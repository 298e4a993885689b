"""The chunked long prefill gives the plain forward's first token, logits and KV cache, for every method."""
import json

import pytest
import torch

from attention import hf
from attention.registry import build_method
from harness.models import long_prefill
from tiny_checkpoint import save_tiny_checkpoint
from tiny_models import tiny_model

METHODS = [("dense", {}), ("sample", {"r_w": "0.1", "r_row": "0.2"}), ("bigbird", {"block": "32"}),
           ("streaming", {"window": "48"}), ("h2o", {})]


def prompt(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 128, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_logits_and_cache_equal_the_plain_forward(family):
    model = tiny_model(family)
    ids = prompt(203)  # not a multiple of the chunk: a short last chunk
    with torch.inference_mode():
        plain = model(input_ids=ids, use_cache=True)
    logits, cache = long_prefill.forward(model, ids, chunk=64, all_logits=True)
    assert logits.shape == plain.logits.shape
    torch.testing.assert_close(logits, plain.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits[:, -1].argmax(-1), plain.logits[:, -1].argmax(-1))
    for ours, theirs in zip(cache.layers, plain.past_key_values.layers):
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.values, theirs.values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,options", METHODS, ids=[m for m, _ in METHODS])
def test_first_token_equals_the_plain_prefill_through_the_bridge(name, options):
    model = tiny_model("llama")
    method = build_method(name, options)
    hf.install(model, method)
    ids = prompt(257, seed=2)
    with torch.inference_mode():
        plain = model(input_ids=ids, use_cache=True, logits_to_keep=1).logits
    plain_stats = [s["layer"] for s in method.stats]
    method.stats.clear()
    first, cache = long_prefill.prefill(model, ids, chunk=100, keep_cache=False)
    assert cache is None  # timing-only mode keeps no KV cache
    assert int(first) == int(plain[:, -1].argmax(-1))
    logits, _ = long_prefill.forward(model, ids, chunk=100, keep_cache=False)
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)
    assert [s["layer"] for s in method.stats][:len(plain_stats)] == plain_stats  # the method ran on every layer


def test_decode_after_chunked_prefill_matches_generate():
    from harness.running.runner import greedy_decode

    model = tiny_model("llama")
    ids = prompt(150, seed=3)
    first, cache = long_prefill.prefill(model, ids, chunk=32)
    with torch.inference_mode():
        tokens = greedy_decode(model, first, cache, ids.shape[1], 6, set())
        expected = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
    assert tokens == expected


def test_unsupported_model_is_refused_in_one_line():
    model = tiny_model("gemma3")
    with pytest.raises(ValueError, match="--prefill plain") as err:
        long_prefill.prefill(model, prompt(40))
    assert "\n" not in str(err.value)


def test_timing_only_cells_record_the_mode_and_skip_scoring(tmp_path):
    from harness.cli import main

    folder = tmp_path / "tiny"
    save_tiny_checkpoint(folder)
    assert main(["run", "--model", str(folder), "--methods", "dense,sample:r_w=0.1", "--lengths", "256",
                 "--device", "cpu", "--prefill", "chunked-nocache", "--prefill-chunk", "64", "--out",
                 str(tmp_path / "runs"), "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    cells = [json.loads(line) for line in (run / "cells.jsonl").read_text().splitlines()]
    assert {c["method"] for c in cells} == {"dense", "sample"}
    for cell in cells:
        assert cell["status"] == "ok" and cell["prefill"] == "chunked-nocache" and cell["kv_cache"] == "dropped"
        assert cell["timing_only"] and cell["first_token"] >= 0 and "score" not in cell and "prediction" not in cell
