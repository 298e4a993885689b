"""Oracle top-k: each query keeps its own largest dense attention scores, for diagnostics only.

Query i keeps the ceil(density * (i + 1)) keys with the highest scores among its i + 1 causal keys
(ties at the threshold are all kept), so every query gets the same share of its past and the total
kept share equals `density` up to rounding. Knowing the dense scores first, it is the upper bound a
sparse mask of that density can reach per query. Reference path only: fp32 scores materialised per chunk
of query rows (attention.scores.causal_scores), softmax and P @ V in fp32 PyTorch, never faster than dense.
The threshold is attention.kv_filter.row_topk_keep's: a Triton bisection on the GPU, a sort on the CPU.
Default density 0.1.
"""
import dataclasses

import torch

from attention.density import causal_area
from attention.method import AttentionMethod, MethodConfig, check_range
from attention.pattern import RowTopK
from attention.reference import expand_kv
from attention.registry import register
from attention.scores import causal_scores, row_chunk
from attention.kv_filter import row_topk_keep


@dataclasses.dataclass
class OracleTopKConfig(MethodConfig):
    density: float = 0.1

    def validate(self):
        check_range("density", self.density, 0.0, 1.0, low_open=True)


@register
class OracleTopK(AttentionMethod):
    name = "oracle-topk"
    Config = OracleTopKConfig
    sparse = True
    description = "exact per-query top-k of dense attention at a given density (reference path; diagnostics)"

    def _chunks(self, q, k, scale):
        """Yield (start, stop, scores, keep) per query-row chunk: scores fp32 [B, H, rows, Sk] as causal_scores
        makes them; keep bool [B, H, rows, width] over the keys up to the chunk's last row (every later key is
        above the diagonal, -inf, never kept), so the threshold and the mask work on the causal part only."""
        q_len, k_len = q.shape[2], k.shape[2]
        chunk = min(256, row_chunk(q.shape[0], q.shape[1], k_len))
        for start in range(0, q_len, chunk):
            stop = min(start + chunk, q_len)
            width = k_len - q_len + stop
            q_pos = torch.arange(k_len - q_len + start, width, device=q.device)
            scores = causal_scores(q, k, scale, q_pos, rows=slice(start, stop))
            yield start, stop, scores, row_topk_keep(scores[..., :width], q_pos, self.config.density)

    def prefill(self, q, k, v, scale, layer_idx=0):
        out = torch.empty_like(q)
        values = expand_kv(v.float(), q.shape[1])
        kept = torch.zeros(q.shape[:2], device=q.device)
        for start, stop, scores, keep in self._chunks(q, k, scale):
            scores[..., :keep.shape[-1]].masked_fill_(~keep, float("-inf"))  # in place: the chunk's one score buffer
            out[:, :, start:stop] = (torch.softmax(scores, dim=-1) @ values).to(q.dtype)
            kept += keep.sum((-2, -1))
        self.record(layer_idx, density=(kept / causal_area(q.shape[2], k.shape[2])).mean(0))
        return out

    def keep_mask(self, q, k, scale, layer_idx=0):
        k_len = k.shape[2]
        return torch.cat([torch.nn.functional.pad(keep, (0, k_len - keep.shape[-1]))
                          for *_, keep in self._chunks(q, k, scale)], dim=2)

    def plan(self, q, k, scale, layer_idx=0):
        return RowTopK(self.config.density)  # score-dependent: not a pattern
