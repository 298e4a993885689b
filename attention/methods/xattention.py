"""XAttention (Xu et al. 2025, arXiv 2503.16428): antidiagonal block scoring and threshold block selection,
on block patterns (FlexAttention on CUDA through the shared executor).

Per query head, the sequence is cut into groups of `stride` tokens. Query group m against key group n is scored
by the sum of q.k along the group pair's antidiagonal (query m*S + S - 1 - t with key n*S + t, t < S), times
scale / S; each query group takes a softmax over its causal key groups (n <= m; groups made only of padding are
left out). Summing those probabilities over `block`-token tiles gives a tile score grid. Each query tile keeps
key tile 0 and its diagonal tile, then its other tiles from the highest score down while the sum of what it
already holds is below `threshold` x its row total; tiles above the diagonal are dropped.

Their first chunk. Their estimate runs in query chunks of `chunk` tokens (Xattention_prefill's rule: the length
rounded up to a power of two P, then max(2048, min(P, 2^28 / P)); so the whole sequence up to 16K, 8K-token chunks
at 32K, 2K at 128K). In the first chunk their forced-tile mask is written so that the diagonal overwrites key
tile 0 (find_blocks_chunked: `mask[..., current_index:current_index + chunk_num] = eye` with current_index 0), so
only the diagonal's mass counts as held, key tile 0 competes with the others (and is kept anyway: dropped picks
fall back to index 0), and the running sum lags one pick behind: the best other tile is always taken and the
j-th (j >= 1) while diagonal + the best j - 1 others < threshold x total. The net effect is about one more tile per
query-tile row. This reproduces it by default; `uniform_rows=1` gives every row the rule of later chunks.

Defaults from mit-han-lab/x-attention (commit e379887): block_size 128 (Xattention_prefill asserts it), stride 16
(FastPrefillConfig's default and their README's example), threshold 0.8 (Xattention_prefill's default; their
LLaMA runs load per-head thresholds, here `thresholds=PATH`, their xattn/threshold/llama_threshold.py format or a
JSON list of per-layer lists of per-head thresholds). This follows their plain-PyTorch estimate (select_mode
"inverse", norm 1, no keep_sink / keep_recent), the path their code takes on GPUs whose name lacks "100" (an
H200 included); tests/test_peer_fidelity.py checks the tile masks against it on captured q/k
(tests/fixtures/peer_official_masks.pt). Not reproduced: in that path, for chunks after the first, when the
length is a multiple of the chunk their causal mask also hides the keys of earlier chunks (a `[..., -0:]` slice
masks whole rows); here every query group sees all its causal keys. Ties go to the lower tile index (stable sort;
theirs is unspecified).

`density` > 0 solves the threshold per layer so that the layer's kept share is closest to `density`.
"""
import ast
import dataclasses
import json
from pathlib import Path

import torch

from attention.backend import triton_enabled
from attention.device_solve import bisect_on_device
from attention.peer_estimation import block_cells, blocks_density, cached, causal_blocks, ceil_div, estimate, ranked
from attention.method import ConfigError, FallbackConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register

SCORE_ELEMENTS = 1 << 26  # fp32 group scores held at once (256 MiB)


@dataclasses.dataclass
class XAttentionConfig(FallbackConfig):
    block: int = 128
    stride: int = 16
    threshold: float = 0.8    # share of each query tile's estimated mass its kept tiles must reach
    thresholds: str = ""      # per-layer, per-head thresholds file (overrides threshold; see the docstring)
    chunk: int = 0            # estimation chunk in tokens, for the first-chunk rule (0 = Xattention_prefill's rule)
    uniform_rows: bool = False  # True: first-chunk rows use the later chunks' rule (a deviation, see docstring)
    density: float = 0.0      # > 0: solve the threshold per layer for this kept share of the causal area

    def validate(self):
        super().validate()
        if self.stride < 1:
            raise ConfigError(f"stride={self.stride} must be >= 1")
        if self.block < 1 or self.block % self.stride:
            raise ConfigError(f"block={self.block} must be a positive multiple of stride={self.stride}")
        check_range("threshold", self.threshold, 0.0, 1.0, low_open=True)
        if self.chunk < 0 or self.chunk % self.block:
            raise ConfigError(f"chunk={self.chunk} must be 0 (their rule) or a multiple of block={self.block}")
        if self.thresholds and not Path(self.thresholds).is_file():
            raise ConfigError(f"thresholds={self.thresholds}: no such file (give a per-head threshold file)")
        check_range("density", self.density, 0.0, 1.0)


