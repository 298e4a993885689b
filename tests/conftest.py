import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model, loaded once per test session (CPU, fp32)."""
    from harness.models.loading import load_model

    return load_model("smollm2-135m", "cpu")
