"""XAttention's Triton estimate (interpreted on the CPU): the one-pass tile-score kernel against the plain fp32
PyTorch tile scores, and the fused selection against rank_tiles + select_tiles, on awkward shapes (unaligned
lengths, q_len < k_len, grouped-query heads, D=64 and D=128, several work items per persistent program)."""
import pytest
import torch

from attention.kernels.estimate_xattention import xattention_tile_scores
from attention.kernels.select_xattention import select_tiles_fused
from attention.methods.xattention import antidiagonal_tile_scores, rank_tiles, select_tiles

SCORE_CASES = [  # q_len, k_len, stride, block, dim, heads, kv_heads, tiles (BM, BN, warps, stages, FLAT) or None
    (200, 200, 4, 32, 64, 4, 2, (16, 16, 4, 1, True)),     # 8 query blocks x 4 heads over 4 programs
    (131, 300, 8, 32, 128, 4, 1, (16, 32, 4, 1, False)),    # q_len < k_len, unaligned, GQA 4
    (97, 97, 2, 16, 64, 2, 2, (32, 16, 4, 1, True)),       # BM > BN
    (45, 173, 4, 32, 128, 2, 1, None),               # default tiles: one block holds every group
    (256, 256, 16, 128, 64, 2, 1, (16, 16, 4, 1, False)),
    (256, 256, 16, 128, 128, 2, 1, (16, 16, 4, 1, True)),   # the default stride and block (8 groups per tile)
]


