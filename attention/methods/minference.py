"""MInference (Jiang et al. 2024, arXiv 2407.02490): the vertical-slash head pattern, estimated online.

Per query head, the exact causal softmax of the last `last_q` queries is summed down each key column (vertical
score) and along each diagonal i - j (slash score). The head keeps its top `vertical_size` columns and top
`slash_size` diagonals; the first `init_columns` columns and the nearest `local_diagonals` diagonals are always
among them (MInference forces them by giving them infinite score). Here the forced ones become the pattern's
sink and window, the rest columns and slashes, so it runs on our column + slash kernel.

Execution, as MInference's kernel does it (attention/bands.py): per 64-row query block each kept diagonal
becomes the 64-key range it crosses there, ranges that overlap or touch are merged into runs of whole 64-key tiles,
computed as tiles; kept columns outside them are gathered. At MInference's sizes this computes 2-4x the cells of
the exact diagonals, and that is what its accuracy and speed are measured on. `exact_diagonals=1` (a deviation)
runs only the selected diagonals instead, on the column + slash kernel.

Defaults, from microsoft/MInference (minference/modules/minference_forward.py, commit fb56c91): last_q = 64;
vertical_size 1000 and slash_size 6096, the fallback every head gets when no searched config names it; the first
30 columns and 100 diagonals forced (their online vertical-slash kernel). Their sizes are clamped to at least 30
and 50; here slash_size is clamped to at least `local_diagonals` instead, since with fewer slots than forced
diagonals their top-k picks arbitrarily among equal infinite scores. Ties elsewhere: the lower column index or the
smaller offset wins (a stable sort; MInference's torch.topk leaves tie order unspecified).
These sizes are tokens, tuned for 128K prompts: at 2K-8K they keep most or all of the causal area.
tests/test_peer_fidelity.py compares the selected columns and diagonals and the executed runs with the output of
their code on captured q/k (tests/fixtures/peer_official_masks.pt).

Per-head sizes: `config=PATH` reads MInference's own per-model file (e.g. minference/configs/
Llama_3.1_8B_Instruct_128k_kv_out_v32_fit_o_best_pattern.json from their repository, brought by the user; none
is shipped here): a JSON list with one object per layer mapping a query head's index to [pattern type,
vertical_size, slash_size, score]; heads it does not name get vertical_size / slash_size, as theirs get 1000 / 6096.
Their offline search writes only "vertical_and_slash" entries to the shipped files; a file with another type
("stream_llm", "block_sparse") is refused. Each layer's record says which sizes ran (`sizes`: per-head file or
uniform).

`density` > 0 scales every head's sizes by one ratio (MInference's own `minference_ratio` knob), solved per layer
so that the layer's executed share is closest to `density` (forced stripes stay).

Per-head pattern choice: MInference picks A-shape, vertical-slash or block-sparse per head by an offline search
that runs dense attention on a calibration prompt (search_pattern), and its public code then writes every
winner back as vertical-slash sizes (its shipped configs hold only vertical_and_slash entries). The search itself
is not offered here.
"""
import dataclasses
import json
from pathlib import Path

import torch

from attention.bands import BandPattern
from attention.peer_estimation import cached, estimate, last_rows_scores, ranked, ranked_prefix
from attention.density import pattern_density
from attention.device_solve import bisect_on_device
from attention.method import ConfigError, FallbackConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register

# keys up to which the default estimate replays from a CUDA graph: its intermediates are O(H x keys) (the last 64
# rows' column and diagonal sums and their ranking, ~0.3 GiB at 128K with 32 heads) plus the static copy of k (the
# 0.26 GiB k of 8 kv heads at 128K), held while the shape lasts; past it eager (~42 launches at 128K)
GRAPH_MAX_TOKENS = 1 << 17


