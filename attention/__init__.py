"""Attention methods and kernels; knows nothing of tasks or models beyond q, k, v."""
