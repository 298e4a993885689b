"""The FlexAttention block-mask executor for sink/window/block patterns (attention/kernels/flex_blocks.py).

On the CPU the compiled kernel does not run, so its block tables are checked against the dense keep mask
(what the kernel visits and where it may skip mask_mod), and eager flex_attention checks mask_mod itself.
"""
import warnings

import pytest
import torch

from attention.kernels.flex_blocks import block_tables, flex_block_attention, supports
from attention.pattern import SparsePattern
from attention.reference import reference_attention


def random_pattern(q_len, k_len, block, seed, window, sink=3, heads=4):
    gen = torch.Generator().manual_seed(seed)
    n = -(-k_len // block)
    blocks = torch.rand(1, heads, n, n, generator=gen) < 0.3
    return SparsePattern(sink=sink, window=window, blocks=blocks, block=block), gen


# (q_len, k_len, block, seed, window): windows ending exactly on, and between, block borders
CASES = [(100, 100, 16, 0, 20), (48, 96, 16, 1, 31), (64, 64, 8, 2, 17), (70, 70, 16, 3, 32), (50, 50, 16, 4, 20)]


@pytest.mark.parametrize("q_len,k_len,block,seed,window", CASES)
def test_block_tables_match_the_dense_keep_mask(q_len, k_len, block, seed, window):
    pattern, _ = random_pattern(q_len, k_len, block, seed, window)
    partial, full = block_tables(pattern, 1, 4, q_len, k_len, "cpu")
    keep = pattern.keep_mask(1, 4, q_len, k_len)
    # per block: does it hold any kept cell, and are all its causal-and-in-range cells kept
    n_q, n_k = partial.shape[-2:]
    padded = torch.zeros(1, 4, n_q * block, n_k * block, dtype=torch.bool)
    padded[..., :q_len, :k_len] = keep
    valid = torch.zeros_like(padded)
    valid[..., :q_len, :k_len] = True
    tiles = lambda x: x.view(1, 4, n_q, block, n_k, block)
    any_kept = tiles(padded).any(-1).any(-2)
    all_kept = (tiles(padded) | ~tiles(valid)).all(-1).all(-2)
    assert torch.equal(partial | full, any_kept)
    assert torch.equal(full, all_kept & any_kept)
    assert partial.any() and full.any()  # both kinds occur, so the test exercises both


@pytest.mark.parametrize("q_len,k_len,block,seed,window", CASES[:3])
def test_flex_output_matches_reference(q_len, k_len, block, seed, window):
    pattern, gen = random_pattern(q_len, k_len, block, seed, window)
    q = torch.randn(1, 4, q_len, 16, generator=gen)
    k, v = (torch.randn(1, 2, k_len, 16, generator=gen) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        out = flex_block_attention(q, k, v, pattern, 0.3)
    expected = reference_attention(q, k, v, pattern.keep_mask(1, 4, q_len, k_len), 0.3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert (expected - reference_attention(q, k, v, None, 0.3)).abs().max() > 1e-2  # the pattern matters


def test_scattered_patterns_are_refused():
    columns = SparsePattern(window=4, columns=torch.tensor([[[1, 5]]]))
    assert not supports(columns)
    assert not supports(SparsePattern(window=4, block=16), q_len=40, k_len=50)  # queries off block borders
    with pytest.raises(ValueError):
        flex_block_attention(*(torch.randn(1, 1, 8, 16) for _ in range(3)), columns, 0.3)
