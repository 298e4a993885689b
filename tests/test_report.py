import math

import pytest

from harness.report import (accuracy_table, build_report, load_cells, relative_accuracy_table, speedup_table,
                            ttft_table)
from harness.store import RunStore


def synthetic_run(root):
    """Two lengths x two depths; dense scores 1 everywhere, sample misses one cell and is twice as fast."""
    store = RunStore.create(root, "synthetic", {"note": "made by a test"})
    for length in (1024, 2048):
        for depth in (0, 100):
            for spec, method, ttft, score in (("dense", "dense", 100.0 * length / 1024, 1.0),
                                              ("sample:alpha=0.95", "sample", 50.0 * length / 1024,
                                               0.0 if (length, depth) == (2048, 100) else 1.0)):
                store.append({"key": f"{spec}|{length}|{depth}", "status": "ok", "model": "m", "task": "needle",
                              "method": method, "method_spec": spec, "length": length, "ttft_ms": ttft,
                              "score": score, "meta": {"depth": depth},
                              "layers": [{"layer": 0, "density": [0.2, 0.4]}] if method == "sample" else None})
    store.append({"key": "broken", "status": "oom", "model": "m", "task": "needle", "method": "sample",
                  "method_spec": "sample:alpha=0.95", "length": 4096})
    return store.folder


def test_tables_hold_the_known_values(tmp_path):
    frame = load_cells([synthetic_run(tmp_path)])
    assert len(frame) == 8  # the oom cell is not a result
    acc = accuracy_table(frame)
    assert acc.loc[("m", "needle", "sample:alpha=0.95"), 2048] == 0.5
    assert acc.loc[("m", "needle", "dense"), 2048] == 1.0
    rel = relative_accuracy_table(frame, "dense")
    assert rel.loc[("m", "needle", "sample:alpha=0.95"), 1024] == 1.0
    assert rel.loc[("m", "needle", "sample:alpha=0.95"), 2048] == 0.5
    assert ttft_table(frame).loc[("m", "dense"), 2048] == 200.0
    speed = speedup_table(frame, "dense")
    assert math.isclose(speed.loc[("m", "sample:alpha=0.95"), 1024], 2.0)
    assert math.isclose(speed.loc[("m", "dense"), 2048], 1.0)


def test_report_writes_tables_plots_and_markdown(tmp_path):
    run = synthetic_run(tmp_path)
    report = build_report([run], tmp_path / "report")
    text = report.read_text()
    for stem in ("accuracy", "ttft_ms", "ttft_vs_length", "pareto", "needle_heatmaps", "density_per_layer"):
        assert stem in text
    for suffix in ("csv", "md", "tex"):
        assert (tmp_path / "report" / f"accuracy.{suffix}").stat().st_size > 0
    for suffix in ("png", "svg"):
        assert (tmp_path / "report" / f"needle_heatmaps.{suffix}").stat().st_size > 1000
    assert "0.5" in (tmp_path / "report" / "accuracy.md").read_text()


def test_report_without_dense_says_how_to_fix(tmp_path):
    store = RunStore.create(tmp_path, "nodense", {})
    store.append({"key": "k", "status": "ok", "model": "m", "task": "t", "method": "sample", "method_spec": "s",
                  "length": 10, "ttft_ms": 1.0, "score": 1.0})
    with pytest.raises(ValueError, match="no dense cells"):
        build_report([store.folder], tmp_path / "r")
