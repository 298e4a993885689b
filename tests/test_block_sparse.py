"""The FlexAttention block-mask executor for sink/window/block patterns (attention/flex_blocks.py).

On the CPU the compiled kernel does not run, so its block tables are checked against the dense keep mask
(what the kernel visits and where it may skip mask_mod), and eager flex_attention checks mask_mod itself.
"""
import warnings

import pytest
import torch

from attention.flex_blocks import block_tables, flex_block_attention, supports
from attention.pattern import SparsePattern
from attention.reference import reference_attention


def random_pattern(q_len, k_len, block, seed, window, sink=3, heads=4):
    gen = torch.Generator().manual_seed(seed)
    n = -(-k_len // block)
    blocks = torch.rand(1, heads, n, n, generator=gen) < 0.3
    return SparsePattern(sink=sink, window=window, blocks=blocks, block=block), gen


# (q_len, k_len, block, tile, seed, window): windows ending on and between tile borders, tiles equal to,
# larger and smaller than the pattern's blocks, and queries that start off a tile border (q_len < k_len)
CASES = [(100, 100, 16, 16, 0, 20), (48, 96, 16, 16, 1, 31), (64, 64, 8, 8, 2, 17), (70, 70, 16, 16, 3, 32),
         (50, 50, 16, 16, 4, 20), (100, 100, 8, 32, 5, 70), (90, 90, 32, 16, 6, 9), (40, 90, 16, 32, 7, 33)]


def tile_view(x, tile):
    """[B, H, Sq, Sk] -> [B, H, nq, tile, nk, tile], zero-padded to whole tiles."""
    rows, cols = -(-x.shape[-2] // tile) * tile, -(-x.shape[-1] // tile) * tile
    padded = torch.nn.functional.pad(x, (0, cols - x.shape[-1], 0, rows - x.shape[-2]))
    return padded.view(*x.shape[:2], rows // tile, tile, cols // tile, tile)


@pytest.mark.parametrize("q_len,k_len,block,tile,seed,window", CASES)
def test_block_tables_cover_the_keep_mask(q_len, k_len, block, tile, seed, window):
    pattern, _ = random_pattern(q_len, k_len, block, seed, window)
    partial, full = block_tables(pattern, 1, 4, q_len, k_len, "cpu", tile)
    keep = pattern.keep_mask(1, 4, q_len, k_len)
    any_kept = tile_view(keep, tile).any(-1).any(-2)
    all_kept = ~tile_view(~keep, tile).any(-1).any(-2)  # no in-range cell left out (padding does not count)
    assert not (partial & full).any()
    assert torch.equal((partial | full) & any_kept, any_kept)  # no kept cell is skipped
    assert not (full & ~all_kept).any()  # a tile run without mask_mod holds only kept cells
    if tile == block:  # aligned: the tables are exact, no work wasted
        assert torch.equal(partial | full, any_kept) and torch.equal(full, all_kept & any_kept)
    assert partial.any() and full.any()  # both kinds occur, so the test exercises both


@pytest.mark.parametrize("q_len,k_len,block,tile,seed,window", CASES[1:2] + CASES[5:])
def test_flex_output_matches_reference(q_len, k_len, block, tile, seed, window):
    pattern, gen = random_pattern(q_len, k_len, block, seed, window)
    q = torch.randn(1, 4, q_len, 16, generator=gen)
    k, v = (torch.randn(1, 2, k_len, 16, generator=gen) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        out = flex_block_attention(q, k, v, pattern, 0.3, tile=tile)
    expected = reference_attention(q, k, v, pattern.keep_mask(1, 4, q_len, k_len), 0.3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert (expected - reference_attention(q, k, v, None, 0.3)).abs().max() > 1e-2  # the pattern matters


def test_scattered_patterns_are_refused():
    columns = SparsePattern(window=4, columns=torch.tensor([[[1, 5]]]))
    assert not supports(columns) and supports(SparsePattern(window=4, blocks=torch.ones(1, 1, 2, 2).bool()))
    with pytest.raises(ValueError):
        flex_block_attention(*(torch.randn(1, 1, 8, 16) for _ in range(3)), columns, 0.3)
