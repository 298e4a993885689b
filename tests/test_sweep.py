import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from attention.registry import METHODS, AttentionMethod, register
from harness.cli import main
from harness.running.plan import expand_alternatives

ROOT = Path(__file__).resolve().parents[1]


def test_method_settings_expand_into_one_method_each():
    methods = expand_alternatives("dense:backend=math|efficient")
    assert [m.config.backend for m in methods] == ["math", "efficient"]


def test_sweep_file_with_unknown_key_is_rejected(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text("models: [smollm2-135m]\nmethods: [dense]\ntasks: [passkey]\nlengths: [256]\nspeed: 3\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "runs")]) == 2
    assert "unknown key(s) speed" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


class OutOfMemoryAt(AttentionMethod):
    """A method that runs dense but raises CUDA out-of-memory at one length, like a too-large prefill would."""

    name = "test-oom"

    def prefill(self, q, k, v, scale, layer_idx=0):
        if q.shape[2] == 240:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return METHODS.get("dense")().prefill(q, k, v, scale, layer_idx)


def test_out_of_memory_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    register(OutOfMemoryAt)
    try:
        assert main(["sweep", "--methods", "dense,test-oom", "--lengths", "200,240,280", "--out", str(tmp_path),
                     "--no-progress", "--max-new-tokens", "2"]) == 0
    finally:
        METHODS.unregister("test-oom")
    (folder,) = tmp_path.iterdir()
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    status = {(c["method"], c["length"]): c["status"] for c in cells}
    assert status == {("dense", 200): "ok", ("test-oom", 200): "ok", ("dense", 240): "ok",
                      ("test-oom", 240): "oom", ("dense", 280): "ok", ("test-oom", 280): "ok"}


def test_lengths_beyond_the_model_context_are_recorded_not_run(tmp_path):
    assert main(["sweep", "--methods", "dense", "--lengths", "200,9000", "--out", str(tmp_path), "--no-progress",
                 "--max-new-tokens", "2"]) == 0
    (folder,) = tmp_path.iterdir()
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    assert [(c["length"], c["status"]) for c in cells] == [(200, "ok"), (9000, "too_long")]


def test_killed_sweep_resumes_without_losing_or_duplicating_cells(tmp_path):
    argv = [sys.executable, "-m", "harness.cli", "sweep", "--methods", "dense,dense:backend=math",
            "--lengths", "160,176,192", "--out", str(tmp_path), "--no-progress", "--max-new-tokens", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    cells_file = None
    while time.time() < deadline:  # kill as soon as the first cells are on disk, mid-sweep
        found = list(tmp_path.glob("*/cells.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            cells_file = found[0]
            break
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert cells_file is not None, "the sweep wrote no cell in time"
    before = [json.loads(line) for line in cells_file.read_text().splitlines() if line.endswith("}")]
    assert 2 <= len(before) < 6
    resumed = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", "--resume", str(cells_file.parent),
                              "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = [json.loads(line) for line in cells_file.read_text().splitlines() if line.endswith("}")]
    keys = [c["key"] for c in after]
    assert len(keys) == 6 and len(set(keys)) == 6
    assert after[:len(before)] == before  # finished cells untouched


def test_streaming_default_is_sparse_at_every_length():
    # a fixed 2048-token window kept everything below 2K, so CPU-sized runs called dense attention "streaming"
    from attention.registry import build_method

    torch.manual_seed(0)
    for length in (256, 1024, 2048):
        method = build_method("streaming")
        q, k, v = (torch.randn(1, 1, length, 16) for _ in range(3))
        method.prefill(q, k, v, 0.25)
        density = torch.as_tensor(method.stats[-1]["density"], dtype=torch.float32).mean().item()
        assert density < 0.5, (length, density)


def test_dense_note_is_printed_once_per_validation(capsys):
    from harness.running.plan import SweepSpec, validate

    plan = validate(SweepSpec(models=["smollm2-135m"], methods=["streaming:window=8,sample"], tasks=["passkey"],
                              lengths=[256]))
    assert [m.name for m in plan.methods] == ["dense", "streaming", "sample"]
    assert capsys.readouterr().err.count("adding the dense baseline") == 1


def test_flags_beside_a_sweep_file_override_its_fields(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text("models: [smollm2-135m]\nmethods: [dense]\ntasks: [passkey]\nlengths: [1024, 2048]\n"
                    "samples: 1\n")
    assert main(["sweep", str(spec), "--lengths", "200", "--out", str(tmp_path / "runs"), "--no-progress",
                 "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "flags override" in err and "lengths [1024, 2048] -> [200]" in err
    (folder,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["spec"]["lengths"] == [200]
    assert manifest["settings"]["overridden"] == ["lengths", "max_new_tokens"]
    assert manifest["settings"]["sweep_file"] == str(spec)
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    assert {c["length"] for c in cells} == {200}


def test_settings_from_flags_over_a_sweep_file():
    from harness.cli import build_parser
    from harness.cli.common import grid_flags, settings_from
    from harness.cli.sweep import file_grid

    path = str(ROOT / "scripts" / "sweeps" / "smollm2_accuracy.yaml")
    argv = ["sweep", path, "--lengths", "512", "--methods", "dense", "--samples", "2"]
    args = build_parser().parse_args(argv)
    base, named = file_grid(path, grid_flags(args))
    settings = settings_from(args, argv, "sweep", "x", base=base, sweep_file=path, named=named)
    assert settings.grid.lengths == [512] and settings.grid.methods == ["dense"] and settings.grid.samples == 2
    assert set(settings.overridden) == {"lengths", "methods", "samples"}
    assert settings.grid.tasks == file_grid(path, {})[0].tasks  # what no flag names stays the file's
    assert {"models", "methods", "tasks", "lengths", "samples"} <= set(settings.given)  # the file's, and the flags'


def test_a_sweep_file_beside_resume_must_match_the_stored_grid(tmp_path, capsys):
    """What a restart after a CUDA error does (the same command, --resume added): the file is checked like flags."""
    spec = tmp_path / "grid.yaml"
    spec.write_text("models: [smollm2-135m]\nmethods: [dense]\ntasks: [passkey]\nlengths: [200]\nmax_new_tokens: 2\n")
    argv = ["sweep", str(spec), "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main([*argv, "--resume", str(folder)]) == 0
    assert "resumed=1" in capsys.readouterr().out  # nothing run twice
    spec.write_text("models: [smollm2-135m]\nmethods: [dense]\ntasks: [passkey]\nlengths: [200]\nmax_new_tokens: 3\n")
    assert main([*argv, "--resume", str(folder)]) == 2
    assert "--max-new-tokens differs" in capsys.readouterr().err
