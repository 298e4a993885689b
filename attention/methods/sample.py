"""SampleAttention (Zhu et al. 2024): query-guided sampling, score-based KV filtering, sparse window+stripe prefill.

Stage 1 scores key columns (and diagonals for pattern=column_slash) with the exact causal softmax of a few
sampled query rows; stage 2 keeps per head the fewest columns reaching alpha of the sampled mass (or the best
columns within a density budget); the shared executor then runs sink + window + columns (+ slashes).
"""
import dataclasses
import functools
import math

import torch

from attention import kv_filter
from attention.backend import triton_enabled
from attention.density import base_cells
from attention.kernels.config import HEAD_DIMS
from attention.method import ConfigError, MethodConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register
from attention.scores import sampled_scores

RUN = 64  # sampled rows come in runs of this many consecutive queries (the kernels' block); the r_row and chunk_n
# comments say 64: keep them in step


@dataclasses.dataclass
class SampleConfig(MethodConfig):
    alpha: float = 0.95        # CRA threshold: share of sampled column mass the kept columns must reach
    r_row: float = 0.05        # share of query rows sampled (strided; the last 64 rows always included)
    r_w: float = 0.08          # local window width as a share of the sequence
    pattern: str = "column"    # column | column_slash
    alpha_c: float = 0.95      # column_slash: threshold for columns
    alpha_s: float = 0.95      # column_slash: threshold for diagonals
    chunk_n: int = 8           # column_slash: sample the last 64 rows of each of chunk_n chunks
    granularity: int = 1       # 1 = single key columns; 64 / 128 = whole key blocks
    sink: int = 4              # first tokens always kept
    density: float = 0.0       # > 0: fixed budget, best columns until this share of the causal area (replaces
                               # alpha / alpha_c; column_slash still adds its alpha_s diagonals on top)
    dense_above: float = -1.0  # GPU: a head whose selected density reaches this runs dense (-1: the calibrated
                               # limits, attention/fallback.py; 0: always; 1: never)
    dense_backend: str = "cudnn"  # SDPA backend of those dense layers: cudnn | flash | efficient | auto

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
        if self.dense_above != -1.0:
            check_range("dense_above", self.dense_above, 0, 1)
        if self.dense_backend not in ("cudnn", "flash", "efficient", "auto"):
            raise ConfigError(f"dense_backend={self.dense_backend!r} is not one of: cudnn, flash, efficient, auto")


def fused_supported(q, k) -> bool:
    """Whether the fused column path (attention/sample_fused.py) can run these q, k."""
    return triton_enabled(q.device) and q.shape[-1] in HEAD_DIMS and q.shape[2] <= k.shape[2]


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

    def __init__(self, config=None):
        super().__init__(config)
        self._plans = None  # sample_fused.RowPlans, made on the first fused layer

    @property
    def recall_target(self) -> float:
        cfg = self.config
        return cfg.alpha_c if cfg.pattern == "column_slash" else cfg.alpha

    @property
    def predicted_is_exact(self) -> bool:
        """A fixed budget is the density; otherwise window + sinks are only a floor under what is selected."""
        return self.config.density > 0

    def predicted_density(self, q_len, k_len):
        """Window + sinks cover this much whatever is selected; a fixed budget is known too (no sync)."""
        return self._predicted(q_len, k_len)

    @functools.lru_cache(maxsize=64)  # host arithmetic once per shape: TTFT of small models is host-bound
    def _predicted(self, q_len, k_len):
        window = math.ceil(self.config.r_w * k_len)
        base, causal = base_cells(q_len, k_len, window, min(self.config.sink, k_len))
        floor = base / causal
        return max(self.config.density, floor) if self.config.density > 0 else floor

    def sparse_prefill(self, q, k, v, scale, layer_idx, limits, predicted):
        """The column pattern on the Triton path runs fused (attention/sample_fused.py: stages 1-2 in three
        launches, the layer's one sync for the fallback, the sparse kernel); other cases: the base path."""
        cfg = self.config
        if cfg.pattern != "column" or cfg.granularity != 1 or not fused_supported(q, k):
            return super().sparse_prefill(q, k, v, scale, layer_idx, limits, predicted)
        selected, window = self.stages(q, k, scale)
        density = selected.density[0] if q.shape[0] == 1 else selected.density.mean(0)  # a view: no launch

        from attention import sample_fused  # imported here: it loads triton

        def sparse(qs, ks, vs, heads, needed=None):
            return sample_fused.attend(qs, ks, vs, scale, window, selected.heads(heads), needed)
        extra = selected.needed() if selected.path == "tma" else None  # read in the same sync
        return self.execute(q, k, v, scale, layer_idx, density, limits, sparse, extra=extra)

    def stages(self, q, k, scale):
        """Stages 1 and 2 of the fused path (attention/sample_fused.py): (Selection, window); no host sync."""
        from attention import sample_fused  # imported here: it loads triton

        cfg = self.config
        q_len, k_len, head_dim = q.shape[2], k.shape[2], q.shape[3]
        window = math.ceil(cfg.r_w * k_len)
        base, causal = base_cells(q_len, k_len, window, min(cfg.sink, k_len))
        budget = max(0.0, cfg.density * causal - base) if cfg.density > 0 else None
        if self._plans is None:
            self._plans = sample_fused.RowPlans()
        plan = self._plans.get(("rows", cfg.r_row), lambda: strided_rows(q_len, cfg.r_row, q.device), q_len, k_len,
                               head_dim, q.device)
        selected = sample_fused.select(q, k, scale, plan, sink=cfg.sink, window=window, base=base, causal=causal,
                                       alpha=None if budget is not None else cfg.alpha, budget=budget)
        return selected, window

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
        pattern = SparsePattern(sink=cfg.sink, window=window, columns=kv_filter.to_indices(keep))
        if slash:
            diag[..., :window] = 0.0  # diagonals inside the window are computed anyway
            pattern.slashes = kv_filter.to_indices(kv_filter.top_mass(diag, cfg.alpha_s))
        return pattern

    def select(self, col, alpha, window, q_len, k_len) -> torch.Tensor:
        g = self.config.granularity
        scores = kv_filter.group_scores(col, g)
        if self.config.density > 0:
            # area each key column adds outside sink and window: the queries at least `window` past it
            keys = torch.arange(k_len, device=col.device)
            area = (k_len - torch.clamp(keys + window, min=k_len - q_len)).clamp(min=0).float()
            area = torch.where(keys >= self.config.sink, area, 0.0)
            base, causal = base_cells(q_len, k_len, window, self.config.sink)
            budget = max(0.0, self.config.density * causal - base)
            keep = kv_filter.top_area(scores, kv_filter.group_scores(area[None, None], g), budget)
        else:
            keep = kv_filter.top_mass(scores, alpha)
        return kv_filter.expand_blocks(keep, g, k_len)
