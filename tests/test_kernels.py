"""Triton kernels (run by the CPU interpreter, TRITON_INTERPRET=1 from conftest) against attention/reference.py."""
import pytest
import torch

from attention.backend import use_backend
from attention.density import pattern_density
from attention.executor import run_pattern
from attention.kernels.stage1 import launch_sampled_scores as sampled_scores
from attention.scores import column_scores
from attention.density import mask_density as density
from attention.pattern import SparsePattern
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



# Hopper (TMA) path under the interpreter: q/K/V read in place, the kept columns gathered into buffers of their own
TMA_SHAPES = [SHAPES[0], SHAPES[2], (300, 4, 2, 64, 0, 0, True, False), (260, 2, 1, 64, 70, 3, False, False)]


@pytest.mark.parametrize("seq,heads,kv,dim,window,sink,with_cols,with_slash", TMA_SHAPES)
def test_tma_path_matches_reference(seq, heads, kv, dim, window, sink, with_cols, with_slash):
    from attention.kernels.hopper import sparse_attention_tma

    q, k, v = random_qkv(seq, heads, kv, dim, seed=seq + dim + 1)
    pattern = make_pattern(seq, heads, window, sink, with_cols, with_slash, seed=seq + 1)
    keep = pattern.keep_mask(1, heads, seq, seq)
    out = torch.full_like(q, float("nan"))
    sparse_attention_tma(q, k, v, dim ** -0.5, sink=sink, window=window, columns=pattern.columns,
                         slashes=pattern.slashes, out=out)
    assert not out.isnan().any()
    ref = reference_attention(q, k, v, keep, dim ** -0.5)
    assert rel_err(out, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, dim ** -0.5), ref)


def test_tma_path_with_long_sequence_tiles():
    # 128x128 tiles are what the launcher picks from 48K queries on: same answers at a length the CPU can run
    from attention.kernels.config import override
    from attention.kernels.hopper import sparse_attention_tma

    with override(tma_blocks={128: (128, 128, 8, 3, 0)}):
        check_tma_long_tiles(sparse_attention_tma)


def check_tma_long_tiles(sparse_attention_tma):
    for seq, window, sink, slashes in ((300, 150, 3, True), (290, 0, 0, False)):
        q, k, v = random_qkv(seq, 4, 1, 128, seed=seq)
        pattern = make_pattern(seq, 4, window, sink, True, slashes, seed=seq + 2)
        keep = pattern.keep_mask(1, 4, seq, seq)
        got = sparse_attention_tma(q, k, v, 0.09, sink=sink, window=window, columns=pattern.columns,
                                   slashes=pattern.slashes)
        ref = reference_attention(q, k, v, keep, 0.09)
        assert rel_err(got, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, 0.09), ref)


def test_tma_path_queries_shorter_than_keys():
    from attention.kernels.hopper import sparse_attention_tma

    q, k, v = random_qkv(100, 2, 1, 64, seed=16)
    q = q[:, :, -37:]
    pattern = make_pattern(100, 2, 10, 2, True, False, seed=17)
    ref = reference_attention(q, k, v, pattern.keep_mask(1, 2, 37, 100), 0.125)
    got = sparse_attention_tma(q, k, v, 0.125, sink=2, window=10, columns=pattern.columns)
    assert rel_err(got, ref) < 1e-2


@pytest.mark.parametrize("transformers_layout", [False, True])
def test_gather_copies_each_distinct_column_once_in_order(transformers_layout):
    from attention.kernels.gather import column_lists, gather_columns, kept_up_to

    _, k, v = random_qkv(50, 4, 2, 64, seed=18)
    if transformers_layout:  # [B, S, H, D] seen as [B, H, S, D]: read through its strides
        k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (k, v))
    cols = torch.tensor([[[7, 3, 7, -1, 49], [0, 0, 0, 0, 0], [-1, -1, -1, -1, -1], [12, 11, 10, 60, 11]]])
    hit, cnt, lists, slots = column_lists(cols, 2, 1, 4, 50, "cpu")  # sinks 0, 1 join every head's columns
    want = {0: [0, 1, 3, 7, 49], 1: [0, 1], 2: [0, 1], 3: [0, 1, 10, 11, 12]}
    assert slots == 128 and torch.equal(cnt[..., -1], torch.tensor([[5, 2, 2, 5]], dtype=torch.int32))
    for h, keys in want.items():
        assert lists[0, h, :len(keys)].tolist() == keys and (lists[0, h, len(keys):] == 1 << 30).all()
        assert hit[0, h].nonzero().flatten().tolist() == keys
    assert kept_up_to(cnt, torch.tensor([-3, 0, 10, 49]))[0, 3].tolist() == [0, 1, 3, 5]
    kc, vc = gather_columns(k, v, lists, slots, 4, cnt[..., -1])
    assert kc.shape == (4 * slots, 64)
    for h, keys in want.items():
        for got, src in ((kc, k), (vc, v)):
            rows = got[h * slots: (h + 1) * slots]
            assert torch.equal(rows[:len(keys)], src[0, h // 2, keys])
            assert rows[len(keys):slots].abs().max() == 0  # the rest of the head's first tile is written as zeros


def test_tma_path_reads_transformers_layout_in_place():
    """q/k/v as the transformers bridge hands them ([B, S, H, D] memory seen as [B, H, S, D]) are read through
    descriptors over that memory (no copy), and give the head-major answer; q shorter than k, GQA group 3."""
    from attention.kernels.hopper import matrix_of, sparse_attention_tma

    q, k, v = random_qkv(230, 6, 2, 64, seed=31)
    q = q[:, :, 30:]
    pattern = make_pattern(230, 6, 40, 2, True, False, seed=5)
    keep = pattern.keep_mask(1, 6, 200, 230)
    moved = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]
    for x in moved:
        assert matrix_of(x)[0].data_ptr() == x.data_ptr()  # a view, not a copy
    got = sparse_attention_tma(*moved, 0.125, sink=2, window=40, columns=pattern.columns)
    ref = reference_attention(q, k, v, keep, 0.125)
    assert not got.isnan().any()
    assert rel_err(got, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, 0.125), ref)


def test_sparse_path_choice():
    from attention.kernels.config import kernel_settings, override, sparse_path

    q = torch.zeros(1, 1, 8, 64)
    assert sparse_path(q) == "portable"  # the interpreter / CPU: never the TMA path unless asked
    with override(sparse_path="tma"):
        assert sparse_path(q) == "tma"
        assert kernel_settings()["overrides"] == {"sparse_path": "tma"}  # what the manifest records
    assert kernel_settings()["overrides"] == {}
    with pytest.raises(ValueError, match="sparse_path"):
        with override(sparse_path="fast"):
            sparse_path(q)

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


def test_packed_heads_pass_gives_the_same_scores():
    from attention.kernels.config import override

    q, k, _ = random_qkv(100, 8, 2, 64, seed=12, stripes=0.05)
    rows = strided_rows(100, 0.2, "cpu")
    plain = sampled_scores(q, k, 0.125, rows)[0]
    with override(scores_pack=4):
        assert rel_err(sampled_scores(q, k, 0.125, rows)[0], plain) < 1e-5
    assert rel_err(plain, plain_scores(q, k, 0.125, rows)[0]) < 1e-3


def test_column_scores_over_all_rows_for_h2o():
    q, k, _ = random_qkv(100, 4, 2, 64, dtype=torch.float32, seed=11)
    want = attention_probs(q, k, scale=0.125).sum(2)
    for backend in ("triton", "torch"):
        with use_backend(backend):
            assert rel_err(column_scores(q, k, 0.125), want) < 1e-5
