"""The sweep's time estimate: time per prompt token measured so far, times the tokens of the cells left."""
import time

from harness.running.estimate import Estimate, duration


def test_the_estimate_scales_the_measured_rate_by_the_tokens_left(monkeypatch):
    clock = iter([0.0, 10.0, 10.0, 30.0])  # two cells: 10 s at 100 tokens, 20 s at 200 tokens
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    estimate = Estimate(cells=5, tokens=100 + 200 + 100 + 400 + 400)
    estimate.cell_done(100, None)  # done before (a resumed cell): passed, not measured
    first = estimate.cell_done(100, estimate.start())
    assert first is not None and "about 3 cell(s)" in first  # printed after the first measured cell
    assert estimate.left() == 10 / 100 * (1200 - 200)
    second = estimate.cell_done(200, estimate.start())
    assert second is not None  # and after the second
    assert estimate.left() == 30 / 300 * (1200 - 400)  # 0.1 s per token x 800 tokens left = 80 s
    assert "about 80 s left for about 2 cell(s)" in second


def test_ranks_share_what_is_left():
    estimate = Estimate(cells=8, tokens=800, ranks=2)
    estimate.seconds, estimate.measured, estimate.measured_tokens = 10.0, 1, 100
    assert estimate.left() == 0.1 * 800 / 2


def test_durations_read_naturally():
    assert [duration(s) for s in (5, 600, 7200)] == ["5 s", "10 min", "2.0 h"]
