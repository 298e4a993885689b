"""MInference (Jiang et al. 2024, arXiv 2407.02490): the vertical-slash head pattern, estimated online.

Per query head, the exact causal softmax of the last `last_q` queries is summed down each key column (vertical
score) and along each diagonal i - j (slash score). The head keeps its top `vertical_size` columns and top
`slash_size` diagonals; the first `init_columns` columns and the nearest `local_diagonals` diagonals are always
among them (MInference forces them by giving them infinite score). Here the forced ones become the pattern's
sink and window, the rest columns and slashes, so it runs on our column + slash kernel.

Defaults, from microsoft/MInference (minference/modules/minference_forward.py): last_q = 64; vertical_size
1000 and slash_size 6096, the fallback every head gets when no searched config names it; the first 30 columns
and 100 diagonals forced (their online vertical-slash kernel). Their sizes are clamped to at least 30 and 50;
here slash_size is clamped to at least `local_diagonals` instead, since with fewer slots than forced diagonals
their top-k picks arbitrarily among equal infinite scores. Ties elsewhere: the lower column index or the smaller
offset wins (a stable sort; MInference's torch.topk leaves tie order unspecified).
These sizes are tokens, tuned for 128K prompts: at 2K-8K they keep most or all of the causal area.

`density` > 0 replaces the sizes by ratio x (vertical_size, slash_size), MInference's own `minference_ratio`
knob, solved per layer so that the layer's kept share is closest to `density` (forced stripes stay).

Per-head pattern choice: MInference picks A-shape, vertical-slash or block-sparse per head by an offline search
that runs dense attention on a calibration prompt (search_pattern), and its public code then writes every
winner back as vertical-slash sizes (its shipped configs hold only vertical_and_slash entries). An online version
needs dense attention rows outside the estimation window to compare on, and block-sparse heads could not share
the column/slash kernel with the others; it is not offered here.
"""
import dataclasses

import torch

from attention.block_select import diagonal_sums, ranked, row_probs, solve
from attention.density import pattern_density
from attention.method import ConfigError, MethodConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register


@dataclasses.dataclass
class MInferenceConfig(MethodConfig):
    vertical_size: int = 1000    # key columns kept per head, the forced ones included
    slash_size: int = 6096       # diagonals kept per head, the forced ones included
    last_q: int = 64             # queries the estimate is taken from (the last ones)
    init_columns: int = 30       # first columns always kept
    local_diagonals: int = 100   # nearest diagonals always kept (offsets 0 .. local_diagonals - 1)
    density: float = 0.0         # > 0: scale both sizes so the layer keeps this share of the causal area

    def validate(self):
        for name in ("vertical_size", "slash_size", "last_q"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.init_columns < 0:
            raise ConfigError(f"init_columns={self.init_columns} must be >= 0")
        if self.local_diagonals < 1:
            raise ConfigError(f"local_diagonals={self.local_diagonals} must be >= 1 (the diagonal itself)")
        check_range("density", self.density, 0.0, 1.0)


@dataclasses.dataclass
class VerticalSlashScores:
    column_order: torch.Tensor  # long [B, H, Sk - sink]: non-forced columns, best first
    slash_order: torch.Tensor   # long [B, H, Sk - window]: non-forced offsets, best first
    sink: int
    window: int


@register
class MInference(SparseMethod):
    name = "minference"
    Config = MInferenceConfig
    description = "MInference vertical-slash: top columns and diagonals from the last 64 queries (column+slash kernel)"

    def scores(self, q, k, scale) -> VerticalSlashScores:
        cfg = self.config
        q_len, k_len = q.shape[2], k.shape[2]
        rows = torch.arange(max(0, q_len - cfg.last_q), q_len, device=q.device)
        probs = row_probs(q, k, scale, rows)
        vertical = probs.sum(2)
        slash = diagonal_sums(probs, k_len - len(rows))
        sink, window = min(cfg.init_columns, k_len), min(cfg.local_diagonals, k_len)
        _, column_order = ranked(vertical[..., sink:])
        _, slash_order = ranked(slash[..., window:])
        return VerticalSlashScores(column_order + sink, slash_order + window, sink, window)

    def counts(self, k_len: int, ratio: float) -> tuple[int, int]:
        """(extra columns, extra diagonals) beyond the forced ones for sizes scaled by ratio."""
        cfg = self.config
        sink, window = min(cfg.init_columns, k_len), min(cfg.local_diagonals, k_len)
        vertical = min(k_len, max(round(cfg.vertical_size * ratio), cfg.init_columns))
        slash = min(k_len, max(round(cfg.slash_size * ratio), cfg.local_diagonals))
        return max(0, vertical - sink), max(0, slash - window)

    @staticmethod
    def pattern(s: VerticalSlashScores, n_columns: int, n_slashes: int) -> SparsePattern:
        columns = s.column_order[..., :n_columns].sort(-1).values if n_columns else None
        slashes = s.slash_order[..., :n_slashes].sort(-1).values if n_slashes else None
        return SparsePattern(sink=s.sink, window=s.window, columns=columns, slashes=slashes)

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        batch, heads, q_len, _ = q.shape
        k_len = k.shape[2]
        s = self.scores(q, k, scale)
        ratio = 1.0
        if self.config.density > 0:
            def share(x: float) -> float:
                p = self.pattern(s, *self.counts(k_len, x))
                return float(pattern_density(p, batch, heads, q_len, k_len, q.device).mean())

            top = k_len / min(self.config.vertical_size, self.config.slash_size)
            ratio = solve(share, self.config.density, 0.0, top)
        n_columns, n_slashes = self.counts(k_len, ratio)
        self.knobs = {"ratio": ratio, "vertical": s.sink + n_columns, "slash": s.window + n_slashes}
        return self.pattern(s, n_columns, n_slashes)
