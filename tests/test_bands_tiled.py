"""The tiled band kernel (attention/kernels/band_tiles.py, bands_tiled.py), interpreted: its tile lists equal the
runs of the plain run builder, and its output equals fp32 attention over MInference's executed pattern (BandPattern's
keep mask) within twice a plain bf16 implementation's error, on both paths (TMA descriptors, pointer loads) and
both query tile sizes, on awkward shapes."""
import json

import pytest
import torch

from attention.backend import use_backend
from attention.bands import BandPattern, band_runs_torch
from attention.kernels.band_tiles import BAND, NO_TILE, block_tiles, tile_lists
from attention.kernels.bands_tiled import BandConfig, TiledBands, band_tiled_attention
from attention.kernels.config import override
from attention.reference import expand_kv, reference_attention
from attention.registry import build_method
from tests.test_peer_fidelity import official


def random_pattern(heads, k_len, n_offsets, n_columns, seed, forced=5):
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, k_len, (1, heads, n_offsets), generator=gen)
    offsets[..., :forced] = torch.arange(forced)  # the nearest diagonals, as MInference forces them
    offsets[0, 0, n_offsets // 2:] = -1       # unused slots
    columns = torch.randint(0, k_len, (1, heads, n_columns), generator=gen)
    columns[0, -1, :3] = -1
    columns[0, 0, 1] = columns[0, 0, 0]        # a repeat
    return offsets, columns


def run_tiles(lo, hi, count):
    """Per (row, block), the sorted 64-key tile starts of the runs."""
    out = {}
    for r in range(lo.shape[0]):
        for m in range(lo.shape[1]):
            out[r, m] = sorted(s for j in range(int(count[r, m])) for s in range(int(lo[r, m, j]), int(hi[r, m, j]),
                                                                                   BAND))
    return out


@pytest.mark.parametrize("q_len,k_len", [(300, 300), (131, 333), (40, 700)])
def test_block_tiles_are_the_runs_tiles(q_len, k_len):
    offsets, _ = random_pattern(3, k_len, 30, 4, q_len)
    m0 = (k_len - q_len) // BAND
    tiles, count = block_tiles(offsets, 1, 3, k_len, m0)
    want = run_tiles(*band_runs_torch(offsets, 1, 3, k_len, m0))
    got = {(r, m): tiles[r, m, :int(count[r, m])].tolist() for r in range(3) for m in range(tiles.shape[1])}
    assert got == want and sum(map(len, want.values())) > 0
    assert bool((tiles[torch.arange(tiles.shape[-1]) >= count[..., None]] == NO_TILE).all())


@pytest.mark.parametrize("k_len,m0", [(700, 0), (650, 3)])
def test_tile_lists_hold_each_blocks_tiles_once_with_its_rows(k_len, m0):
    """128-row tiles: the union of the two blocks' tiles, flags naming whose rows keep each; unmasked entries only
    where both blocks keep the tile and every key precedes the tile's first row; 64-row tiles: each block's own,
    with pairs two adjacent unmasked tiles of a run as one entry."""
    offsets, _ = random_pattern(2, k_len, 25, 4, k_len)
    tiles, count = block_tiles(offsets, 1, 2, k_len, m0)
    for tile_m, pairs in ((64, False), (64, True), (128, False)):
        entries, counts = tile_lists(tiles, count, m0, tile_m, pairs)
        group = tile_m // BAND
        n_pairs = n_whole = n_masked = 0
        for r in range(2):
            for t in range(entries.shape[1]):
                paired, whole, masked = (int(c) for c in counts[r, t])
                n_pairs, n_whole, n_masked = n_pairs + paired, n_whole + whole, n_masked + masked
                unmasked = entries[r, t, :paired + whole].tolist()
                heads = [e for e in unmasked[:paired]]
                listed = unmasked + [e + BAND * 4 for e in heads] + entries[r, t, entries.shape[-1] - masked:].tolist()
                first = (m0 + t * group) * BAND
                for e in unmasked:
                    assert e & 3 == 3 and (e >> 2) + BAND * (1 + (e in heads)) <= first
                by_start = {}
                for e in listed:
                    assert (e >> 2) not in by_start  # each start once
                    by_start[e >> 2] = e & 3 if group == 2 else 1
                want = {}
                for half in range(group):
                    m = t * group + half
                    for s in (tiles[r, m, :int(count[r, m])].tolist() if m < tiles.shape[1] else []):
                        want[s] = want.get(s, 0) | (1 << half)
                assert by_start == want
        assert n_whole > 0 and n_masked > 0 and (n_pairs > 0) == pairs


def bf16_torch(q, k, v, keep, scale):
    """Plain PyTorch attention in bf16 (scores, softmax and output in bf16): the error bar."""
    kx, vx = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
    causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(k.shape[2] - q.shape[2])
    s = ((q @ kx.transpose(-1, -2)) * scale).masked_fill(~(keep & causal), float("-inf"))
    return torch.nan_to_num(torch.softmax(s, -1)).to(q.dtype) @ vx


CASES = [  # q_len, k_len, heads, kv_heads, dim
    (256, 256, 4, 2, 64),
    (97, 600, 4, 1, 128),   # q_len < k_len, the queries' first block starts mid-block
    (300, 391, 3, 3, 64),   # no GQA, lengths off the 64-row blocks
    (130, 200, 2, 1, 256),  # the widest head the kernels compile for
]


@pytest.mark.parametrize("q_len,k_len,heads,kv_heads,dim", CASES)
@pytest.mark.parametrize("tile_m,pairs", [(64, False), (64, True), (128, False)])
@pytest.mark.parametrize("use_tma", [False, True])
def test_band_tiled_attention_matches_the_reference(q_len, k_len, heads, kv_heads, dim, tile_m, pairs, use_tma):
    gen = torch.Generator().manual_seed(q_len + dim)
    q = torch.randn(1, heads, q_len, dim, generator=gen).bfloat16()
    k = torch.randn(1, kv_heads, k_len, dim, generator=gen).bfloat16()
    v = torch.randn(1, kv_heads, k_len, dim, generator=gen).bfloat16()
    offsets, columns = random_pattern(heads, k_len, 5, 12, k_len, forced=2)
    keep = BandPattern(columns=columns, band_offsets=offsets).keep_mask(1, heads, q_len, k_len)
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    assert 0.1 < float((keep & causal).sum() / causal.sum() / heads) < 0.9
    out = band_tiled_attention(q, k, v, 0.2, offsets, columns, config=BandConfig(tile_m, pairs, 4, 2),
                               use_tma=use_tma)
    expected = reference_attention(q, k, v, keep, 0.2)
    bar = (bf16_torch(q, k, v, keep, 0.2).float() - expected).abs().max()
    assert not out.isnan().any()
    assert float((out.float() - expected).abs().max()) <= 2 * float(bar) + 1e-6


def test_band_pattern_runs_the_tiled_kernel_on_both_paths():
    """BandPattern.run (the executor's route) on the Triton backend, each sparse path, against the reference;
    its tile lists are built once per shape."""
    q_len, k_len, heads = 130, 260, 4
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, heads, q_len, 64, generator=gen)
    k = torch.randn(1, 2, k_len, 64, generator=gen)
    v = torch.randn(1, 2, k_len, 64, generator=gen)
    offsets, columns = random_pattern(heads, k_len, 10, 8, 3)
    pattern = BandPattern(columns=columns, band_offsets=offsets)
    expected = reference_attention(q, k, v, pattern.keep_mask(1, heads, q_len, k_len), 0.3)
    for path in ("portable", "tma"):
        with use_backend("triton"), override(sparse_path=path):
            out = pattern.run(q, k, v, 0.3)
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-3)
    assert len(pattern._tiles) == 1 and isinstance(next(iter(pattern._tiles.values())), TiledBands)


