"""SampleAttention's column path without host syncs and in a few launches, with the dense fallback.

Per layer on the GPU: stage 1 (two launches on a row plan built once per shape), stage 2 fused (one launch:
threshold + compaction + column ranges + density, attention/kernels/select.py), the sparse kernel (one launch).

Dense fallback (attention/fallback.py), decided before the expensive work where the host can:
  fixed density   the density is known on the host (the budget, or the window + sinks if they cover more):
                  dense or sparse with no sync at all;
  adaptive alpha  a probe (stage 1 + 2 on the last RUN query rows only, ~1% of stage 1 at 128K) gives the
                  selected density; reading it back is the one host sync per layer. Sparse: the full stages run.
A length where even the window + sinks alone cannot pay runs dense at once (no probe, no sync).
"""
import math

import torch

from attention.fallback import dense_limit, run_dense
from attention.kernels.density import base_cells

_plans: dict = {}


def supported(cfg, q, k) -> bool:
    return (cfg.pattern == "column" and cfg.granularity == 1 and q.is_cuda and q.shape[-1] in (16, 32, 64, 128, 256)
            and q.shape[2] <= k.shape[2])


def _plan(kind: str, q_len: int, k_len: int, head_dim: int, r_row: float, device):
    from attention.kernels.scores import row_plan, scores_config
    from attention.sample import RUN, strided_rows

    key = (kind, q_len, k_len, head_dim, r_row, str(device), scores_config(head_dim))
    if key not in _plans:
        if len(_plans) > 64:
            _plans.clear()
        rows = (strided_rows(q_len, r_row, device) if kind == "rows"
                else torch.arange(max(0, q_len - RUN), q_len, device=device))
        _plans[key] = row_plan(rows, q_len, k_len, head_dim)
    return _plans[key]


def _select(q, k, scale, plan, cfg, window, sink, base, causal, block_m):
    from attention.kernels.scores import sampled_scores
    from attention.kernels.select import select_columns

    q_len, k_len = q.shape[2], k.shape[2]
    col, _ = sampled_scores(q, k, scale, plan)
    budget = max(0.0, cfg.density * causal - base) if cfg.density > 0 else None
    return select_columns(col, sink=sink, window=window, q_len=q_len, block_m=block_m, base_cells=base,
                          causal_cells=causal, alpha=None if budget is not None else cfg.alpha, budget=budget)


def dense_prefill(q, k, v, scale, backend: str):
    from attention.dense import DenseAttention, DenseConfig

    return DenseAttention(DenseConfig(backend=backend if q.is_cuda else "auto")).prefill(q, k, v, scale)


def prefill(method, q, k, v, scale, layer_idx: int = 0) -> torch.Tensor:
    from attention.kernels.select import block_m_for, column_attention

    cfg = method.config
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    window = math.ceil(cfg.r_w * k_len)
    sink = min(cfg.sink, k_len)
    base, causal = base_cells(q_len, k_len, window, sink)
    floor = base / causal  # what window + sinks alone cover
    dense_above = getattr(cfg, "dense_above", -1.0)
    backend = getattr(cfg, "dense_backend", "cudnn")
    limit = dense_limit(k_len, dense_above)
    predicted = max(cfg.density, floor) if cfg.density > 0 else floor
    if run_dense(predicted, k_len, dense_above):
        method.record(layer_idx, density=1.0, selected_density=predicted if cfg.density > 0 else None,
                      path="dense", dense_fallback="density")
        return dense_prefill(q, k, v, scale, backend)
    block_m = block_m_for(head_dim, q_len)
    if cfg.density <= 0 and limit < 1.0:
        probe = _plan("probe", q_len, k_len, head_dim, cfg.r_row, q.device)
        *_, probe_density = _select(q, k, scale, probe, cfg, window, sink, base, causal, block_m)
        estimate = float(probe_density.mean())  # the one host sync of an adaptive layer
        if run_dense(estimate, k_len, dense_above):
            method.record(layer_idx, density=1.0, selected_density=estimate, path="dense", dense_fallback="density")
            return dense_prefill(q, k, v, scale, backend)
    plan = _plan("rows", q_len, k_len, head_dim, cfg.r_row, q.device)
    cols, col_full, col_hi, dens = _select(q, k, scale, plan, cfg, window, sink, base, causal, block_m)
    out = column_attention(q, k, v, scale, window=window, cols=cols, col_full=col_full, col_hi=col_hi,
                           block_m=block_m)
    method.record(layer_idx, density=dens.mean(0), selected_density=dens.mean(0), path="sparse")
    return out
