"""The peers' default estimates: no host sync and a fixed launch count (counted on the CPU, as the CUDA path issues
them), and the CUDA-graph replay plumbing of attention.peer_estimation.estimate, with a stand-in for the capture
(the real capture needs CUDA: scripts/check_estimate_graphs.py runs it there)."""
import warnings

import pytest
import torch

import attention.peer_estimation as peer_estimation
from attention.backend import use_backend
from attention.registry import build_method
from scripts.count_launches import count

PEERS = ["flexprefill", "xattention", "minference"]
LENGTH = 1152  # past FlexPrefill's dense length at its defaults (1024), not a multiple of 256


@pytest.mark.parametrize("name", PEERS)
def test_default_estimate_has_no_host_sync_and_few_launches(name):
    counts = count(name, {}, LENGTH, heads=4, kv_heads=2, dim=16, skip=False)
    assert not counts.syncs, dict(counts.syncs)
    triton = sum(v for op, v in counts.ops.items() if op.startswith("triton:"))
    assert triton >= 1  # the fused kernels ran (the count is of the CUDA path)
    # at 2578dde: 160 / 37 / 82; the budget pins the gains (a regression adds launches). FlexPrefill 64 -> 10: the
    # fused chain of attention/kernels/flex_estimate.py (tests/test_flex_estimate.py)
    budget = {"flexprefill": 10, "xattention": 2, "minference": 14}[name]  # xattention: score + select kernels
    assert sum(counts.ops.values()) <= budget, counts.ops.most_common()


def fake_capture(calls):
    """A stand-in for peer_estimation.capture: warm-up run, then 'replay' reruns fn on the statics and writes the
    results into the outputs it handed out, as a graph rewrites its static outputs."""
    def capture(fn, statics):
        calls.append(len(statics))
        fn(*statics)
        outputs = fn(*statics)

        def replay():  # a graph writes its outputs whatever the caller's autograd mode: so does this
            with torch.inference_mode():
                for out, new in zip(outputs, fn(*statics)):
                    if out is not None:
                        out.copy_(new)
        return outputs, replay
    return capture


def tensors_of(pattern):
    names = ("blocks", "columns", "band_offsets", "slashes")
    return [getattr(pattern, n) for n in names if getattr(pattern, n, None) is not None]


def qk(seed, length=LENGTH, heads=4, kv_heads=2, dim=16):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, length, dim, generator=gen) * 1.5,
            torch.randn(1, kv_heads, length, dim, generator=gen))


SPARSER = {"flexprefill": {"min_budget": "128", "gamma": "0.6"}, "xattention": {"threshold": "0.4"},  # sparse here
           "minference": {"vertical_size": "100", "slash_size": "200"}}


SOLVES = [("xattention", {"density": "0.5"}), ("minference", {"density": "0.5"}),  # density= solves on the device
          ("flexprefill", {"density": "0.35", "block": "64", "min_budget": "64"})]  # (settings whose layers differ)


@pytest.mark.parametrize("name, options", [(name, SPARSER[name]) for name in PEERS] + SOLVES)
def test_graph_replay_gives_the_eager_patterns_layer_after_layer(name, options, monkeypatch):
    calls = []
    inputs = [qk(1), qk(2), qk(3, length=LENGTH + 40)]
    with use_backend("torch"):
        eager = [build_method(name, options).build_pattern(q, k, 0.25, i) for i, (q, k) in enumerate(inputs)]
    monkeypatch.setattr(peer_estimation, "graphs_enabled", lambda device: True)
    monkeypatch.setattr(peer_estimation, "capture", fake_capture(calls))
    method = build_method(name, options)
    with use_backend("torch"):
        graphed = [method.build_pattern(q, k, 0.25, i) for i, (q, k) in enumerate(inputs)]
    assert len(calls) == 2  # one capture per shape: layers 0 and 1 share it, the longer input captures anew
    for want, got in zip(eager, graphed):  # earlier patterns are copies: later replays did not overwrite them
        assert [torch.equal(a, b) for a, b in zip(tensors_of(want), tensors_of(got))] == [True] * len(tensors_of(want))
    first, second = tensors_of(graphed[0]), tensors_of(graphed[1])
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # the inputs did matter


def test_a_failed_capture_runs_eagerly_and_says_so_once(monkeypatch):
    def broken(fn, statics):
        raise RuntimeError("operation not permitted when stream is capturing")

    q, k = qk(4)
    with use_backend("torch"):
        want = build_method("xattention", {}).build_pattern(q, k, 0.25)
    monkeypatch.setattr(peer_estimation, "graphs_enabled", lambda device: True)
    monkeypatch.setattr(peer_estimation, "capture", broken)
    method = build_method("xattention", {})
    with use_backend("torch"), pytest.warns(UserWarning, match="running eagerly"):
        first = method.build_pattern(q, k, 0.25)
    with use_backend("torch"), warnings.catch_warnings():
        warnings.simplefilter("error")
        again = method.build_pattern(q, k, 0.25)  # no second warning: the failure is remembered
    assert torch.equal(first.blocks, want.blocks) and torch.equal(again.blocks, want.blocks)


