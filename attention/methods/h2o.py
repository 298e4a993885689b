"""H2O, Heavy-Hitter Oracle (Zhang et al. 2023), as KV-cache eviction after a dense prefill.

Prefill attention is dense (SDPA); alongside it the attention mass each key receives is summed over
all prompt queries (H2O's accumulated score), without ever holding the S x S matrix: on CUDA by the fused
Triton column-score kernel (attention.scores.column_scores), elsewhere by chunked PyTorch. Then, per kv head,
the cache keeps `density` of the prompt (default 0.2, the paper's 20% budget): the most recent
`recent_share` of the budget (default half, as the paper's 10% + 10% split) plus the heavy hitters, the
highest-scoring older keys, summed over the query heads sharing that kv head. compress_cache evicts the
rest, so decoding attends only to what was kept. The scoring runs inside prefill, so TTFT includes it.
Eviction happens once after prefill; decoded tokens are appended without further eviction.
"""
import dataclasses
import math

import torch

from attention.method import AttentionMethod, MethodConfig, check_range
from attention.methods.dense import sdpa_causal
from attention.registry import register
from attention.scores import column_scores

@dataclasses.dataclass
class H2OConfig(MethodConfig):
    density: float = 0.2       # share of the prompt kept in the cache, per kv head
    recent_share: float = 0.5  # share of that budget given to the most recent tokens

    def validate(self):
        check_range("density", self.density, 0.0, 1.0, low_open=True)
        check_range("recent_share", self.recent_share, 0.0, 1.0)


@register
class H2O(AttentionMethod):
    name = "h2o"
    Config = H2OConfig
    sparse = True
    description = "H2O: dense prefill, then keep heavy-hitter + recent keys in the decode cache"

    def __init__(self, config=None):
        super().__init__(config)
        self.kept: dict[int, torch.Tensor] = {}  # layer -> kept key positions [B, Hkv, budget], ascending
        self.prompt_len: dict[int, int] = {}     # layer -> prompt length those positions refer to

    def select(self, mass: torch.Tensor, kv_heads: int) -> torch.Tensor:
        """Kept positions per kv head from per-query-head mass [B, Hq, S]: recent window + heavy hitters."""
        batch, heads, length = mass.shape
        budget = max(1, math.ceil(self.config.density * length))
        recent = min(budget, round(budget * self.config.recent_share))
        per_kv = mass.view(batch, kv_heads, heads // kv_heads, length).sum(2)
        older = per_kv[..., :length - recent]  # heavy hitters come from before the recent window
        heavy = older.topk(budget - recent, dim=-1).indices
        recent_pos = torch.arange(length - recent, length, device=mass.device).expand(batch, kv_heads, -1)
        return torch.cat([heavy, recent_pos], dim=-1).sort(dim=-1).values

    def scores(self, q, k, scale):
        """H2O's accumulated attention: column sums of the causal softmax over every prompt query (the fused
        Triton kernel shared with SampleAttention's stage 1 where the backend picks Triton)."""
        return column_scores(q, k, scale)

    def plan(self, q, k, scale, layer_idx=0):
        return None  # prefill is dense; H2O's sparsity is the decode cache it keeps

    def prefill(self, q, k, v, scale, layer_idx=0):
        out = sdpa_causal(q, k, v, scale)
        kept = self.select(self.scores(q, k, scale), k.shape[1])
        self.kept[layer_idx], self.prompt_len[layer_idx] = kept, k.shape[2]
        self.record(layer_idx, density=kept.shape[-1] / k.shape[2])
        return out

    def compress_cache(self, layer_idx, k, v):
        kept = self.kept.get(layer_idx)
        if kept is None or kept.shape[:2] != k.shape[:2] or self.prompt_len[layer_idx] != k.shape[2]:
            return None  # this layer was not prefilled by us (e.g. a sliding-window layer): keep it whole
        index = kept[..., None].expand(-1, -1, -1, k.shape[-1])
        return k.gather(2, index), v.gather(2, index)
