"""SampleAttention method: config validation, stage 1+2 selection against plain PyTorch, outputs against the
reference under the method's own mask, alpha=1 = dense, density budget, and a run through the transformers bridge."""
import pytest
import torch

from attention import hf
from attention.backend import use_backend
from attention.indices import BIG
from attention.density import mask_density as density
from attention.reference import attention_probs, reference_attention
from attention.registry import ConfigError, build_method
from attention.methods.sample import chunk_rows, strided_rows
from tests.kernel_helpers import random_qkv, rel_err
from tests.tiny_models import tiny_model


@pytest.mark.parametrize("options,needle", [
    ({"alpha": "0"}, "alpha=0.0"), ({"alpha": "1.5"}, "alpha=1.5"), ({"r_row": "0"}, "r_row"),
    ({"r_row": "2"}, "r_row"), ({"r_w": "-0.1"}, "r_w"), ({"r_w": "1.1"}, "r_w"), ({"pattern": "diag"}, "pattern"),
    ({"granularity": "32"}, "granularity"), ({"chunk_n": "0"}, "chunk_n"), ({"alpha_s": "0"}, "alpha_s"),
    ({"density": "1.5"}, "density"), ({"alpha": "high"}, "alpha"),
])
def test_config_errors_are_one_line(options, needle):
    with pytest.raises(ConfigError) as err:
        build_method("sample", options)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_valid_edges_accepted():
    build_method("sample", {"alpha": "1", "r_row": "1", "r_w": "0"})
    build_method("sample", {"r_w": "1", "pattern": "column_slash", "granularity": "128"})


def plain_selection(q, k, scale, rows, alpha, sink):
    """Plain PyTorch stages 1 and 2: sampled-row softmax column sums, then the fewest columns reaching alpha."""
    rows = rows[rows >= 0]
    allowed = torch.arange(k.shape[2])[None, :] <= rows[:, None]
    col = attention_probs(q[:, :, rows], k, allowed, scale, causal=False).sum(2)
    col[..., :sink] = 0
    keep = torch.zeros_like(col, dtype=torch.bool)
    for b in range(col.shape[0]):
        for h in range(col.shape[1]):
            order = col[b, h].argsort(descending=True)
            total, mass = col[b, h].sum(), 0.0
            for j in order.tolist():
                keep[b, h, j] = True
                mass += col[b, h, j]
                if mass >= alpha * total:
                    break
    return keep


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_selection_matches_plain_pytorch(backend):
    q, k, _ = random_qkv(180, 4, 2, 64, seed=1, stripes=0.04)
    method = build_method("sample", {"alpha": "0.9", "r_row": "0.1"})
    with use_backend(backend):
        pattern = method.build_pattern(q, k, 0.125)
    got = torch.zeros(1, 4, 181, dtype=torch.bool).scatter(2, pattern.columns.clamp(min=-1) % 181, True)[..., :180]
    want = plain_selection(q, k, 0.125, strided_rows(180, 0.1, "cpu"), 0.9, method.config.sink)
    differ = (got ^ want).sum(-1)
    assert differ.max() <= 1, differ  # at most a near-tie at the threshold may flip
    assert 0 < want.sum(-1).float().mean() < 100  # the planted stripes make it sparse, so the check means something


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("options", [{"alpha": "0.9"}, {"pattern": "column_slash", "chunk_n": "2", "alpha_c": "0.9",
                                                         "alpha_s": "0.5"}, {"granularity": "64", "alpha": "0.8"}])
def test_output_matches_reference_under_own_mask(backend, options):
    q, k, v = random_qkv(160, 4, 1, 64, seed=2, stripes=0.03)
    method = build_method("sample", {"r_w": "0.1", **options})
    with use_backend(backend):
        out = method.prefill(q, k, v, 0.125, layer_idx=3)
        keep = method.keep_mask(q, k, 0.125)
    ref = reference_attention(q, k, v, keep, 0.125)
    assert not out.isnan().any()
    assert rel_err(out, ref) < 1e-2
    per_head = method.stats[-1]["density"]
    assert method.stats[-1]["layer"] == 3 and per_head.shape == (4,)
    assert torch.allclose(per_head, density(keep)[0], atol=1e-6)
    assert per_head.max() < 1.0  # sparse, not dense by accident


