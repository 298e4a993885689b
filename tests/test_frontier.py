"""The accuracy-vs-TTFT frontier (harness/reports/frontier.py, plots.frontier, scripts/frontier_readme.py) on
synthetic run folders written by the harness's own RunStore: the table's numbers, the Pareto membership, devices
never mixed in a ratio, recall from a diagnose run, the figures, `sampleattn report`, and the README block."""
import dataclasses
import math

import pandas as pd
import pytest

from attention.registry import available_methods
from harness.cli import main as cli_main
from harness.reports import frontier
from harness.reports.cells import load_cells
from harness.running.store import DIAGNOSTICS_FILE, RunStore
from scripts import frontier_readme

H200, H100 = "NVIDIA H200", "NVIDIA H100 80GB HBM3"
SAMPLE_CONFIG = {**dataclasses.asdict(available_methods()["sample"].Config()), "dense_above": 1.0}


def sweep_run(root, name, gpu, rows, device="cuda", length=1024, task="needle"):
    """rows: (method_spec, method, [(ttft_ms, score), ...], density) -> a run folder with one cell per pair."""
    store = RunStore.create(root, name, {"gpu": gpu, "device": device} if gpu else {"device": device})
    for spec, method, cells, density in rows:
        for i, (ttft, score) in enumerate(cells):
            cell = {"key": f"m|{spec}|{task}|{length}|{i}", "status": "ok", "model": "m", "task": task,
                    "method": method, "method_spec": spec, "length": length, "sample_id": f"{task}-{i}",
                    "device": device, "ttft_ms": ttft, "score": score, "meta": {"depth": 10 * i}}
            if method != "dense":
                cell["density"] = density
            if method == "sample":
                cell["method_config"] = SAMPLE_CONFIG
            store.append(cell)
    store.release()
    return store.folder


MAIN_ROWS = [
    ("dense", "dense", [(100.0, 1.0), (110.0, 1.0), (90.0, 1.0)], None),           # median 100, 3/3
    ("sample:dense_above=1.0", "sample", [(40.0, 1.0), (50.0, 1.0), (60.0, 0.0)], 0.3),  # 2x, 2/3
    ("streaming:density=0.1", "streaming", [(20.0, 0.25), (20.0, 0.5), (20.0, 1.0)], 0.1),  # 5x, 0.583
    ("bigbird", "bigbird", [(80.0, 1.0), (80.0, 0.0), (80.0, 0.0)], 0.4),           # 1.25x, 1/3: dominated
    ("xattention", "xattention", [(50.0, 1.0), (50.0, 0.0), (50.0, 0.0)], 0.97),    # 2x like sample, worse
]


def diagnose_run(root, recall_by_length):
    """A diagnose folder: `sample` (its defaults) measured at the given lengths with per-head recall lists."""
    store = RunStore.create(root, "diag", {"device": "cpu"})
    config = dataclasses.asdict(available_methods()["sample"].Config())
    for length, recalls in recall_by_length.items():
        layers = [{"layer": 0, "density": [0.3] * len(recalls), "recall_mean": recalls, "recall_min": recalls,
                   "oracle_recall_mean": [1.0] * len(recalls)}]
        store.append({"key": f"m|sample|needle|{length}", "status": "ok", "model": "m", "method": "sample",
                      "method_spec": "sample", "method_config": config, "task": "needle", "sample_id": "s",
                      "length": length, "device": "cpu", "alpha": 0.95, "layers": layers}, DIAGNOSTICS_FILE)
    store.release()
    return store.folder


def row(table, spec, **match):
    rows = table[table["method_spec"] == spec]
    for key, value in match.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, (spec, match, rows)
    return rows.iloc[0]


