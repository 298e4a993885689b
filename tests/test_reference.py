import pytest
import torch

from attention.reference import causal_mask, reference_attention


@pytest.mark.parametrize("heads,kv_heads,q_len,k_len", [(4, 4, 33, 33), (6, 2, 17, 17), (8, 1, 5, 29)])
def test_reference_matches_torch_sdpa(heads, kv_heads, q_len, k_len):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, heads, q_len, 32, generator=g, dtype=torch.float64)
    k = torch.randn(2, kv_heads, k_len, 32, generator=g, dtype=torch.float64)
    v = torch.randn(2, kv_heads, k_len, 32, generator=g, dtype=torch.float64)
    mask = causal_mask(q_len, k_len)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1), attn_mask=mask)
    got = reference_attention(q, k, v)
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


def test_reference_honours_keep_mask_per_head():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 9, 16, generator=g) for _ in range(3))
    keep = torch.rand(1, 2, 9, 9, generator=g) > 0.5
    keep |= torch.eye(9, dtype=torch.bool)  # every row keeps its own key, so no row is empty
    allowed = keep & causal_mask(9, 9)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(reference_attention(q, k, v, keep=keep), expected, atol=1e-5, rtol=1e-5)


def test_rejects_head_counts_that_do_not_group():
    q = torch.randn(1, 5, 4, 8)
    k = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="multiple"):
        reference_attention(q, k, k)
