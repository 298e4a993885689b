"""StreamingLLM (Xiao et al. 2023) applied to prefill: attention sinks plus a recent window.

Each query attends to the first `n_sink` tokens (default 4, the paper's setting) and the `window` most
recent ones, itself included (default 2048, a cache size the paper evaluates). With `density` > 0 the
window is solved instead: the smallest whose kept share of the causal area reaches `density`.
Runs on the shared executor: on CUDA a sink+window pattern is a block mask (see kernels/flex_blocks.py).
"""
import dataclasses

import torch

from attention.executor import run_pattern
from attention.pattern import SparsePattern
from attention.registry import AttentionMethod, ConfigError, MethodConfig, check_range, register


@dataclasses.dataclass
class StreamingConfig(MethodConfig):
    n_sink: int = 4
    window: int = 2048      # recent tokens, the query itself included; replaced when density > 0
    density: float = 0.0    # 0 = use n_sink and window as given

    def validate(self):
        if self.n_sink < 0:
            raise ConfigError(f"n_sink={self.n_sink} must be >= 0")
        if self.window < 1:
            raise ConfigError(f"window={self.window} must be >= 1 (the query itself)")
        check_range("density", self.density, 0.0, 1.0)


def kept_cells(length: int, sink: int, window: int) -> int:
    """Cells kept by sink + window in a length x length causal prefill, without building the mask."""
    row = torch.arange(length)
    in_window = torch.clamp(row + 1, max=window)
    sink_outside_window = torch.clamp(torch.clamp(row + 1 - window, min=0), max=sink)
    return int((in_window + sink_outside_window).sum())


def window_for_density(length: int, sink: int, density: float) -> int:
    """Smallest window whose kept share reaches `density` (kept share grows with the window)."""
    target = density * length * (length + 1) / 2
    low, high = 1, max(length, 1)
    while low < high:
        mid = (low + high) // 2
        if kept_cells(length, sink, mid) >= target:
            high = mid
        else:
            low = mid + 1
    return low


@register
class StreamingLLM(AttentionMethod):
    name = "streaming"
    Config = StreamingConfig
    sparse = True
    description = "StreamingLLM prefill: n_sink first tokens + recent window"

    def pattern(self, length: int) -> SparsePattern:
        window = self.config.window
        if self.config.density > 0:
            window = window_for_density(length, self.config.n_sink, self.config.density)
        return SparsePattern(sink=self.config.n_sink, window=window)

    def prefill(self, q, k, v, scale, layer_idx=0):
        length = k.shape[2]
        pattern = self.pattern(length)
        share = kept_cells(length, pattern.sink, pattern.window) / (length * (length + 1) / 2)
        self.record(layer_idx, density=share, window=pattern.window)
        return run_pattern(q, k, v, pattern, scale)

    def sparse_pattern(self, q, k, scale, layer_idx=0):
        return self.pattern(k.shape[2])

    def keep_mask(self, q, k, scale):
        batch, heads, q_len, _ = q.shape
        return self.pattern(k.shape[2]).keep_mask(batch, heads, q_len, k.shape[2], q.device)