def test_the_table_holds_speedups_intervals_recall_and_the_pareto_frontier(tmp_path):
    run = sweep_run(tmp_path, "main", H200, MAIN_ROWS)
    diag = diagnose_run(tmp_path, {1024: [0.9, 0.8], 2048: [0.1, 0.1]})
    built = frontier.build([run, diag], tmp_path / "out")
    table = built["table"]
    assert built["baseline"] == "dense" and built["diagnose"] == [diag.name] and built["runs"] == [run.name]
    dense, sample = row(table, "dense"), row(table, "sample:dense_above=1.0")
    streaming, bigbird, xattention = row(table, "streaming:density=0.1"), row(table, "bigbird"), row(table, "xattention")
    assert dense["device"] == H200 and dense["ttft_ms"] == 100.0 and dense["density"] == 1.0
    assert math.isclose(sample["speedup"], 100.0 / 50.0) and math.isclose(streaming["speedup"], 100.0 / 20.0)
    assert math.isclose(bigbird["speedup"], 1.25) and dense["speedup"] == 1.0
    assert math.isclose(sample["mean"], 2 / 3) and sample["n"] == 3 and math.isclose(sample["density"], 0.3)
    # Wilson 95% for 2 of 3, worked by hand: centre 0.5731, half width 0.3654
    assert sample["interval"] == "Wilson"
    assert math.isclose(sample["low"], 0.2077, abs_tol=1e-3) and math.isclose(sample["high"], 0.9385, abs_tol=1e-3)
    # scores 0.25 / 0.5 / 1: each extreme mean has 1/27 > 2.5% of the bootstrap mass, so the percentile interval is
    # exactly [0.25, 1]; Wilson's would be about [0.16, 0.90]
    assert streaming["interval"] == "bootstrap" and (streaming["low"], streaming["high"]) == (0.25, 1.0)
    # recall: the sweep's sample:dense_above=1.0 is the diagnose run's sample (fallback options ignored), 1K only
    assert math.isclose(sample["recall"], 0.85) and math.isnan(dense["recall"])
    on = dict(zip(table["method_spec"], table["on_frontier"]))
    assert on == {"dense": True, "sample:dense_above=1.0": True, "streaming:density=0.1": True, "bigbird": False,
                  "xattention": False}
    assert xattention["dense_like"]  # executed density 0.97: drawn hollow, marked in the table
    figure = tmp_path / "out" / "frontier_m_1K.png"
    assert figure.stat().st_size > 5000 and (tmp_path / "out" / "frontier_m_1K.svg").is_file()


def test_pareto_keeps_ties_and_leaves_out_rows_without_a_speedup():
    speed = pd.Series([1.0, 2.0, 2.0, 3.0, float("nan")])
    accuracy = pd.Series([0.9, 0.8, 0.8, 0.7, 1.0])
    assert frontier.pareto(speed, accuracy).tolist() == [True, True, True, True, False]
    assert frontier.pareto(pd.Series([1.0, 2.0]), pd.Series([0.5, 0.6])).tolist() == [False, True]
    # as fast and less accurate (or as accurate and slower) is dominated, though not worse in both
    assert frontier.pareto(pd.Series([1.0, 1.0, 0.5]), pd.Series([0.9, 0.5, 0.9])).tolist() == [True, False, False]


def test_bootstrap_resamples_within_strata():
    assert frontier.bootstrap([0.0, 0.0, 1.0, 1.0], strata=["a", "a", "b", "b"]) == (0.5, 0.5)
    low, high = frontier.bootstrap([0.0, 0.0, 1.0, 1.0])
    assert low <= 0.25 and high >= 0.75


def test_gpu_kinds_are_never_mixed_in_one_ratio(tmp_path):
    h200 = sweep_run(tmp_path, "h200", H200, MAIN_ROWS[:2])
    h100 = sweep_run(tmp_path, "h100", H100, [("dense", "dense", [(300.0, 1.0)], None),
                                              ("sample:dense_above=1.0", "sample", [(100.0, 1.0)], 0.3)])
    only_sample = sweep_run(tmp_path, "h100-sample", H100, [("sample:dense_above=1.0", "sample", [(150.0, 1.0)], 0.3)])
    frame = load_cells([h200, h100, only_sample])
    kinds = frontier.device_kinds([h200, h100, only_sample])
    pooled = frontier.frontier_table(frame, "dense", kinds, pool=True)
    assert math.isclose(row(pooled, "sample:dense_above=1.0", device=H200)["speedup"], 2.0)
    # H100's sample: its 100 and 150 ms (median 125) against H100's dense alone, never H200's 100 ms
    assert math.isclose(row(pooled, "sample:dense_above=1.0", device=H100)["speedup"], 300.0 / 125.0)
    per_run = frontier.frontier_table(frame, "dense", kinds)  # each run against its own dense cells
    assert math.isclose(row(per_run, "sample:dense_above=1.0", run=h100.name)["speedup"], 3.0)
    lonely = row(per_run, "sample:dense_above=1.0", run=only_sample.name)
    assert lonely["ttft_ms"] == 150.0 and math.isnan(lonely["speedup"])
    markdown = frontier.write(frontier.build([h200, h100, only_sample], tmp_path / "out"), tmp_path / "out")
    assert f"speedup blank on {H100}" in markdown and "never mixed" in markdown and "| run |" in markdown
    assert "timed on 2 devices" in markdown
    csv = pd.read_csv(tmp_path / "out" / "frontier.csv")
    assert set(csv["device"]) == {H200, H100} and len(csv) == 5


def test_cpu_rows_keep_their_numbers_but_are_drawn_only_when_asked(tmp_path):
    run = sweep_run(tmp_path, "cpu", None, MAIN_ROWS[:2], device="cpu")
    built = frontier.build([run], tmp_path / "out")
    assert math.isclose(row(built["table"], "sample:dense_above=1.0")["speedup"], 2.0)
    assert built["figures"] == {} and not (tmp_path / "out").exists()
    assert "no performance evidence" in frontier.render(**built) and "no figure" in frontier.render(**built)
    assert frontier.build([run], tmp_path / "asked", cpu_timings=True)["figures"]


