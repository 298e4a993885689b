"""Triton kernels and their launchers only; they take tensors and ints, never a pattern object.

  prefill.sparse_attention   sink + window + gathered columns (+ slashes) prefill, online softmax
  scores.sampled_scores      stage 1: exact causal softmax of sampled rows summed down key columns (+ diagonals)

Nothing here is imported unless a kernel runs (the backend module decides), so the package works without triton.
"""
from attention.kernels import _interpret_compat

_interpret_compat.apply()