@dataclasses.dataclass
class MInferenceConfig(FallbackConfig):
    vertical_size: int = 1000    # key columns kept per head, the forced ones included
    slash_size: int = 6096       # diagonals kept per head, the forced ones included
    last_q: int = 64             # queries the estimate is taken from (the last ones)
    init_columns: int = 30       # first columns always kept
    local_diagonals: int = 100   # nearest diagonals always kept (offsets 0 .. local_diagonals - 1)
    density: float = 0.0         # > 0: scale all sizes so the layer keeps this share of the causal area
    config: str = ""             # MInference's per-head config file (per-layer {head: [type, vertical, slash, score]})
    exact_diagonals: bool = False  # True: run only the selected diagonals (a deviation; see the docstring)

    def validate(self):
        super().validate()
        for name in ("vertical_size", "slash_size", "last_q"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.init_columns < 0:
            raise ConfigError(f"init_columns={self.init_columns} must be >= 0")
        if self.local_diagonals < 1:
            raise ConfigError(f"local_diagonals={self.local_diagonals} must be >= 1 (the diagonal itself)")
        check_range("density", self.density, 0.0, 1.0)
        if self.config and not Path(self.config).is_file():
            raise ConfigError(f"config={self.config}: no such file (give MInference's per-head config JSON)")


def load_head_sizes(path: str) -> list[dict[int, tuple[int, int]]]:
    """Per layer, {query head: (vertical_size, slash_size)} from MInference's config file format."""
    try:
        layers = json.loads(Path(path).read_text())
        table = [{int(head): (int(entry[1]), int(entry[2])) for head, entry in layer.items()
                  if entry[0] == "vertical_and_slash" or _refuse(path, head, entry[0])} for layer in layers]
    except (ValueError, TypeError, IndexError, AttributeError) as err:
        raise ConfigError(f"config={path}: not MInference's format (a JSON list of per-layer objects "
                          f"{{head: [type, vertical_size, slash_size, score]}}): {err}") from None
    return table


def _refuse(path: str, head: str, kind: str) -> bool:
    raise ConfigError(f"config={path}: head {head} has pattern type {kind!r}; only vertical_and_slash heads are "
                      "run here (their shipped configs hold only those)")


@dataclasses.dataclass
class VerticalSlashScores:
    column_order: torch.Tensor  # long [B, H, Sk]: forced columns first, then the others best first
    slash_order: torch.Tensor   # long [B, H, Sk]: forced offsets first, then the others best first
    sink: int
    window: int


@dataclasses.dataclass
class HeadSizes:
    vertical: torch.Tensor  # float64 [H] vertical_size per head
    slash: torch.Tensor     # float64 [H] slash_size per head
    max_vertical: int       # their maxima and smallest size, on the host
    max_slash: int
    min_size: int


@dataclasses.dataclass
class Counts:
    columns: torch.Tensor   # long [H] columns kept per head (forced ones included)
    slashes: torch.Tensor   # long [H] diagonals kept per head
    most_columns: int       # upper bounds on the host
    most_slashes: int


@register
class MInference(SparseMethod):
    name = "minference"
    Config = MInferenceConfig
    description = "MInference vertical-slash: top columns and diagonals from the last 64 queries, run as 64-key bands"

    def scores(self, q, k, scale, prefix: int | None = None) -> VerticalSlashScores:
        """Columns and diagonals ranked together ([..., 2, Sk]: one sort pipeline for both); the forced ones get an
        infinite score, so the stable ranking puts them first in index order, as MInference's own inf does.
        prefix: only the first `prefix` of each order are needed (the most any head keeps; ranked in row groups, so
        at 1M keys the full orders, ~3 GiB with the sorts' index arrays, are never held); None: all of them."""
        cfg = self.config
        k_len = k.shape[2]
        cache = self.__dict__.setdefault("_cache", {})
        # column and diagonal sums of the last rows' causal softmax; one fused pass on the Triton path
        vertical, slash = last_rows_scores(cache, q, k, scale, cfg.last_q)
        sink, window = min(cfg.init_columns, k_len), min(cfg.local_diagonals, k_len)
        both = torch.stack((vertical, slash), 2)                             # [B, H, 2, Sk]
        both[:, :, 0, :sink] = float("inf")
        both[:, :, 1, :window] = float("inf")
        order = ranked(both, values=False)[1] if prefix is None else ranked_prefix(both, prefix)
        return VerticalSlashScores(order[:, :, 0], order[:, :, 1], sink, window)

    def head_sizes(self, heads: int, layer_idx: int, device) -> HeadSizes:
        """Vertical and slash sizes per head: the per-head file's, else the uniform ones (one host-to-device copy
        per layer and device, then cached)."""
        cache = self.__dict__.setdefault("_sizes", {})
        key = (heads, layer_idx, str(device))
        if key not in cache:
            cache[key] = self._head_sizes_for(heads, layer_idx, device)
        return cache[key]

    def _head_sizes_for(self, heads: int, layer_idx: int, device) -> HeadSizes:
        cfg = self.config
        sizes = [(cfg.vertical_size, cfg.slash_size)] * heads
        if cfg.config:
            if not hasattr(self, "_head_sizes"):
                self._head_sizes = load_head_sizes(cfg.config)
            if layer_idx >= len(self._head_sizes):
                raise ConfigError(f"config={cfg.config} has {len(self._head_sizes)} layers, the model more; use the "
                                  "file made for this model")
            named = self._head_sizes[layer_idx]
            sizes = [named.get(h, sizes[h]) for h in range(heads)]
        table = torch.tensor(sizes, dtype=torch.float64, device=device)
        return HeadSizes(table[:, 0], table[:, 1], max(v for v, _ in sizes), max(x for _, x in sizes),
                         min(min(v, x) for v, x in sizes))

    def counts(self, k_len: int, sizes: HeadSizes, ratio: float) -> Counts:
        """Columns and diagonals kept per head (forced ones included) for sizes scaled by ratio, and their maxima
        known on the host (so the index tensors are cut to them without a sync)."""
        cfg = self.config

        def per_head(size, forced):
            return (size * ratio).round().clamp(min=forced).clamp(max=k_len).long()

        def most(size, forced):
            return int(min(k_len, max(round(size * ratio), forced)))

        return Counts(per_head(sizes.vertical, cfg.init_columns), per_head(sizes.slash, cfg.local_diagonals),
                      most(sizes.max_vertical, cfg.init_columns), most(sizes.max_slash, cfg.local_diagonals))

    def unused_at(self, k_len: int, sizes: HeadSizes, x: torch.Tensor, sink: int, window: int):
        """unused_slots at sizes x ratio for a ratio on the device (0-dim), lists k_len wide (no host bound)."""
        cfg = self.config

        def per_head(size, forced):
            return (size * x.double()).round().clamp(min=forced).clamp(max=k_len).long()

        n = Counts(per_head(sizes.vertical, cfg.init_columns), per_head(sizes.slash, cfg.local_diagonals), k_len, k_len)
        return self.unused_slots(n, sink, window, x.device)

    def counts_and_means(self, k_len: int, sizes: HeadSizes, ratio: float, device):
        """(unused-slot masks, mean columns, mean diagonals per head) at sizes x ratio (see unused_slots)."""
        n = self.counts(k_len, sizes, ratio)
        sink, window = min(self.config.init_columns, k_len), min(self.config.local_diagonals, k_len)
        return self.unused_slots(n, sink, window, device), n.columns.float().mean(), n.slashes.float().mean()

    def unused_slots(self, n: Counts, sink: int, window: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """bool [H, slots] for the column and the diagonal lists: the slots past each head's count (they hold -1).
        The lists hold every kept one for bands; for exact diagonals those beyond the forced sink and window."""
        if self.config.exact_diagonals:
            lists = (((n.columns - sink).clamp(min=0), max(0, n.most_columns - sink)),
                     ((n.slashes - window).clamp(min=0), max(0, n.most_slashes - window)))
        else:
            lists = ((n.columns, n.most_columns), (n.slashes, n.most_slashes))
        return tuple(torch.arange(most, device=device) >= count[:, None].to(device) for count, most in lists)

    def pattern(self, s: VerticalSlashScores, unused: tuple[torch.Tensor, torch.Tensor]) -> SparsePattern:
        return self.assemble(self.selected(s, unused), s.sink, s.window)

    def selected(self, s: VerticalSlashScores, unused) -> tuple[torch.Tensor, torch.Tensor]:
        """(columns, diagonals) per head, best first, -1 in the unused slots."""
        columns, diagonals = s.column_order, s.slash_order
        if self.config.exact_diagonals:  # forced stripes run as sink and window, the rest as columns and slashes
            columns, diagonals = columns[..., s.sink:], diagonals[..., s.window:]
        return (columns[..., :unused[0].shape[-1]].masked_fill(unused[0], -1),
                diagonals[..., :unused[1].shape[-1]].masked_fill(unused[1], -1))

    def assemble(self, parts: tuple[torch.Tensor, torch.Tensor], sink: int, window: int) -> SparsePattern:
        cols, diags = parts
        if self.config.exact_diagonals:
            return SparsePattern(sink=sink, window=window, columns=cols if cols.shape[-1] else None,
                                 slashes=diags if diags.shape[-1] else None)
        return BandPattern(columns=cols, band_offsets=diags)

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        cfg = self.config
        batch, heads, q_len, _ = q.shape
        k_len = k.shape[2]
        tail = q[:, :, max(0, q_len - cfg.last_q):]  # the estimate reads only the last queries
        sizes = self.head_sizes(heads, layer_idx, q.device)
        cache = self.__dict__.setdefault("_cache", {})
        ratio = 1.0
        if cfg.density > 0:  # bisected on the device; one sync reads the ratio back (its lists' widths)
            sink, window = min(cfg.init_columns, k_len), min(cfg.local_diagonals, k_len)

            def solve(queries, keys):  # no host sync, per-shape state only: one graph replay on CUDA (below)
                s = self.scores(queries, keys, scale)

                def share(x: torch.Tensor) -> torch.Tensor:  # lists k_len wide: the counts stay on the device
                    return pattern_density(self.pattern(s, self.unused_at(k_len, sizes, x, sink, window)), batch,
                                           heads, q_len, k_len, q.device).mean()

                # from every head keeping only its forced stripes (counts round to 0) to every head keeping all
                # keys, halving the log: a linear bisection's first steps try ratios up to k_len / size, whose long
                # lists make the serial walk the solve's cost (v11, 128K: 85 ms at D64)
                low = 0.25 / max(1, sizes.max_vertical, sizes.max_slash)
                high = k_len / max(1, sizes.min_size)
                # 12 halvings of the ~19-22 octaves between them leave x within 0.4%: the counts it scales round to
                # the same integers as after 16 (equal patterns on random q/k at 4K), for 14 evaluations instead of 18
                x = bisect_on_device(share, cfg.density, low, high, steps=12, device=q.device, geometric=True)
                return x, s.column_order, s.slash_order

            # 14 evaluations (18 gave ~2,100 small kernels in all: launch-bound, 30-45 ms a layer at 32K-128K, v12);
            # replayed from one CUDA graph per shape up to GRAPH_MAX_TOKENS
            # (per layer with a per-head file: its sizes differ per layer, so no graph to share, as for the defaults)
            key = ("minference-solve", tuple(tail.shape), q_len, tuple(k.shape), q.dtype, scale, cfg.density,
                   str(q.device))
            x, column_order, slash_order = (solve(tail, k) if cfg.config else
                                            estimate(cache, key, solve, (tail, k), max_tokens=GRAPH_MAX_TOKENS))
            ratio = float(x)
            s = VerticalSlashScores(column_order, slash_order, sink, window)
            unused, vertical, slash = self.counts_and_means(k_len, sizes, ratio, q.device)
            pattern = self.pattern(s, unused)
        else:  # the defaults: constants per shape (and per layer with a per-head file), counted once
            key = ("counts", heads, layer_idx if cfg.config else None, k_len, str(q.device))
            unused, vertical, slash = cached(cache, key, lambda: self.counts_and_means(k_len, sizes, ratio, q.device))

            # the most of each order any head reads (exact diagonals: the forced ones come first and are skipped)
            skip = (min(cfg.init_columns, k_len), min(cfg.local_diagonals, k_len)) if cfg.exact_diagonals else (0, 0)
            most = max(skip[0] + unused[0].shape[-1], skip[1] + unused[1].shape[-1])

            def default(queries, keys):
                return self.selected(self.scores(queries, keys, scale, most), unused)

            if cfg.config:  # per-layer sizes, so per-layer shapes: no graph to share between layers
                parts = default(tail, k)
            else:  # on CUDA one graph replay per layer (peer_estimation.estimate)
                key = ("minference", tuple(tail.shape), tuple(k.shape), q.dtype, scale, str(q.device))
                parts = estimate(cache, key, default, (tail, k), max_tokens=GRAPH_MAX_TOKENS)
            pattern = self.assemble(parts, min(cfg.init_columns, k_len), min(cfg.local_diagonals, k_len))
        self.knobs = {"ratio": ratio, "vertical": vertical, "slash": slash,
                      "sizes": "per-head file" if cfg.config else "uniform",
                      "execution": "diagonals" if cfg.exact_diagonals else "bands"}
        return pattern
