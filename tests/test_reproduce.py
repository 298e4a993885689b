import pytest

from harness.cli import main
from harness.running.store import RunStore


def run_with(root, task, lengths):
    """Dense scores 1.0; sample scores 0.5 and is twice as fast, at every length."""
    store = RunStore.create(root, "paper", {})
    for length in lengths:
        for spec, method, ttft, score in (("dense", "dense", 100.0, 1.0), ("sample", "sample", 50.0, 0.5)):
            store.append({"key": f"{spec}|{length}", "status": "ok", "model": "m", "task": task, "method": method,
                          "method_spec": spec, "length": length, "ttft_ms": ttft, "score": score,
                          "meta": {"depth": 50}})
    return store.folder


def test_reproduce_accuracy_puts_ours_beside_the_papers(tmp_path, capsys):
    run = run_with(tmp_path, "babilong", [1024])
    assert main(["reproduce", "accuracy", "--from", str(run), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| sample "))
    assert "0.5" in row and "unconfirmed" in out
    # the paper's relative score for SampleAttention on ChatGLM2-6B: 833.00 / 837.40
    assert f"{833.00 / 837.40:.3f}" in out
    (folder,) = (tmp_path / "out").iterdir()  # its own folder: the source run is not written
    assert (folder / "reproduce-accuracy.md").is_file() and not (run / "report").exists()


def test_reproduce_ttft_lists_our_speedups_and_the_papers(tmp_path, capsys):
    run = run_with(tmp_path, "passkey", [8192, 16384])
    assert main(["reproduce", "ttft", "--from", str(run), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| m " in out and "2.42" in out and "5.29" in out
    ours = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith("| m ") and "sample" in line]
    assert [(row[1], row[2], float(row[3])) for row in ours] == [("sample", "8192", 2.0), ("sample", "16384", 2.0)]


def test_reproduce_joins_our_row_to_the_papers_on_the_full_config(tmp_path, capsys):
    # our `sample` is the paper's `sample:alpha=0.95` (0.95 is the default): one row holds both numbers
    run = run_with(tmp_path, "babilong", [1024])
    assert main(["reproduce", "accuracy", "--from", str(run), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| sample "))
    assert "0.5" in row and f"{833.00 / 837.40:.3f}" in row
    dense = next(line for line in out.splitlines() if line.startswith("| dense "))
    assert "| full " in dense  # the paper's `full` is our dense
    assert not any(line.startswith("| sample:alpha=0.95 ") for line in out.splitlines())


def test_reproduce_ttft_joins_speedups_at_the_same_length(tmp_path, capsys):
    run = run_with(tmp_path, "passkey", [32768])
    assert main(["reproduce", "ttft", "--from", str(run), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if "32768" in line and "sample" in line]
    # ours (2.0) and the MLSys column_slash row (1.15) are different configs: two rows, never one
    assert sorted(r[1] for r in rows) == ["sample", "sample:pattern=column_slash"]


def test_reproduce_refuses_to_compare_different_tasks(tmp_path, capsys):
    run = run_with(tmp_path, "needle", [1024])
    assert main(["reproduce", "accuracy", "--from", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "compares babilong, longbench" in err and "needle" in err and "\n" not in err


@pytest.mark.parametrize("flag", [["--methods", "dense"], ["--task", "needle"], ["--resume", "x"]])
def test_reproduce_rejects_flags_it_does_not_use(flag, capsys):
    assert main(["reproduce", "accuracy", *flag]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_reproduce_accuracy_takes_longbench_as_the_ratio_of_official_totals(tmp_path, capsys):
    """Dense: qasper 1 sample at 1.0, lcc 3 samples at 0 -> dataset scores 100 and 0, total 100 (pooled 0.25).
    Sample: qasper 0.5, lcc 1, 1, 1 -> 50 + 100 = 150: the totals give 1.5; pooled means would give 3.5 / 1."""
    store = RunStore.create(tmp_path, "lb", {})
    scores = {"dense": {"qasper": [1.0], "lcc": [0, 0, 0]}, "sample": {"qasper": [0.5], "lcc": [1, 1, 1]}}
    for spec, datasets in scores.items():
        for dataset, values in datasets.items():
            for k, score in enumerate(values):
                store.append({"key": f"{spec}|{dataset}|{k}", "status": "ok", "model": "m", "task": "longbench",
                              "method": spec, "method_spec": spec, "length": 2048, "ttft_ms": 10.0, "score": score,
                              "meta": {"dataset": dataset, "longbench_e": False, "row": k}})
    assert main(["reproduce", "accuracy", "--from", str(store.folder), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| sample "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    header = next(line for line in out.splitlines() if line.startswith("| method "))
    column = [c.strip() for c in header.split("|")[1:-1]].index("ours longbench vs dense")
    assert float(cells[column]) == 1.5


def test_reproduce_output_reads_plainly_and_a_refusal_writes_nothing(tmp_path, capsys):
    run = run_with(tmp_path, "needle", [1024, 2048])
    assert main(["reproduce", "needle", "--from", str(run), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "model" and "('m'" not in out  # columns, not tuples
    assert any(line.startswith("| m ") and "| sample " in line for line in table)
    run = run_with(tmp_path, "babilong", [1024])
    assert main(["reproduce", "accuracy", "--from", str(run), "--out", str(tmp_path / "acc")]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out  # unmatched cells are blank
    assert "Partial reproduction**: only the babilong half" in out
    assert main(["reproduce", "accuracy", "--from", str(run_with(tmp_path, "needle", [1024])), "--out",
                 str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()


def test_reproduce_accuracy_without_longbench_data_stops_before_creating_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub-cache"))
    out = tmp_path / "runs"
    assert main(["reproduce", "accuracy", "--out", str(out), "--lengths", "256", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hf download --repo-type dataset THUDM/LongBench data.zip" in err and "--part babilong" in err
    assert "\n" not in err and not out.exists()


def test_reproduce_part_babilong_plans_the_babilong_half_only(tmp_path, capsys, monkeypatch):
    from harness.running import driver
    from harness.options import InputError

    planned = []

    def stop(settings, *rest, **kwargs):  # the sweep itself is the part already tested
        planned.append(settings.grid.tasks)
        raise InputError("stopped by the test")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(driver, "execute", stop)
    assert main(["reproduce", "accuracy", "--part", "babilong", "--out", str(tmp_path), "--lengths", "512"]) == 2
    assert planned == [["babilong"]] and "stopped by the test" in capsys.readouterr().err
    assert main(["reproduce", "ttft", "--part", "babilong", "--out", str(tmp_path)]) == 2
    assert "no such half" in capsys.readouterr().err


def test_a_run_without_longbench_data_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--task", f"longbench:path={tmp_path}", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not found in" in err and "\n" not in err and not out.exists()
