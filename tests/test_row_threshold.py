"""The oracle's per-row k-th largest threshold: the Triton bisection (attention.kernels.row_threshold, under
TRITON_INTERPRET=1 here) against the full-sort definition, on awkward shapes, heavy ties and -inf tails; and
row_topk_keep's keep mask the same on both backends."""
import pytest
import torch

import attention.methods.oracle_topk as oracle_module
from attention.backend import use_backend
from attention.kernels import row_threshold
from attention.kernels.row_threshold import row_thresholds
from attention.kv_filter import row_topk_keep, sorted_row_thresholds
from attention.scores import causal_scores
from tests.kernel_helpers import random_qkv


def kth_largest(scores, budgets, lengths):
    """The definition, row by row: sort the row's first `length` entries descending, take entry budget - 1."""
    return torch.stack([row[:n].sort(descending=True).values[b - 1] for row, b, n in zip(scores, budgets, lengths)])


def awkward_rows(rows, width, seed, levels=0, tail=0.0):
    """fp32 [rows, width] (never all zeros): normal draws, or draws from `levels` values (heavy ties); a share
    `tail` of each row's end set to -inf, as a causal mask leaves it. Returns scores, budgets, lengths."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g) * 3 + 0.5
    if levels:
        x = torch.randint(-levels // 2, levels - levels // 2, (rows, width), generator=g).float() * 0.75 + 0.25
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    lengths[0] = width
    budgets = (torch.rand(rows, generator=g) * lengths).long() + 1
    budgets[-1] = lengths[-1]  # the whole row kept
    cut = (width * (1 - tail)) if tail else width
    x[:, max(1, int(cut)):] = float("-inf")
    return x, budgets, lengths


SHAPES = [(1, 1), (1, 7), (3, 2), (5, 37), (4, 130), (2, 1000)]


@pytest.mark.parametrize("rows,width", SHAPES)
@pytest.mark.parametrize("levels,tail", [(0, 0.0), (5, 0.0), (2, 0.0), (0, 0.4), (3, 0.5)])
def test_kernel_equals_the_sort(rows, width, levels, tail):
    x, budgets, lengths = awkward_rows(rows, width, seed=rows * 1000 + width, levels=levels, tail=tail)
    got = row_thresholds(x, budgets, lengths)
    want = kth_largest(x, budgets, lengths)
    assert not got.isnan().any()
    assert torch.equal(got, want)
    assert torch.equal(x >= got[:, None], x >= want[:, None])  # the same kept set, ties included
    full = row_thresholds(x, budgets)  # no lengths: the whole row
    assert torch.equal(full, kth_largest(x, budgets, [width] * rows))


def test_strided_rows_and_columns():
    x, budgets, lengths = awkward_rows(6, 90, seed=3, levels=4)
    wide = torch.randn(6, 200)
    wide[:, 10:100] = x
    assert torch.equal(row_thresholds(wide[:, 10:100], budgets, lengths), kth_largest(x, budgets, lengths))
    tall = x.t().contiguous().t()  # column stride 6
    assert tall.stride(1) != 1
    assert torch.equal(row_thresholds(tall, budgets, lengths), kth_largest(x, budgets, lengths))


def test_budgets_outside_the_row_are_clamped():
    x, _, lengths = awkward_rows(4, 33, seed=5)
    too_many = lengths + 5
    assert torch.equal(row_thresholds(x, too_many, lengths), kth_largest(x, lengths, lengths))  # the row's minimum
    top = torch.stack([row[:n].max() for row, n in zip(x, lengths)])
    assert torch.equal(row_thresholds(x, torch.zeros(4, dtype=torch.long), lengths), top)  # at least one kept


@pytest.mark.parametrize("levels", [0, 3])
def test_rows_past_the_on_chip_size_take_the_tiled_loop(monkeypatch, levels):
    monkeypatch.setattr(row_threshold, "ON_CHIP_MAX", 64)
    monkeypatch.setattr(row_threshold, "TILE", 16)
    x, budgets, lengths = awkward_rows(3, 150, seed=7, levels=levels, tail=0.3)
    assert torch.equal(row_thresholds(x, budgets, lengths), kth_largest(x, budgets, lengths))


def test_sorted_definition_matches_the_row_by_row_one():
    x, budgets, _ = awkward_rows(5, 40, seed=11, levels=4)
    assert torch.equal(sorted_row_thresholds(x, budgets), kth_largest(x, budgets, [40] * 5))


@pytest.mark.parametrize("density,ties", [(0.3, False), (0.3, True), (0.013, True), (1.0, False)])
def test_row_topk_keep_is_the_same_on_both_backends(density, ties):
    q, k, _ = random_qkv(40, 2, 1, 16, dtype=torch.float32, seed=2)
    if ties:  # keys from three directions: every row's scores fall on three levels
        k = torch.nn.functional.normalize(k, dim=-1).round(decimals=0) + 0.5
    q_len = q.shape[2]
    pos = torch.arange(5, q_len)
    scores = causal_scores(q, k, 0.25, pos, rows=pos)
    with use_backend("torch"):
        want = row_topk_keep(scores, pos, density)
    with use_backend("triton"):
        got = row_topk_keep(scores, pos, density)
    assert torch.equal(got, want)
    budget = torch.ceil(density * (pos + 1)).long().clamp(min=1)
    kept = got.sum(-1)
    assert (kept >= budget).all() and (kept <= pos + 1).all()
    if ties and density < 1:
        assert (kept > budget).any()  # ties at the threshold really kept


@pytest.mark.parametrize("on_chip", [True, False])
@pytest.mark.parametrize("levels", [0, 3])
def test_finish_kernel_writes_what_the_torch_steps_write(monkeypatch, on_chip, levels):
    """topk_finish on raw products = (raw * scale), causal -inf, row_topk_keep's mask, masked_fill: bit for bit."""
    if not on_chip:
        monkeypatch.setattr(row_threshold, "ON_CHIP_MAX", 32)
        monkeypatch.setattr(row_threshold, "TILE", 16)
    rows, width, n_cols, scale = 12, 45, 60, 0.37
    raw, _, _ = awkward_rows(rows, n_cols, seed=13, levels=levels)
    positions = torch.arange(width - rows, width)
    budgets = torch.ceil(0.3 * (positions + 1)).long().clamp(min=1)
    scaled = (raw * scale).masked_fill(torch.arange(n_cols)[None, :] > positions[:, None], float("-inf"))
    want_keep = scaled[:, :width] >= kth_largest(scaled, budgets, positions + 1)[:, None]
    want_keep &= torch.arange(width)[None, :] <= positions[:, None]
    want = scaled.clone()
    want[:, :width].masked_fill_(~want_keep, float("-inf"))
    want[:, width:] = float("-inf")
    got = raw.clone()
    keep = row_threshold.topk_finish(got, budgets, positions + 1, width, scale)
    assert torch.equal(keep, want_keep)
    assert torch.equal(got, want)
    assert not got.isnan().any()


@pytest.mark.parametrize("q_len,k_len", [(30, 30), (20, 45)])
def test_oracle_prefill_is_bit_identical_on_both_backends(monkeypatch, q_len, k_len):
    """The fused Triton chunk against causal_scores + row_topk_keep (a sort), several row chunks per call."""
    monkeypatch.setattr(oracle_module, "row_chunk", lambda batch, heads, keys: 7)
    q, k, v = random_qkv(k_len, 2, 1, 16, seed=4)
    q = torch.cat([q[:, :, -q_len:], q[:, :, :q_len].flip(2)])  # batch 2
    k, v = torch.cat([k, k.roll(3, 2)]), torch.cat([v, v.roll(5, 2)])
    method = oracle_module.OracleTopK(oracle_module.OracleTopKConfig(density=0.25))
    with use_backend("torch"):
        want, want_keep = method.prefill(q, k, v, 0.3), method.keep_mask(q, k, 0.3)
    with use_backend("triton"):
        got, got_keep = method.prefill(q, k, v, 0.3), method.keep_mask(q, k, 0.3)
    assert torch.equal(got_keep, want_keep) and want_keep.shape == (2, 2, q_len, k_len)
    assert torch.equal(got, want) and not got.isnan().any()
