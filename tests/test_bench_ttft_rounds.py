"""bench_ttft's interleaved rounds: each round starts one method later, so no method always follows the same one."""
from scripts.bench_ttft import rotated


def test_each_round_starts_one_method_later_and_keeps_every_method_once():
    methods = ["none", "dense:backend=cudnn", "dense:backend=flash", "sample"]
    orders = [rotated(methods, r) for r in range(1, 5)]
    assert orders[0] == ["dense:backend=cudnn", "dense:backend=flash", "sample", "none"]
    assert orders[3] == methods
    assert all(sorted(o) == sorted(methods) for o in orders)
    assert len({o[0] for o in orders}) == len(methods)  # every method leads one round
    assert rotated([], 3) == []
