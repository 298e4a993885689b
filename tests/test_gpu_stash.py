"""scripts/gpu_stash.py: parts joined back into checksum-verified files; bad usage and a corrupt part stop it."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_stash.py"


def stash(folder: Path, payload: bytes, parts: int) -> None:
    size = -(-len(payload) // parts)
    for i in range(parts):
        (folder / f"qwen.{i:02d}").write_bytes(payload[i * size:(i + 1) * size])
    files = [{"file": "a.gguf", "offset": 0, "length": 700, "sha256": hashlib.sha256(payload[:700]).hexdigest()},
             {"file": "b.gguf", "offset": 700, "length": len(payload) - 700,
              "sha256": hashlib.sha256(payload[700:]).hexdigest()}]
    (folder / "qwen.plan.json").write_text(json.dumps({"parts": parts, "files": files}))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_assemble_joins_and_verifies(tmp_path):
    payload = bytes(range(251)) * 9  # 2,259 bytes in 3 parts, two files across part edges
    stash(tmp_path, payload, 3)
    done = run("assemble", tmp_path, "qwen")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.gguf").read_bytes() + (tmp_path / "b.gguf").read_bytes() == payload
    (tmp_path / "qwen.01").write_bytes(b"x" + (tmp_path / "qwen.01").read_bytes()[1:])
    (tmp_path / "b.gguf").unlink()
    done = run("assemble", tmp_path, "qwen")
    assert done.returncode != 0 and "checksum mismatch" in done.stderr


def test_bad_usage_is_exit_2():
    for args in (["bogus"], ["prepare", "llama"], ["assemble", "/tmp", "llama"]):
        done = run(*args)
        assert done.returncode == 2 and done.stderr.startswith("usage:")
