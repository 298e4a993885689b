"""StreamingLLM (Xiao et al. 2023) applied to prefill: attention sinks plus a recent window.

Each query attends to the first `n_sink` tokens (default 4, the paper's setting) and the most recent ones,
itself included. The window is `r_w` of the sequence by default (0.08, SampleAttention's local-window share, so
the method is sparse at every length); `window` fixes it in tokens instead (2048 is a cache size the paper
evaluates). With `density` > 0 the window is solved: the smallest whose kept share of the causal area reaches it.
Runs on the shared executor: on CUDA a sink+window pattern is a block mask (see attention/flex_blocks.py).
"""
import dataclasses
import math

from attention.density import base_cells, window_for_density
from attention.method import ConfigError, MethodConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register


@dataclasses.dataclass
class StreamingConfig(MethodConfig):
    n_sink: int = 4
    window: int | None = None  # recent tokens, the query itself included; None = r_w of the sequence
    r_w: float = 0.08       # window as a share of the sequence when window is None (not given)
    density: float = 0.0    # > 0: solve the window for this kept share (replaces window and r_w)
    dense_above: float = -1.0  # GPU: run a layer dense at this density or more (-1: measured limits; 1: never)

    def validate(self):
        if self.n_sink < 0:
            raise ConfigError(f"n_sink={self.n_sink} must be >= 0")
        if self.window is not None and self.window < 1:
            raise ConfigError(f"window={self.window} must be >= 1 (the query itself), or none for r_w of the sequence")
        check_range("r_w", self.r_w, 0.0, 1.0, low_open=True)
        check_range("density", self.density, 0.0, 1.0)
        if self.dense_above != -1.0:
            check_range("dense_above", self.dense_above, 0.0, 1.0)


@register
class StreamingLLM(SparseMethod):
    name = "streaming"
    Config = StreamingConfig
    description = "StreamingLLM prefill: n_sink first tokens + recent window (r_w of the sequence by default)"

    def window(self, length: int) -> int:
        cfg = self.config
        if cfg.density > 0:
            return window_for_density(length, cfg.n_sink, cfg.density)
        return cfg.window if cfg.window is not None else max(1, math.ceil(cfg.r_w * length))

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        return SparsePattern(sink=self.config.n_sink, window=self.window(k.shape[2]))

    def predicted_density(self, q_len, k_len):  # a fixed pattern: its density is known before any work
        base, causal = base_cells(q_len, k_len, self.window(k_len), min(self.config.n_sink, k_len))
        return base / causal
