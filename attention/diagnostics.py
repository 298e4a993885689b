"""Mask diagnostics: per head, how much of the causal area a method computes (density) and how much of the
dense attention mass its mask keeps (recall, the paper's CRA measured for real), exact on sampled query rows.

Only the sampled rows ever exist as [rows, S] tensors (scores, probabilities, masks), taken in row chunks,
so a layer costs O(rows x S) memory and runs at 32K+ on a GPU. Density comes from the whole pattern in
closed form (attention.density.pattern_density, block cell counts) or, for mixed patterns, an exact chunked count.
A layer is measured on its own q, k: what the earlier layers, run with the same method, produced.

What each method keeps comes from the method itself (AttentionMethod.plan): a sparse method's own pattern, so
diagnostics knows no method by name.
"""
import torch

from attention.density import mask_density, pattern_density, row_topk_density
from attention.method import AttentionMethod, FullMask
from attention.pattern import RowTopK
from attention.scores import causal_scores, row_chunk
from attention.kv_filter import row_topk_keep

FRONTIER = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)  # per-row kept shares of the oracle frontier curve
DEFAULT_RECALL_TARGET = 0.95  # for methods that set none themselves


def method_plan(method: AttentionMethod, q, k, scale: float, layer_idx: int = 0):
    """What `method`'s prefill keeps for these q, k: a SparsePattern, RowTopK, FullMask or None (dense)."""
    return method.plan(q, k, scale, layer_idx)


def sample_rows(length: int, n: int = 64, seed: int = 0) -> torch.Tensor:
    """One row drawn in each of n equal strata, plus the last row; ascending, unique.

    Jittered rather than strided so the rows do not line up with a method's own sampling stride (SampleAttention
    selects columns from strided rows; measuring on exactly those rows would flatter it)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + length)
    edges = torch.linspace(0, length, n + 1, dtype=torch.float64)
    rows = (edges[:-1] + torch.rand(n, generator=gen, dtype=torch.float64) * (edges[1:] - edges[:-1])).long()
    rows = torch.cat([rows.clamp(0, length - 1), torch.tensor([length - 1])])
    return torch.unique(rows)


def plan_density(plan, batch: int, heads: int, length: int, device) -> torch.Tensor:
    """Share of the causal area the plan computes, per (batch, head): float [B, H]."""
    if plan is None:
        return torch.ones(batch, heads, device=device)
    if isinstance(plan, RowTopK):
        return row_topk_density(plan.density, length, device).expand(batch, heads).clone()
    if isinstance(plan, FullMask):
        return mask_density(plan.keep).expand(batch, heads).to(device)
    return pattern_density(plan, batch, heads, length, length, device).to(device)


def row_keep(plan, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Bool [B, H, r, S] of what the plan keeps in rows `pos`, causal included; scores are causal-masked fp32."""
    batch, heads, _, length = scores.shape
    causal = torch.arange(length, device=scores.device)[None, :] <= pos[:, None]
    if plan is None:
        return causal.expand(batch, heads, -1, -1)
    if isinstance(plan, RowTopK):
        return row_topk_keep(scores, pos, plan.density)
    if isinstance(plan, FullMask):
        return plan.keep[:, :, pos].expand(batch, heads, -1, -1) & causal
    return plan.keep_mask(batch, heads, len(pos), length, scores.device, q_positions=pos)


def topk_mass(sorted_cum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mass of the `count` largest probabilities of each row, from the rows' descending cumulative sums."""
    index = (count.long() - 1).clamp(min=0, max=sorted_cum.shape[-1] - 1)
    return torch.where(count > 0, sorted_cum.gather(-1, index), 0.0)


def layer_diagnostics(method: AttentionMethod, q, k, scale: float, layer_idx: int = 0, rows=None,
                      frontier=FRONTIER) -> dict:
    """Per head of one layer (means over batch): density, recall mean/worst over the sampled rows, the worst
    row's position, and the oracle's recall at the same per-row budget (top-k of each row, k = what the method
    kept there) and at the fixed per-row shares `frontier`. Inputs in transformers' layout (kv heads unexpanded)."""
    batch, heads, length, _ = q.shape
    device = q.device
    rows = sample_rows(length) if rows is None else rows
    rows = rows.to(device)
    plan = method_plan(method, q, k, scale, layer_idx)
    density = plan_density(plan, batch, heads, length, device)
    chunk = row_chunk(batch, heads, length)
    recall, oracle, curve = [], [], []
    for start in range(0, len(rows), chunk):
        pos = rows[start:start + chunk]
        scores = causal_scores(q, k, scale, pos, rows=pos)
        probs = torch.softmax(scores, dim=-1)
        keep = row_keep(plan, scores, pos)
        recall.append((probs * keep).sum(-1))
        cum = probs.sort(dim=-1, descending=True).values.cumsum(-1)
        oracle.append(topk_mass(cum, keep.sum(-1, keepdim=True)).squeeze(-1))
        # the same fp32 budget arithmetic as oracle-topk, so the curve equals that method at each share
        budget = torch.stack([torch.ceil(share * (pos + 1)).clamp(min=1) for share in frontier])  # [G, r]
        curve.append(topk_mass(cum, budget.T.expand(batch, heads, -1, -1)))  # [B, H, r, G]
        del scores, probs, keep, cum
    recall = torch.cat(recall, dim=2).clamp(max=1.0)  # fp32 sums may pass 1 by an ulp
    oracle = torch.cat(oracle, dim=2).clamp(max=1.0)
    curve = torch.cat(curve, dim=2).clamp(max=1.0)
    worst = recall.min(dim=2)
    return {
        "layer": layer_idx,
        "plan": plan_kind(plan),
        "heads": heads,
        "kv_heads": k.shape[1],
        "rows": len(rows),
        "density": density.mean(0).tolist(),
        "recall_mean": recall.mean((0, 2)).tolist(),
        "recall_min": worst.values.min(0).values.tolist(),
        "worst_row": rows[worst.indices[0]].tolist(),  # batch 0's worst row per head
        "oracle_recall_mean": oracle.mean((0, 2)).tolist(),
        "frontier_share": list(frontier),
        "frontier_recall": curve.mean((0, 2)).tolist(),  # [H][G]
    }


def plan_kind(plan) -> str:
    if plan is None:
        return "dense"
    if isinstance(plan, RowTopK):
        return "topk"
    if isinstance(plan, FullMask):
        return "mask"
    return "pattern"


def method_alpha(method: AttentionMethod, default: float = DEFAULT_RECALL_TARGET) -> float:
    """The recall target a method sets itself (AttentionMethod.recall_target), else default."""
    target = method.recall_target
    return float(target) if target is not None else default


def summary(layers: list[dict]) -> dict:
    """Means over layers and heads of a method's per-layer diagnostics (layers without recall skipped)."""
    measured = [d for d in layers if "recall_mean" in d]
    if not measured:
        return {}
    def mean(key):
        return sum(sum(d[key]) / len(d[key]) for d in measured) / len(measured)
    return {"density": mean("density"), "recall_mean": mean("recall_mean"),
            "recall_min": min(min(d["recall_min"]) for d in measured), "oracle_recall_mean": mean("oracle_recall_mean")}

