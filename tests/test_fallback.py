"""The dense fallback rule (attention/fallback.py): run dense exactly when the selected density reaches the limit."""
import pytest

from attention.fallback import DENSE_LIMITS, dense_limit, run_dense


@pytest.mark.parametrize("length,limit", DENSE_LIMITS)
def test_both_sides_of_the_measured_limit(length, limit):
    assert dense_limit(length) == limit
    if limit > 0:
        assert not run_dense(limit - 1e-3, length)
    assert run_dense(limit + 1e-3, length) or limit + 1e-3 > 1
    assert run_dense(limit, length)


def test_limit_between_and_beyond_the_measured_lengths():
    (l0, d0), (l1, d1) = DENSE_LIMITS[1], DENSE_LIMITS[2]
    middle = int((l0 * l1) ** 0.5)  # halfway in log2(length)
    assert dense_limit(middle) == pytest.approx((d0 + d1) / 2, abs=1e-3)
    assert dense_limit(DENSE_LIMITS[0][0] // 4) == DENSE_LIMITS[0][1]
    assert dense_limit(DENSE_LIMITS[-1][0] * 8) == DENSE_LIMITS[-1][1]


def test_option_overrides_the_table():
    assert run_dense(0.0, 1 << 20, dense_above=0.0)       # 0: always dense
    assert not run_dense(1.0, 1024, dense_above=1.0)       # 1: never dense
    assert run_dense(0.31, 131072, dense_above=0.3) and not run_dense(0.29, 131072, dense_above=0.3)
