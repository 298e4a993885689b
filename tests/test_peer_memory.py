"""The block peers' estimates at one gamma hold one head chunk's tile grid, not all heads' (issue 25 item 4: at
1M tokens FlexPrefill's whole ranked grid was ~20 GiB): the chunked selection gives the same tiles as the full
rankings, ties included, and its largest allocation is one head's grid."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import attention.methods.flexprefill as flexprefill
from attention.peer_estimation import ranked
from attention.registry import build_method


def qkv(length, heads=4, kv_heads=2, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, length, dim, generator=gen) for h in (heads, kv_heads, kv_heads)]


class Largest(TorchDispatchMode):
    """The largest tensor any op returns (bytes) while active."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.bytes = max(self.bytes, x.numel() * x.element_size())
        return out


def stable_prefix(values, budget):
    """The reference: a stable descending sort, the longest prefix with running sum <= budget (at least one)."""
    v, order = torch.sort(values, dim=-1, descending=True, stable=True)
    keep = (v.cumsum(-1) <= budget)
    keep[..., 0] = True
    return torch.zeros_like(keep).scatter_(-1, order, keep)


@pytest.mark.parametrize("budget", [0.0, 0.5, 2.0, 3.0, 100.0])
def test_top_prefix_matches_the_stable_sort_prefix_with_ties(budget):
    gen = torch.Generator().manual_seed(1)
    values = torch.randint(0, 4, (3, 50), generator=gen).float() / 4  # many ties, zeros among them
    assert torch.equal(flexprefill.top_prefix(values, budget), stable_prefix(values, budget))
    long = torch.rand(2, 5000, generator=gen).round(decimals=2)  # the flat-sort path of ranked, ties again
    assert torch.equal(flexprefill.top_prefix(long, budget * 100), stable_prefix(long, budget * 100))


@pytest.mark.parametrize("gamma", [0.9, 0.5])
def test_chunked_selection_equals_the_full_rankings(gamma, monkeypatch):
    method = build_method("flexprefill", {"block": "16", "min_budget": "16", "gamma": str(gamma), "tau": "0.08"})
    q, k, _ = qkv(700, seed=3)
    q[:, 1:3] *= 4  # sharper heads 1 and 2: not query-aware at tau 0.08, heads 0 and 3 are
    scale = 0.25
    full = method.select(method.scores(q, k, scale), gamma)          # rankings of all heads at once
    n = full.shape[-1]
    monkeypatch.setattr(flexprefill, "RANK_CHUNK", 3 * n * 16)           # three rows of mass per sort
    monkeypatch.setattr(flexprefill, "GRID_CHUNK", 4 * n * n)            # every head in one chunk: ranked whole
    assert torch.equal(method.select(method.scores(q, k, scale, gamma), gamma), full)
    monkeypatch.setattr(flexprefill, "GRID_CHUNK", n * n)                # one head per chunk, as at 1M tokens
    s = method.scores(q, k, scale, gamma)
    assert s.grid_order is None and s.cum is None                        # no ranking held
    chunked = method.select(s, gamma)
    assert s.query_aware.any() and not s.query_aware.all()               # both kinds of head
    assert torch.equal(chunked, full)
    assert torch.equal(method.build_pattern(q, k, scale).blocks, full)   # the default path is the chunked one


