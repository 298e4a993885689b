"""Every registered method at batch 2 against each sample run alone: the prefill output and the pattern (keep mask)
of each row equal the single-sample ones, so batched accuracy cells (harness/running/batch.py) predict what
batch 1 predicts. Also the methods' equal-density variants, whose solved knob must not be shared over the batch."""
import pytest
import torch

from attention.backend import use_backend
from attention.method import SparseMethod
from attention.registry import build_method
from tests.test_methods import DENSITY_METHODS, METHODS, keep_mask_of, small

LENGTH, HEADS, KV_HEADS, DIM = 96, 4, 2, 16


def two_samples():
    """Two unlike samples: one with random keys, one whose queries lean on a few keys (a skewed attention map),
    so that data-dependent choices (thresholds, solved budgets, dense fallbacks) differ between the rows."""
    gen = torch.Generator().manual_seed(11)
    q1, k1, v1 = (torch.randn(1, h, LENGTH, DIM, generator=gen) for h in (HEADS, KV_HEADS, KV_HEADS))
    q2, k2, v2 = (torch.randn(1, h, LENGTH, DIM, generator=gen) for h in (HEADS, KV_HEADS, KV_HEADS))
    k2[:, :, 5] *= 6.0
    k2[:, :, 40] *= 4.0
    q2 = q2 + 2.0 * k2[:, :, 5:6].repeat_interleave(HEADS // KV_HEADS, dim=1)
    return (q1, k1, v1), (q2, k2, v2)


def prefill_of(method, q, k, v, layer_idx=0):
    return method.batched_prefill(q, k, v, 0.3, layer_idx=layer_idx)


VARIANTS = [(name, {}) for name in METHODS] + [(name, {"density": "0.5"}) for name in DENSITY_METHODS]


@pytest.mark.parametrize("name,extra", VARIANTS, ids=[f"{n}-{'-'.join(e.values()) or 'default'}" for n, e in VARIANTS])
def test_batch_of_two_equals_each_sample_alone(name, extra):
    samples = two_samples()
    q, k, v = (torch.cat(parts) for parts in zip(*samples))
    batched = small(name, **extra)
    out = prefill_of(batched, q, k, v)
    for row, (qi, ki, vi) in enumerate(samples):
        alone = small(name, **extra)
        torch.testing.assert_close(out[row:row + 1], prefill_of(alone, qi, ki, vi), atol=1e-5, rtol=1e-5)
    if not batched.sparse:
        return
    keep = (batched.batched_keep_mask(q, k, 0.3) if isinstance(batched, SparseMethod)
            else keep_mask_of(batched, q, k, 0.3))
    if keep is None:  # H2O: dense prefill; its decode cache is checked below
        return
    alone = [small(name, **extra) for _ in samples]
    alone_masks = [keep_mask_of(m, qi, ki, 0.3) for m, (qi, ki, _) in zip(alone, samples)]
    for row, mask in enumerate(alone_masks):
        assert torch.equal(keep[row:row + 1], mask), f"{name}: row {row}'s pattern differs from the sample alone"
    knobs = [str(getattr(m, "knobs", {})) for m in alone]
    assert not torch.equal(*alone_masks) or knobs[0] != knobs[1] or name in ("streaming", "bigbird"), \
        "the two samples should get different patterns or knobs, or this test could not fail"


def test_h2o_keeps_each_rows_own_keys():
    samples = two_samples()
    q, k, v = (torch.cat(parts) for parts in zip(*samples))
    batched = small("h2o")
    prefill_of(batched, q, k, v)
    for row, (qi, ki, vi) in enumerate(samples):
        alone = small("h2o")
        prefill_of(alone, qi, ki, vi)
        assert torch.equal(batched.kept[0][row:row + 1], alone.kept[0])


def test_sample_dense_fallback_decides_per_row_on_the_triton_path():
    """SampleAttention's probe (Triton path, fallback on) estimates the density before the sparse pass; in a batch
    each row must get its own dense-or-sparse decision: here row 0 alone runs dense and row 1 sparse."""
    samples = two_samples()
    q, k, v = (torch.cat(parts) for parts in zip(*samples))
    with use_backend("triton"):
        batched = build_method("sample", {"dense_above": "0.5"})
        out = batched.batched_prefill(q, k, v, 0.3)
        paths = []
        for row, (qi, ki, vi) in enumerate(samples):
            alone = build_method("sample", {"dense_above": "0.5"})
            torch.testing.assert_close(out[row:row + 1], alone.batched_prefill(qi, ki, vi, 0.3), atol=1e-5, rtol=1e-5)
            paths.append(alone.stats[-1]["path"])
    assert paths == ["dense", "sparse"]  # the rows decide differently, so a shared decision would fail the test
    assert [s["path"] for s in batched.stats] == paths
