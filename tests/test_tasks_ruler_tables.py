"""harness/tables_ruler.py on hand-made cells: the RULER average and the per-subtask breakdown."""
import json

import pandas as pd
import pytest

from harness.reports import tables_ruler
from tasks.ruler import SUBTASKS


def cells(rows):
    return pd.DataFrame([{"task": "ruler", "model": "m", "method_spec": method, "length": length, "score": score,
                          "meta.subtask": subtask} for method, length, subtask, score in rows])


def test_average_is_the_mean_over_subtasks_then_lengths():
    rows = []
    for i, subtask in enumerate(SUBTASKS):
        rows.append(("dense", 1024, subtask, 1.0))
        rows.append(("dense", 2048, subtask, 1.0 if i < 3 else 0.0))   # 3 of 13 right
        rows.append(("sample", 1024, subtask, 0.5))
        rows.append(("sample", 2048, subtask, 0.0))
    rows += [("sample", 1024, "vt", 1.0)]                             # a second vt sample: vt averages to 0.75
    frame = pd.concat([cells(rows), pd.DataFrame([{"task": "needle", "model": "m", "method_spec": "dense",
                                                   "length": 1024, "score": 0.0, "meta.subtask": None}])])
    table = tables_ruler.average_table(frame)
    assert list(table.columns) == ["1K", "2K", "Avg."]
    assert table.loc[("m", "dense"), "1K"] == pytest.approx(100)
    assert table.loc[("m", "dense"), "2K"] == pytest.approx(300 / 13)
    assert table.loc[("m", "dense"), "Avg."] == pytest.approx((100 + 300 / 13) / 2)
    assert table.loc[("m", "sample"), "1K"] == pytest.approx((12 * 50 + 75) / 13)
    per_task = tables_ruler.per_task_table(frame)
    assert list(per_task.columns) == [*SUBTASKS, "average"]
    assert per_task.loc[("m", "sample", "1K"), "vt"] == pytest.approx(75)
    assert per_task.loc[("m", "dense", "2K"), "niah_single_3"] == 100
    assert per_task.loc[("m", "dense", "2K"), "average"] == pytest.approx(table.loc[("m", "dense"), "2K"])


def test_markdown_and_files(tmp_path):
    frame = cells([("dense", 4096, "qa_1", 1.0), ("dense", 4096, "niah_single_1", 0.0),
                   ("sample", 4096, "qa_1", 0.0), ("sample", 4096, "niah_single_1", 0.0)])
    text = tables_ruler.markdown(frame)
    assert "## RULER average (0-100)" in text and "## RULER per subtask (0-100)" in text
    assert "| model   | method   |   4K |   Avg. |" in text and "| m       | dense    |   50 |     50 |" in text
    assert "2 subtasks; samples per subtask and length: 1." in text
    partial = cells([("dense", 1024, "vt", 1.0), ("dense", 1024, "cwe", 0.0), ("sample", 1024, "vt", 1.0)])
    assert tables_ruler.average_table(partial)["1K"].isna().tolist() == [False, True]  # sample lacks cwe
    path = tables_ruler.write(frame, tmp_path)
    assert path.read_text() == text
    assert (tmp_path / "ruler_average.csv").is_file() and (tmp_path / "ruler_per_task.csv").is_file()


def test_no_ruler_cells_is_an_error():
    with pytest.raises(ValueError, match="--task ruler"):
        tables_ruler.average_table(pd.DataFrame([{"task": "needle", "score": 1.0, "meta.subtask": None}]))


def test_main_reads_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"command": "test"}))
    with open(run / "cells.jsonl", "w") as f:
        for method, score in (("dense", 1.0), ("sample", 0.0)):
            f.write(json.dumps({"key": method, "status": "ok", "task": "ruler", "model": "m", "method": method,
                                "method_spec": method, "length": 1024, "score": score, "sample_id": "x",
                                "meta": {"subtask": "vt"}}) + "\n")
    assert tables_ruler.main([str(run)]) == 0
    assert "| m       | dense    | 1K       |  100 |       100 |" in (run / "ruler.md").read_text()
    assert tables_ruler.main([str(tmp_path / "missing")]) == 2
