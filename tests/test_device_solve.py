"""bisect_on_device finds the same knob as a plain host bisection on step-shaped densities."""
import pytest
import torch

from attention.device_solve import bisect_on_device


def solve(density_of, target: float, low: float, high: float, steps: int = 24, geometric: bool = False) -> float:
    """The host bisection the peers used before (one sync per step): the reference."""
    lo, hi = low, high
    for _ in range(steps):
        mid = (lo * hi) ** 0.5 if geometric else (lo + hi) / 2
        lo, hi = (mid, hi) if density_of(mid) < target else (lo, mid)
    return lo if abs(density_of(lo) - target) < abs(density_of(hi) - target) else hi


def staircase(seed: int):
    """A random non-decreasing step function of x in [0, 1], as a kept share is of a threshold."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.rand(40, generator=g).sort().values
    levels = torch.rand(41, generator=g).sort().values
    return lambda x: levels[torch.searchsorted(edges, torch.as_tensor(x, dtype=torch.float32))]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.05, 0.2, 0.5, 0.93])
def test_device_bisection_reaches_what_the_host_bisection_reaches(seed, target):
    density = staircase(seed)
    knob = bisect_on_device(density, target, 0.0, 1.0, steps=24)
    host = solve(lambda x: float(density(x)), target, 0.0, 1.0, steps=24)
    assert knob.dim() == 0 and knob.dtype == torch.float32
    assert abs(float(density(knob)) - target) == pytest.approx(abs(float(density(host)) - target), abs=1e-6)


def test_twelve_steps_land_on_the_closest_level():
    density = staircase(3)
    knob = bisect_on_device(density, 0.4, 0.0, 1.0)
    grid = torch.linspace(0, 1, 100001)
    best = (density(grid) - 0.4).abs().min()
    assert float((density(knob) - 0.4).abs()) <= float(best) + 1e-6


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.03, 0.2, 0.6])
def test_a_geometric_bisection_reaches_what_the_host_reaches_on_a_log_scale(seed, target):
    """MInference's ratio spans 1e-4 .. 30: its staircase's edges are spread on a log scale, where a geometric
    bisection lands on the closest level as the host's does."""
    g = torch.Generator().manual_seed(seed)
    edges = (10 ** (torch.rand(40, generator=g) * 5 - 4)).sort().values  # 1e-4 .. 10
    levels = torch.rand(41, generator=g).sort().values

    def density(x):
        return levels[torch.searchsorted(edges, torch.as_tensor(x, dtype=torch.float32))]

    knob = bisect_on_device(density, target, 1e-5, 30.0, steps=16, geometric=True)
    host = solve(lambda x: float(density(x)), target, 1e-5, 30.0, steps=16, geometric=True)
    grid = 10 ** torch.linspace(-5, 1.47, 200001)
    best = float((density(grid) - target).abs().min())
    assert abs(float(density(knob)) - target) == pytest.approx(abs(float(density(host)) - target), abs=1e-6)
    assert float((density(knob) - target).abs()) <= best + 1e-6
    with pytest.raises(ValueError, match="low > 0"):
        bisect_on_device(density, target, 0.0, 30.0, geometric=True)
