"""Stage 2 in Triton (attention/kernels/column_select.py, CPU interpreter) against the plain PyTorch selection."""
import pytest
import torch

from attention import kv_filter
from attention.density import base_cells, pattern_density
from attention.kernels import column_select
from attention.kernels.column_select import select_columns, select_top
from attention.kernels.prefill import column_attention
from attention.pattern import SparsePattern
from attention.reference import reference_attention
from tests.kernel_helpers import kernel_attention as sparse_attention, random_qkv, rel_err


def stable_rank(scores):
    return scores.double().sort(dim=-1, descending=True, stable=True)


def ref_mass(scores, alpha):
    """kv_filter.top_mass with a stable sort in fp64 (ties broken by lower index first)."""
    if alpha >= 1.0:
        return torch.ones_like(scores, dtype=torch.bool)
    values, order = stable_rank(scores)
    csum = values.cumsum(-1)
    count = (csum < alpha * csum[..., -1:]).sum(-1, keepdim=True) + 1
    ranked = (torch.arange(scores.shape[-1]) < count) & (values > 0)
    return torch.zeros_like(ranked).scatter(-1, order, ranked)


def ref_area(scores, area, budget):
    values, order = stable_rank(scores)
    csum = area.double().expand_as(scores).gather(-1, order).cumsum(-1)
    return torch.zeros_like(csum, dtype=torch.bool).scatter(-1, order, csum <= budget)


def as_mask(idx, n):
    keep = torch.zeros(*idx.shape[:-1], n + 1, dtype=torch.bool)
    keep.scatter_(-1, torch.where(idx >= 0, idx.long(), n), True)
    return keep[..., :n]


def column_area(n, q_len, window, sink):
    keys = torch.arange(n)
    area = (n - torch.clamp(keys + window, min=n - q_len)).clamp(min=0)
    return torch.where(keys >= sink, area, 0)


def cases():
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(2, 3, 1500, generator=g) ** 8            # lengths off the block, one row spans two tiles
    ties = torch.randint(0, 4, (2, 2, 300), generator=g).float() / 4  # many ties and zeros
    return {"random": rand, "ties": ties, "zeros": torch.zeros(1, 2, 70), "equal": torch.full((1, 1, 333), 0.25),
            "one": torch.tensor([[[0.7]]]), "spike": torch.tensor([[[0.0, 0.0, 5.0, 0.0, 1e-30]]])}


@pytest.mark.parametrize("name", list(cases()))
@pytest.mark.parametrize("alpha", [1.0, 0.95, 0.5, 1e-6])
def test_mass_rule_matches_pytorch(name, alpha):
    scores = cases()[name]
    got = select_top(scores, alpha=alpha)
    want = ref_mass(scores, alpha)
    assert torch.equal(as_mask(got, scores.shape[-1]), want)
    # ascending, compacted, -1 after the kept ones
    count = want.sum(-1, keepdim=True)
    slots = torch.arange(scores.shape[-1])
    assert torch.equal(got < 0, slots >= count)
    assert (got[..., 1:] > got[..., :-1])[(slots[1:] < count)].all()
    if name == "random":  # no ties: the shipped (unstable-sort) selection agrees too
        assert torch.equal(as_mask(got, scores.shape[-1]), kv_filter.top_mass(scores, alpha))


