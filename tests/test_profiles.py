"""Density profiles (attention/profiles.py): stored, interpolated, applied before estimating, measured on a model;
and the split price (a layer runs wholly dense where a per-head split is priced no faster)."""
import json

import pytest
import torch

from attention import fallback, hf, profiles
from attention.backend import use_backend
from attention.executor import dense_attention
from attention.registry import build_method
from harness.cli import main as cli_main
from harness.models.random_weights import load_random
from tests.kernel_helpers import random_qkv


def test_profile_interpolates_between_lengths_and_says_nothing_outside(tmp_path):
    path = tmp_path / "p.json"
    profiles.save("m", "sample", {1024: [0.2, 0.8, None], 4096: [0.4, 0.6, None]}, "test", path)
    profile = profiles.lookup("m", "sample", (path,))
    assert profile.lengths == (1024, 4096) and profile.source == f"profile:{path}:test"
    assert profile.density(0, 2048) == pytest.approx(0.3)  # halfway in log2(length)
    assert profile.density(1, 1024) == 0.8 and profile.density(1, 4096) == 0.6
    assert profile.density(0, 512) is None and profile.density(0, 8192) is None  # no extrapolation
    assert profile.density(2, 2048) is None and profile.density(3, 2048) is None  # a layer it never ran / has not
    assert profiles.lookup("m", "sample:alpha=0.9", (path,)) is None and profiles.lookup(None, "sample") is None
    profiles.save("m", "sample", {2048: [0.9, 0.9, 0.9]}, "again", path)  # merged: other lengths kept
    assert profiles.lookup("m", "sample", (path,)).lengths == (1024, 2048, 4096)


def test_timed_ratios_say_where_the_sparse_path_lost(tmp_path):
    path = tmp_path / "p.json"
    profiles.save("m", "flexprefill", {1024: [0.2], 4096: [0.2]}, "t", path, ratios={1024: 1.5, 4096: 0.5},
                  gpu="NVIDIA H200")
    assert profiles.lookup("m", "flexprefill", (path,), gpu="NVIDIA H100").ratios == (None, None)  # another card
    profile = profiles.lookup("m", "flexprefill", (path,), gpu="NVIDIA H200")
    assert profile.sparse_slower(1024) and not profile.sparse_slower(4096)
    assert profile.sparse_slower(1900) and not profile.sparse_slower(2200)  # 1.0 crossed at 2048 in log2
    assert not profile.sparse_slower(512) and not profile.sparse_slower(8192)  # untimed lengths: no claim
    profiles.save("m", "flexprefill", {1024: [0.3]}, "untimed", path)  # re-profiled without timing: ratio dropped
    again = profiles.lookup("m", "flexprefill", (path,), gpu="NVIDIA H200")
    assert again.ratios == (None, 0.5) and not again.sparse_slower(1024)


def _layer(profile_density, options, length=256, ratio=None):
    """SampleAttention on one layer with a profile saying `profile_density` for it; returns its record."""
    q, k, v = random_qkv(length, 4, 2, 64, seed=11, stripes=0.03)
    method = build_method("sample", options)
    method.use_profile(profiles.Profile((length,), ((profile_density,),), "profile:test", (ratio,)))
    with use_backend("triton"):
        out = method.prefill(q, k, v, 0.125, layer_idx=0)
    return method.stats[-1], out, (q, k, v)


def test_a_layer_profiled_above_the_before_limit_runs_dense_without_estimating(monkeypatch):
    table = {"gpus": {"cpu": [{"head_dim": 64, "group": 2, "length": 256, "before": 0.5, "after": 0.9}]},
             "source": "table:test"}
    fallback.use_table(table)
    try:
        stat, out, (q, k, v) = _layer(0.6, {"r_w": "0.05"})
        assert stat["path"] == "dense" and stat["dense_fallback"] == "profile" and stat["profile"] == "profile:test"
        assert torch.equal(out, dense_attention(q, k, v, 0.125))
        stat, _, _ = _layer(0.4, {"r_w": "0.05"})  # below: the layer estimates and decides on what it selects
        assert stat["path"] in ("sparse", "mixed") or stat["dense_fallback"] == "density"
        assert stat.get("dense_fallback") != "profile"
        # a fixed budget is known exactly: the profile is not asked
        stat, _, _ = _layer(0.99, {"r_w": "0.05", "density": "0.3"})
        assert stat.get("dense_fallback") != "profile"
        # a density below the limit, but the whole sparse prefill was timed slower than dense: dense
        stat, _, _ = _layer(0.1, {"r_w": "0.05"}, ratio=1.2)
        assert stat["path"] == "dense" and stat["dense_fallback"] == "profile"
        stat, _, _ = _layer(0.1, {"r_w": "0.05"}, ratio=0.8)
        assert stat.get("dense_fallback") != "profile"
        stat, _, _ = _layer(0.9, {"r_w": "0.05", "dense_above": "1.0"}, ratio=1.2)  # the option: never dense
        assert stat["path"] == "sparse"
    finally:
        fallback.use_table(None)


