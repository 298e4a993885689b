"""scripts/compare_runs.py: differing cells found, and cells/s measured on the cells both runs hold only."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import compare_runs  # noqa: E402


def write_run(folder: Path, cells: list[dict]) -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"spec": {}}))
    (folder / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    return folder


def cell(key: str, seconds: float | None, prediction: str = "x") -> dict:
    return {"key": key, "method_spec": "dense", "status": "ok", "prediction": prediction, "score": 1.0,
            **({"cell_seconds": seconds} if seconds is not None else {})}


def test_cells_per_second_on_shared_cells(tmp_path):
    one = write_run(tmp_path / "one", [cell("a", 2.0), cell("b", 2.0)])
    many = write_run(tmp_path / "many", [cell("a", 0.5), cell("b", 0.5), cell("c", 9.0), cell("d", None)])
    out = tmp_path / "cmp.md"
    assert compare_runs.main([str(one), str(many), "--out", str(out)]) == 1  # c, d only in the second
    text = out.read_text()
    assert "cell time of the 2 cells both hold" in text and "4.0 s vs 1.0 s" in text and "(x4.00)" in text


def test_a_differing_prediction_is_named(tmp_path):
    one = write_run(tmp_path / "one", [cell("a", 1.0), cell("b", 1.0)])
    two = write_run(tmp_path / "two", [cell("a", 1.0), cell("b", 1.0, prediction="y")])
    out = tmp_path / "cmp.md"
    assert compare_runs.main([str(one), str(two), "--out", str(out)]) == 1
    assert "differ: 1 (b)" in out.read_text()
