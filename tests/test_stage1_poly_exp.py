"""Stage 1 with part of its exp2 work on the FMA pipe (attention/kernels/sampling.py _exp2_fma, poly=1/2): the same
column scores as the SFU-only kernels to fp32 noise, against plain fp32 PyTorch, and the same selected columns."""
import pytest
import torch

from attention.kernels.column_select import select_columns
from attention.kernels.stage1 import launch_sampled_scores, row_plan
from attention.methods.sample import strided_rows
from attention.scores import torch_sampled_scores
from tests.kernel_helpers import random_qkv, rel_err

# (q_len, k_len, q heads, kv heads, head dim, r_row): unaligned lengths, q_len < k_len, GQA groups 7 / 4 / 1;
# rows dense enough that later row blocks start past whole 128-key tiles (the unmasked tiles poly changes)
SHAPES = [
    (389, 389, 14, 2, 64, 0.5),
    (300, 461, 8, 2, 128, 0.5),
    (333, 333, 3, 3, 64, 0.34),
]


def inputs(q_len, k_len, heads, kv, dim):
    q, k, _ = random_qkv(k_len, heads, kv, dim, seed=q_len + dim, stripes=0.05)
    return q[:, :, k_len - q_len:].contiguous(), k


@pytest.mark.parametrize("q_len,k_len,heads,kv,dim,r_row", SHAPES)
def test_fma_exp_gives_the_sfu_scores(q_len, k_len, heads, kv, dim, r_row):
    q, k = inputs(q_len, k_len, heads, kv, dim)
    scale = dim ** -0.5
    rows = strided_rows(q_len, r_row, "cpu")
    want = torch_sampled_scores(q.float(), k.float(), scale, rows)[0]
    sfu = launch_sampled_scores(q, k, scale, rows, poly=0)[0]
    assert rel_err(sfu, want) < 1e-3  # bf16 operands against fp32 ones
    for poly in (1, 2):
        col = launch_sampled_scores(q, k, scale, rows, poly=poly)[0]
        assert torch.isfinite(col).all()
        assert rel_err(col, sfu) < 1e-5, poly  # fp32 reduction-order noise, not an approximation
        assert torch.allclose(col.sum(-1), torch.full_like(col.sum(-1), float((rows >= 0).sum())), rtol=1e-4)


def test_fma_exp_selects_the_same_columns():
    q_len, k_len, heads, kv, dim = 389, 389, 14, 2, 64
    q, k = inputs(q_len, k_len, heads, kv, dim)
    plan = row_plan(strided_rows(q_len, 0.5, "cpu"), q_len, k_len, dim)
    picked = []
    for poly in (0, 1, 2):
        col = launch_sampled_scores(q, k, dim ** -0.5, plan, poly=poly)[0]
        cols, col_full, col_hi, dens = select_columns(col, sink=4, window=40, q_len=q_len, block_m=64,
                                                      base_cells=0, causal_cells=q_len * (q_len + 1) // 2, alpha=0.9)
        picked.append((cols, col_hi))
    assert (picked[0][1][..., -1] > 4).all()  # something beyond the sinks was selected
    for cols, col_hi in picked[1:]:
        assert torch.equal(cols, picked[0][0]) and torch.equal(col_hi, picked[0][1])


def test_poly_code_is_checked():
    q, k = inputs(70, 70, 2, 1, 64)
    with pytest.raises(ValueError, match="poly=3"):
        launch_sampled_scores(q, k, 0.125, strided_rows(70, 0.5, "cpu"), poly=3)