@pytest.mark.parametrize("seq", [1, 5, 48, 64, 65, 130])
def test_sampled_rows_for_any_length(seq):
    for r_row in (0.05, 0.5, 1.0):
        rows = strided_rows(seq, r_row, "cpu")
        assert rows.unique().numel() == rows.numel() and rows.max() == seq - 1 and rows.min() >= 0
        assert (rows[-min(seq, 64):] == torch.arange(max(0, seq - 64), seq)).all()  # the last block is included
    runs = chunk_rows(seq, 4, "cpu")
    real = runs[runs >= 0]
    assert real.unique().numel() == real.numel() and real.max() == seq - 1 and runs.numel() % 64 == 0


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_short_prompt_runs(backend):
    q, k, v = random_qkv(48, 2, 1, 64, seed=9)
    for options in ({}, {"pattern": "column_slash"}):
        method = build_method("sample", options)
        with use_backend(backend):
            out = method.prefill(q, k, v, 0.125)
            keep = method.keep_mask(q, k, 0.125)
        assert rel_err(out, reference_attention(q, k, v, keep, 0.125)) < 1e-2


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_alpha_one_is_dense(backend):
    q, k, v = random_qkv(140, 3, 1, 64, seed=3, stripes=0.03)
    method = build_method("sample", {"alpha": "1", "r_w": "0.05"})
    with use_backend(backend):
        out = method.prefill(q, k, v, 0.125)
    assert rel_err(out, reference_attention(q, k, v, scale=0.125)) < 1e-2
    assert torch.allclose(method.stats[-1]["density"], torch.ones(3))


def test_density_budget_is_met():
    q, k, v = random_qkv(300, 2, 1, 64, dtype=torch.float32, seed=4, stripes=0.05)
    for target in (0.1, 0.3):
        method = build_method("sample", {"density": str(target), "r_w": str(target / 4)})
        keep = method.keep_mask(q, k, 0.125)
        got = density(keep)
        assert (got <= target + 1e-6).all() and (got > target - 0.02).all(), got


def test_block_granularity_keeps_whole_blocks_and_sinks():
    q, k, _ = random_qkv(200, 2, 1, 64, dtype=torch.float32, seed=5, stripes=0.03)
    method = build_method("sample", {"granularity": "64", "alpha": "0.7"})
    pattern = method.build_pattern(q, k, 0.125)
    for head in range(2):
        cols = pattern.columns[0, head][pattern.columns[0, head] >= 0]
        for b in (cols // 64).unique():
            assert ((cols // 64) == b).sum() == min(64, 200 - 64 * b)
        assert 0 < cols.numel() < 200
    assert pattern.sink == method.config.sink > 0
    assert (pattern.columns < BIG).all()


def test_runs_inside_a_model_through_the_bridge():
    ids = torch.randint(0, 128, (1, 90), generator=torch.Generator().manual_seed(6))
    stock = tiny_model("llama")
    with torch.no_grad():
        expected = stock(ids).logits
    for backend in ("torch", "triton"):
        model = tiny_model("llama")
        method = build_method("sample", {"alpha": "1"})
        hf.install(model, method)
        with use_backend(backend), torch.no_grad():
            got = model(ids).logits
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)  # alpha=1: dense
        assert len(method.stats) == 2  # one entry per layer
    model = tiny_model("llama")
    method = build_method("sample", {"alpha": "0.5", "r_w": "0.05"})
    hf.install(model, method)
    with torch.no_grad():
        sparse = model(ids).logits
    assert not sparse.isnan().any() and float(method.stats[0]["density"].mean()) < 1.0
