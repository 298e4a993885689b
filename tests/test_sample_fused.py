"""SampleAttention's fused column path (attention/sample_fused.py) against its pattern path (build_pattern +
executor.run_pattern): same columns, same attention within the 2x bf16 rule, on both kernel paths (interpreter)."""
import pytest
import torch

from attention.backend import use_backend
from attention.executor import run_pattern
from attention.kernels.config import override
from attention.reference import reference_attention
from attention.registry import build_method
from tests.kernel_helpers import bf16_torch_attention, random_qkv, rel_err


@pytest.mark.parametrize("path", ["portable", "tma"])
@pytest.mark.parametrize("dim,heads,kv,options", [(64, 7, 1, {}), (64, 4, 2, {"density": "0.25"}),
                                                  (128, 4, 2, {"alpha": "0.9"})])
def test_fused_path_and_pattern_path_agree(path, dim, heads, kv, options):
    seq = 190
    q, k, v = random_qkv(seq, heads, kv, dim, seed=dim + heads, stripes=0.04)
    method = build_method("sample", {"r_w": "0.1", "dense_above": "1", **options})
    with use_backend("triton"), override(sparse_path=path):
        fused = method.prefill(q, k, v, dim ** -0.5)
        pattern = method.build_pattern(q, k, dim ** -0.5)
        by_pattern = run_pattern(q, k, v, pattern, dim ** -0.5)
    keep = pattern.keep_mask(1, heads, seq, seq)
    ref = reference_attention(q, k, v, keep, dim ** -0.5)
    bar = rel_err(bf16_torch_attention(q, k, v, keep, dim ** -0.5), ref)
    assert not fused.isnan().any()
    assert rel_err(fused, ref) <= 2 * bar and rel_err(by_pattern, ref) <= 2 * bar
    # the fused selection's density is the pattern's (the same columns)
    assert torch.allclose(method.stats[-1]["density"].float(), method.density(pattern, q, k).float(), atol=1e-5)


def test_tma_route_sizes_its_buffer_by_the_kept_columns():
    from attention import sample_fused

    q, k, v = random_qkv(200, 4, 2, 64, seed=3, stripes=0.03)
    method = build_method("sample", {"r_w": "0.1", "dense_above": "1"})
    with use_backend("triton"), override(sparse_path="tma"):
        selected, window = method.stages(q, k, 0.125)
        needed = selected.needed().tolist()
        assert max(needed) < q.shape[2]  # fewer columns than keys: the buffer is trimmed
        out = sample_fused.attend(q, k, v, 0.125, window, selected, needed)
        pattern = method.build_pattern(q, k, 0.125)
    keep = pattern.keep_mask(1, 4, 200, 200)
    ref = reference_attention(q, k, v, keep, 0.125)
    assert rel_err(out, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, 0.125), ref)
