"""When a sparse layer should run dense instead: the selected density above which the sparse path is predicted
no faster than dense attention at that length.

The limit comes from the kernel benchmark (scripts/bench_attention.py, cuDNN dense vs stages + sparse kernel in
one process): sparse time / dense time ~= stages(L) + ratio(L) * density, so the sparse path pays while
density < (1 - stages(L)) / ratio(L). DENSE_LIMITS holds that limit per length (H100, D=128, 32/8 heads, bf16);
between lengths it is interpolated in log2(length), below the first it is 0 (always dense), above the last it
stays at the last. A method's `dense_above` option overrides it: -1 = this table, 0 = always dense, 1 = never.
"""
import math

# (length, density limit); from results/bench/attention_<gpu>.csv, see results/bench/NOTES.md "never slower"
DENSE_LIMITS: tuple[tuple[int, float], ...] = (
    (8192, 0.0),     # stages + launch overhead alone cost more than cuDNN's whole causal attention
    (16384, 0.15),
    (32768, 0.40),
    (65536, 0.46),
    (131072, 0.50),
)


def dense_limit(length: int, dense_above: float = -1.0) -> float:
    """Selected density above which dense is predicted faster at this length (dense_above >= 0 overrides)."""
    if dense_above >= 0:
        return dense_above
    if length <= DENSE_LIMITS[0][0]:
        return DENSE_LIMITS[0][1]
    for (l0, d0), (l1, d1) in zip(DENSE_LIMITS, DENSE_LIMITS[1:]):
        if length <= l1:
            t = (math.log2(length) - math.log2(l0)) / (math.log2(l1) - math.log2(l0))
            return d0 + t * (d1 - d0)
    return DENSE_LIMITS[-1][1]


def run_dense(density: float, length: int, dense_above: float = -1.0) -> bool:
    """True when a layer whose selected (or predicted) density is `density` should run dense attention."""
    limit = dense_limit(length, dense_above)
    return limit < 1.0 and density >= limit
