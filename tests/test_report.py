import math

import pytest

from harness.reports.report import (accuracy_stats, build_report, load_cells, relative_accuracy_table, speedup_table,
                                    ttft_table)
from harness.running.store import RunStore


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
    acc = accuracy_stats(frame)["mean"].unstack("length")  # mean score per (model, task, method) x length
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


def timing_run(root, name, dense_ms, sample_ms, device="cuda", density=0.3, dense_scores=(1.0, 1.0)):
    store = RunStore.create(root, name, {})
    for i, score in enumerate(dense_scores):
        for spec, method, ttft, value in (("dense", "dense", dense_ms, score), ("sample", "sample", sample_ms, 0.0)):
            store.append({"key": f"{spec}|{i}", "status": "ok", "model": "/stash/tiny-model.gguf", "task": "needle",
                          "method": method, "method_spec": spec, "length": 8192, "ttft_ms": ttft, "score": value,
                          "device": device, "density": 1.0 if method == "dense" else density,
                          "meta": {"depth": 50 * i}})
    return store.folder


def test_two_runs_are_each_divided_by_their_own_dense_cells(tmp_path):
    first = timing_run(tmp_path, "a", dense_ms=100.0, sample_ms=50.0)
    second = timing_run(tmp_path, "b", dense_ms=400.0, sample_ms=100.0)  # another day, another load
    frame = load_cells([first, second])
    speed = speedup_table(frame, "dense")
    assert math.isclose(speed.loc[(first.name, "tiny-model", "sample"), 8192], 2.0)
    assert math.isclose(speed.loc[(second.name, "tiny-model", "sample"), 8192], 4.0)
    pooled = speedup_table(frame, "dense", pool=True)  # only when asked: median 250 / median 75
    assert math.isclose(pooled.loc[("tiny-model", "sample"), 8192], 250.0 / 75.0)
    text = build_report([first, second], tmp_path / "r").read_text()
    assert "its own dense cells" in text
    assert "pooled" in build_report([first, second], tmp_path / "p", pool_baselines=True).read_text()


def test_accuracy_has_counts_wilson_intervals_and_relative_only_where_dense_is_clearly_above_zero(tmp_path):
    from harness.reports.report import wilson

    low, high = wilson(1 / 3, 3)
    assert math.isclose(low, 0.0615, abs_tol=1e-3) and math.isclose(high, 0.7923, abs_tol=1e-3)
    run = timing_run(tmp_path, "noisy", 100.0, 50.0, dense_scores=(1.0, 0.0, 0.0))  # dense 1 of 3
    frame = load_cells([run])
    assert relative_accuracy_table(frame, "dense").isna().all().all()  # never "streaming twice as accurate"
    build_report([run], tmp_path / "r")
    accuracy = (tmp_path / "r" / "accuracy.md").read_text()
    assert "0.33 [0.06, 0.79] n=3" in accuracy and "('" not in accuracy  # no tuples as row labels
    assert "| tiny-model " in accuracy and "8K" in accuracy  # model name, not its path; 8K, not 8192


def test_dense_like_cells_and_cpu_timings_are_marked_and_cpu_speed_is_not_plotted(tmp_path):
    run = timing_run(tmp_path, "cpu", 100.0, 200.0, device="cpu", density=0.97)
    text = build_report([run], tmp_path / "r").read_text()
    assert "CPU timings" in text and "no performance evidence" in text
    assert "speedup_vs_length.png" not in text and "ttft_vs_length.png" not in text
    assert "CPU" in (tmp_path / "r" / "ttft_ms.md").read_text()
    assert "†" in (tmp_path / "r" / "accuracy.md").read_text().split("| sample")[1]
    asked = build_report([run], tmp_path / "asked", cpu_timings=True).read_text()
    assert "speedup_vs_length.png" in asked and "includes CPU timings" in asked


def test_length_axes_tick_exactly_the_measured_lengths_as_k():
    import matplotlib.pyplot as plt

    from harness.reports.plots import length_axis

    fig, ax = plt.subplots()
    ax.plot([8192, 16384, 32768], [1, 2, 3])
    length_axis(ax, [8192, 16384, 32768])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8K", "16K", "32K"]
    assert list(ax.get_xticks()) == [8192, 16384, 32768] and not len(ax.xaxis.get_minorticklocs())
    plt.close(fig)


def test_report_over_a_run_with_scalar_and_torn_lines_still_works(tmp_path):
    run = synthetic_run(tmp_path)
    with open(run / "cells.jsonl", "a") as handle:
        handle.write('42\n"oops"\n{"key": "torn", "sta')
    assert build_report([run], tmp_path / "r").is_file()


def test_report_on_cells_that_were_all_too_long_says_so(tmp_path, capsys):
    from harness.cli import main

    store = RunStore.create(tmp_path, "long", {})
    store.release()
    for method in ("dense", "sample"):
        store.append({"key": f"m|{method}|passkey|p-9000-0", "status": "too_long", "model": "m", "method": method,
                      "method_spec": method, "task": "passkey", "length": 9000, "error": "length 9000 > 8192"})
    assert main(["report", str(store.folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "it holds 2 too_long" in err and "--beyond-context" in err and "run a sweep first" not in err


def test_a_report_of_cells_without_timings_has_accuracy_and_no_timing_tables(tmp_path):
    store = RunStore.create(tmp_path, "untimed", {"note": "made by a test"})
    for spec, score in (("dense", 1.0), ("sample", 0.0)):
        store.append({"key": f"{spec}|1024|0", "status": "ok", "model": "m", "task": "passkey", "method": spec,
                      "method_spec": spec, "length": 1024, "score": score, "device": "cpu"})
    report = build_report([store.folder], tmp_path / "report").read_text()
    assert "No cell carries a time to first token" in report and "## Accuracy per length" in report
    assert "Time to first token (ms, median)" not in report and "TTFT speedup" not in report
