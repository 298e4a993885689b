"""Stand-in for the lead's SparseMethod base (attention/method.py, not merged yet): a subclass implements only
build_pattern(q, k, scale, layer_idx) -> SparsePattern; prefill, keep_mask, sparse_pattern and the per-layer
density record follow from it. To be replaced by SparseMethod when main's "methods folder" commit is merged.
"""
import torch

from attention.block_select import block_cells, blocks_density
from attention.executor import run_pattern
from attention.kernels.density import pattern_density
from attention.pattern import SparsePattern
from attention.registry import AttentionMethod


def pattern_share(pattern: SparsePattern, batch: int, heads: int, q_len: int, k_len: int, device) -> torch.Tensor:
    """Exact kept share of the causal area per (batch, head), without an S x S mask: float32 [B, H]."""
    only_blocks = (pattern.blocks is not None and pattern.sink == 0 and pattern.window == 0
                   and pattern.columns is None and pattern.slashes is None)
    if only_blocks:
        cells = block_cells(q_len, k_len, pattern.block, device)
        return blocks_density(pattern.blocks.to(device), cells).expand(batch, heads).clone()
    if pattern.blocks is None:
        return pattern_density(pattern, batch, heads, q_len, k_len, device)
    raise NotImplementedError("pattern_share: mixed block and stripe patterns are not used by these methods")


class PatternMethod(AttentionMethod):
    sparse = True

    def __init__(self, config=None):
        super().__init__(config)
        self.knobs: dict = {}  # what the last build_pattern solved or chose (recorded beside the density)

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        raise NotImplementedError

    def prefill(self, q, k, v, scale, layer_idx=0):
        pattern = self.build_pattern(q, k, scale, layer_idx)
        out = run_pattern(q, k, v, pattern, scale)
        share = pattern_share(pattern, q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
        self.record(layer_idx, density=share.mean(0), **self.knobs)  # a device tensor: no host sync here
        return out

    def sparse_pattern(self, q, k, scale, layer_idx=0):
        return self.build_pattern(q, k, scale, layer_idx)

    def keep_mask(self, q, k, scale, layer_idx=0):
        pattern = self.build_pattern(q, k, scale, layer_idx)
        return pattern.keep_mask(q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
