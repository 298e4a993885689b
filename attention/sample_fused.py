"""SampleAttention's column pattern on the GPU, fused: the whole path in one module.

A layer of `sample` (pattern=column, granularity=1, Triton enabled) runs, with no host sync until step 3:
  1. stage 1, sampled rows: `RowPlans` builds once per shape the strided rows as the kernels read them
     (attention/kernels/stage1.py row_plan: padded rows and per-key-block row-block bounds) and reuses them in
     every layer; two launches (row max / normaliser, then column sums of the exact causal softmax).
  2. stage 2, selection (attention/kernels/column_select.py select_columns): per head the fewest columns reaching
     alpha of the sampled mass (or the best columns within a density budget), written as the list the sparse
     kernel gathers (sinks first), its per-query-block ranges for the kernel's block rows, and the exact
     density per head; one launch. `select` returns them as a `Selection`.
  3. decision (SparseMethod.execute, attention/fallback.py): one host sync reads each head's density and the
     column count the kernel will read; heads at or above the dense limit run dense.
  4. the sparse kernel (`attend`): the path attention.kernels.config.sparse_path picks for the shape (the one
     decision every sparse launch takes): the Hopper TMA kernel (column rows gathered into a buffer sized by the
     kept columns, kernels/hopper.py column_attention_tma) or the portable kernel (kernels/prefill.py
     column_attention); one launch on the portable kernel; the TMA route adds the gather of the kept columns
     into buffers of their own (q, K and V are read in place).

The same layer through SampleAttention.build_pattern + attention.executor.run_pattern keeps the same columns
and computes the same attention (tests/test_sample_fused.py holds them to the 2x bf16 rule).
"""
from dataclasses import dataclass

import torch

from attention.kernels.column_select import select_columns
from attention.kernels.config import block_config, sparse_path, tma_config
from attention.kernels.hopper import column_attention_tma
from attention.kernels.prefill import column_attention
from attention.kernels.stage1 import launch_sampled_scores, row_plan, scores_config


def block_rows(q, k_len: int) -> tuple[str, int]:
    """(kernel path, query rows per kernel block) for these queries: stage 2 writes ranges for those blocks."""
    path = sparse_path(q, k_len)
    head_dim, q_len = q.shape[3], q.shape[2]
    return path, (tma_config(head_dim, q_len)[0] if path == "tma" else block_config(head_dim, q_len)[0])


class RowPlans:
    """Stage-1 row plans by (rows key, shape, device): built on the first layer, reused by the others."""

    def __init__(self, limit: int = 64):
        self.plans: dict = {}
        self.limit = limit

    def get(self, key: tuple, rows_fn, q_len: int, k_len: int, head_dim: int, device):
        full = (*key, q_len, k_len, head_dim, str(device), scores_config(head_dim))
        if full not in self.plans:
            if len(self.plans) >= self.limit:
                self.plans.clear()
            self.plans[full] = row_plan(rows_fn(), q_len, k_len, head_dim)
        return self.plans[full]


@dataclass
class Selection:
    """Stage 2's output for the sparse kernel: what one layer will execute."""
    path: str                # 'tma' or 'portable'
    block_m: int             # query rows per kernel block the ranges were built for
    cols: torch.Tensor       # int32 [B, H, Sk]: sinks then kept columns ascending, -1 after
    col_full: torch.Tensor   # int32 [B, H, n_qb]: columns every row of a query block uses
    col_hi: torch.Tensor     # int32 [B, H, n_qb]: columns some row of the block uses
    density: torch.Tensor    # fp32 [B, H]: the exact share of the causal area the kernel computes

    def needed(self) -> torch.Tensor:
        """Columns the kernel reads per (batch, head): the last block's upper range (fp32 [B*H], device)."""
        return self.col_hi[..., -1].float().flatten()

    def heads(self, heads: torch.Tensor | None) -> "Selection":
        if heads is None:
            return self
        pick = lambda x: x.index_select(1, heads).contiguous()  # noqa: E731
        return Selection(self.path, self.block_m, pick(self.cols), pick(self.col_full), pick(self.col_hi),
                         pick(self.density))


def select(q, k, scale: float, plan, *, sink: int, window: int, base: int, causal: int,
           alpha: float | None = None, budget: float | None = None) -> Selection:
    """Stages 1 and 2 on a row plan: three launches, no sync."""
    path, block_m = block_rows(q, k.shape[2])
    col, _ = launch_sampled_scores(q, k, scale, plan)
    cols, col_full, col_hi, density = select_columns(
        col, sink=min(sink, k.shape[2]), window=window, q_len=q.shape[2], block_m=block_m, base_cells=base,
        causal_cells=causal, alpha=alpha, budget=budget)
    return Selection(path, block_m, cols, col_full, col_hi, density)


def attend(q, k, v, scale: float, window: int, selection: Selection, needed: list[float] | None = None):
    """The sparse kernel over window + the selection's columns (sinks included). `needed`: Selection.needed()
    read on the host (the TMA route sizes its gather buffer by it)."""
    if selection.path == "tma":
        counts = selection.col_hi[..., -1]
        most = int(max(needed)) if needed else selection.cols.shape[-1]
        return column_attention_tma(q, k, v, scale, window=window, cols=selection.cols, col_full=selection.col_full,
                                    col_hi=selection.col_hi, counts=counts, max_count=most)
    return column_attention(q, k, v, scale, window=window, cols=selection.cols, col_full=selection.col_full,
                            col_hi=selection.col_hi, block_m=selection.block_m)
