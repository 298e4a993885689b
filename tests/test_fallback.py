"""The dense fallback (attention/fallback.py) and its calibration (attention/calibrate.py)."""
import pytest
import torch

from attention import fallback
from attention.backend import use_backend
from attention.calibrate import calibrate
from attention.executor import dense_attention
from attention.reference import reference_attention
from attention.registry import build_method
from tests.kernel_helpers import random_qkv, rel_err

ROWS = [{"head_dim": 64, "group": 7, "length": 8192, "before": 0.2, "after": 0.4},
        {"head_dim": 64, "group": 7, "length": 32768, "before": 0.4, "after": 0.6},
        {"head_dim": 128, "group": 4, "length": 8192, "before": 0.0, "after": 0.5}]


@pytest.fixture
def table():
    fallback.use_table({"gpus": {"cpu": ROWS}, "source": "table:test"})
    yield
    fallback.use_table(None)


def test_limits_interpolate_in_log_length_and_hold_outside(table):
    mid = fallback.limits_for("cpu", 64, 7, 16384)
    assert mid.before == pytest.approx(0.3) and mid.after == pytest.approx(0.5)
    assert fallback.limits_for("cpu", 64, 7, 1024).after == 0.4
    assert fallback.limits_for("cpu", 64, 7, 1 << 20).after == 0.6
    assert fallback.limits_for("cpu", 128, 4, 8192).before == 0.0
    assert fallback.limits_for("cpu", 64, 8, 8192).source.endswith("D64/g7")  # nearest shape: same head dim
    assert fallback.limits_for("cpu", 64, 7, 8192, dense_above=0.3).after == 0.3  # the option comes first
    assert not fallback.limits_for("cpu", 64, 7, 8192, dense_above=1.0).active  # 1: never
    fallback.use_table(None)
    assert fallback.limits_for("cpu", 64, 7, 8192).source == "none:cpu"  # no table for the CPU: never dense


def test_a_table_with_the_exact_shape_wins_over_an_earlier_one_without_it(tmp_path, monkeypatch):
    cached = tmp_path / "cache.json"
    fallback.save_table({"gpus": {"cpu": [dict(ROWS[0], after=0.9)]}}, cached)  # D64/g7 only
    monkeypatch.setattr(fallback, "CACHE", cached)
    monkeypatch.setattr(fallback, "DEFAULTS_FILE", tmp_path / "defaults.json")
    fallback.save_table({"gpus": {"cpu": ROWS}}, tmp_path / "defaults.json")
    assert fallback.limits_for("cpu", 64, 7, 8192).after == 0.9            # the cache covers this shape
    got = fallback.limits_for("cpu", 128, 4, 8192)                          # it does not cover this one
    assert got.after == 0.5 and got.source == "default:cpu:D128/g4"


def test_decision_on_both_sides_of_the_limit_per_head():
    limits = fallback.Limits(0.2, 0.5, "test")
    assert fallback.dense_heads([0.49, 0.5, 0.51, 0.1], limits) == [False, True, True, False]
    assert not limits.dense_before(0.19) and limits.dense_before(0.2) and not limits.dense_before(None)


# through the methods (CPU, Triton interpreter forced; an explicit dense_above applies there)


def run(spec_options, q, k, v, name="sample"):
    method = build_method(name, spec_options)
    with use_backend("triton"):
        out = method.prefill(q, k, v, 0.125, layer_idx=0)
        keep = method.keep_mask(q, k, 0.125)
    return method, out, keep


@pytest.mark.parametrize("options", [{"density": "0.3"}, {}])
def test_sample_runs_dense_above_and_sparse_below_the_limit(options):
    q, k, v = random_qkv(200, 4, 2, 64, seed=4, stripes=0.03)
    method, out, _ = run({"r_w": "0.05", "dense_above": "0.0", **options}, q, k, v)
    assert method.stats[-1]["path"] == "dense" and method.stats[-1]["density"] == 1.0
    assert torch.equal(out, dense_attention(q, k, v, 0.125))
    method, out, keep = run({"r_w": "0.05", "dense_above": "1.0", **options}, q, k, v)
    assert method.stats[-1]["path"] == "sparse"
    selected = float(method.stats[-1]["selected_density"].mean())
    assert 0 < selected < 1
    assert rel_err(out, reference_attention(q, k, v, keep, 0.125)) < 1e-2
    # a limit just above / below what was selected decides the path the same way
    above = run({"r_w": "0.05", "dense_above": str(min(1.0, selected + 0.05)), **options}, q, k, v)[0]
    below = run({"r_w": "0.05", "dense_above": str(max(0.0, selected - 0.05)), **options}, q, k, v)[0]
    if options:  # fixed budget: decided on the host from the budget, before estimating
        assert above.stats[-1]["path"] == "sparse" and below.stats[-1]["path"] == "dense"
    else:  # adaptive: decided per head on the density the selection itself gives (the executed one)
        assert above.stats[-1]["path"] in ("sparse", "mixed") and below.stats[-1]["path"] in ("dense", "mixed")
        heads = [float(x) for x in method.stats[-1]["selected_density"]]
        for got in (above, below):
            limit = got.stats[-1]["dense_limit"]
            want = [x >= limit for x in heads]
            executed = got.stats[-1]["density"]
            executed = [executed] * len(heads) if isinstance(executed, float) else [float(x) for x in executed]
            assert [e == 1.0 for e in executed] == want or all(want)


