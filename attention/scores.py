"""Column sums of a causal softmax over chosen query rows: SampleAttention's stage 1, H2O's accumulated
attention and the oracle's scores all come from here.

`sampled_scores` runs the Triton kernels where attention.backend says so, else the exact fp32 PyTorch path
below (chunked over rows, never more than SCORE_ELEMENTS scores at once).
"""
import torch

from attention.backend import triton_enabled

SCORE_ELEMENTS = 1 << 24  # fp32 scores held at once per chunk of query rows (64 MiB)


def causal_scores(q, k, scale: float, positions: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Exact fp32 scores [B, Hq, R, Sk] of the query rows `rows` of q (default: all), which sit at absolute
    `positions` [R], against every key; -inf above the diagonal. Grouped query heads meet their kv head through
    a view, so k is never expanded."""
    batch, heads, _, dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    q_rows = q if rows is None else q[:, :, rows]
    n = q_rows.shape[2]
    grouped = q_rows.float().reshape(batch, kv_heads, heads // kv_heads, n, dim)
    scores = (grouped @ k.float()[:, :, None].transpose(-1, -2)).reshape(batch, heads, n, k_len) * scale
    return scores.masked_fill(torch.arange(k_len, device=q.device)[None, :] > positions[:, None], float("-inf"))


def row_chunk(batch: int, heads: int, k_len: int) -> int:
    """Query rows per chunk so that at most SCORE_ELEMENTS scores exist at once."""
    return max(1, SCORE_ELEMENTS // (batch * heads * k_len))


def torch_sampled_scores(q, k, scale: float, rows: torch.Tensor, with_diag: bool = False):
    """(columns [B, Hq, Sk], diagonals [B, Hq, Sk] or None), fp32: probabilities of the `rows` summed down
    each key column and each diagonal d = query position - key position. rows: indices into q, -1 = unused."""
    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    rows = rows.to(q.device).long().flatten()
    rows = rows[rows >= 0]
    keys = torch.arange(k_len, device=q.device)
    col = torch.zeros(batch, heads, k_len, dtype=torch.float32, device=q.device)
    diag = torch.zeros_like(col) if with_diag else None
    chunk = row_chunk(batch, heads, k_len)
    for start in range(0, rows.numel(), chunk):
        r = rows[start:start + chunk]
        pos = r + (k_len - q_len)
        p = torch.softmax(causal_scores(q, k, scale, pos, rows=r), dim=-1)
        col += p.sum(2)
        if with_diag:
            offset = (pos[:, None] - keys[None, :]).clamp(min=0).expand(batch, heads, -1, -1)
            diag.scatter_add_(2, offset.reshape(batch, heads, -1), p.reshape(batch, heads, -1))
    return col, diag


def sampled_scores(q, k, scale: float, rows: torch.Tensor, with_diag: bool = False):
    """Sum over the sampled query rows of their exact causal softmax probabilities, per key column (and per
    diagonal when with_diag): (columns [B, Hq, Sk] fp32, diagonals or None). On the Triton path with_diag needs
    every 64 rows to be one run of consecutive positions."""
    if triton_enabled(q.device):
        from attention.kernels.stage1 import launch_sampled_scores  # imported here: it loads triton
        return launch_sampled_scores(q, k, scale, rows, with_diag)
    return torch_sampled_scores(q, k, scale, rows, with_diag)


def column_scores(q, k, scale: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 [B, Hq, Sk]: column sums of causal softmax attention over `rows` (default: every query row; H2O)."""
    if rows is None:
        rows = torch.arange(q.shape[2], device=q.device)
    return sampled_scores(q, k, scale, rows)[0]
