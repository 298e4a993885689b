"""Triton kernels and their launchers.

  sampled_scores / column_scores  stage 1: exact causal softmax of sampled rows summed down key columns (+ diagonals)
  selection                       stage 2: per-head top-mass selection on the device (torch ops, no host sync)
  sparse_attention                sink + window + gathered columns (+ slashes) prefill, online softmax
  pattern_density                 exact per-head share of the causal area a pattern computes
"""
from attention.kernels import _interpret_compat
from attention.kernels.density import pattern_density
from attention.kernels.prefill import sparse_attention
from attention.kernels.scores import column_scores, sampled_scores

_interpret_compat.apply()

__all__ = ["column_scores", "pattern_density", "sampled_scores", "sparse_attention"]
