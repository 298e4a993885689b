"""Mask diagnostics: per head, how much of the causal area a method computes (density) and how much of the
dense attention mass its mask keeps (recall, the paper's CRA measured for real), exact on sampled query rows.

Only the sampled rows ever exist as [rows, S] tensors (scores, probabilities, masks), taken in row chunks,
so a layer costs O(rows x S) memory and runs at 32K+ on a GPU. Density comes from the whole pattern in
closed form (kernels.density.pattern_density, block cell counts) or, for mixed patterns, an exact chunked count.
A layer is measured on its own q, k: what the earlier layers, run with the same method, produced.

What each method keeps comes from AttentionMethod.sparse_pattern when a method overrides it, else from the
adapters below over the methods' public APIs (to move into the method files as sparse_pattern overrides).
"""
import dataclasses
import inspect

import torch

from attention.kernels.density import pattern_density
from attention.pattern import SparsePattern
from attention.pattern import density as mask_density
from attention.reference import causal_mask
from attention.registry import AttentionMethod

SCORE_ELEMENTS = 1 << 24       # fp32 scores held at once per chunk of sampled rows (64 MiB)
FULL_MASK_MAX = 4096           # the keep_mask fallback builds S x S: only up to this length
FRONTIER = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)  # per-row kept shares of the oracle frontier curve


@dataclasses.dataclass
class RowTopK:
    """oracle-topk's mask: row i keeps its ceil(density * (i + 1)) highest-scoring causal keys (ties kept)."""
    density: float


@dataclasses.dataclass
class FullMask:
    """A method's own dense keep_mask [B, H, S, S] (fallback for sparse methods with no pattern; small S)."""
    keep: torch.Tensor


def _keep_mask(method, q, k, scale, layer_idx):
    if q.shape[2] > FULL_MASK_MAX:
        raise NotImplementedError(f"{method.name}: no sparse_pattern and length {q.shape[2]} > {FULL_MASK_MAX} "
                                  "for its dense keep_mask; add a sparse_pattern override")
    takes_layer = "layer_idx" in inspect.signature(method.keep_mask).parameters
    keep = method.keep_mask(q, k, scale, layer_idx=layer_idx) if takes_layer else method.keep_mask(q, k, scale)
    if keep is None:  # a sparse method whose mask nobody can see: never report it as dense
        raise NotImplementedError(f"{method.name}: neither sparse_pattern nor keep_mask; diagnostics cannot see "
                                  "its prefill mask")
    return FullMask(keep.to(torch.bool) & causal_mask(q.shape[2], k.shape[2], q.device))


# name -> (method, q, k, scale, layer_idx) -> SparsePattern | RowTopK | FullMask | None (None = dense causal)
# (the methods whose keep set is a SparsePattern say so through their own sparse_pattern)
ADAPTERS = {
    "oracle-topk": lambda m, q, k, scale, layer: RowTopK(m.config.density),  # score-dependent: not a pattern
}


def method_plan(method: AttentionMethod, q, k, scale: float, layer_idx: int = 0):
    """What `method`'s prefill keeps for these q, k: its sparse_pattern override, else an adapter, else the
    base (None for dense methods), else its dense keep_mask at small lengths."""
    if type(method).sparse_pattern is not AttentionMethod.sparse_pattern:
        return method.sparse_pattern(q, k, scale, layer_idx)
    if method.name in ADAPTERS:
        return ADAPTERS[method.name](method, q, k, scale, layer_idx)
    try:
        return method.sparse_pattern(q, k, scale, layer_idx)
    except NotImplementedError:
        return _keep_mask(method, q, k, scale, layer_idx)


