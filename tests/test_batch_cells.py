"""--batch-size: a group of samples through one prefill and one batched greedy decode predicts and scores exactly
what each sample predicts alone (harness/running/batch.py), for dense and every sparse method, on a tiny model of
each family and on the embedded SmolLM2-135M; rows that end early (EOS, stop strings, budgets) keep their output
while the others decode."""
import dataclasses
import json

import pytest
import torch

from attention import hf
from harness.cli import main
from harness.running import batch
from harness.running.runner import run_cell
from harness.running.settings import RunOptions
from tasks.base import Sample
from tests.test_methods import METHODS, small
from tests.tiny_models import tiny_model

LENGTH = 40


class CharTokenizer:
    """Token i is the character chr(200 + i): stop strings map to known token ids."""

    eos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [ord(c) - 200 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(200 + i) for i in ids)


@dataclasses.dataclass
class Loaded:
    model: object
    tokenizer: object
    name: str = "tiny"
    max_context: int = 512
    timing_only: bool = False


class Scorer:
    name = "tiny-task"
    timing_only = False

    def score(self, sample, prediction):
        return {"score": float(prediction.startswith(sample.answer))}


def prompts(count, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (LENGTH,), generator=gen).tolist() for _ in range(count)]


def tokens_alone(loaded, method_name, ids, budget=10):
    loaded.tokenizer.eos_token_id = None
    sample = Sample(id="probe", task="t", length=LENGTH, input_ids=ids, answer="", max_new_tokens=budget)
    method = small(method_name)
    with hf.install(loaded.model, method):
        return CharTokenizer().encode(run_cell(loaded, method, sample, RunOptions())["prediction"])


def ending_samples(loaded, method_name):
    """Four samples that end differently: by EOS, by a stop string (its token kept), by a budget of 4, and the
    rest by the budget of 10 (the EOS and stop ids chosen from the rows' own greedy outputs)."""
    ids = prompts(4)
    alone = [tokens_alone(loaded, method_name, p) for p in ids]
    eos = next((t for row in (0, 3) for t in alone[row][1:] if t != alone[row][0]), 127)
    stop = next((t for row in (1, 3) for t in alone[row][1:] if t not in (eos, alone[row][0])), 126)
    loaded.tokenizer.eos_token_id = eos
    budgets, stops = [10, 10, 4, 10], [[], [chr(200 + stop)], [], []]
    return [Sample(id=f"s{i}", task="t", length=LENGTH, input_ids=p, answer=CharTokenizer().decode(alone[i][:1]),
                   max_new_tokens=b, stop=s) for i, (p, b, s) in enumerate(zip(ids, budgets, stops))]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("name", METHODS)
def test_group_predicts_what_each_sample_predicts_alone(name, family):
    model = tiny_model(family)
    model.generation_config.eos_token_id = None
    loaded = Loaded(model, CharTokenizer())
    samples = ending_samples(loaded, name)
    alone = [batch.BatchMeasure().group(loaded, small(name), Scorer(), [s], RunOptions())[0] for s in samples]
    grouped = batch.BatchMeasure().group(loaded, small(name), Scorer(), samples, RunOptions())
    assert [c["batch_size"] for c in grouped] == [4] * 4 and [c["batch_size"] for c in alone] == [1] * 4
    for one, many in zip(alone, grouped):
        assert many["status"] == one["status"] == "ok"
        assert (many["prediction"], many["new_tokens"], many["score"]) == \
               (one["prediction"], one["new_tokens"], one["score"])
        assert many["ttft_sample"] == "s0" and many["ttft_ms"] == grouped[0]["ttft_ms"]
    lengths = [c["new_tokens"] for c in alone]
    # rows end at different steps, one of them (budget 10) by EOS or its stop string
    assert max(lengths) > min(lengths) and any(n < 10 for i, n in enumerate(lengths) if i != 2), lengths


def test_prompts_of_unequal_length_batch_by_length_and_say_so(capsys):
    """No padding: a group's prompts of one length share a batch, a length no other prompt has runs at batch 1."""
    loaded = Loaded(tiny_model("llama"), CharTokenizer())
    cut = [0, 0, 1, 0, 2]
    samples = [Sample(id=f"s{i}", task="t", length=LENGTH, input_ids=p[:LENGTH - c], answer="x", max_new_tokens=5)
               for i, (p, c) in enumerate(zip(prompts(5), cut))]
    measure = batch.BatchMeasure()
    for _ in range(2):
        cells = measure.group(loaded, small("sample"), Scorer(), samples, RunOptions())
    assert [c["batch_size"] for c in cells] == [3, 3, 1, 3, 1]
    assert [c["prompt_tokens"] for c in cells] == [40, 40, 39, 40, 38]
    alone = [measure.group(loaded, small("sample"), Scorer(), [s], RunOptions())[0] for s in samples]
    assert [c["prediction"] for c in cells] == [c["prediction"] for c in alone]
    assert capsys.readouterr().err.count("differ in token length") == 1  # once per run