def test_streaming_falls_back_from_its_known_density():
    q, k, v = random_qkv(150, 2, 1, 64, seed=5)
    method, out, _ = run({"density": "0.4", "dense_above": "0.3"}, q, k, v, name="streaming")
    assert method.stats[-1]["path"] == "dense" and torch.equal(out, dense_attention(q, k, v, 0.125))
    method, _, _ = run({"density": "0.4", "dense_above": "0.9"}, q, k, v, name="streaming")
    assert method.stats[-1]["path"] == "sparse"


def test_no_fallback_on_cpu_by_default():
    q, k, v = random_qkv(100, 2, 1, 64, seed=6)
    method, _, _ = run({}, q, k, v)
    assert method.stats[-1]["path"] == "sparse"


def test_per_head_fallback_runs_the_dense_heads_dense_and_the_rest_sparse():
    q, k, v = random_qkv(200, 4, 2, 64, seed=7, stripes=0.03)
    q[:, 1] = q[:, 1] * 0.01  # a diffuse head: its selection keeps most columns
    sparse, out_sparse, keep = run({"r_w": "0.05", "dense_above": "1.0"}, q, k, v)
    selected = [float(x) for x in sparse.stats[-1]["selected_density"]]
    limit = sorted(selected)[2]  # two heads at or above it, two below
    method, out, _ = run({"r_w": "0.05", "dense_above": str(limit)}, q, k, v)
    stat = method.stats[-1]
    dense = [x >= limit for x in selected]
    assert stat["path"] == "mixed" and stat["dense_heads"] == sum(dense) == 2
    assert [d == 1.0 for d in stat["density"]] == dense
    dense_out = dense_attention(q, k, v, 0.125)
    for h, is_dense in enumerate(dense):
        if is_dense:
            assert rel_err(out[:, h], dense_out[:, h]) < 1e-2
        else:
            ref = reference_attention(q, k, v, keep, 0.125)[:, h]
            assert rel_err(out[:, h], ref) < 1e-2 and rel_err(out[:, h], out_sparse[:, h]) < 1e-2


def test_calibration_builds_a_table_that_the_fallback_applies(tmp_path):
    with use_backend("triton"):
        table = calibrate([128, 256], heads=2, kv_heads=1, head_dim=32, device="cpu", densities=(0.3, 0.6),
                          reps=1, log=lambda line: None)
    rows = table["gpus"]["cpu"]
    assert [r["length"] for r in rows] == [128, 256]
    for r in rows:
        assert 0.0 <= r["before"] <= r["after"] <= 1.0 and r["dense_ms"] > 0 and r["stages_ms"] > 0
    path = fallback.save_table(table, tmp_path / "limits.json")
    saved = fallback.load_table(path)
    assert saved["gpus"]["cpu"] == rows
    # applied: a layer at 192 tokens gets the interpolated limits, recorded in the layer's stats
    forced = {"gpus": {"cpu": [dict(r, before=1.0, after=0.0) for r in rows]}, "source": f"table:{path}"}
    fallback.use_table(forced)
    try:
        q, k, v = random_qkv(192, 2, 1, 32, seed=8)
        method, out, _ = run({}, q, k, v)
        assert method.stats[-1]["path"] == "dense" and method.stats[-1]["limits"].startswith(f"table:{path}")
        assert method.stats[-1]["dense_limit"] == 0.0
    finally:
        fallback.use_table(None)


def test_a_block_pattern_falls_back_per_layer_never_split_by_head():
    """Block patterns run on compiled FlexAttention with static shapes: splitting their heads would recompile it
    for every sparse-head count (and past the recompile limit it materialises the scores). They decide per layer,
    on the mean of the selected per-head densities."""
    q, k, v = random_qkv(1024, 4, 2, 64, seed=8, stripes=0.03)
    q[:, 1] = q[:, 1] * 0.01  # a diffuse head: FlexPrefill keeps more tiles there

    def with_limit(after):
        fallback.use_table({"gpus": {"cpu": [{"head_dim": 64, "group": 2, "length": 1024, "before": 2.0,
                                               "after": after}]}, "source": "table:test"})
        try:
            method = build_method("flexprefill", {"block": "64", "min_budget": "64"})
            with use_backend("triton"):
                method.prefill(q, k, v, 0.125, layer_idx=0)
            return method.stats[-1]
        finally:
            fallback.use_table(None)

    free = with_limit(2.0)
    selected = [float(x) for x in free["selected_density"]]
    low, mean, high = min(selected), sum(selected) / len(selected), max(selected)
    assert free["path"] == "sparse" and low < mean < high  # a per-head split would be possible
    assert with_limit((mean + high) / 2)["path"] == "sparse"  # some heads above the limit, the mean below
    assert with_limit((low + mean) / 2)["path"] == "dense"    # some heads below the limit, the mean above