@pytest.mark.parametrize("name", ["random", "ties", "zeros", "equal", "one"])
@pytest.mark.parametrize("share", [0.0, 0.05, 0.3, 1.0])
def test_area_rule_matches_pytorch(name, share):
    scores = cases()[name]
    n = scores.shape[-1]
    window, sink = max(1, n // 20), min(4, n)
    area = column_area(n, n, window, sink)
    budget = share * float(area.sum())
    got = as_mask(select_top(scores, budget=budget, exclude=sink, window=window), n)
    want = ref_area(scores * (torch.arange(n) >= sink), area, budget) & (torch.arange(n) >= sink)
    assert torch.equal(got, want)


def test_excluded_entries_never_kept():
    scores = torch.rand(1, 2, 200, generator=torch.Generator().manual_seed(1))
    got = as_mask(select_top(scores, alpha=0.99, exclude=50), 200)
    assert not got[..., :50].any()
    assert torch.equal(got, ref_mass(scores * (torch.arange(200) >= 50), 0.99))


@pytest.mark.parametrize("seq,heads,kv,window,sink,alpha,density",
                         [(150, 4, 2, 12, 4, 0.9, None), (333, 2, 1, 40, 2, None, 0.3), (70, 3, 3, 5, 0, 0.5, None)])
def test_fused_columns_run_the_same_pattern(seq, heads, kv, window, sink, alpha, density):
    q, k, v = random_qkv(seq, heads, kv, 64, seed=seq, stripes=0.05)
    col = torch.rand(1, heads, seq, generator=torch.Generator().manual_seed(seq)) ** 4
    base, causal = base_cells(seq, seq, window, sink)
    budget = None if density is None else max(0.0, density * causal - base)
    cols, col_full, col_hi, dens = select_columns(col, sink=sink, window=window, q_len=seq, block_m=64,
                                                  base_cells=base, causal_cells=causal, alpha=alpha, budget=budget)
    pattern = SparsePattern(sink=sink, window=window, columns=cols.long())
    # the kept columns are exactly the plain selection's, with the sinks in front
    area = column_area(seq, seq, window, sink)
    zeroed = col * (torch.arange(seq) >= sink)
    want = ref_mass(zeroed, alpha) if density is None else ref_area(zeroed, area, budget)
    want |= torch.arange(seq) < sink
    assert torch.equal(as_mask(cols, seq), want)
    assert torch.allclose(dens, pattern_density(pattern, 1, heads, seq, seq, "cpu"), atol=1e-6)
    # col_full / col_hi are the launcher's searchsorted ranges over the sorted list
    c = torch.where(cols >= 0, cols.long(), 1 << 30)
    first = torch.arange(0, seq, 64)
    last = (first + 63).clamp(max=seq - 1)
    assert torch.equal(col_full.long(), torch.searchsorted(c, (first - window).expand(1, heads, -1).contiguous(),
                                                           right=True))
    assert torch.equal(col_hi.long(), torch.searchsorted(c, (last - window).expand(1, heads, -1).contiguous(),
                                                         right=True))
    assert rel_err(sparse_attention(q, k, v, pattern, 0.125), sparse_attention(q, k, v, SparsePattern(
        sink=sink, window=window, columns=torch.where(want, torch.arange(seq), -1)), 0.125)) == 0.0


def test_column_attention_is_the_launcher_s_result():
    q, k, v = random_qkv(140, 4, 2, 64, seed=11, stripes=0.05)
    col = torch.rand(1, 4, 140, generator=torch.Generator().manual_seed(2)) ** 4
    base, causal = base_cells(140, 140, 9, 3)
    cols, col_full, col_hi, _ = select_columns(col, sink=3, window=9, q_len=140, block_m=128, base_cells=base,
                                               causal_cells=causal, alpha=0.8)
    got = column_attention(q, k, v, 0.125, window=9, cols=cols, col_full=col_full, col_hi=col_hi, block_m=128)
    # the launcher adds the sinks again (repeats skipped): same set, other chunking, so bf16 rounding may differ
    want = reference_attention(q, k, v, SparsePattern(sink=3, window=9, columns=cols.long()).keep_mask(1, 4, 140, 140),
                               0.125)
    launcher = sparse_attention(q, k, v, SparsePattern(sink=3, window=9, columns=cols.long()), 0.125)
    assert rel_err(got, want) <= 1.5 * rel_err(launcher, want) + 1e-4


@pytest.mark.parametrize("path", ["portable", "tma"])
def test_sample_fused_prefill_on_each_kernel_path_matches_its_pattern(path):
    """SampleAttention's fused column path on the portable and the Hopper (TMA) kernel, under the interpreter:
    the output equals the fp32 reference under the pattern the same method builds on the base path."""
    from attention.backend import use_backend
    from attention.registry import build_method
    from tests.kernel_helpers import bf16_torch_attention

    from attention.kernels.config import override

    q, k, v = random_qkv(150, 4, 2, 64, seed=11, stripes=0.05)
    method = build_method("sample", {"density": "0.3", "dense_above": "1"})
    with use_backend("triton"), override(sparse_path=path):
        out = method.prefill(q, k, v, 0.125)
        keep = method.build_pattern(q, k, 0.125).keep_mask(1, 4, 150, 150)
    assert not out.isnan().any()
    ref = reference_attention(q, k, v, keep, 0.125)
    assert rel_err(out, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, 0.125), ref)