def test_a_row_with_nothing_kept_outputs_zero():
    """Offsets all past the queries' blocks and no columns: every row empty, zeros out, no NaN."""
    q = torch.randn(1, 2, 70, 64)
    k = torch.randn(1, 2, 70, 64)
    offsets = torch.full((1, 2, 3), 500)
    out = band_tiled_attention(q, k, k, 0.3, offsets, None, config=BandConfig(128, False, 4, 2), use_tma=False)
    assert not out.isnan().any() and float(out.abs().max()) == 0.0


@pytest.mark.parametrize("case", ["config_sparse_3000", "default_1000"])
def test_block_tiles_are_the_official_tile_lists(case, tmp_path):
    """The tile builder (interpreted) lists, per 64-row block, the same 64-key tiles in the same order as
    MInference's own index kernel on the captured q/k (tests/fixtures/peer_official_masks.pt), from the offsets
    our MInference selects (which test_peer_fidelity compares with theirs)."""
    q, k, scale, cases = official("minference")
    c = cases[case]
    n = c["length"]
    options = {}
    if c["config"]:
        path = tmp_path / "best_pattern.json"
        path.write_text(json.dumps(c["config"]["best_pattern"]))
        options["config"] = str(path)
    pattern = build_method("minference", options).build_pattern(q[:, :, :n], k[:, :, :n], scale)
    tiles, count = block_tiles(pattern.band_offsets, 1, q.shape[1], n)
    for h, head in enumerate(c["heads"]):
        for block, starts in enumerate(head["bands"]):
            assert tiles[h, block, :int(count[h, block])].tolist() == starts.tolist(), (h, block)


