"""Triton kernels and their launchers only; they take tensors and ints, never a pattern object.

  config                        constants, tile configs, the one sparse-path decision (plain torch: no triton)
  prefill.sparse_attention      sink + window + gathered columns (+ slashes) prefill, online softmax
  stage1.launch_sampled_scores  stage 1: exact causal softmax of sampled rows summed down key columns (+ diagonals)
  column_select.select_columns  stage 2: SampleAttention's fused column selection
  row_threshold.row_thresholds  each row's exact k-th largest value without a sort (oracle-topk, diagnostics)

Nothing here is imported unless a kernel runs (the backend module decides), so the package works without triton.
"""
from attention.kernels import _interpret_compat

_interpret_compat.apply()