@pytest.mark.parametrize("name", list(cases()))
@pytest.mark.parametrize("alpha", [0.95, 0.5, 1e-6])
def test_fused_mass_threshold_from_the_sort_keeps_what_the_search_keeps(name, alpha):
    """select_columns takes the mass threshold from mass_threshold (a device sort) instead of the kernel's k-ary
    search: the same kept set as select_top's search, ties and zeros included (sinks aside)."""
    scores = cases()[name]
    n, sink = scores.shape[-1], min(2, scores.shape[-1] - 1)
    base, causal = base_cells(n, n, 1, sink)
    cols = select_columns(scores, sink=sink, window=1, q_len=n, block_m=64, base_cells=base, causal_cells=causal,
                          alpha=alpha)[0]
    searched = as_mask(select_top(scores, alpha=alpha, exclude=sink), n)
    fused = as_mask(cols, n)
    fused[..., :sink] = False
    assert torch.equal(fused, searched)


@pytest.mark.parametrize("name", list(cases()))
@pytest.mark.parametrize("share", [1.0, 0.3, 0.05, 0.0])
def test_fused_area_threshold_from_the_sort_keeps_what_the_search_keeps(name, share, monkeypatch):
    """select_columns takes the area threshold from area_threshold (a device sort; from AREA_SORT_FROM keys, here
    from 0) instead of the kernel's k-ary search: the same kept set as select_top's search and the stable fp64
    reference, ties and zeros included."""
    monkeypatch.setattr(column_select, "AREA_SORT_FROM", 0)
    scores = cases()[name]
    n, sink = scores.shape[-1], min(2, scores.shape[-1] - 1)
    for window, q_len in ((1, n), (max(1, n // 7), max(1, n // 2))):  # q_len < k_len: columns' areas shift
        area = column_area(n, q_len, window, sink)
        budget = share * float(area.sum()) + 0.5 * (share not in (0.0, 1.0))  # off the integers too
        base, causal = base_cells(q_len, n, window, sink)
        sorted_out = select_columns(scores, sink=sink, window=window, q_len=q_len, block_m=64, base_cells=base,
                                    causal_cells=causal, budget=budget)
        searched_out = select_columns(scores, sink=sink, window=window, q_len=q_len, block_m=64, base_cells=base,
                                      causal_cells=causal, budget=budget, area_sort=False)  # the kernel's search
        assert all(torch.equal(a, b) for a, b in zip(sorted_out, searched_out)), (window, q_len)
        cols = sorted_out[0]
        searched = as_mask(select_top(scores, budget=budget, exclude=sink, window=window, q_len=q_len), n)
        fused = as_mask(cols, n)
        fused[..., :sink] = False
        assert torch.equal(fused, searched), (window, q_len)
        want = ref_area(scores * (torch.arange(n) >= sink), area, budget) & (torch.arange(n) >= sink)
        assert torch.equal(fused, want), (window, q_len)
