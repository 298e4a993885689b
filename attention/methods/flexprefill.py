"""FlexPrefill (Lai et al., ICLR 2025, arXiv 2502.20766): query-aware head choice and cumulative-attention
block selection, on block patterns (FlexAttention on CUDA through the shared executor).

Per query head, on `block`-token tiles:
1. The exact causal softmax of the last `block` queries gives a mean column distribution and a diagonal
   distribution (mass per offset i - j, divided by the number of rows).
2. Budgets: the fewest columns (diagonals) whose sorted mass exceeds `gamma`, in tokens, become
   count // block + 1 tiles, clamped to [ceil(min_budget / block), ceil(max_budget / block)].
3. Head choice: the mean of those queries against block-mean keys gives a pooled distribution over key
   tiles; when the square root of its Jensen-Shannon divergence from the column distribution pooled to tiles
   is below `tau`, the head is query-aware: its vertical and slash budgets drop to the minimum and it also
   keeps, from the softmax of block-mean queries against block-mean keys over each query tile's causal key
   tiles, the largest entries of the whole tile grid while their running sum stays <= gamma x (tiles per side).
4. Every head keeps its top key-tile columns and tile diagonals (tile column 0 and the diagonal tile forced),
   causal; query-aware heads add the tiles of step 3 (and tile (0, 0)).

Defaults from bytedance/FlexPrefill (flex_prefill/ops/flex_prefill_attention.py, commit a24b27b): block_size
128, gamma 0.9, tau 0.1, max_budget None (here 0), and min_budget 1024, the value of the paper's scripts
(experiments/scripts/flex_prefill/*.sh; their README example shows 512). Sequences no longer than
max(2 x block, min_budget rounded up to a tile) run dense, as in their flex_prefill_attention. Diagonal offsets are
pooled into tiles as their code does: from the far end of the diagonal list, so with r = k_len - (n - 1) x block
tokens in the last tile, tile diagonal s holds offsets s x block + r - block .. s x block + r - 1 (tile 0 holds the
r nearest ones); at lengths that are a multiple of the block this is plain grouping from offset 0.
tests/test_peer_fidelity.py checks the tile masks against their get_active_blocks run on captured q/k
(tests/fixtures/peer_official_masks.pt). Differences from their code: the token-to-tile budget divides by
`block` (theirs by 128 whatever the block size; equal at the default); ties go to the lower index (stable sort).

`density` > 0 solves gamma per layer so that the layer's kept share is closest to `density` (the head choice
does not depend on gamma; min_budget still floors every head).

On the Triton path (where `fused`), the statistics, rankings, cut and mask run as attention/kernels/flex_estimate.py's
fixed chain (10 launches at the defaults, 13 with density=, no host sync; tests/test_flex_estimate.py checks it
against the statistics below, which the other paths run).
"""
import dataclasses

import torch

from attention.backend import triton_enabled
from attention.device_solve import bisect_on_device
from attention.kernels.config import flex_fused
from attention.peer_estimation import (block_cells, block_pool_mean, blocks_density, cached, causal_blocks, ceil_div,
                                       estimate, js_distance, last_rows_scores, ranked)
from attention.method import ConfigError, FallbackConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.reference import expand_kv
from attention.registry import register


@dataclasses.dataclass
class FlexPrefillConfig(FallbackConfig):
    block: int = 128
    gamma: float = 0.9        # attention mass the selection must cover
    tau: float = 0.1          # JS-distance threshold below which a head is query-aware
    min_budget: int = 1024    # tokens: every head keeps at least this many tile columns and diagonals' worth
    max_budget: int = 0       # tokens: at most this many (0 = no limit)
    density: float = 0.0      # > 0: solve gamma per layer for this kept share of the causal area

    def validate(self):
        super().validate()
        if self.block < 1:
            raise ConfigError(f"block={self.block} must be a positive number of tokens")
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_range("tau", self.tau, 0.0, 1.0)
        if self.min_budget < 0 or self.max_budget < 0:
            raise ConfigError("min_budget and max_budget must be >= 0 tokens (max_budget 0 = no limit)")
        if self.max_budget and self.max_budget < self.min_budget:
            raise ConfigError(f"max_budget={self.max_budget} must be 0 (no limit) or >= min_budget={self.min_budget}")
        check_range("density", self.density, 0.0, 1.0)