def test_largest_allocation_is_one_head_grid(monkeypatch):
    """At 4 heads and 512 tiles per side the whole grid's softmax is 4 MiB and its ranking 4 MiB of indices; a head
    chunk's 1 MiB (with GRID_CHUNK at one head, as at 1M tokens with 32 heads), or the int64 indices of its causal half's
    sort. Everything else here is smaller (the bool table of all heads too)."""
    method = build_method("flexprefill", {"block": "8", "min_budget": "8"})
    q, k, _ = qkv(4096, seed=4)
    n = 512
    one_head = n * n * 4
    monkeypatch.setattr(flexprefill, "GRID_CHUNK", n * n)
    with Largest() as seen:
        blocks = method.build_pattern(q, k, 0.25).blocks
    assert blocks.shape == (1, 4, n, n)
    assert seen.bytes <= max(one_head, 8 * n * (n + 1) // 2), seen.bytes  # a grid, or its causal half's int64 sort
    with Largest() as whole:  # the full rankings (a density solve's) hold all heads at once
        method.scores(q, k, 0.25)
    assert whole.bytes >= 4 * one_head


def test_ranked_values_are_the_same_in_row_groups():
    gen = torch.Generator().manual_seed(5)
    mass = torch.rand(2, 3, 2, 6000, generator=gen)
    expected = (ranked(mass, order=False)[0].cumsum(-1) <= 0.9 * 3000).sum(-1) + 1
    old = flexprefill.RANK_CHUNK
    try:
        flexprefill.RANK_CHUNK = 6000 * 5  # groups of 5 rows: 12 rows in 3 groups
        assert torch.equal(flexprefill.covered(mass, 0.9 * 3000), expected)
    finally:
        flexprefill.RANK_CHUNK = old


@pytest.mark.parametrize("exact", ["0", "1"])
def test_minference_prefix_ranking_selects_the_same(exact, monkeypatch):
    """MInference ranks only the prefix of each order its heads read, in row groups: the same columns and diagonals
    as the full ranking, with groups of one row (as at 1M keys) and in one group."""
    import attention.peer_estimation as peer_estimation

    method = build_method("minference", {"vertical_size": "40", "slash_size": "120", "last_q": "16",
                                         "init_columns": "3", "local_diagonals": "70", "exact_diagonals": exact})
    q, k, _ = qkv(900, seed=6)
    unused = method.counts_and_means(900, method.head_sizes(4, 0, "cpu"), 1.0, "cpu")[0]
    full = method.selected(method.scores(q[:, :, -16:], k, 0.25), unused)
    for group in (900, 1 << 24):
        monkeypatch.setattr(peer_estimation, "RANK_GROUP", group)
        pattern = method.build_pattern(q, k, 0.25)
        got = (pattern.columns, pattern.band_offsets if exact == "0" else pattern.slashes)
        for a, b in zip(got, full):
            assert torch.equal(a, b)


def test_minference_replays_its_graph_to_128k(monkeypatch):
    """MInference's default estimate replays from a graph up to its own limit (128K keys), past the shared 64K."""
    import attention.methods.minference as minference
    import attention.peer_estimation as peer_estimation

    seen = []
    monkeypatch.setattr(peer_estimation, "graphs_enabled", lambda device: True)
    monkeypatch.setattr(peer_estimation, "capture", lambda fn, statics: (seen.append(1), (fn(*statics), lambda: None))[1])
    monkeypatch.setattr(peer_estimation, "GRAPH_MAX_TOKENS", 100)  # the shared limit below this length
    method = build_method("minference", {"vertical_size": "40", "slash_size": "120", "last_q": "16"})
    q, k, _ = qkv(300, seed=7)
    monkeypatch.setattr(minference, "GRAPH_MAX_TOKENS", 299)
    method.build_pattern(q, k, 0.25)
    assert not seen  # past its limit: eager
    monkeypatch.setattr(minference, "GRAPH_MAX_TOKENS", 300)
    method.build_pattern(q, k, 0.25)
    assert seen == [1]


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_diagonal_tiles_equal_the_gathered_ones(n):
    diagonals = torch.rand(2, 3, n, generator=torch.Generator().manual_seed(n)) < 0.5
    r = torch.arange(n)
    gathered = diagonals[..., (r[:, None] - r[None, :]).clamp(min=0)] & torch.ones(n, n, dtype=torch.bool).tril()
    tiles = flexprefill.FlexPrefill.diagonal_tiles(diagonals)
    assert torch.equal(tiles, gathered) and tiles.is_contiguous()


@pytest.mark.parametrize("q_len,k_len,block", [(300, 1000, 64), (64, 1000, 64), (20, 1000, 128), (1000, 1000, 64),
                                               (130, 640, 64)])
def test_flexprefill_pools_a_query_chunk_without_padding_it_to_the_whole_prompt(q_len, k_len, block):
    """A chunk's pooled queries equal those of the chunk front-padded with zeros to k_len (what the official code
    pools), and no op returns a tensor of k_len query rows (8 GiB at 1M with 32 heads)."""
    q, _, _ = qkv(q_len, heads=4)
    method = build_method("flexprefill", {"block": str(block)})
    want = flexprefill.block_pool_mean(torch.nn.functional.pad(q, (0, 0, k_len - q_len, 0)), block) * 0.3
    with Largest() as largest:
        got = method.pooled_queries(q, k_len, 0.3)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    if q_len < k_len // 2:
        assert largest.bytes < q.shape[1] * k_len * q.shape[-1] * q.element_size() / 2
