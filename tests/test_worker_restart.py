"""A cell that poisons its process (as a CUDA error does) is recorded with its message, and the rest of the
grid still runs: the driver restarts the command in a fresh process resuming the run folder (harness/worker.py).
Simulated on the CPU: a throwaway method raises CUDA's illegal-memory-access error at one length and from then
on makes every forward in its process fail the same way, as a sticky CUDA error does."""
import json
import os
import subprocess
import sys
from pathlib import Path

from harness.running import worker

ROOT = Path(__file__).resolve().parents[1]
ILLEGAL = "CUDA error: an illegal memory access was encountered"

POISONING_METHOD = f"""
import sys
import torch
from attention.method import AttentionMethod, MethodConfig
from attention.reference import reference_attention
from attention.registry import register
import dataclasses

@dataclasses.dataclass
class PoisonConfig(MethodConfig):
    fail_at: int = 0

def poisoned(*args, **kwargs):
    raise RuntimeError("{ILLEGAL}")

@register
class Poison(AttentionMethod):
    name = "poison"
    Config = PoisonConfig

    def prefill(self, q, k, v, scale, layer_idx=0):
        if q.shape[2] == self.config.fail_at:
            torch.nn.modules.module.register_module_forward_pre_hook(poisoned)  # every later forward fails
            poisoned()
        return reference_attention(q, k, v, scale=scale).to(q.dtype)

from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sticky_messages():
    assert worker.is_sticky(f"RuntimeError: {ILLEGAL}")
    assert worker.is_sticky("RuntimeError: CUDA error: device-side assert triggered")
    assert worker.is_sticky("RuntimeError: Triton Error [CUDA]: an illegal memory access was encountered")
    assert not worker.is_sticky("OutOfMemoryError: CUDA out of memory. Tried to allocate 8.00 GiB")
    assert not worker.is_sticky("RuntimeError: CUDA error: out of memory")
    assert not worker.is_sticky("ValueError: shapes do not match")
    assert not worker.is_sticky(None)


def test_resume_argv_keeps_the_interpreter_part_and_replaces_resume():
    argv = ["/x/harness/__main__.py", "sweep", "--resume", "old", "--lengths", "8k"]
    orig = ["python", "-X", "utf8", "-m", "harness", "sweep", "--resume", "old", "--lengths", "8k"]
    assert worker.resume_argv("runs/a", argv, orig) == ["python", "-X", "utf8", "-m", "harness", "sweep",
                                                         "--lengths", "8k", "--resume", "runs/a"]
    argv = ["-c", "run", "--resume=old"]
    orig = ["py", "-c", "code", "run", "--resume=old"]
    assert worker.resume_argv("f", argv, orig) == ["py", "-c", "code", "run", "--resume", "f"]


def test_poisoned_cell_is_recorded_and_the_rest_of_the_grid_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop(worker.RESTARTS_ENV, None)
    out = tmp_path / "runs"
    result = subprocess.run([sys.executable, "-c", POISONING_METHOD, "run", "--model", "smollm2-135m",
                             "--methods", "dense,poison:fail_at=220", "--lengths", "200,220,240",
                             "--max-new-tokens", "2", "--out", str(out), "--no-progress"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = out.iterdir()
    cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()]
    got = [(c["method"], c["length"], c["status"]) for c in cells]
    assert got == [("dense", 200, "ok"), ("poison", 200, "ok"), ("dense", 220, "ok"), ("poison", 220, "error"),
                   ("dense", 240, "ok"), ("poison", 240, "ok")], result.stderr[-3000:]
    assert ILLEGAL in cells[3]["error"]
    assert "restarting (1)" in result.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 1  # the one fresh process that resumed the folder
