"""The dense fallback rule (attention/executor.py): run dense exactly when the selected density reaches the limit."""
import pytest

from attention.executor import DENSE_LIMITS, dense_limit, run_dense


@pytest.mark.parametrize("length,limit", DENSE_LIMITS)
def test_both_sides_of_the_measured_limit(length, limit):
    assert dense_limit(length) == limit
    if limit > 0:
        assert not run_dense(limit - 1e-3, length)
    assert run_dense(limit + 1e-3, length) or limit + 1e-3 > 1
    assert run_dense(limit, length)


def test_limit_between_and_beyond_the_measured_lengths():
    (l0, d0), (l1, d1) = DENSE_LIMITS[1], DENSE_LIMITS[2]
    middle = int((l0 * l1) ** 0.5)  # halfway in log2(length)
    assert dense_limit(middle) == pytest.approx((d0 + d1) / 2, abs=1e-3)
    assert dense_limit(DENSE_LIMITS[0][0] // 4) == DENSE_LIMITS[0][1]
    assert dense_limit(DENSE_LIMITS[-1][0] * 8) == DENSE_LIMITS[-1][1]


def test_option_overrides_the_table():
    assert run_dense(0.0, 1 << 20, dense_above=0.0)       # 0: always dense
    assert not run_dense(1.0, 1024, dense_above=1.0)       # 1: never dense
    assert run_dense(0.31, 131072, dense_above=0.3) and not run_dense(0.29, 131072, dense_above=0.3)


# through the methods (CPU, Triton interpreter forced; an explicit dense_above applies there)
import torch  # noqa: E402

from attention.backend import use_backend  # noqa: E402
from attention.executor import dense_attention  # noqa: E402
from attention.reference import reference_attention  # noqa: E402
from attention.registry import build_method  # noqa: E402
from tests.kernel_helpers import random_qkv, rel_err  # noqa: E402


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
    if options:  # fixed budget: decided on the host from the budget, no probe
        assert above.stats[-1]["path"] == "sparse" and below.stats[-1]["path"] == "dense"
    else:  # adaptive: the probe (last rows) estimates the density; diffuse heads keep most of it
        assert {above.stats[-1]["path"], below.stats[-1]["path"]} <= {"sparse", "dense"}
        assert below.stats[-1]["path"] == "dense" or below.stats[-1]["selected_density"] is not None


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
