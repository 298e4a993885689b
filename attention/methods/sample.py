"""SampleAttention (Zhu et al. 2024): query-guided sampling, score-based KV filtering, sparse window+stripe prefill.

Stage 1 scores key columns (and diagonals for pattern=column_slash) with the exact causal softmax of a few
sampled query rows; stage 2 keeps per head the fewest columns reaching alpha of the sampled mass (or the best
columns within a density budget); the shared executor then runs sink + window + columns (+ slashes).
"""
import dataclasses
import math

import torch

from attention import selection
from attention.density import base_cells
from attention.method import ConfigError, MethodConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register
from attention.scores import sampled_scores

RUN = 64  # sampled rows come in runs of this many consecutive queries (the kernels' block)


@dataclasses.dataclass
class SampleConfig(MethodConfig):
    alpha: float = 0.95        # CRA threshold: share of sampled column mass the kept columns must reach
    r_row: float = 0.05        # share of query rows sampled (strided; the last RUN rows always included)
    r_w: float = 0.08          # local window width as a share of the sequence
    pattern: str = "column"    # column | column_slash
    alpha_c: float = 0.95      # column_slash: threshold for columns
    alpha_s: float = 0.95      # column_slash: threshold for diagonals
    chunk_n: int = 8           # column_slash: sample the last RUN rows of each of chunk_n chunks
    granularity: int = 1       # 1 = single key columns; 64 / 128 = whole key blocks
    sink: int = 4              # first tokens always kept
    density: float = 0.0       # > 0: fixed budget, best columns until this share of the causal area (replaces
                               # alpha / alpha_c; column_slash still adds its alpha_s diagonals on top)

    def validate(self):
        check_range("alpha", self.alpha, 0, 1, low_open=True)
        check_range("r_row", self.r_row, 0, 1, low_open=True)
        check_range("r_w", self.r_w, 0, 1)
        check_range("alpha_c", self.alpha_c, 0, 1, low_open=True)
        check_range("alpha_s", self.alpha_s, 0, 1, low_open=True)
        check_range("density", self.density, 0, 1)
        if self.pattern not in ("column", "column_slash"):
            raise ConfigError(f"pattern={self.pattern!r} is not one of: column, column_slash")
        if self.chunk_n < 1:
            raise ConfigError(f"chunk_n={self.chunk_n} must be >= 1")
        if self.granularity not in (1, 64, 128):
            raise ConfigError(f"granularity={self.granularity} is not one of: 1 (columns), 64, 128 (key blocks)")
        if self.sink < 0:
            raise ConfigError(f"sink={self.sink} must be >= 0")


def strided_rows(q_len: int, r_row: float, device) -> torch.Tensor:
    """Every round(1/r_row)-th query counted back from the end, plus the whole last RUN rows; ascending."""
    stride = max(1, round(1 / r_row))
    tail = max(0, q_len - RUN)
    start = (q_len - 1) % stride
    head = torch.arange(start, max(start, tail), stride, device=device)
    return torch.cat([head, torch.arange(tail, q_len, device=device)])


def chunk_rows(q_len: int, chunk_n: int, device) -> torch.Tensor:
    """The last RUN rows of each of chunk_n equal chunks (fewer chunks when they would overlap), each run padded
    with -1 to RUN so that every kernel block is one run of consecutive queries."""
    n = max(1, min(chunk_n, q_len // RUN))
    runs = []
    for c in range(n):
        end = q_len * (c + 1) // n
        run = torch.arange(max(0, end - RUN), max(0, end - RUN) + RUN, device=device)
        runs.append(torch.where(run < end, run, -1))
    return torch.cat(runs)


@register
class SampleAttention(SparseMethod):
    name = "sample"
    Config = SampleConfig
    description = "SampleAttention: sampled-row column (+slash) scores, CRA selection, window+stripe sparse prefill"

    @property
    def recall_target(self) -> float:
        cfg = self.config
        return cfg.alpha_c if cfg.pattern == "column_slash" else cfg.alpha

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        cfg = self.config
        batch, heads, q_len, _ = q.shape
        k_len = k.shape[2]
        window = math.ceil(cfg.r_w * k_len)
        slash = cfg.pattern == "column_slash"
        rows = chunk_rows(q_len, cfg.chunk_n, q.device) if slash else strided_rows(q_len, cfg.r_row, q.device)
        col, diag = sampled_scores(q, k, scale, rows, slash)
        col[..., :cfg.sink] = 0.0  # sinks are always kept; let the threshold spend on the rest
        keep = self.select(col, cfg.alpha_c if slash else cfg.alpha, window, q_len, k_len)
        pattern = SparsePattern(sink=cfg.sink, window=window, columns=selection.to_indices(keep))
        if slash:
            diag[..., :window] = 0.0  # diagonals inside the window are computed anyway
            pattern.slashes = selection.to_indices(selection.top_mass(diag, cfg.alpha_s))
        return pattern

    def select(self, col, alpha, window, q_len, k_len) -> torch.Tensor:
        g = self.config.granularity
        scores = selection.group_scores(col, g)
        if self.config.density > 0:
            # area each key column adds outside sink and window: the queries at least `window` past it
            keys = torch.arange(k_len, device=col.device)
            area = (k_len - torch.clamp(keys + window, min=k_len - q_len)).clamp(min=0).float()
            area = torch.where(keys >= self.config.sink, area, 0.0)
            base, causal = base_cells(q_len, k_len, window, self.config.sink)
            budget = max(0.0, self.config.density * causal - base)
            keep = selection.top_area(scores, selection.group_scores(area[None, None], g), budget)
        else:
            keep = selection.top_mass(scores, alpha)
        return selection.expand_blocks(keep, g, k_len)
