"""Mask diagnostics: density and recall equal brute force over the full mask; oracle top-k bounds every mask;
the diagnose subcommand writes diagnostics.jsonl and the report draws it."""
import json

import pytest
import torch

from attention import diagnostics as diag
from attention import hf
from attention.density import mask_density as density
from attention.pattern import SparsePattern
from attention.reference import attention_probs, causal_mask
from attention.registry import AttentionMethod, build_method
from harness.cli import main
from harness.running.diagnose import Diagnosing
from tests.tiny_models import tiny_model

LENGTH = 203  # not a multiple of any block size used below


def inputs(batch=2, heads=4, kv_heads=2, length=LENGTH, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, dim, generator=gen) * 2.0  # peaked rows: sparse masks lose mass
    k = torch.randn(batch, kv_heads, length, dim, generator=gen) * 2.0
    k[:, :, :4] += 1.5 * q[:, :1, -1:]  # sink-like keys that late queries favour
    return q, k, dim ** -0.5


METHODS = {
    "sample": ("sample", {"alpha": "0.8", "r_w": "0.05", "r_row": "0.1"}),
    "sample-slash": ("sample", {"pattern": "column_slash", "alpha_c": "0.7", "alpha_s": "0.7", "r_w": "0.05"}),
    "bigbird": ("bigbird", {"block": "16", "random_blocks": "2", "global_blocks": "1", "window_blocks": "2"}),
    "streaming": ("streaming", {"window": "24", "n_sink": "2"}),
    # MInference's 64-key bands (attention/bands.py): kept share in closed form, keep masks of the sampled rows' blocks
    "minference": ("minference", {"vertical_size": "4", "slash_size": "5", "init_columns": "2",
                                  "local_diagonals": "3", "last_q": "16"}),
    "minference-density": ("minference", {"density": "0.3", "init_columns": "2", "local_diagonals": "3",
                                          "last_q": "16"}),
    "oracle-topk": ("oracle-topk", {"density": "0.15"}),
    "h2o": ("h2o", {}),
    "dense": ("dense", {}),
}


def full_keep(method, q, k, scale, layer):
    """The method's whole [B, H, S, S] mask from its own keep_mask (dense methods: causal)."""
    keep = method.keep_mask(q, k, scale, layer_idx=layer)
    causal = causal_mask(q.shape[2], k.shape[2])
    return causal.expand(q.shape[0], q.shape[1], -1, -1) if keep is None else keep & causal


def brute_force(method, q, k, scale, rows, layer=3):
    keep = full_keep(method, q, k, scale, layer)
    row_recall = (attention_probs(q, k, scale=scale) * keep).sum(-1)[:, :, rows]  # [B, H, R]
    return density(keep).mean(0), row_recall, keep


