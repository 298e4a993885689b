"""Triton kernels (run by the CPU interpreter, TRITON_INTERPRET=1 from conftest) against attention/reference.py."""
import pytest
import torch

from attention.backend import use_backend
from attention.density import pattern_density
from attention.executor import run_pattern
from attention.kernels.scores import sampled_scores
from attention.scores import column_scores
from attention.pattern import SparsePattern, density
from attention.reference import attention_probs, reference_attention
from attention.methods.sample import chunk_rows, strided_rows
from tests.kernel_helpers import bf16_torch_attention, kernel_attention, random_qkv, rel_err

# (seq, q heads, kv heads, head dim, window, sink, columns?, slashes?): lengths off the block sizes, GQA 1/3/4/8
SHAPES = [
    (77, 3, 1, 64, 20, 4, True, False),
    (200, 4, 1, 128, 150, 0, True, True),
    (130, 8, 1, 64, 7, 2, True, True),
    (100, 2, 2, 256, 33, 4, True, True),
    (150, 3, 3, 128, 40, 1, False, True),
]


def make_pattern(seq, heads, window, sink, with_cols, with_slash, seed):
    g = torch.Generator().manual_seed(seed)
    cols = torch.randint(-1, seq, (1, heads, max(1, seq // 10)), generator=g) if with_cols else None
    slashes = torch.randint(-1, seq, (1, heads, 5), generator=g) if with_slash else None
    return SparsePattern(sink=sink, window=window, columns=cols, slashes=slashes)


@pytest.mark.parametrize("seq,heads,kv,dim,window,sink,with_cols,with_slash", SHAPES)
def test_sparse_kernel_matches_reference(seq, heads, kv, dim, window, sink, with_cols, with_slash):
    q, k, v = random_qkv(seq, heads, kv, dim, seed=seq + dim)
    pattern = make_pattern(seq, heads, window, sink, with_cols, with_slash, seed=seq)
    keep = pattern.keep_mask(1, heads, seq, seq)
    scale = dim ** -0.5
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    kernel_attention(q, k, v, pattern, scale, out=out)
    assert not out.isnan().any()
    ref = reference_attention(q, k, v, keep, scale)
    bar = rel_err(bf16_torch_attention(q, k, v, keep, scale), ref)
    assert rel_err(out, ref) <= 2 * bar, (rel_err(out, ref), bar)
    assert torch.allclose(pattern_density(pattern, 1, heads, seq, seq, "cpu"), density(keep), atol=1e-6)


def test_sparse_kernel_fp16_and_fp32():
    for dtype, tol in ((torch.float16, 2e-3), (torch.float32, 1e-5)):
        q, k, v = random_qkv(90, 4, 2, 64, dtype=dtype, seed=3)
        pattern = make_pattern(90, 4, 11, 3, True, True, seed=4)
        ref = reference_attention(q, k, v, pattern.keep_mask(1, 4, 90, 90), 0.125)
        assert rel_err(kernel_attention(q, k, v, pattern, 0.125), ref) < tol


def test_kernel_row_with_nothing_to_attend_is_zero():
    # window 0 and no sink: only rows reaching a column attend anything; the others must be written as zero
    q, k, v = random_qkv(70, 2, 1, 64, seed=5)
    pattern = SparsePattern(window=0, columns=torch.tensor([[[30, 31]]]).expand(1, 2, 2))
    out = torch.full_like(q, float("nan"))
    kernel_attention(q, k, v, pattern, 0.125, out=out)
    ref = reference_attention(q, k, v, pattern.keep_mask(1, 2, 70, 70), 0.125)
    assert not out.isnan().any()
    assert out[:, :, :30].abs().max() == 0
    assert rel_err(out, ref) < 1e-2


def test_queries_shorter_than_keys_are_bottom_aligned():
    q, k, v = random_qkv(100, 2, 1, 64, seed=6)
    q = q[:, :, -37:]
    pattern = make_pattern(100, 2, 10, 2, True, True, seed=7)
    ref = reference_attention(q, k, v, pattern.keep_mask(1, 2, 37, 100), 0.125)
    assert rel_err(kernel_attention(q, k, v, pattern, 0.125), ref) < 1e-2


def test_run_pattern_dispatches_to_kernel_when_forced():
    q, k, v = random_qkv(66, 2, 1, 64, dtype=torch.float32, seed=8)
    pattern = make_pattern(66, 2, 9, 1, True, False, seed=9)
    with use_backend("triton"):
        got = run_pattern(q, k, v, pattern, 0.125)
    with use_backend("torch"):
        exact = run_pattern(q, k, v, pattern, 0.125)
    assert rel_err(got, exact) < 1e-5
    assert not torch.equal(got, exact)  # a different implementation ran (fp32 rounding differs)


def plain_scores(q, k, scale, rows):
    """Plain PyTorch stage 1: causal softmax of the sampled rows, summed per key column and per diagonal."""
    rows = rows[rows >= 0]
    allowed = torch.arange(k.shape[2])[None, :] <= rows[:, None]
    probs = attention_probs(q[:, :, rows], k, allowed, scale, causal=False)
    diag = torch.zeros(probs.shape[0], probs.shape[1], k.shape[2])
    for n, r in enumerate(rows.tolist()):
        diag[:, :, :r + 1] += probs[:, :, n, :r + 1].flip(-1)
    return probs.sum(2), diag


@pytest.mark.parametrize("seq,heads,kv,dim", [(150, 8, 1, 64), (257, 4, 4, 128), (130, 8, 2, 256)])
def test_sampled_scores_match_plain_pytorch(seq, heads, kv, dim):
    q, k, _ = random_qkv(seq, heads, kv, dim, seed=seq, stripes=0.05)
    scale = dim ** -0.5
    for rows, with_diag in ((strided_rows(seq, 0.1, "cpu"), False), (chunk_rows(seq, 3, "cpu"), True)):
        col, diag = sampled_scores(q, k, scale, rows, with_diag)
        want_col, want_diag = plain_scores(q, k, scale, rows)
        assert rel_err(col, want_col) < 1e-3
        n_rows = (rows >= 0).sum()
        assert torch.allclose(col.sum(-1), n_rows.float().expand(1, heads), rtol=1e-3)  # each row's mass is 1
        if with_diag:
            assert rel_err(diag, want_diag) < 1e-3
        else:
            assert diag is None


def test_packed_heads_pass_gives_the_same_scores(monkeypatch):
    q, k, _ = random_qkv(100, 8, 2, 64, seed=12, stripes=0.05)
    rows = strided_rows(100, 0.2, "cpu")
    plain = sampled_scores(q, k, 0.125, rows)[0]
    monkeypatch.setenv("ATTN_SCORES_PACK", "4")
    assert rel_err(sampled_scores(q, k, 0.125, rows)[0], plain) < 1e-5
    assert rel_err(plain, plain_scores(q, k, 0.125, rows)[0]) < 1e-3


def test_column_scores_over_all_rows_for_h2o():
    q, k, _ = random_qkv(100, 4, 2, 64, dtype=torch.float32, seed=11)
    want = attention_probs(q, k, scale=0.125).sum(2)
    for backend in ("triton", "torch"):
        with use_backend(backend):
            assert rel_err(column_scores(q, k, 0.125), want) < 1e-5