def test_graph_replay_takes_each_layers_head_thresholds(tmp_path, monkeypatch):
    """XAttention's per-head thresholds are a graph input: each layer's own reach the replay."""
    path = tmp_path / "thresholds.json"
    path.write_text("[[0.3, 0.9, 0.5, 0.95], [0.95, 0.3, 0.9, 0.5]]")
    options = {"thresholds": str(path)}
    q, k = qk(5)
    with use_backend("torch"):
        eager = [build_method("xattention", options).build_pattern(q, k, 0.25, layer) for layer in (0, 1)]
    monkeypatch.setattr(peer_estimation, "graphs_enabled", lambda device: True)
    monkeypatch.setattr(peer_estimation, "capture", fake_capture(calls := []))
    method = build_method("xattention", options)
    with use_backend("torch"):
        graphed = [method.build_pattern(q, k, 0.25, layer) for layer in (0, 1)]
    assert len(calls) == 1 and not torch.equal(eager[0].blocks, eager[1].blocks)
    assert all(torch.equal(e.blocks, g.blocks) for e, g in zip(eager, graphed))


@pytest.mark.parametrize("n", [1, 7, 130, 1500])
def test_head_choice_kernel_matches_the_plain_js_distance(n):
    """FlexPrefill's fused head choice (interpreted) against softmax + peer_estimation.js_distance, with zero tiles,
    rows that nearly agree and rows that differ, on a [B, H, 2, n] slice as the method passes it."""
    from attention.kernels.head_choice import js_distance_from_logits

    gen = torch.Generator().manual_seed(n)
    logits = torch.randn(2, 3, n, generator=gen) * 3
    stacked = torch.rand(2, 3, 2, n, generator=gen)
    stacked[..., 0, 1::3] = 0.0
    stacked[0, 0, 0] = torch.softmax(logits[0, 0], -1)  # the same distribution: distance ~0
    tiles = stacked[:, :, 0]
    tiles /= tiles.sum(-1, keepdim=True)
    want = peer_estimation.js_distance(torch.softmax(logits, -1), tiles)
    got = js_distance_from_logits(logits, tiles)
    assert not got.isnan().any() and (n == 1 or float(want.max()) > 0.1)  # one tile: both are [1]
    # compared as divergences: the square root magnifies rounding near 0 (1e-9 -> 3e-5), far below tau = 0.1
    torch.testing.assert_close(got.square(), want.square(), atol=1e-7, rtol=1e-5)


def test_graph_statics_made_under_inference_mode_take_later_calls_outside_it(monkeypatch):
    monkeypatch.setattr(peer_estimation, "graphs_enabled", lambda device: True)
    monkeypatch.setattr(peer_estimation, "capture", fake_capture([]))
    method = build_method("xattention", {"threshold": "0.4"})
    q, k = qk(6)
    with use_backend("torch"):
        with torch.inference_mode():
            first = method.build_pattern(q, k, 0.25)
        with torch.no_grad():
            again = method.build_pattern(q, k, 0.25)
    assert torch.equal(first.blocks, again.blocks)


def test_ranking_long_rows_in_groups_equals_one_flat_sort(monkeypatch):
    """Past torch's INT_MAX elements per sort (XAttention's tile grid at 1M tokens x 32 heads) whole rows are
    ranked in groups: the same values and order as one flat sort, ties to the lower index."""
    from attention import peer_estimation

    monkeypatch.setattr(peer_estimation, "LONG_ROWS", 8)
    scores = torch.randint(0, 5, (2, 3, 5, 20)).float()  # many ties
    whole = peer_estimation.ranked(scores)
    monkeypatch.setattr(peer_estimation, "FLAT_MAX", 45)  # two rows of 20 per group, 15 groups
    grouped = peer_estimation.ranked(scores)
    assert torch.equal(whole[0], grouped[0]) and torch.equal(whole[1], grouped[1])
    assert grouped[0].shape == scores.shape and peer_estimation.ranked(scores, values=False)[0] is None
    want = torch.sort(scores, dim=-1, descending=True, stable=True)
    assert torch.equal(grouped[1], want.indices)


def test_minference_density_solve_replays_from_one_graph_per_shape(monkeypatch):
    """MInference's density= solve (16 bisection steps over its k_len-wide lists, no host sync) is captured once
    per shape and replayed: the same ratio and pattern as eager, layer after layer."""
    options = {"density": "0.3"}
    inputs = [qk(1), qk(2)]
    with use_backend("torch"):
        eager_method = build_method("minference", options)
        eager = [eager_method.build_pattern(q, k, 0.25, i) for i, (q, k) in enumerate(inputs)]
    monkeypatch.setattr(peer_estimation, "graphs_enabled", lambda device: True)
    monkeypatch.setattr(peer_estimation, "capture", fake_capture(calls := []))
    method = build_method("minference", options)
    ratios = []
    with use_backend("torch"):
        graphed = []
        for i, (q, k) in enumerate(inputs):
            graphed.append(method.build_pattern(q, k, 0.25, i))
            ratios.append(method.knobs["ratio"])
    assert len(calls) == 1 and 0 < min(ratios)
    assert any(not torch.equal(a, b) for a, b in zip(*map(tensors_of, graphed)))  # the inputs did matter
    for want, got in zip(eager, graphed):
        assert [torch.equal(a, b) for a, b in zip(tensors_of(want), tensors_of(got))] == [True] * len(tensors_of(want))
