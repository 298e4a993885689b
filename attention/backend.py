"""The one place that decides whether a Triton kernel or the plain PyTorch path runs.

auto: Triton on CUDA tensors, PyTorch elsewhere. ATTENTION_BACKEND=triton (or `with use_backend("triton")`)
forces the kernels, e.g. on the CPU under TRITON_INTERPRET=1 in tests; =torch forces the PyTorch paths.
"""
import os
from contextlib import contextmanager

import torch

CHOICES = ("auto", "triton", "torch")
_forced: list[str] = []


def backend() -> str:
    """'auto', 'triton' or 'torch': the innermost use_backend, else $ATTENTION_BACKEND, else auto."""
    return _forced[-1] if _forced else os.environ.get("ATTENTION_BACKEND", "auto")


@contextmanager
def use_backend(name: str):
    if name not in CHOICES:
        raise ValueError(f"backend {name!r} is not one of {', '.join(CHOICES)}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def triton_enabled(device: torch.device) -> bool:
    """Whether Triton kernels run for tensors on `device` under the current backend choice."""
    choice = backend()
    return choice == "triton" or (choice == "auto" and torch.device(device).type == "cuda")
