import json

import pytest

from harness.cli import main, parse_lengths


def test_lengths_accept_k_suffix():
    assert parse_lengths("1024,8k,0.5k") == [1024, 8192, 512]


@pytest.mark.parametrize("argv,message", [
    (["run", "--methods", "nosuch"], "unknown method 'nosuch'"),
    (["run", "--methods", "dense:backend=warp"], "backend='warp'"),
    (["run", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["run", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["run", "--lengths", "12q"], "is not a length"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--samples", "0"], "--samples must be at least 1"),
    (["run", "--resume", "/nonexistent/run"], "not a run folder"),
    (["nosuch"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_methods_lists_options_with_defaults(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "dense:" in out and "backend (str) = auto" in out


def test_run_writes_cells_with_ttft_text_and_provenance(tmp_path, capsys):
    code = main(["run", "--model", "smollm2-135m", "--methods", "dense,eager", "--lengths", "256,300",
                 "--out", str(tmp_path), "--no-progress", "--max-new-tokens", "4"])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    assert str(folder) in capsys.readouterr().out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["git_commit"] and manifest["packages"]["transformers"] and manifest["device"] == "cpu"
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    assert [(c["method"], c["length"]) for c in cells] == [("dense", 256), ("eager", 256), ("dense", 300), ("eager", 300)]
    for cell in cells:
        assert cell["status"] == "ok" and cell["ttft_ms"] > 0 and cell["prompt_tokens"] == cell["length"]
        assert isinstance(cell["prediction"], str) and 1 <= cell["new_tokens"] <= 4
    # dense and the fp32 reference see the same prompt: same greedy text
    assert cells[0]["prediction"] == cells[1]["prediction"]


def test_resume_reruns_only_the_missing_cells(tmp_path, capsys):
    argv = ["run", "--methods", "dense", "--lengths", "200,220", "--out", str(tmp_path), "--no-progress",
            "--max-new-tokens", "2"]
    assert main(argv) == 0
    (folder,) = tmp_path.iterdir()
    cells_path = folder / "cells.jsonl"
    first, second = cells_path.read_text().splitlines()
    cells_path.write_text(first + "\n" + second[:40])  # as if killed while writing the second cell
    assert main(["run", "--resume", str(folder), "--no-progress"]) == 0
    assert "resumed=1" in capsys.readouterr().out
    cells = [json.loads(line) for line in cells_path.read_text().splitlines() if line.endswith("}")]
    assert [c["length"] for c in cells] == [200, 220]
    assert cells[0] == json.loads(first)