def sample_rows(length: int, n: int = 64, seed: int = 0) -> torch.Tensor:
    """One row drawn in each of n equal strata, plus the last row; ascending, unique.

    Jittered rather than strided so the rows do not line up with a method's own sampling stride (SampleAttention
    selects columns from strided rows; measuring on exactly those rows would flatter it)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + length)
    edges = torch.linspace(0, length, n + 1, dtype=torch.float64)
    rows = (edges[:-1] + torch.rand(n, generator=gen, dtype=torch.float64) * (edges[1:] - edges[:-1])).long()
    rows = torch.cat([rows.clamp(0, length - 1), torch.tensor([length - 1])])
    return torch.unique(rows)


def causal_cells(q_len: int, k_len: int) -> float:
    return q_len * (q_len + 1) / 2 + q_len * (k_len - q_len)


def block_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """Kept share of a blocks-only pattern from per-block causal cell counts: float [B, H]."""
    size, q_off = pattern.block, k_len - q_len
    rows = torch.arange(q_off, k_len, device=device)
    qb_n, kb_n = pattern.blocks.shape[-2:]
    # causal cells of block (a, b): for each query row of block a, its keys of block b that are <= the row
    first = torch.arange(kb_n, device=device) * size
    per_row = (rows[:, None] + 1 - first[None, :]).clamp(min=0, max=size)  # [Sq, kb]
    per_row = torch.minimum(per_row, (k_len - first).clamp(min=0)[None, :])
    cells = torch.zeros(qb_n, kb_n, device=device, dtype=torch.float64)
    cells.index_add_(0, rows // size, per_row.double())
    kept = (pattern.blocks.to(device).double() * cells).sum((-2, -1))
    return (kept / causal_cells(q_len, k_len)).float().expand(batch, heads).clone()


def exact_density(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device,
                  chunk: int = 256) -> torch.Tensor:
    """Kept share of any pattern by counting its mask in row chunks (exact; O(S^2) work, O(chunk x S) memory)."""
    kept = torch.zeros(batch, heads, device=device, dtype=torch.float64)
    for start in range(k_len - q_len, k_len, chunk):
        stop = min(start + chunk, k_len)
        keep = pattern.keep_mask(batch, heads, stop - start, k_len, device, q_start=start)
        kept += keep.sum((-2, -1)).double()
    return (kept / causal_cells(q_len, k_len)).float()


def plan_density(plan, batch: int, heads: int, length: int, device) -> torch.Tensor:
    """Share of the causal area the plan computes, per (batch, head): float [B, H]."""
    if plan is None:
        return torch.ones(batch, heads, device=device)
    if isinstance(plan, RowTopK):
        pos = torch.arange(length, device=device)  # the same fp32 arithmetic as oracle-topk's own budget
        kept = torch.ceil(plan.density * (pos + 1)).clamp(min=1).double().sum()  # ties would add a few cells
        return (kept / causal_cells(length, length)).float().expand(batch, heads).clone()
    if isinstance(plan, FullMask):
        return mask_density(plan.keep).expand(batch, heads).to(device)
    if plan.blocks is None:
        return pattern_density(plan, batch, heads, length, length, device).to(device)
    only_blocks = plan.sink == 0 and plan.window == 0 and plan.columns is None and plan.slashes is None
    if only_blocks:
        return block_density(plan, batch, heads, length, length, device)
    return exact_density(plan, batch, heads, length, length, device)


def row_keep(plan, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Bool [B, H, r, S] of what the plan keeps in rows `pos`, causal included; scores are causal-masked fp32."""
    batch, heads, _, length = scores.shape
    causal = torch.arange(length, device=scores.device)[None, :] <= pos[:, None]
    if plan is None:
        return causal.expand(batch, heads, -1, -1)
    if isinstance(plan, RowTopK):
        budget = torch.ceil(plan.density * (pos + 1)).long().clamp(min=1)
        ranked = scores.sort(dim=-1, descending=True).values
        threshold = ranked.gather(-1, (budget - 1).expand(batch, heads, -1)[..., None])
        return causal & (scores >= threshold)
    if isinstance(plan, FullMask):
        return plan.keep[:, :, pos].expand(batch, heads, -1, -1) & causal
    return plan.keep_mask(batch, heads, len(pos), length, scores.device, q_positions=pos)


def row_scores(q, k, scale: float, pos: torch.Tensor) -> torch.Tensor:
    """Exact fp32 causal scores of query rows `pos` against all keys: [B, Hq, r, S] (-inf above the diagonal).
    Grouped query heads meet their kv head through a view, so k is never expanded."""
    batch, heads, _, dim = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    grouped = q[:, :, pos].float().view(batch, kv_heads, heads // kv_heads, len(pos), dim)
    scores = (grouped @ k.float()[:, :, None].transpose(-1, -2)) * scale
    scores = scores.view(batch, heads, len(pos), length)
    return scores.masked_fill(torch.arange(length, device=q.device)[None, :] > pos[:, None], float("-inf"))


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
    chunk = max(1, SCORE_ELEMENTS // (batch * heads * length))
    recall, oracle, curve = [], [], []
    for start in range(0, len(rows), chunk):
        pos = rows[start:start + chunk]
        scores = row_scores(q, k, scale, pos)
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


def method_alpha(method: AttentionMethod, default: float = 0.95) -> float:
    """The recall target a method sets itself (SampleAttention's alpha, or its column threshold), else default."""
    cfg = method.config
    if getattr(cfg, "pattern", None) == "column_slash" and hasattr(cfg, "alpha_c"):
        return float(cfg.alpha_c)
    alpha = getattr(cfg, "alpha", None)
    return float(alpha) if isinstance(alpha, (int, float)) and 0 < alpha <= 1 else default


def summary(layers: list[dict]) -> dict:
    """Means over layers and heads of a method's per-layer diagnostics (layers without recall skipped)."""
    measured = [d for d in layers if "recall_mean" in d]
    if not measured:
        return {}
    def mean(key):
        return sum(sum(d[key]) / len(d[key]) for d in measured) / len(measured)
    return {"density": mean("density"), "recall_mean": mean("recall_mean"),
            "recall_min": min(min(d["recall_min"]) for d in measured), "oracle_recall_mean": mean("oracle_recall_mean")}