@pytest.mark.parametrize("key", sorted(METHODS))
def test_recall_and_density_equal_brute_force(key):
    q, k, scale = inputs()
    method = build_method(*METHODS[key])
    rows = diag.sample_rows(LENGTH, 24, seed=1)
    got = diag.layer_diagnostics(method, q, k, scale, layer_idx=3, rows=rows)
    want_density, row_recall, _ = brute_force(method, q, k, scale, rows)
    torch.testing.assert_close(torch.tensor(got["density"]), want_density, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(got["recall_mean"]), row_recall.mean((0, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(got["recall_min"]), row_recall.amin((0, 2)), atol=1e-5, rtol=0)
    assert got["worst_row"] == rows[row_recall[0].argmin(-1)].tolist()
    assert got["heads"] == 4 and got["kv_heads"] == 2 and got["rows"] == len(rows)
    if method.name in ("dense", "h2o"):  # dense prefill: everything computed, nothing lost
        assert got["plan"] == "dense" and min(got["recall_min"]) == pytest.approx(1.0)
    else:  # the inputs make every sparse method drop mass, so a wrong mask cannot pass by being all-true
        assert max(got["density"]) < 0.95 and min(got["recall_min"]) < 0.99


def test_mask_fallback_for_a_sparse_method_without_pattern_equals_brute_force():
    class EvenKeys(AttentionMethod):  # a sparse method known only by its dense keep_mask
        name = "even-keys"
        sparse = True

        def keep_mask(self, q, k, scale, layer_idx=0):
            i, j = torch.arange(q.shape[2])[:, None], torch.arange(k.shape[2])[None, :]
            return ((j % 2 == 0) | (i == j)).expand(q.shape[0], q.shape[1], -1, -1)

    q, k, scale = inputs(batch=1)
    method, rows = EvenKeys(), diag.sample_rows(LENGTH, 16)
    got = diag.layer_diagnostics(method, q, k, scale, rows=rows)
    want_density, row_recall, _ = brute_force(method, q, k, scale, rows)
    assert got["plan"] == "mask"
    torch.testing.assert_close(torch.tensor(got["density"]), want_density, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(got["recall_mean"]), row_recall.mean((0, 2)), atol=1e-5, rtol=0)


def test_sparse_method_with_no_way_to_see_its_mask_raises():
    class Opaque(AttentionMethod):
        name = "opaque"
        sparse = True

    with pytest.raises(NotImplementedError, match="opaque"):
        diag.method_plan(Opaque(), *inputs(batch=1))


@pytest.mark.parametrize("key", ["sample", "sample-slash", "bigbird", "streaming"])
def test_oracle_topk_never_below_another_method_at_the_same_budget(key):
    q, k, scale = inputs(seed=3)
    method = build_method(*METHODS[key])
    rows = diag.sample_rows(LENGTH, 32, seed=2)
    got = diag.layer_diagnostics(method, q, k, scale, layer_idx=3, rows=rows)
    # the frontier reported beside every method: top-k with that method's own kept count in each row
    assert all(o >= r - 1e-6 for o, r in zip(got["oracle_recall_mean"], got["recall_mean"]))
    assert sum(o - r for o, r in zip(got["oracle_recall_mean"], got["recall_mean"])) > 1e-3  # a real gap
    # the oracle-topk method itself: per row, wherever it keeps at least as many keys, it keeps at least the mass
    _, recall, keep = brute_force(method, q, k, scale, rows)
    counts = keep.sum(-1)[:, :, rows]
    compared = 0
    for share in (0.05, 0.1, 0.2, 0.4, 0.7):
        oracle = build_method("oracle-topk", {"density": str(share)})
        _, oracle_recall, oracle_keep = brute_force(oracle, q, k, scale, rows)
        same_or_more = oracle_keep.sum(-1)[:, :, rows] >= counts
        assert (oracle_recall[same_or_more] >= recall[same_or_more] - 1e-6).all()
        compared += int(same_or_more.sum())
    assert compared > 0


def test_frontier_curve_is_the_oracle_topk_method_at_each_share():
    q, k, scale = inputs(seed=4)
    rows = diag.sample_rows(LENGTH, 20)
    shares = (0.05, 0.3)
    got = diag.layer_diagnostics(build_method("streaming", {"window": "16"}), q, k, scale, rows=rows, frontier=shares)
    for index, share in enumerate(shares):
        oracle = diag.layer_diagnostics(build_method("oracle-topk", {"density": str(share)}), q, k, scale, rows=rows)
        curve = [head[index] for head in got["frontier_recall"]]
        assert curve == pytest.approx(oracle["recall_mean"], abs=1e-5)
    assert got["frontier_recall"][0][0] < got["frontier_recall"][0][1]  # more keys, more mass


def test_sampled_rows_are_spread_unique_and_end_on_the_last_row():
    rows = diag.sample_rows(1000, 64, seed=0)
    assert rows[-1] == 999 and torch.equal(rows, rows.unique()) and rows.min() >= 0
    assert 60 <= len(rows) <= 65 and (rows.diff() < 2 * 1000 / 64).all()
    assert torch.equal(rows, diag.sample_rows(1000, 64, seed=0))
    assert not torch.equal(rows, diag.sample_rows(1000, 64, seed=1))
    assert diag.sample_rows(5, 64).tolist() == [0, 1, 2, 3, 4]


def test_keep_mask_rows_by_position_equal_the_full_mask_rows():
    gen = torch.Generator().manual_seed(5)
    pattern = SparsePattern(sink=3, window=7, columns=torch.tensor([[[5, 40, 77, -1]]]),
                            slashes=torch.tensor([[[12, 30]]]),
                            blocks=torch.rand(1, 1, 7, 7, generator=gen) > 0.6, block=16)
    full = pattern.keep_mask(1, 1, 100, 100)
    pos = torch.tensor([99, 0, 41, 17, 64])
    torch.testing.assert_close(pattern.keep_mask(1, 1, 0, 100, q_positions=pos), full[:, :, pos])
    torch.testing.assert_close(pattern.keep_mask(1, 1, 30, 100, q_start=50), full[:, :, 50:80])  # unchanged


@pytest.mark.parametrize("length", [64, 203])
def test_closed_form_densities_equal_counting(length):
    gen = torch.Generator().manual_seed(length)
    blocks = torch.rand(2, 3, -(-length // 32), -(-length // 32), generator=gen) > 0.5
    for pattern in (SparsePattern(blocks=blocks, block=32),                               # block cell counts
                    SparsePattern(sink=2, window=9, blocks=blocks, block=32)):            # mixed: chunked count
        want = density(pattern.keep_mask(2, 3, length, length))
        torch.testing.assert_close(diag.plan_density(pattern, 2, 3, length, "cpu"), want, atol=1e-6, rtol=0)
    q, k, scale = inputs(batch=1, length=length)
    keep = build_method("oracle-topk", {"density": "0.3"}).keep_mask(q, k, scale)
    torch.testing.assert_close(diag.plan_density(diag.RowTopK(0.3), 1, 4, length, "cpu"), density(keep),
                               atol=1e-6, rtol=0)


def test_wrapper_returns_the_methods_own_output_and_measures_every_method_layer():
    ids = torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(6))
    plain, wrapped = tiny_model("llama"), tiny_model("llama")
    hf.install(plain, build_method("streaming", {"window": "8"}))
    wrapper = Diagnosing(build_method("streaming", {"window": "8"}), rows=8)
    hf.install(wrapped, wrapper)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(ids).logits, plain(ids).logits, atol=0, rtol=0)
    assert [d["layer"] for d in wrapper.layers] == [0, 1]
    assert all(len(d["recall_mean"]) == 4 and max(d["density"]) < 1 for d in wrapper.layers)
    gemma = Diagnosing(build_method("streaming", {"window": "8"}), rows=8)
    gemma_model = tiny_model("gemma3")
    hf.install(gemma_model, gemma)  # sliding layers 0, 1 run dense in the bridge: noted, not measured
    with torch.no_grad():
        gemma_model(ids)
    assert [d.get("dense_fallback") for d in gemma.layers] == ["sliding", "sliding", None]


def test_diagnose_writes_diagnostics_and_the_report_draws_them(tmp_path, capsys):
    # sample's own masks are checked above on tiny inputs; here the two cheapest CPU prefills keep the test short
    code = main(["diagnose", "--methods", "streaming:window=48,oracle-topk:density=0.2", "--lengths", "256",
                 "--rows", "16", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["subcommand"] == "diagnose" and manifest["git_commit"] and manifest["diagnostics"]["rows"] == 16
    assert not (folder / "cells.jsonl").exists()
    lines = [json.loads(x) for x in (folder / "diagnostics.jsonl").read_text().splitlines()]
    assert [line["method"] for line in lines] == ["streaming", "oracle-topk"]  # no dense baseline added
    for line in lines:
        assert line["status"] == "ok" and line["length"] == line["prompt_tokens"] == 256
        assert len(line["layers"]) == 30 and all(len(d["recall_mean"]) == 9 for d in line["layers"])
        for layer in line["layers"]:  # on real attention too, the same-budget oracle bounds the method
            assert all(o >= r - 1e-5 for o, r in zip(layer["oracle_recall_mean"], layer["recall_mean"]))
            assert all(0 < d <= 1 for d in layer["density"]) and all(0 < r <= 1 for r in layer["recall_min"])
    streaming = lines[0]
    causal = 256 * 257 / 2
    kept = sum(min(i + 1, 48) + min(max(i + 1 - 48, 0), 4) for i in range(256))
    assert streaming["density"] == pytest.approx(kept / causal, abs=1e-6)
    assert lines[1]["density"] == pytest.approx(0.2, abs=0.01) and streaming["recall_mean"] < 1
    assert str(folder) in capsys.readouterr().out
    assert main(["report", str(folder)]) == 0
    text = (folder / "report" / "report.md").read_text()
    assert "Mask diagnostics" in text and "oracle-topk:density=0.2" in text
    for stem in ("diag_recall_vs_density", "diag_heatmap_density", "diag_heatmap_recall", "diag_heads_below_alpha"):
        assert (folder / "report" / f"{stem}.png").stat().st_size > 1000


@pytest.mark.parametrize("argv,message", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "sample:alpha=2"], "alpha=2.0 is out of range"),
    (["--lengths", "12q"], "is not a length"),
    (["--rows", "0"], "--rows must be at least 1"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--resume", "/nonexistent/run"], "not a run folder"),
])
def test_bad_diagnose_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    assert main(["diagnose", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def synthetic_diagnostics(root):
    """Two methods with hand-set per-head numbers: 2 layers x 2 heads each, at one length."""
    from harness.running.diagnose import DIAGNOSTICS_FILE
    from harness.running.store import RunStore

    store = RunStore.create(root, "diag", {"subcommand": "diagnose"})
    for method, alpha, density_, worst in (("sample", 0.9, [[0.2, 0.4], [0.6, 0.8]], [[0.92, 0.85], [0.5, 0.99]]),
                                           ("streaming", 0.95, [[0.3, 0.3], [0.3, 0.3]], [[0.96, 0.97], [0.94, 0.99]])):
        layers = [{"layer": i, "density": density_[i], "recall_mean": [0.99, 0.98], "recall_min": worst[i],
                   "oracle_recall_mean": [1.0, 1.0], "frontier_share": [0.1, 0.5],
                   "frontier_recall": [[0.7, 0.95], [0.8, 0.97]]} for i in range(2)]
        store.append({"key": method, "status": "ok", "model": "m", "method": method, "method_spec": method,
                      "method_config": {}, "alpha": alpha, "length": 1024, "sample_id": "s", "layers": layers},
                     DIAGNOSTICS_FILE)
    store.append({"key": "x", "status": "oom", "model": "m", "method": "sample", "length": 4096}, DIAGNOSTICS_FILE)
    return store.folder


def test_summary_counts_heads_below_each_methods_own_alpha(tmp_path):
    from harness.reports.diagnose_report import load_heads, summary_table

    table = summary_table(load_heads([synthetic_diagnostics(tmp_path)]))
    sample, streaming = table.loc[("m", "sample", 1024)], table.loc[("m", "streaming", 1024)]
    assert sample["density"] == pytest.approx(0.5) and sample["worst_row"] == pytest.approx(0.5)
    assert sample["heads_below_alpha"] == pytest.approx(2 / 4)     # 0.85 and 0.5 are below 0.9 (0.92 is not)
    assert streaming["heads_below_alpha"] == pytest.approx(1 / 4)  # only 0.94 is below 0.95
    assert len(table) == 2  # the oom line is not a result


def test_report_of_runs_and_diagnostics_holds_both(tmp_path):
    from harness.reports.report import build_report
    from tests.test_report import synthetic_run

    report = build_report([synthetic_run(tmp_path), synthetic_diagnostics(tmp_path)], tmp_path / "report")
    text = report.read_text()
    assert "Accuracy" in text and "Mask diagnostics" in text and "diag_heads_below_alpha.png" in text
    assert (tmp_path / "report" / "diag_heatmap_recall_min.png").stat().st_size > 1000
