"""The structured sparse pattern every sparse method builds and the shared executors run.

Per (batch, query head) a query at position i may attend key j <= i when any of these holds:
  sink     j < sink
  window   i - window < j
  columns  j is one of the selected key columns            (SampleAttention's column stripes)
  slashes  i - j is one of the selected diagonal offsets   (column_slash variant)
  blocks   (i // block, j // block) is a kept block        (BigBird-style block sparsity)
"""
from dataclasses import dataclass

import torch



@dataclass
class SparsePattern:
    sink: int = 0
    window: int = 0
    columns: torch.Tensor | None = None   # long [B, Hq, C], sorted ascending, -1 = unused slot
    slashes: torch.Tensor | None = None   # long [B, Hq, L], diagonal offsets >= 0, -1 = unused slot
    blocks: torch.Tensor | None = None    # bool [B, Hq, ceil(Sq/block), ceil(Sk/block)]
    block: int = 128

    def keep_mask(self, batch: int, heads: int, q_len: int, k_len: int, device=None, q_start: int | None = None,
                  q_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Dense bool [B, Hq, Sq, Sk] of this pattern, causal included. Small sizes only (tests, diagnostics).

        Queries are positions q_start .. q_start + q_len - 1 (default: the last q_len of the k_len keys), or the
        given q_positions (long [Sq], any order; q_len and q_start are then ignored), e.g. sampled rows.
        """
        if q_positions is not None:
            q_pos = q_positions.to(device=device, dtype=torch.long)[:, None]
            q_len = q_pos.shape[0]
        else:
            q_start = k_len - q_len if q_start is None else q_start
            q_pos = torch.arange(q_start, q_start + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        keep = (k_pos < self.sink) | (q_pos - k_pos < self.window)
        keep = keep.expand(batch, heads, q_len, k_len).clone()
        if self.columns is not None:
            col_hit = torch.zeros(batch, heads, k_len + 1, dtype=torch.bool, device=device)
            idx = torch.where(self.columns >= 0, self.columns, k_len)
            col_hit.scatter_(2, idx.to(device), True)
            keep |= col_hit[:, :, None, :k_len]
        if self.slashes is not None:
            diag_hit = torch.zeros(batch, heads, k_len + 1, dtype=torch.bool, device=device)
            idx = torch.where(self.slashes >= 0, self.slashes.clamp(max=k_len), k_len)
            diag_hit.scatter_(2, idx.to(device), True)
            offset = (q_pos - k_pos).clamp(min=0, max=k_len)  # [Sq, Sk]
            keep |= diag_hit[:, :, offset.flatten()].view(batch, heads, q_len, k_len)
        if self.blocks is not None:
            qb = (q_pos // self.block).squeeze(1)
            kb = (k_pos // self.block).squeeze(0)
            keep |= self.blocks.to(device)[:, :, qb][:, :, :, kb]
        return keep & (k_pos <= q_pos)


@dataclass
class RowTopK:
    """A score-dependent plan (oracle-topk): query i keeps its ceil(density * (i + 1)) highest-scoring causal
    keys, ties at the threshold kept. Not a SparsePattern: it needs the dense scores."""
    density: float