def test_split_runs_the_layer_dense_where_the_price_says_so():
    limits = fallback.Limits(0.1, 0.5, "test", costs=(1.0, 0.1, 1.0, 0.3))
    # 3 of 4 heads dense: 0.75 + 0.1 + 0.2 / 4 + 0.3 = 1.2 >= 1.0
    assert limits.split_costs_more([0.9, 0.9, 0.9, 0.2], [True, True, True, False])
    # 1 of 4 dense: 0.25 + 0.1 + 0.6 / 4 + 0.3 = 0.8 < 1.0
    assert not limits.split_costs_more([0.9, 0.2, 0.2, 0.2], [True, False, False, False])
    assert not fallback.Limits(0.1, 0.5, "test").split_costs_more([0.9, 0.2], [True, False])  # unpriced rows


def test_a_priced_table_sends_a_split_layer_dense(tmp_path):
    q, k, v = random_qkv(200, 4, 2, 64, seed=7, stripes=0.03)
    q[:, 1] = q[:, 1] * 0.01  # a diffuse head: its selection keeps most columns
    free = build_method("sample", {"r_w": "0.05", "dense_above": "1.0"})
    with use_backend("triton"):
        free.prefill(q, k, v, 0.125)
    selected = sorted(float(x) for x in free.stats[-1]["selected_density"])
    limit = (selected[2] + selected[3]) / 2  # one head above it
    row = {"head_dim": 64, "group": 2, "length": 200, "before": 1.0, "after": limit}

    def run(split_ms):
        fallback.use_table({"gpus": {"cpu": [dict(row, dense_ms=1.0, kernel_ms_at=0.0, kernel_ms_per_density=1.0,
                                                  split_ms=split_ms)]}, "source": "table:test"})
        try:
            method = build_method("sample", {"r_w": "0.05"})
            with use_backend("triton"):
                out = method.prefill(q, k, v, 0.125)
            return method.stats[-1], out
        finally:
            fallback.use_table(None)
    cheap, _ = run(0.0)
    assert cheap["path"] == "mixed" and cheap["dense_heads"] == 1
    costly, out = run(1.0)
    assert costly["path"] == "dense" and costly["dense_fallback"] == "split"
    assert torch.equal(out, dense_attention(q, k, v, 0.125))


def test_install_hands_a_sparse_method_its_models_profile(tmp_path, monkeypatch):
    path = tmp_path / "profiles.json"
    monkeypatch.setattr(profiles, "CACHE", path)
    loaded = load_random("random:smollm2-135m", "meta")
    assert loaded.model.config.sampleattn_model == "random:smollm2-135m"
    profiles.save("random:smollm2-135m", "sample", {1024: [0.5] * 30}, "test", path)
    sample, streaming = build_method("sample", {}), build_method("sample", {"alpha": "0.9"})
    hf.install(loaded.model, sample)
    hf.install(loaded.model, streaming)
    assert sample.profile.density(3, 1024) == 0.5 and streaming.profile is None  # another spec: no profile


def test_calibrate_measures_and_saves_a_models_profiles(tmp_path, capsys):
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 128,
              "max_position_embeddings": 1024}
    (tmp_path / "config.json").write_text(json.dumps(config))
    name = f"random:{tmp_path / 'config.json'}"
    out = tmp_path / "profiles.json"
    code = cli_main(["calibrate", "--model", name, "--device", "cpu", "--lengths", "128,256", "--skip-timing",
                     "--profile", "sample,minference", "--profiles", str(out)])
    assert code == 0
    for spec in ("sample", "minference"):
        profile = profiles.lookup(name, spec, (out,))
        assert profile.lengths == (128, 256)
        for row in profile.densities:
            assert len(row) == 2 and all(0 < d <= 1 for d in row)
    assert "profile" in capsys.readouterr().out


def test_calibrate_refuses_what_it_cannot_profile_in_one_line(tmp_path, capsys):
    assert cli_main(["calibrate", "--shape", "64:4:2", "--skip-timing"]) == 2
    assert cli_main(["calibrate", "--model", "random:smollm2-135m", "--profile", "dense", "--skip-timing",
                     "--profiles", str(tmp_path / "p.json")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "--model" in errors[0] and "not a sparse method" in errors[1]
    assert not (tmp_path / "p.json").exists()


def test_a_layer_profiled_well_below_the_after_limit_decides_without_a_sync():
    """Below after - margin the layer runs sparse without reading its density back; near the limit it reads it."""
    q, k, v = random_qkv(256, 4, 2, 64, seed=12, stripes=0.03)
    table = {"gpus": {"cpu": [{"head_dim": 64, "group": 2, "length": 256, "before": 0.95, "after": 0.6}]},
             "source": "table:test"}

    def layer(profiled):
        method = build_method("flexprefill", {"block": "64", "min_budget": "64"})
        method.use_profile(profiles.Profile((256,), ((profiled,),), "profile:test", (0.5,)))
        with use_backend("triton"):
            out = method.prefill(q, k, v, 0.125, layer_idx=0)
        return method.stats[-1], out
    fallback.use_table(table)
    try:
        clear, out_clear = layer(0.3)
        near, out_near = layer(0.55)
    finally:
        fallback.use_table(None)
    assert clear["path"] == "sparse" and clear.get("decided") == "profile"
    assert near.get("decided") is None
    if near["path"] == "sparse":  # same selection either way: same output
        assert torch.equal(out_clear, out_near)
