"""FlexPrefill's fused estimate (attention/kernels/flex_estimate.py, interpreted here) gives the same masks, head
choices and solved gamma as the statistics it replaces: the PyTorch path, and the Triton path without the fusion
(override(flex_fused=False): stage-1 sums + head-choice kernel + PyTorch rankings), on random q/k with awkward lengths (not a
multiple of the block, queries the last q_len of k_len, batch 2); and in a fixed number of launches."""
import pytest
import torch

from attention.backend import use_backend
from attention.kernels.config import override
from attention.peer_estimation import block_pool_mean
from attention.registry import build_method
from scripts.count_launches import count


def qk(q_len, k_len, batch=1, heads=4, kv_heads=2, dim=16, seed=0, spread=2.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=gen) * spread
    k = torch.randn(batch, kv_heads, k_len, dim, generator=gen)
    return q, k


def patterns(q, k, options):
    """(fused Triton, unfused Triton, PyTorch): each one's (blocks, query-aware share, gamma)."""
    options = {key: str(v) for key, v in options.items()}
    out = []
    for backend, fused in (("triton", True), ("triton", False), ("torch", True)):
        method = build_method("flexprefill", options)
        with use_backend(backend), override(flex_fused=fused):
            if backend == "triton":
                assert method.fused(q, k) == fused
            blocks = method.build_pattern(q, k, 0.25).blocks
        out.append((blocks, method.knobs["query_aware"], method.knobs["gamma"]))
    return out


CASES = [  # (q_len, k_len, batch, options)
    (200, 200, 1, {"block": 16, "min_budget": 16, "gamma": 0.6}),
    (131, 131, 2, {"block": 16, "min_budget": 32, "gamma": 0.9, "tau": 0.3}),       # short last tile, both kinds
    (150, 259, 1, {"block": 32, "min_budget": 32, "gamma": 0.8, "tau": 0.2}),       # queries the last 150 of 259
    (180, 180, 1, {"block": 12, "min_budget": 0, "max_budget": 48, "gamma": 0.95, "tau": 0.5}),  # block not 2^k
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_default_masks_equal_the_current_paths(case):
    q_len, k_len, batch, options = CASES[case]
    q, k = qk(q_len, k_len, batch, seed=case)
    (fused, f_aware, _), (unfused, u_aware, _), (plain, p_aware, _) = patterns(q, k, options)
    assert torch.equal(fused, unfused) and torch.equal(fused, plain)
    assert torch.equal(f_aware, u_aware) and torch.equal(f_aware, p_aware)
    n = fused.shape[-1]
    kept = int(fused.sum())
    assert 0 < kept < batch * 4 * n * (n + 1) // 2  # sparse: the selection did something


def test_fused_masks_with_both_head_kinds_and_ties():
    """tau = 1: every head query-aware (the grid cut matters); repeated keys make exact ties in the tile grid and
    among tile sums (ties go to the lower index on every path)."""
    q, k = qk(160, 160, seed=7)
    k[:, :, 16:48] = k[:, :, 48:80]          # two key tiles equal to two others: tied grid entries
    (fused, aware, _), (unfused, _, _), (plain, _, _) = patterns(q, k, {"block": 16, "min_budget": 16, "gamma": 0.7,
                                                                         "tau": 1.0})
    assert bool(aware.all())
    assert torch.equal(fused, unfused) and torch.equal(fused, plain)


DENSITY_CASES = [  # (q_len, k_len, batch, options)
    (192, 192, 1, {"block": 16, "min_budget": 16, "tau": 0.2, "density": 0.3}),
    (131, 131, 2, {"block": 16, "min_budget": 32, "tau": 0.3, "density": 0.5}),
    (150, 259, 1, {"block": 32, "min_budget": 32, "tau": 1.0, "density": 0.2}),   # every head query-aware
    (180, 180, 1, {"block": 12, "min_budget": 0, "max_budget": 48, "tau": 0.0, "density": 0.25}),  # none
]


def test_fused_solve_bisects_as_many_steps_as_the_device_solve():
    import inspect

    from attention.device_solve import bisect_on_device
    from attention.kernels.flex_estimate import RESOLUTION, STEPS

    assert STEPS == inspect.signature(bisect_on_device).parameters["steps"].default and RESOLUTION == 2 ** STEPS


@pytest.mark.parametrize("case", range(len(DENSITY_CASES)))
def test_fused_density_solve_equals_the_current_paths(case):
    """The solve in three launches (flex_solve: first steps, histogram, bisection) finds the gamma the device
    bisection finds, and the same masks."""
    q_len, k_len, batch, options = DENSITY_CASES[case]
    q, k = qk(q_len, k_len, batch, seed=10 + case)
    (fused, f_aware, f_gamma), (unfused, u_aware, u_gamma), (plain, _, p_gamma) = patterns(q, k, options)
    assert float(f_gamma) == float(u_gamma) == float(p_gamma)
    assert 0 < float(f_gamma) < 1  # a solve, not a bound
    assert torch.equal(fused, unfused) and torch.equal(fused, plain)
    assert torch.equal(f_aware, u_aware)


@pytest.mark.parametrize("q_len,k_len,block", [(100, 100, 16), (37, 130, 32), (64, 64, 12)])
def test_pooled_blocks_equal_block_pool_mean(q_len, k_len, block):
    from attention.kernels.flex_estimate import pool_blocks

    q, _ = qk(q_len, k_len, batch=2)
    q = q.to(torch.bfloat16)
    padded = torch.nn.functional.pad(q, (0, 0, k_len - q_len, 0))
    torch.testing.assert_close(pool_blocks(q, block, k_len, 0.5), block_pool_mean(padded, block) * 0.5,
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("options,budget", [({}, 10), ({"density": "0.2"}, 13)])
def test_fused_estimate_launches(options, budget):
    """By construction, at any length: pool q, k (2) + stage-1 sums (2, + its zero fill) + statistics (2) + sort
    (1) + cut and mask (2) = 10 (was 63-65); density= adds the first steps, histogram and solve kernels (3) = 13
    (was 548). No host sync."""
    counts = count("flexprefill", options, 1152, heads=4, kv_heads=2, dim=16, skip=True)
    assert not counts.syncs
    assert sum(counts.ops.values()) <= budget, counts.ops.most_common()
    assert counts.ops["sort"] == 1 and counts.ops["triton:flex_mask_kernel"] == 1


@pytest.mark.parametrize("options", [{"block": 16, "min_budget": 16, "gamma": 0.6},
                                     {"block": 16, "min_budget": 16, "tau": 0.3, "density": 0.3}])
def test_running_sums_carried_across_chunks(options, monkeypatch):
    """The cut and first-step kernels walk a row in CHUNK entries (4096 on the GPU; every row here fits one): with
    32-entry chunks the running sum is carried across many of them, and the cut stops early, to the same masks."""
    import attention.kernels.flex_estimate as flex_estimate

    monkeypatch.setattr(flex_estimate, "CHUNK", 32)
    q, k = qk(200, 200, seed=21)
    (fused, f_aware, f_gamma), (unfused, _, u_gamma), _ = patterns(q, k, options)
    assert float(f_gamma) == float(u_gamma)
    assert torch.equal(fused, unfused)