@pytest.mark.parametrize("q_len,k_len", [(300, 300), (170, 431)])
def test_long_prompts_run_and_count_in_spans_as_in_one(monkeypatch, q_len, k_len):
    """Past SPAN_BYTES the tile tables are built per span of query rows (never cached whole): the output and the
    kept share equal the one-span path's, and spans end on 128-row boundaries of absolute positions."""
    import attention.bands as bands

    heads = 4
    gen = torch.Generator().manual_seed(k_len)
    q = torch.randn(1, heads, q_len, 64, generator=gen)
    k = torch.randn(1, 2, k_len, 64, generator=gen)
    v = torch.randn(1, 2, k_len, 64, generator=gen)
    offsets, columns = random_pattern(heads, k_len, 10, 8, 5)
    whole = BandPattern(columns=columns, band_offsets=offsets)
    with use_backend("triton"):
        expected = whole.run(q, k, v, 0.3)
        share = whole.kept_share(1, heads, q_len, k_len, q.device)
    monkeypatch.setattr(bands, "SPAN_BYTES", 1 * heads * 11 * 4 * 2)  # two 64-row blocks per span
    monkeypatch.setattr(bands, "SHARE_ELEMENTS", 1)                    # the kept share one block at a time
    spans = bands.query_spans(1, heads, q_len, k_len, offsets.shape[-1])
    assert len(spans) > 1 and spans[0][0] == 0 and spans[-1][1] == q_len
    assert all((k_len - q_len + stop) % 128 == 0 for _, stop in spans[:-1])
    pattern = BandPattern(columns=columns, band_offsets=offsets)
    for path in ("portable", "tma"):
        with use_backend("triton"), override(sparse_path=path):
            out = pattern.run(q, k, v, 0.3)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert not pattern.__dict__.get("_tiles")
    with use_backend("triton"):
        torch.testing.assert_close(pattern.kept_share(1, heads, q_len, k_len, q.device), share)
    assert not pattern.__dict__.get("_runs")


@pytest.mark.parametrize("q_len,k_len,n_offsets,n_columns", [(300, 300, 10, 8), (170, 431, 7, 0), (64, 1000, 30, 40),
                                                              (1, 257, 6, 5)])
def test_kept_share_on_the_block_lists_equals_the_runs_and_the_mask(q_len, k_len, n_offsets, n_columns):
    """The one-launch kept share (band_share.py, from the tiled kernel's block lists) equals the PyTorch closed form
    over the runs and the count of the keep mask, cell for cell."""
    heads = 3
    offsets, columns = random_pattern(heads, k_len, n_offsets, max(n_columns, 4), q_len + k_len)
    columns = columns if n_columns else columns[..., :0]
    pattern = BandPattern(columns=columns, band_offsets=offsets)
    on_runs = pattern.kept_share(1, heads, q_len, k_len, torch.device("cpu"))
    with use_backend("triton"):
        on_lists = BandPattern(columns=columns, band_offsets=offsets).kept_share(1, heads, q_len, k_len,
                                                                                 torch.device("cpu"))
    keep = pattern.keep_mask(1, heads, q_len, k_len)
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    counted = (keep & causal).sum((-2, -1)).double() / causal.sum()
    torch.testing.assert_close(on_lists, on_runs, rtol=0, atol=1e-6)
    torch.testing.assert_close(on_lists.double(), counted, rtol=0, atol=1e-6)
    assert 0 < float(on_lists.min()) and float(on_lists.max()) <= 1