def head_distance(logits: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """float32 [B, H]: sqrt JS divergence of softmax(logits) from the pooled column mass; one launch on the Triton
    path (attention.kernels.head_choice), else peer_estimation.js_distance."""
    if triton_enabled(logits.device):
        from attention.kernels.head_choice import js_distance_from_logits  # imported here: it loads triton

        return js_distance_from_logits(logits, tiles)
    return js_distance(torch.softmax(logits, dim=-1), tiles)


@dataclasses.dataclass
class FlexScores:
    tiles: torch.Tensor          # [B, H, 2, n] mass per key tile (0) / tile diagonal (1), tile 0 forced (inf)
    query_aware: torch.Tensor    # bool [B, H]
    n: int
    # for a gamma solve (density > 0), the rankings themselves, O(H x n^2):
    cum: torch.Tensor | None = None         # [B, H, 2, n*block] sorted column / diagonal mass, running sum
    grid_order: torch.Tensor | None = None  # long [B, H, n(n+1)/2] causal tile-grid entries (flat in n*n), best first
    grid_cum: torch.Tensor | None = None    # [B, H, n(n+1)/2] their running sum
    # at one gamma (the defaults), what select needs and no more: O(H x n x block) plus one head chunk's grid
    tokens: torch.Tensor | None = None      # long [B, H, 2] columns / diagonals whose sorted mass covers gamma, + 1
    queries: torch.Tensor | None = None     # fp32 [B, H, n, D] block-mean queries x scale
    keys: torch.Tensor | None = None        # fp32 [B, H, n, D] block-mean keys (kv heads expanded)


@dataclasses.dataclass
class FusedFlexScores:
    """The fused path's statistics (attention.kernels.flex_estimate): every row's sort keys, ranked once."""
    keys: torch.Tensor           # int64: mass rows [B, H, 2, n*block], then each head's causal tile grid
    sorted_keys: torch.Tensor    # the same, ascending (each row's values in stable descending order)
    order: torch.Tensor          # int64: their positions in keys
    tiles: torch.Tensor          # [B, H, 2, n] mass per key tile / tile diagonal, tile 0 forced (inf)
    query_aware: torch.Tensor    # bool [B, H]
    n: int


GRID_CHUNK = 1 << 26   # tile-grid entries of the heads ranked at once (one head's 256 MiB fp32 grid at 1M tokens;
                       # all 32 heads up to ~180K, where the whole grid is ranked with its order, as before)
RANK_CHUNK = 1 << 24   # sorted column / diagonal mass entries at once (rows of 1M keys: 16 at a time)


def covered(mass: torch.Tensor, gamma: float) -> torch.Tensor:
    """long [...]: how many of each row's best entries keep their running sum <= gamma, plus one (FlexPrefill's
    token budget), ranked in groups of rows of at most RANK_CHUNK entries (the same sorted values, so the same
    counts, without the whole ranking's index arrays)."""
    rows = mass.reshape(-1, mass.shape[-1])
    step = max(1, RANK_CHUNK // mass.shape[-1])
    counts = [(ranked(rows[i:i + step], order=False)[0].cumsum(-1) <= gamma).sum(-1) + 1
              for i in range(0, rows.shape[0], step)]
    return (torch.cat(counts) if len(counts) > 1 else counts[0]).view(mass.shape[:-1])


def top_prefix(values: torch.Tensor, budget: float) -> torch.Tensor:
    """bool like values [..., N]: the longest prefix (at least one entry) of each row's stable descending order whose
    running sum stays <= budget, found without the order: the prefix's last value v is the c-th largest; every
    entry above v is in it, and of those equal to v the first (c - #above) by index (the stable sort's tie order)."""
    ordered = ranked(values, order=False)[0]
    count = ((ordered.cumsum(-1) <= budget).sum(-1, keepdim=True)).clamp(min=1)
    last = ordered.gather(-1, count - 1)
    del ordered
    above = values > last
    at = values == last
    room = count - above.sum(-1, keepdim=True)
    return above | (at & (at.cumsum(-1) <= room))


@register
class FlexPrefill(SparseMethod):
    name = "flexprefill"
    Config = FlexPrefillConfig
    description = "FlexPrefill: JS-divergence head choice, gamma-cumulative vertical/slash/block tiles (block mask)"

    def dense_length(self) -> int:
        b = self.config.block
        return max(2 * b, ceil_div(self.config.min_budget, b) * b)

    def scores(self, q, k, scale, gamma: float | None = None) -> FlexScores | FusedFlexScores:
        b = self.config.block
        fused = self.fused(q, k)
        scores_from = self.fused_scores if fused else self.scores_from
        return scores_from(q[:, :, max(0, q.shape[2] - b):], self.pooled_queries(q, k.shape[2], scale, fused), k,
                           scale, gamma)

    def fused(self, q, k) -> bool:
        """Whether the estimate runs as attention.kernels.flex_estimate's fixed chain of launches: on the Triton path,
        for head dims the kernels take, where every head's causal tile grid is ranked at once (GRID_CHUNK) and a
        row's tile sums fit one register sort, unless override(flex_fused=False); else the statistics below (chunked
        past GRID_CHUNK)."""
        if not (flex_fused() and triton_enabled(q.device)):
            return False
        from attention.kernels import flex_estimate  # imported here: it loads triton

        n = ceil_div(k.shape[2], self.config.block)
        return (flex_estimate.supported(q.shape[-1], self.config.block, n)
                and q.shape[0] * q.shape[1] * n * n <= GRID_CHUNK)

    def pooled_queries(self, q, k_len: int, scale: float, fused: bool = False) -> torch.Tensor:
        """fp32 [B, H, n, D]: block-mean queries (front-padded to whole key tiles) times scale; one launch fused."""
        if fused:
            from attention.kernels.flex_estimate import pool_blocks  # imported here: it loads triton

            return pool_blocks(q, self.config.block, k_len, scale)
        # the queries are the last of k_len positions: zero blocks before them, zeros before them in their first
        # block (a mean over the whole block, as if q were front-padded to k_len, which at 1M held 8 GiB)
        lead, part = divmod(k_len - q.shape[2], self.config.block)
        padded = torch.nn.functional.pad(q, (0, 0, part, 0)) if part else q
        pooled = block_pool_mean(padded, self.config.block) * scale
        return torch.nn.functional.pad(pooled, (0, 0, lead, 0)) if lead else pooled

    def fused_scores(self, tail, queries, k, scale, gamma: float | None = None) -> FusedFlexScores:
        """scores_from's statistics as attention.kernels.flex_estimate computes them: the keys pooled (1 launch),
        the last rows' column / diagonal sums (2), mass, tiles, head choice and tile grid as sort keys (2), one sort
        (1); gamma plays no part (select takes any)."""
        from attention.kernels.flex_estimate import flex_rank, flex_statistics, pool_blocks  # loads triton

        b = self.config.block
        cache = self.__dict__.setdefault("_cache", {})
        columns, diagonals = last_rows_scores(cache, tail, k, scale, b)
        keys, tiles, aware = flex_statistics(tail, columns, diagonals, queries, pool_blocks(k, b, k.shape[2]), scale,
                                             b, self.config.tau)
        del columns, diagonals
        sorted_keys, order = flex_rank(keys)
        return FusedFlexScores(keys, sorted_keys, order, tiles, aware, tiles.shape[-1])

    def budget_range(self, n: int) -> tuple[int, int]:
        """(low, high): the tile budget's clamp (tile_budget)."""
        b = self.config.block
        low = ceil_div(self.config.min_budget, b)
        high = min(ceil_div(self.config.max_budget, b), n) if self.config.max_budget else n
        return low, high

    def select_fused(self, s: FusedFlexScores, gamma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(select's tiles, the query-aware share per head) from the fused statistics: two launches (plus two
        building the limits from a device gamma; a host gamma's are made once)."""
        from attention.kernels.flex_estimate import flex_select  # imported here: it loads triton

        n, device = s.n, s.tiles.device
        if isinstance(gamma, torch.Tensor) and gamma.numel() == 2:  # the limits themselves (flex_solve's)
            limits = gamma
        elif isinstance(gamma, torch.Tensor):
            limits = torch.stack((gamma.float().reshape(()), gamma.float().reshape(()) * n))
        else:
            cache = self.__dict__.setdefault("_cache", {})
            limits = cached(cache, ("limits", gamma, n, str(device)),
                            lambda: torch.tensor([gamma, gamma * n], dtype=torch.float32, device=device))
        return flex_select(s.keys, s.sorted_keys, s.order, s.tiles, s.query_aware, limits, self.config.block,
                           *self.budget_range(n))

    def scores_from(self, tail, queries, k, scale, gamma: float | None = None) -> FlexScores:
        """The statistics from the last `block` queries (tail), the pooled queries and k; column and diagonal ones
        side by side ([..., 2, ...]) so each step runs once for both, per-shape constants cached on the method: no
        host sync, a fixed number of launches. gamma None: the full rankings, for select at any gamma (O(H x n^2)
        memory); a gamma: only what select needs at that gamma (the tile grid is ranked there, a head chunk at a
        time)."""
        b = self.config.block
        batch, heads, last, _ = tail.shape
        k_len = k.shape[2]
        n = ceil_div(k_len, b)
        cache = self.__dict__.setdefault("_cache", {})
        # column and diagonal sums of the last rows' causal softmax; one fused pass on the Triton path
        columns, diagonals = last_rows_scores(cache, tail, k, scale, b)
        # both zero-padded to whole tiles: columns at the far end, diagonals at the near end (their diagonal pooling
        # starts from the farthest offset: the nearest tile holds the r = k_len - (n-1)b smallest offsets). Padding
        # zeros never change the budgets: they sort last and count only when all the mass is within gamma, and then
        # the budget is already every tile.
        mass = columns.new_zeros(batch, heads, 2, n * b)
        mass[:, :, 0, :k_len] = columns
        mass[:, :, 1, n * b - k_len:] = diagonals
        del columns, diagonals
        mass /= last
        tiles = mass.view(batch, heads, 2, n, b).sum(-1)
        # head choice: last queries' mean against block-mean keys, vs the column mass pooled to tiles
        keys = expand_kv(block_pool_mean(k, b), heads)                     # [B, H, n, D], pooled first
        mean_q = tail.float().mean(2, keepdim=True) * scale                 # [B, H, 1, D]
        logits = (mean_q @ keys.transpose(-1, -2)).squeeze(2)
        query_aware = head_distance(logits, tiles[:, :, 0]) < self.config.tau
        if gamma is not None:
            tokens = covered(mass, gamma)
            tiles[..., 0] = float("inf")
            if batch * heads * n * n <= GRID_CHUNK:  # one chunk holds every head: ranked with its order (9 launches
                grid_values, grid_order = self.ranked_grid(queries, keys, n, cache)  # fewer than the threshold)
                return FlexScores(tiles, query_aware, n, tokens=tokens, grid_order=grid_order,
                                  grid_cum=grid_values.cumsum(-1))
            return FlexScores(tiles, query_aware, n, tokens=tokens, queries=queries, keys=keys)
        grid_values, grid_order = self.ranked_grid(queries, keys, n, cache)
        tiles[..., 0] = float("inf")
        return FlexScores(tiles, query_aware, n, cum=ranked(mass, order=False)[0].cumsum(-1), grid_order=grid_order,
                          grid_cum=grid_values.cumsum(-1))

    def grid_probs(self, queries, keys, n: int, cache: dict) -> torch.Tensor:
        """fp32 [B, h, n(n+1)/2]: the causal entries, in flat order, of softmax over each query tile's causal key tiles
        of block-mean queries against block-mean keys (for the heads given)."""
        above = cached(cache, ("above", n, str(keys.device)), lambda: ~causal_blocks(n, keys.device))
        # only the causal half is ranked: the other half is 0 and sorts after every positive entry, so the running
        # sums of the positive ones, and which zeros a budget reaches, are the same; select drops non-causal tiles
        lower = cached(cache, ("lower", n, str(keys.device)), lambda: self.causal_cells(n, keys.device))
        grid = (queries @ keys.transpose(-1, -2)).masked_fill_(above, float("-inf"))
        return torch.softmax(grid, dim=-1).flatten(-2)[..., lower]

    def ranked_grid(self, queries, keys, n: int, cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
        lower = cached(cache, ("lower", n, str(keys.device)), lambda: self.causal_cells(n, keys.device))
        grid_values, grid_order = ranked(self.grid_probs(queries, keys, n, cache))
        return grid_values, lower[grid_order].long()

    def tile_budget(self, tokens: torch.Tensor, n: int, query_aware: torch.Tensor) -> torch.Tensor:
        """long [B, H, 2]: vertical and slash tiles per head, from the tokens covering gamma (covered)."""
        b = self.config.block
        low, high = self.budget_range(n)
        tiles = (tokens // b + 1).clamp(min=low, max=high) if low <= high else torch.full_like(tokens, high)
        return tiles.masked_fill_(query_aware[..., None], min(low, n))

    def select(self, s: FlexScores | FusedFlexScores, gamma: float) -> torch.Tensor:
        """bool [B, H, n, n] tiles kept at this gamma (s from scores_from at this gamma, or at None; or fused)."""
        if isinstance(s, FusedFlexScores):
            return self.select_fused(s, gamma)[0]
        n = s.n
        device = s.tiles.device
        cache = self.__dict__.setdefault("_cache", {})
        # [B, H, 2, n]: each head's best key tiles and tile diagonals, as many as its budgets
        _, order = ranked(s.tiles)
        slots = cached(cache, ("slots", n, str(device)), lambda: torch.arange(n, device=device))
        tokens = s.tokens if s.tokens is not None else (s.cum <= gamma).sum(-1) + 1
        budget = self.tile_budget(tokens, n, s.query_aware)
        kept = torch.empty_like(order, dtype=torch.bool).scatter_(-1, order, slots < budget[..., None])
        blocks = self.diagonal_tiles(kept[:, :, 1])                          # tile diagonals, then | key tile columns
        blocks |= kept[:, :, 0, None, :]
        del kept, order
        if s.grid_order is not None:
            grid_keep = s.grid_cum <= gamma * n
            grid_keep[..., 0] = True  # their dropped entries fall back to index 0: tile (0, 0) is always kept
            grid_keep &= s.query_aware[..., None]
            chosen = blocks.new_zeros(blocks.shape).flatten(-2).scatter_(-1, s.grid_order, grid_keep)
            blocks |= chosen.view_as(blocks)
        else:  # the same tiles, a head chunk at a time: the first entry always kept (tile (0, 0), the largest)
            lower = cached(cache, ("lower", n, str(device)), lambda: self.causal_cells(n, device))
            heads = blocks.shape[1]
            step = max(1, GRID_CHUNK // max(1, blocks.shape[0] * n * n))
            flat = blocks.view(*blocks.shape[:2], n * n)
            for h in range(0, heads, step):
                probs = self.grid_probs(s.queries[:, h:h + step], s.keys[:, h:h + step], n, cache)
                chosen = top_prefix(probs, gamma * n) & s.query_aware[:, h:h + step, None]
                del probs
                flat[:, h:h + step, lower] |= chosen
                del chosen
        return blocks.tril_()  # causal tiles only

    @staticmethod
    def causal_cells(n: int, device) -> torch.Tensor:
        """int32 [n(n+1)/2]: flat indices of the tiles on or below the diagonal, ascending (no host sync). Kept per
        shape: int32 (n^2 < 2^31 up to 5M tokens at block 128) halves it, 134 MB at 1M tokens."""
        rows, cols = torch.tril_indices(n, n, device=device, dtype=torch.int32)
        return rows.mul_(n).add_(cols)

    @staticmethod
    def diagonal_tiles(diagonals: torch.Tensor) -> torch.Tensor:
        """bool [..., n, n] whose tile (r, c), c <= r, is diagonals[..., r - c] (tiles above the diagonal: False),
        without an [n, n] index table (256 MiB at 1M tokens): with the diagonals front-padded by n - 1 Falses, the
        window of n entries starting at r holds diagonals r - n + 1 .. r, i.e. row r's columns in reverse (one copy:
        the flip of the unfolded windows)."""
        n = diagonals.shape[-1]
        return torch.nn.functional.pad(diagonals, (n - 1, 0)).unfold(-1, n, 1).flip(-1)

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        batch, heads, q_len, _ = q.shape
        k_len, b = k.shape[2], self.config.block
        n = ceil_div(k_len, b)
        if q_len <= self.dense_length():
            self.knobs = {"dense_fallback": True}
            blocks = causal_blocks(n, q.device).expand(batch, heads, n, n)
            return SparsePattern(blocks=blocks, block=b)
        gamma = self.config.gamma
        if self.config.density > 0:  # a per-layer solve on the device (no host sync), replayed as the defaults are
            fused = self.fused(q, k)

            def solve(queries, keys):
                s = self.scores(queries, keys, scale)
                if fused:  # the solve in three launches (flex_estimate), bisecting as bisect_on_device's 12 steps
                    from attention.kernels.flex_estimate import flex_solve  # imported here: it loads triton

                    limits = flex_solve(s.sorted_keys, s.order, s.tiles, s.query_aware, b, *self.budget_range(s.n),
                                        q_len, k_len, self.config.density)
                    return (*self.select_fused(s, limits), limits[0])
                cells = block_cells(q_len, k_len, b, queries.device)

                def share(x: torch.Tensor) -> torch.Tensor:
                    return blocks_density(self.select(s, x), cells).mean()

                solved = bisect_on_device(share, self.config.density, 0.0, 1.0, device=queries.device)
                return self.select(s, solved), s.query_aware.float().mean(0), solved

            # eager, the scores and the solve are ~35 launches a layer whatever the length: 71-83 ms TTFT on Qwen at
            # 8K-16K against dense's 32-67 ms (v13)
            key = ("flexprefill-solve", tuple(q.shape), tuple(k.shape), q.dtype, scale, self.config.density, fused,
                   str(q.device))
            blocks, aware, gamma = estimate(self.__dict__.setdefault("_cache", {}), key, solve, (q, k))
        else:  # the defaults: no host sync; on CUDA one graph replay per layer (peer_estimation.estimate)
            fused = self.fused(q, k)
            scores_from = self.fused_scores if fused else self.scores_from

            def default(tail, queries, keys):
                s = scores_from(tail, queries, keys, scale, gamma)
                if fused:
                    return self.select_fused(s, gamma)
                return self.select(s, gamma), s.query_aware.float().mean(0)

            key = ("flexprefill", tuple(q.shape), tuple(k.shape), q.dtype, scale, str(q.device), fused)
            blocks, aware = estimate(self.__dict__.setdefault("_cache", {}), key, default,
                                     (q[:, :, q_len - min(b, q_len):], self.pooled_queries(q, k_len, scale, fused), k))
        self.knobs = {"gamma": gamma, "query_aware": aware}
        return SparsePattern(blocks=blocks, block=b)
