"""Stage 2, score-based KV filtering, on the device with no host sync: sort, cumulative sum, count; and the
oracle's per-row top-k threshold (a Triton bisection on the GPU, a sort elsewhere).

Scores are per (batch, head); the outputs keep a fixed shape (one slot per key) so nothing waits on the host.
"""
import torch

from attention.backend import triton_enabled
from attention.indices import BIG


def group_scores(scores: torch.Tensor, granularity: int) -> torch.Tensor:
    """Sum scores over consecutive key blocks of `granularity` keys: [B, H, ceil(S / g)]."""
    if granularity <= 1:
        return scores
    pad = (-scores.shape[-1]) % granularity
    padded = torch.nn.functional.pad(scores, (0, pad))
    return padded.view(*scores.shape[:-1], -1, granularity).sum(-1)


def top_mass(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """bool like scores: per row, the fewest entries whose sum reaches alpha of the row's total (alpha>=1: all)."""
    if alpha >= 1.0:
        return torch.ones_like(scores, dtype=torch.bool)
    values, order = scores.sort(-1, descending=True)
    csum = values.cumsum(-1)
    count = (csum < alpha * csum[..., -1:]).sum(-1, keepdim=True) + 1
    ranked = (torch.arange(scores.shape[-1], device=scores.device) < count) & (values > 0)  # never a zero score
    return torch.zeros_like(ranked).scatter(-1, order, ranked)


def top_area(scores: torch.Tensor, area: torch.Tensor, budget: float) -> torch.Tensor:
    """bool like scores: best-scored entries first while their summed area (cells of the mask) stays within budget."""
    values, order = scores.sort(-1, descending=True)
    csum = area.expand_as(scores).gather(-1, order).cumsum(-1)
    ranked = csum <= budget
    return torch.zeros_like(ranked).scatter(-1, order, ranked)


def expand_blocks(keep_blocks: torch.Tensor, granularity: int, length: int) -> torch.Tensor:
    if granularity <= 1:
        return keep_blocks
    return keep_blocks.repeat_interleave(granularity, dim=-1)[..., :length]


def to_indices(keep: torch.Tensor) -> torch.Tensor:
    """bool [B, H, S] -> long [B, H, S] of kept positions ascending, -1 in unused slots at the end."""
    pos = torch.arange(keep.shape[-1], device=keep.device)
    idx = torch.where(keep, pos, BIG).sort(-1).values
    return torch.where(idx < BIG, idx, -1)


def sorted_row_thresholds(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """fp32 like budgets [...]: the budgets-th largest of each row of scores [..., Sk] (budgets in [1, Sk]), by a full
    descending sort: the definition the Triton path (attention.kernels.row_threshold) is tested against."""
    ranked = scores.sort(dim=-1, descending=True).values
    return ranked.gather(-1, (budgets.expand(scores.shape[:-1]) - 1)[..., None]).squeeze(-1)


def row_budgets(positions: torch.Tensor, density: float) -> torch.Tensor:
    """long [R]: the oracle's keys per query row at absolute `positions`, ceil(density * (pos + 1)) in fp32, >= 1."""
    return torch.ceil(density * (positions + 1)).long().clamp(min=1)


def row_topk_keep(scores: torch.Tensor, positions: torch.Tensor, density: float) -> torch.Tensor:
    """bool like scores [B, H, R, Sk] (causal-masked with -inf): row r keeps its ceil(density * (pos + 1))
    highest scores (at least one), ties at the threshold included. The oracle's threshold, defined once.

    On the Triton path each row's threshold comes from a 32-pass bisection on the float bits over its causal keys
    (exact, no sort; keys past pos are -inf and rank last, so they never change a budget <= pos + 1)."""
    budget = row_budgets(positions, density)
    if triton_enabled(scores.device):
        from attention.kernels.row_threshold import row_thresholds  # imported here: it loads triton

        rows = scores.reshape(-1, scores.shape[-1])  # a view for a contiguous chunk of scores
        lengths = (positions + 1).expand(scores.shape[:-1]).reshape(-1)
        threshold = row_thresholds(rows, budget.expand(scores.shape[:-1]).reshape(-1), lengths)
        threshold = threshold.view(scores.shape[:-1])[..., None]
    else:
        threshold = sorted_row_thresholds(scores, budget)[..., None]
    causal = torch.arange(scores.shape[-1], device=scores.device)[None, :] <= positions[:, None]
    return causal & (scores >= threshold)
