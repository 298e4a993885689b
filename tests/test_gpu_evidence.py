"""scripts/gpu_evidence.sh with a stand-in python3 that logs its arguments: every named part starts its commands
(a capped part once ran its CLI through `timeout` as a shell function, which timeout cannot run: every capped
CLI part failed with status 127 before doing anything), and an unknown part stops before anything is written."""
import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_evidence.sh"


def run_script(tmp_path: Path, parts: str, **caps: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "python3.log"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EVIDENCE_PARTS": parts, **caps}
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          cwd=SCRIPT.parents[1], timeout=60)
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_capped_cli_parts_start_their_commands(tmp_path):
    done, calls = run_script(tmp_path, "qwen_ruler qwen_ruler_oracle qwen_batch qwen_diagnose", TIMEOUT_qwen_ruler="30")
    assert "failed to run command" not in done.stderr + done.stdout
    assert "ended with status" not in done.stdout
    out = tmp_path / "out" / "runs"
    sweep = [c for c in calls if c.startswith("-m harness.cli sweep scripts/sweeps/qwen_ruler.yaml")]
    assert sweep and sweep[0].endswith(f"--out {out} --device cuda --no-progress")
    assert any(c.startswith("-m harness.cli sweep scripts/sweeps/qwen_ruler_oracle.yaml") for c in calls)
    assert len([c for c in calls if c.startswith("-m harness.cli run --model qwen2.5-coder-0.5b")]) == 1
    assert any(c.startswith("-m harness.cli diagnose --model qwen2.5-coder-0.5b") for c in calls)
    assert any(c.startswith("scripts/compare_runs.py") for c in calls)


def test_unknown_part_stops_before_writing(tmp_path):
    done, calls = run_script(tmp_path, "qwen_ruler nonsense")
    assert done.returncode == 2 and "unknown part nonsense" in done.stdout
    assert not calls and not (tmp_path / "out").exists()