def test_sampleattn_report_writes_the_frontier(tmp_path, capsys):
    run = sweep_run(tmp_path, "main", H200, MAIN_ROWS)
    assert cli_main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    text = (out / "report.md").read_text()
    assert "Accuracy vs TTFT frontier" in text and "frontier_m_1K.png" in text and "frontier.csv" in text
    assert (out / "frontier_m_1K.png").stat().st_size > 5000
    table = (out / "frontier.md").read_text()
    assert "| sample:dense_above=1.0 | 0.30 |  | 0.667 | [0.21, 0.94] | 3 | 50.0 | 2.00x | NVIDIA H200 | yes |" in table
    assert "| xattention | 0.97 † |" in table and "(*) bootstrap" in table


README = ("# Title\r\n\r\nIntro with ünïcode and trailing spaces   \n\n"
          f"{frontier_readme.START}\nold block line\n{frontier_readme.END}\n\nAfter the block.\n\tTabbed.\n")


def test_readme_block_is_replaced_and_the_rest_stays_byte_identical(tmp_path, capsys):
    run = sweep_run(tmp_path, "main", H200, MAIN_ROWS)
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    readme.write_bytes(README.encode("utf-8"))
    before = README.encode("utf-8")
    head = before[:before.index(frontier_readme.START.encode()) + len(frontier_readme.START)]
    tail = before[before.index(frontier_readme.END.encode()):]
    diag = diagnose_run(tmp_path, {1024: [0.9, 0.8]})
    assert frontier_readme.main([str(diag), str(run), "--readme", str(readme)]) == 0  # figures go to the sweep's
    after = readme.read_bytes()
    assert after.startswith(head) and after.endswith(tail) and b"old block line" not in after
    block = after[len(head):len(after) - len(tail)].decode()
    link = f"../{run.name}/report/frontier_m_1K.png"
    assert link in block and (readme.parent / link).resolve().is_file()
    assert "| dense | 1.00 |" in block and "### Accuracy vs TTFT frontier" in block
    assert "| sample:dense_above=1.0 | 0.30 | 0.850 |" in block
    assert frontier_readme.main([str(diag), str(run), "--readme", str(readme)]) == 0
    assert readme.read_bytes() == after  # a second render changes nothing


def test_the_real_readme_has_the_markers_and_keeps_everything_else(tmp_path, capsys):
    text = (frontier_readme.REPO / "README.md").read_bytes()
    copy = tmp_path / "README.md"
    copy.write_bytes(text)
    run = sweep_run(tmp_path, "main", H200, MAIN_ROWS)
    assert frontier_readme.main([str(run), "--readme", str(copy)]) == 0
    start, end = frontier_readme.START.encode(), frontier_readme.END.encode()
    after = copy.read_bytes()
    assert after[:after.index(start)] == text[:text.index(start)]
    assert after[after.index(end):] == text[text.index(end):]


def test_readme_without_markers_prints_the_block(tmp_path, capsys):
    run = sweep_run(tmp_path, "main", H200, MAIN_ROWS)
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert frontier_readme.main([str(run), "--readme", str(readme)]) == 0
    captured = capsys.readouterr()
    assert "| sample:dense_above=1.0 |" in captured.out and "hint:" in captured.err
    assert readme.read_text() == "no markers here\n"


@pytest.mark.parametrize("case", ["missing", "no_cells", "diagnose_only", "broken_markers", "not_a_run"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    readme = tmp_path / "README.md"
    readme.write_bytes(README.encode())
    runs_root = tmp_path / "runs"
    if case == "missing":
        folder, fix = runs_root / "nope", "no such folder"
    elif case == "no_cells":
        store = RunStore.create(runs_root, "empty", {"device": "cuda"})
        store.release()
        folder, fix = store.folder, "run a sweep first"
    elif case == "diagnose_only":
        folder, fix = diagnose_run(runs_root, {1024: [0.9]}), "run a sweep first"
    elif case == "not_a_run":
        folder, fix = runs_root / "plain", "no manifest.json"
        folder.mkdir(parents=True)
    else:
        folder, fix = sweep_run(runs_root, "main", H200, MAIN_ROWS), "fix the markers"
        readme.write_bytes(README.replace(frontier_readme.END, "").encode())
    listing = sorted(p for p in tmp_path.rglob("*"))
    assert frontier_readme.main([str(folder), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fix in err
    assert sorted(p for p in tmp_path.rglob("*")) == listing  # nothing written
    assert readme.read_bytes() == (README.replace(frontier_readme.END, "") if case == "broken_markers"
                                   else README).encode()