def antidiagonal_tile_scores(q, k, scale: float, stride: int, block: int) -> torch.Tensor:
    """float32 [B, Hq, n, n]: per (query tile, key tile), the summed softmax of antidiagonal group scores.

    Queries are the last q_len of k_len positions; both are zero-padded to whole tiles (front-padded queries
    and all-padding groups carry no mass)."""
    batch, heads, q_len, dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    n = ceil_div(k_len, block)
    total = n * block
    groups, per_tile = total // stride, block // stride
    q_pad = torch.nn.functional.pad(q.float(), (0, 0, k_len - q_len, total - k_len))
    k_pad = torch.nn.functional.pad(k.float(), (0, 0, 0, total - k_len))
    # query group m lists its tokens last-first, key group n first-last: their dot is the antidiagonal sum
    q_groups = q_pad.reshape(batch, heads, groups, stride, dim).flip(3).reshape(batch, heads, groups, stride * dim)
    k_groups = k_pad.reshape(batch, kv_heads, groups, stride * dim)
    q_groups = q_groups.reshape(batch, kv_heads, heads // kv_heads, groups, stride * dim)
    first = torch.arange(groups, device=q.device) * stride
    real_keys = first < k_len
    real_queries = (first + stride > k_len - q_len) & real_keys
    out = torch.zeros(batch, heads, n, n, dtype=torch.float32, device=q.device)
    chunk = max(per_tile, SCORE_ELEMENTS // max(1, batch * heads * groups) // per_tile * per_tile)
    for start in range(0, groups, chunk):
        stop = min(start + chunk, groups)
        scores = (q_groups[..., start:stop, :] @ k_groups[:, :, None].transpose(-1, -2)) * (scale / stride)
        scores = scores.reshape(batch, heads, stop - start, groups)
        m = torch.arange(start, stop, device=q.device)[:, None]
        allowed = (torch.arange(groups, device=q.device)[None, :] <= m) & real_keys[None, :]
        probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        probs = probs * real_queries[start:stop, None]
        tiles = probs.reshape(batch, heads, stop - start, n, per_tile).sum(-1)
        out[:, :, start // per_tile:ceil_div(stop, per_tile)] += tiles.reshape(batch, heads, -1, per_tile, n).sum(-2)
    return out


def tile_scores(q, k, scale: float, stride: int, block: int) -> torch.Tensor:
    """antidiagonal_tile_scores, on the fused Triton kernel where Triton runs (one launch, no host sync)."""
    if triton_enabled(q.device):
        from attention.kernels import estimate_xattention as kernel  # imported lazily: triton only where it runs

        if kernel.supported(q, stride, block):
            return kernel.xattention_tile_scores(q, k, scale, stride, block)
    return antidiagonal_tile_scores(q, k, scale, stride, block)


@dataclasses.dataclass
class TileRanking:
    order: torch.Tensor    # long [B, H, n, n]: per query tile, its non-forced tiles best first (forced ones last)
    held: torch.Tensor     # [B, H, n, n]: mass held before each of them is taken (forced tiles + better ones)
    total: torch.Tensor    # [B, H, n, 1]: row totals
    kept: torch.Tensor     # bool [n, n]: always kept (key tile 0 and the diagonal tile)
    causal: torch.Tensor   # bool [n, n]: tiles on or below the diagonal


def first_chunk_rows(q_len: int, k_len: int, block: int, chunk: int = 0) -> int:
    """Query-tile rows in their first estimation chunk (`chunk` tokens, 0 = Xattention_prefill's chunk_size rule);
    0 when the queries are not the whole sequence (their chunk grid then starts past key tile 0)."""
    if q_len != k_len:
        return 0
    p = 1 << (k_len - 1).bit_length()
    chunk = chunk or max(min(max(2048, p), 128 * 1024 * 2048 // p), 2048)
    return chunk // block


@dataclasses.dataclass(frozen=True)
class RankConstants:
    """Per (n, first_rows): the masks rank_tiles needs, made once per shape (no launches on later layers)."""
    forced: torch.Tensor        # bool [n, n]: tiles held before any pick (diagonal; key tile 0 past the first chunk)
    first: torch.Tensor         # bool [n, 1]: rows under the first-chunk rule
    tile0_forced: torch.Tensor  # float [n]: 1 where a row's key tile 0 is forced besides its diagonal, else 0
    fixed: torch.Tensor         # bool [n, n]: sorted slots whose held mass is fixed (below)
    fixed_held: torch.Tensor    # float [n, n]: there, inf in the slots forced tiles sort into (the last 1 or 2 of
                                # a row: never "taken"), 0 in slot 0 of first-chunk rows (their best other is taken)
    kept: torch.Tensor          # bool [n, n]: forced | key tile 0
    causal: torch.Tensor        # bool [n, n]

    @staticmethod
    def make(n: int, first_rows: int, device) -> "RankConstants":
        r, c = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None, :]
        first = r < first_rows
        forced = (c == r) | ((c == 0) & ~first)
        forced_slots = c >= n - forced.sum(-1, keepdim=True)  # forced tiles score -inf before the sort
        fixed_held = torch.zeros(n, n, device=device).masked_fill_(forced_slots, float("inf"))
        tile0 = (~first & (r > 0)).float().view(n)
        return RankConstants(forced, first, tile0, forced_slots | (first & (c == 0)), fixed_held, forced | (c == 0),
                             causal_blocks(n, device))


def rank_constants(n: int, first_rows: int, device, cache: dict | None) -> RankConstants:
    """The per-shape masks, kept in `cache` (a dict kept by the caller; None: made for this call only)."""
    return cached({} if cache is None else cache, ("rank", n, first_rows, str(device)),
                  lambda: RankConstants.make(n, first_rows, device))


def rank_tiles(scores: torch.Tensor, first_rows: int = 0, cache: dict | None = None, row0: int = 0) -> TileRanking:
    """Rows below first_rows follow their first-chunk rule (diagonal alone held, one-pick lag); see the docstring.
    `cache` (a dict kept by the caller) holds the per-shape masks. Scores are >= 0 (sums of probabilities).
    row0: scores holds the grid's query-tile rows row0 .. n - 1 only ([B, H, n - row0, n])."""
    n = scores.shape[-1]
    k = rank_constants(n, first_rows, scores.device, cache)
    if row0:
        k = RankConstants(*(getattr(k, f.name)[row0:] for f in dataclasses.fields(RankConstants)))
    others, order = ranked(scores.masked_fill(k.forced, float("-inf")))
    # forced mass: the diagonal tile plus key tile 0 where that is forced too (a + b, as the row's masked sum gives)
    forced_mass = torch.addcmul(scores.diagonal(offset=row0, dim1=-2, dim2=-1), scores[..., 0],
                                k.tile0_forced)[..., None]
    # exclusive running sum (before each pick), and the same one pick later (first-chunk rows' lag), from one pad;
    # the -inf of forced slots only reach the running sums at and after those slots, which `fixed` overwrites
    padded = torch.nn.functional.pad(others.cumsum(-1), (2, 0))
    held = torch.where(k.first, padded[..., :n], padded[..., 1:n + 1]) + forced_mass
    held = torch.where(k.fixed, k.fixed_held, held)
    return TileRanking(order, held, scores.sum(-1, keepdim=True), k.kept, k.causal)


def select_tiles(ranking: TileRanking, threshold: float | torch.Tensor) -> torch.Tensor:
    """bool [B, H, n, n]: forced tiles, then the best others while the held mass is below threshold x total
    (threshold a float or per head, float [H])."""
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.to(ranking.total.device, torch.float32)[:, None, None]
    take = ranking.held < threshold * ranking.total
    keep = torch.empty_like(take).scatter_(-1, ranking.order, take)  # order is a permutation: every cell written
    return keep.logical_or_(ranking.kept).logical_and_(ranking.causal)


def selected_tiles(scores: torch.Tensor, threshold: float | torch.Tensor, first_rows: int = 0,
                   cache: dict | None = None, row0: int = 0) -> torch.Tensor:
    """select_tiles(rank_tiles(scores, first_rows, cache), threshold), in one Triton launch where Triton runs.
    row0: the query-tile rows before it hold no query (a chunk of a long prompt: front-padded, no mass), so the
    PyTorch ranking skips them and they keep what an empty row keeps (key tile 0 and the diagonal): at 1M tokens a
    16K chunk's 128 rows of 8192 are ranked instead of all of them (v12: 5.5 GiB above the inputs, 20 s a layer)."""
    kernel = fused_selection(scores.shape[-1], scores.device)
    if kernel is not None:
        return kernel.select_tiles_fused(scores, threshold, first_rows)
    if not row0:
        return select_tiles(rank_tiles(scores, first_rows, cache), threshold)
    cache = {} if cache is None else cache  # one set of masks for the empty rows and the ranking
    n = scores.shape[-1]
    k = rank_constants(n, first_rows, scores.device, cache)
    blocks = (k.kept & k.causal).expand(*scores.shape[:2], n, n).clone()
    blocks[:, :, row0:] = select_tiles(rank_tiles(scores[:, :, row0:], first_rows, cache, row0), threshold)
    return blocks


ESTIMATE_BYTES = 1 << 30  # a layer's tile scores and their ranking past this are made a few heads at a time


def head_step(heads: int, group: int, per_head: int) -> int:
    """Query heads estimated together: all, or a multiple of the GQA group, or a divisor of it (the heads of one
    chunk then share their kv heads as the whole layer does), so that per_head bytes x heads fit ESTIMATE_BYTES."""
    fit = max(1, ESTIMATE_BYTES // max(1, per_head))
    if fit >= heads:
        return heads
    if fit >= group:
        return fit // group * group
    return max(d for d in range(1, group + 1) if group % d == 0 and d <= fit)


def estimated_tiles(q, k, scale: float, stride: int, block: int, threshold: float | torch.Tensor, first_rows: int,
                    cache: dict | None = None) -> torch.Tensor:
    """selected_tiles(tile_scores(q, k, ...)): bool [B, H, n, n], in chunks of heads at long lengths, where the
    fp32 scores alone are 256 MiB per head at 1M tokens and the PyTorch ranking past the fused selection's rows
    (select_xattention.supported) holds ~10x that (one chunk up to 128K tokens with 32 heads: unchanged there)."""
    batch, heads, kv_heads = q.shape[0], q.shape[1], k.shape[1]
    group, n = heads // kv_heads, -(-k.shape[2] // block)
    row0 = (k.shape[2] - q.shape[2]) // block  # query-tile rows before the first query (none: the whole prompt)
    fused = fused_selection(n, q.device) is not None
    step = head_step(heads, group, batch * n * n * 4 * (2 if fused else 10))
    if step == heads:
        return selected_tiles(tile_scores(q, k, scale, stride, block), threshold, first_rows, cache, row0)
    blocks = torch.empty(batch, heads, n, n, dtype=torch.bool, device=q.device)
    for h0 in range(0, heads, step):
        h1 = min(heads, h0 + step)
        kv = k[:, h0 // group:(h1 - 1) // group + 1]  # a chunk of whole groups, or of heads inside one group
        part = threshold[h0:h1] if isinstance(threshold, torch.Tensor) else threshold
        blocks[:, h0:h1] = selected_tiles(tile_scores(q[:, h0:h1], kv, scale, stride, block), part, first_rows,
                                          cache, row0)
    return blocks


def fused_selection(n: int, device):
    """attention.kernels.select_xattention where Triton runs and its fused selection takes rows of n tiles, else
    None (the PyTorch ranking then)."""
    if not triton_enabled(device):
        return None
    from attention.kernels import select_xattention as kernel  # imported lazily: triton only where it runs

    return kernel if kernel.supported(n) else None


@register
class XAttention(SparseMethod):
    name = "xattention"
    Config = XAttentionConfig
    description = "XAttention: antidiagonal-scored tiles, per-row threshold selection (block mask)"

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        cfg = self.config
        q_len, k_len = q.shape[2], k.shape[2]
        first_rows = 0 if cfg.uniform_rows else first_chunk_rows(q_len, k_len, cfg.block, cfg.chunk)
        cache = self.__dict__.setdefault("_cache", {})
        threshold, mean = cfg.threshold, cfg.threshold
        if cfg.thresholds:
            threshold = self.head_thresholds(layer_idx, q.shape[1], q.device)
            mean = sum(self._thresholds[layer_idx]) / len(self._thresholds[layer_idx])  # from the host table
        if cfg.density > 0:  # a per-layer solve, compared on the device (no host sync)
            def solve(queries, keys):
                ranking = rank_tiles(tile_scores(queries, keys, scale, cfg.stride, cfg.block), first_rows, cache)
                cells = block_cells(q_len, k_len, cfg.block, queries.device)

                def share(x: torch.Tensor) -> torch.Tensor:  # x 0-dim: the same threshold for every head
                    return blocks_density(select_tiles(ranking, x.expand(queries.shape[1])), cells).mean()

                solved = bisect_on_device(share, cfg.density, 0.0, 1.0, device=queries.device)
                return solved, select_tiles(ranking, solved.expand(queries.shape[1]))

            # 14 evaluations of the tile selection, ~200 small kernels: launch-bound eagerly (16K on Qwen: TTFT
            # 111-193 ms against dense's 66, v13), so replayed from one CUDA graph per shape as the defaults are
            key = ("xattention-solve", tuple(q.shape), tuple(k.shape), q.dtype, scale, first_rows, cfg.density,
                   str(q.device))
            threshold, blocks = estimate(cache, key, solve, (q, k))
            mean = threshold
        else:  # the defaults: no host sync; on CUDA one graph replay per layer (peer_estimation.estimate)
            def default(queries, keys, *per_head):
                return (estimated_tiles(queries, keys, scale, cfg.stride, cfg.block,
                                        per_head[0] if per_head else threshold, first_rows, cache),)

            per_head = (threshold,) if isinstance(threshold, torch.Tensor) else ()
            key = ("xattention", tuple(q.shape), tuple(k.shape), q.dtype, scale, first_rows,
                   "per-head" if per_head else threshold, str(q.device))
            blocks, = estimate(cache, key, default, (q, k, *per_head))
        self.knobs = {"threshold": mean, "thresholds": "per-head file" if cfg.thresholds else "uniform"}
        return SparsePattern(blocks=blocks, block=cfg.block)

    def head_thresholds(self, layer_idx: int, heads: int, device=None) -> torch.Tensor:
        """float32 [H] on device: one host-to-device copy per layer and device, then cached."""
        cache = self.__dict__.setdefault("_per_layer", {})
        key = (layer_idx, heads, str(device))
        if key not in cache:
            cache[key] = self._thresholds_for(layer_idx, heads).to(device)
        return cache[key]

    def _thresholds_for(self, layer_idx: int, heads: int) -> torch.Tensor:
        if not hasattr(self, "_thresholds"):
            self._thresholds = load_thresholds(self.config.thresholds, self.config.stride)
        table = self._thresholds
        if layer_idx >= len(table) or len(table[layer_idx]) != heads:
            raise ConfigError(f"thresholds={self.config.thresholds}: layer {layer_idx} needs {heads} head thresholds "
                              f"(the file has {len(table)} layers, {len(table[min(layer_idx, len(table) - 1)])} heads)"
                              "; use the file made for this model")
        return torch.tensor(table[layer_idx], dtype=torch.float32)


def load_thresholds(path: str, stride: int) -> list[list[float]]:
    """Per-layer lists of per-head thresholds: a JSON list of lists, or XAttention's threshold file (a Python file
    of `name = [[...], ...]` assignments; the one named *_<stride> is taken, else the only one)."""
    text = Path(path).read_text()
    if path.endswith(".json"):
        return json.loads(text)
    tables = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            tables[node.targets[0].id] = ast.literal_eval(node.value)
    named = [v for name, v in tables.items() if name.endswith(f"_{stride}")]
    if len(named) == 1:
        return named[0]
    if len(tables) == 1:
        return next(iter(tables.values()))
    raise ConfigError(f"thresholds={path}: no single table for stride {stride} among {sorted(tables)}")
