"""Oracle top-k: each query keeps its own largest dense attention scores, for diagnostics only.

Query i keeps the ceil(density * (i + 1)) keys with the highest scores among its i + 1 causal keys
(ties at the threshold are all kept), so every query gets the same share of its past and the total
kept share equals `density` up to rounding. Knowing the dense scores first, it is the upper bound a
sparse mask of that density can reach per query. Reference path only: fp32 scores materialised per chunk
of query rows over the keys up to its last row, softmax and P @ V in fp32 PyTorch, never faster than dense.
Default density 0.1.

The kept set is attention.kv_filter.row_topk_keep's on attention.scores.causal_scores (the PyTorch path, a sort
per row). On the Triton path one kernel (attention.kernels.row_threshold.topk_finish) takes the chunk's q.k
products and, per row, scales them, finds the threshold by bisection and writes the masked scores in place:
the same values and mask in one pass instead of five full-size elementwise passes and a sort.
"""
import dataclasses

import torch

from attention.backend import triton_enabled
from attention.density import causal_area
from attention.method import AttentionMethod, MethodConfig, check_range
from attention.pattern import RowTopK
from attention.reference import expand_kv
from attention.registry import register
from attention.scores import causal_scores, row_chunk
from attention.kv_filter import row_budgets, row_topk_keep


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
        """Yield (start, stop, scores, keep) per query-row chunk, both over the keys up to the chunk's last row
        (`width`; every later key is above the diagonal, never kept): scores fp32 [B, H, rows, width] masked to
        the kept keys (-inf elsewhere), keep bool [B, H, rows, width]. Computing only those keys halves the work
        of a prefill (the mean width is half the keys)."""
        q_len, k_len = q.shape[2], k.shape[2]
        chunk = min(256, row_chunk(q.shape[0], q.shape[1], k_len))
        fused = triton_enabled(q.device)
        keys = k.float()  # once, not per chunk
        for start in range(0, q_len, chunk):
            stop = min(start + chunk, q_len)
            width = k_len - q_len + stop
            q_pos = torch.arange(k_len - q_len + start, width, device=q.device)
            if fused:
                scores, keep = self._fused_chunk(q[:, :, start:stop], keys[:, :, :width], scale, q_pos)
            else:
                scores = causal_scores(q, keys[:, :, :width], scale, q_pos, rows=slice(start, stop))
                keep = row_topk_keep(scores, q_pos, self.config.density)
                scores.masked_fill_(~keep, float("-inf"))  # in place: the chunk's one score buffer
            yield start, stop, scores, keep

    def _fused_chunk(self, q_rows, keys, scale, q_pos):
        from attention.kernels.row_threshold import topk_finish  # imported here: it loads triton

        batch, heads, n, dim = q_rows.shape
        kv_heads, width = keys.shape[1], keys.shape[2]
        # the product causal_scores computes (the same fp32 matmul), before its scale and causal mask
        grouped = q_rows.float().reshape(batch, kv_heads, heads // kv_heads, n, dim)
        scores = (grouped @ keys[:, :, None].transpose(-1, -2)).reshape(batch, heads, n, width)
        shape = (batch, heads, n)
        keep = topk_finish(scores.view(-1, width), row_budgets(q_pos, self.config.density).expand(shape).reshape(-1),
                           (q_pos + 1).expand(shape).reshape(-1), width, scale)
        return scores, keep.view(*shape, width)

    def prefill(self, q, k, v, scale, layer_idx=0):
        out = torch.empty_like(q)
        values = expand_kv(v.float(), q.shape[1])
        kept = torch.zeros(q.shape[:2], device=q.device)
        for start, stop, scores, keep in self._chunks(q, k, scale):
            out[:, :, start:stop] = (torch.softmax(scores, dim=-1) @ values[:, :, :scores.shape[-1]]).to(q.dtype)
            kept += keep.sum((-2, -1))
        self.record(layer_idx, density=(kept / causal_area(q.shape[2], k.shape[2])).mean(0))
        return out

    def keep_mask(self, q, k, scale, layer_idx=0):
        k_len = k.shape[2]
        return torch.cat([torch.nn.functional.pad(keep, (0, k_len - keep.shape[-1]))
                          for *_, keep in self._chunks(q, k, scale)], dim=2)

    def plan(self, q, k, scale, layer_idx=0):
        return RowTopK(self.config.density)  # score-dependent: not a pattern