SMOLLM_METHODS = ",".join(n for n in METHODS if n != "eager")  # eager: the fp32 reference, as dense


def test_smollm_cells_equal_at_batch_2_and_batch_1(tmp_path):
    """The CLI end to end on SmolLM2-135M, every method at its defaults: same predictions and scores per key,
    the batch size in every cell and in the manifest; resuming at another batch size is allowed."""
    argv = ["run", "--model", "smollm2-135m", "--task", "passkey", "--lengths", "160", "--samples", "2",
            "--methods", SMOLLM_METHODS, "--no-progress", "--max-new-tokens", "6"]
    runs = {}
    for size in (1, 2):
        out = tmp_path / str(size)
        assert main([*argv, "--out", str(out), "--batch-size", str(size)]) == 0
        (folder,) = out.iterdir()
        assert json.loads((folder / "manifest.json").read_text())["spec"]["batch_size"] == size
        runs[size] = {c["key"]: c for c in map(json.loads, (folder / "cells.jsonl").read_text().splitlines())}
    assert runs[1].keys() == runs[2].keys() and len(runs[1]) == 2 * (len(METHODS) - 1)  # not eager
    for key, one in runs[1].items():
        many = runs[2][key]
        assert many["status"] == one["status"] == "ok", many.get("error")
        assert (many["prediction"], many["score"]) == (one["prediction"], one["score"]), key
        assert many["batch_size"] == 2 and one["batch_size"] == 1
        assert many["cell_seconds"] > 0 and one["cell_seconds"] > 0  # cells/s of the two runs (compare_runs)
    assert len({c["prediction"] for c in runs[1].values()}) > 1  # the rows answer differently: the test can fail
    assert main(["run", "--resume", str(folder), "--batch-size", "1", "--no-progress"]) == 0  # nothing left to do
    assert json.loads((folder / "manifest.json").read_text())["spec"]["batch_size"] == 1


def test_a_batch_out_of_memory_runs_again_one_sample_at_a_time(monkeypatch, capsys):
    loaded = Loaded(tiny_model("llama"), CharTokenizer())
    samples = [Sample(id=f"s{i}", task="t", length=LENGTH, input_ids=p, answer="x", max_new_tokens=3)
               for i, p in enumerate(prompts(3))]
    real = batch.run_group

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(batch, "run_group", out_of_memory)
    cells = batch.BatchMeasure().group(loaded, small("dense"), Scorer(), samples, RunOptions())
    monkeypatch.setattr(batch, "run_group", real)
    assert [c["status"] for c in cells] == ["ok"] * 3 and [c["batch_size"] for c in cells] == [1] * 3
    assert "ran out of GPU memory" in capsys.readouterr().err


@pytest.mark.parametrize("name,scope", [("minference", "sample"), ("streaming", "batch")])
def test_each_cell_gets_its_own_stats_where_the_method_ran_sample_by_sample(name, scope):
    """An equal-density method runs a batch sample by sample (a solved knob per sample; MInference's differs between
    these samples): each cell then records its own sample's per-layer density, as at batch 1; a method that ran the
    whole batch records the batch's mean."""
    loaded = Loaded(tiny_model("qwen2"), CharTokenizer())
    samples = [Sample(id=f"s{i}", task="t", length=LENGTH, input_ids=p, answer="x", max_new_tokens=2)
               for i, p in enumerate(prompts(3, seed=8))]
    options = {"density": "0.5"} if scope == "sample" else {}
    grouped = batch.BatchMeasure().group(loaded, small(name, **options), Scorer(), samples, RunOptions())
    alone = [batch.BatchMeasure().group(loaded, small(name, **options), Scorer(), [s], RunOptions())[0]
             for s in samples]
    assert [c["stats_scope"] for c in grouped] == [scope] * 3
    assert [len(c["layers"]) for c in grouped] == [len(alone[0]["layers"])] * 3
    if scope == "sample":
        assert [c["density"] for c in grouped] == pytest.approx([c["density"] for c in alone], abs=1e-6)