@pytest.mark.parametrize("q_len,k_len,stride,block,dim,heads,kv_heads,tiles", SCORE_CASES)
def test_tile_score_kernel_matches_fp32_torch(q_len, k_len, stride, block, dim, heads, kv_heads, tiles):
    gen = torch.Generator().manual_seed(q_len * 7 + k_len)
    q = torch.randn(2, heads, q_len, dim, generator=gen) * 1.5
    k = torch.randn(2, kv_heads, k_len, dim, generator=gen)
    want = antidiagonal_tile_scores(q, k, dim ** -0.5, stride, block)
    got = xattention_tile_scores(q, k, dim ** -0.5, stride, block, tiles)
    assert not got.isnan().any() and float(want.abs().sum()) > 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_tile_score_kernel_takes_large_scores_without_overflow():
    """Scores far above exp's range: the online max keeps every partial finite (no inf, no NaN)."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 150, 64, generator=gen) * 40
    k = torch.randn(1, 2, 150, 64, generator=gen) * 40
    want = antidiagonal_tile_scores(q, k, 0.125, 4, 16)
    got = xattention_tile_scores(q, k, 0.125, 4, 16, (16, 16, 4, 1, True))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def reference_selection(scores, threshold, first_rows):
    return select_tiles(rank_tiles(scores, first_rows), threshold)


@pytest.mark.parametrize("n,first_rows", [(1, 1), (2, 0), (7, 3), (13, 13), (33, 0), (64, 20)])
def test_selection_kernel_matches_torch_with_ties(n, first_rows):
    """Scores on a 1/8 grid (exact fp32 sums, so the comparison is exact) with many ties and zeros."""
    gen = torch.Generator().manual_seed(n + first_rows)
    scores = torch.randint(0, 6, (2, 3, n, n), generator=gen).float() / 8
    scores = scores * torch.ones(n, n).tril()  # the kernel writes zeros above the diagonal
    for threshold in (0.3, 0.8, 0.95, torch.tensor([0.5, 0.8, 0.9])):
        want = reference_selection(scores, threshold, first_rows)
        got = select_tiles_fused(scores, threshold, first_rows)
        assert torch.equal(got, want), (threshold, (got != want).sum())


@pytest.mark.parametrize("q_len,k_len,first", [(600, 600, True), (600, 600, False), (300, 555, False)])
def test_selection_kernel_matches_torch_on_estimated_scores(q_len, k_len, first):
    gen = torch.Generator().manual_seed(q_len + k_len)
    q = torch.randn(1, 4, q_len, 64, generator=gen) * 2
    k = torch.randn(1, 2, k_len, 64, generator=gen)
    scores = antidiagonal_tile_scores(q, k, 0.125, 4, 16)
    n = scores.shape[-1]
    first_rows = n // 3 if first else 0
    for threshold in (0.5, 0.8, 0.9):
        want = reference_selection(scores, threshold, first_rows)
        got = select_tiles_fused(scores, threshold, first_rows)
        assert torch.equal(got, want), (threshold, (got != want).sum())
        assert 0 < float(got.float().mean()) < 1


def test_selection_kernel_keeps_nothing_extra_in_rows_without_mass():
    """Front-padded query tiles (q_len < k_len) have zero scores: only key tile 0 and the diagonal stay."""
    scores = torch.zeros(1, 1, 5, 5)
    scores[..., 3:, :] = torch.rand(2, 5).tril(3)
    for first_rows in (0, 5):
        want = reference_selection(scores, 0.8, first_rows)
        got = select_tiles_fused(scores, 0.8, first_rows)
        assert torch.equal(got, want)


@pytest.mark.parametrize("budget_heads", [1, 2, 4, 6])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_estimate_in_head_chunks_equals_the_whole(monkeypatch, budget_heads, backend):
    """Past ESTIMATE_BYTES the tile scores and their selection are made a few heads at a time (whole GQA groups or
    heads inside one group): the same tiles as the whole layer at once, uniform and per-head thresholds."""
    import attention.methods.xattention as xattention
    from attention.backend import use_backend

    gen = torch.Generator().manual_seed(budget_heads)
    heads, kv_heads, length, block = 8, 2, 600, 64
    q = torch.randn(1, heads, length, 32, generator=gen)
    k = torch.randn(1, kv_heads, length, 32, generator=gen)
    n = -(-length // block)
    per_head = torch.linspace(0.5, 0.95, heads)
    with use_backend(backend):
        want = [xattention.estimated_tiles(q, k, 0.2, 8, block, t, 3) for t in (0.8, per_head)]
        fused = backend == "triton"
        monkeypatch.setattr(xattention, "ESTIMATE_BYTES", budget_heads * n * n * 4 * (2 if fused else 10))
        got = [xattention.estimated_tiles(q, k, 0.2, 8, block, t, 3) for t in (0.8, per_head)]
    assert xattention.head_step(heads, heads // kv_heads, n * n * 4 * (2 if fused else 10)) < heads
    for g, w in zip(got, want):
        assert torch.equal(g, w) and w.any() and not w.all()


def test_head_step_keeps_chunks_inside_groups_or_whole_groups(monkeypatch):
    import attention.methods.xattention as xattention

    monkeypatch.setattr(xattention, "ESTIMATE_BYTES", 100)
    assert xattention.head_step(32, 4, 1) == 32       # all fit
    assert xattention.head_step(32, 4, 10) == 8       # 10 fit: whole groups
    assert xattention.head_step(32, 4, 40) == 2       # 2 fit: a divisor of the group
    assert xattention.head_step(28, 7, 40) == 1       # 2 fit, group 7: one head
    assert xattention.head_step(28, 7, 1000) == 1     # none fit: still one head


@pytest.mark.parametrize("q_len,k_len,block", [(300, 1000, 64), (64, 1000, 64), (130, 1300, 128), (1, 700, 64)])
@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_a_query_chunk_ranks_only_its_own_rows_and_selects_what_the_whole_grid_selects(q_len, k_len, block,
                                                                                      threshold):
    """The last q_len of k_len positions (a chunk of a long prompt): rows before the first query tile hold no mass
    and are not ranked; the tiles equal the full grid's ranking, per-head thresholds too, in head chunks too."""
    import attention.methods.xattention as xattention

    gen = torch.Generator().manual_seed(q_len + k_len)
    q = torch.randn(1, 4, q_len, 32, generator=gen)
    k = torch.randn(1, 2, k_len, 32, generator=gen)
    scores = antidiagonal_tile_scores(q, k, 0.2, 8, block)
    row0 = (k_len - q_len) // block
    assert row0 > 0 and float(scores[:, :, :row0].abs().max()) == 0
    per_head = torch.tensor([0.5, 0.7, 0.9, 0.95])
    for t in (threshold, per_head):
        want = select_tiles(rank_tiles(scores, 0), t)
        got = xattention.selected_tiles(scores, t, 0, None, row0)
        assert torch.equal(got, want) and want[:, :, row0:].any()
        assert torch.equal(xattention.estimated_tiles(q, k, 0.2, 8, block, t, 0), want)


def test_a_query_chunk_in_head_chunks_selects_what_the_whole_grid_selects(monkeypatch):
    import attention.methods.xattention as xattention

    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 8, 200, 32, generator=gen)
    k = torch.randn(1, 2, 900, 32, generator=gen)
    want = select_tiles(rank_tiles(antidiagonal_tile_scores(q, k, 0.2, 8, 64), 0), 0.8)
    n = -(-900 // 64)
    monkeypatch.setattr(xattention, "ESTIMATE_BYTES", 2 * n * n * 4 * 10)  # two heads a chunk
    assert torch.equal(xattention.estimated_tiles(q, k, 0.2, 8, 64, 0.8, 0), want)
