"""XAttention (Xu et al. 2025, arXiv 2503.16428): antidiagonal block scoring and threshold block selection,
on block patterns (FlexAttention on CUDA through the shared executor).

Per query head, the sequence is cut into groups of `stride` tokens. Query group m against key group n is scored
by the sum of q.k along the group pair's antidiagonal (query m*S + S - 1 - t with key n*S + t, t < S), times
scale / S; each query group takes a softmax over its causal key groups (n <= m; groups made only of padding are
left out). Summing those probabilities over `block`-token tiles gives a tile score grid. Each query tile keeps
key tile 0 and its diagonal tile, then its other tiles from the highest score down while the sum of what it
already holds is below `threshold` x its row total; tiles above the diagonal are dropped.

Defaults from mit-han-lab/x-attention: block_size 128 (Xattention_prefill, which asserts it), stride 8 (one of
the two strides, 8 and 16, of their RULER runs; 8 is the finer estimate), threshold 0.9 (their README's value for
QwenVL-2 and HunyuanVideo; Xattention_prefill's own default is 0.8, and their LLaMA runs use per-head thresholds
from an offline search, not offered here). This follows their plain-PyTorch estimate (select_mode "inverse",
norm 1, no keep_sink / keep_recent); their Triton path fuses the same computation. Ties go to the lower tile
index (stable sort; theirs is unspecified).

`density` > 0 solves the threshold per layer so that the layer's kept share is closest to `density`.
"""
import dataclasses

import torch

from attention.block_select import block_cells, blocks_density, causal_blocks, ceil_div, ranked, solve
from attention.method import ConfigError, MethodConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register

SCORE_ELEMENTS = 1 << 26  # fp32 group scores held at once (256 MiB)


@dataclasses.dataclass
class XAttentionConfig(MethodConfig):
    block: int = 128
    stride: int = 8
    threshold: float = 0.9    # share of each query tile's estimated mass its kept tiles must reach
    density: float = 0.0      # > 0: solve the threshold per layer for this kept share of the causal area

    def validate(self):
        if self.stride < 1:
            raise ConfigError(f"stride={self.stride} must be >= 1")
        if self.block < 1 or self.block % self.stride:
            raise ConfigError(f"block={self.block} must be a positive multiple of stride={self.stride}")
        check_range("threshold", self.threshold, 0.0, 1.0, low_open=True)
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


@dataclasses.dataclass
class TileRanking:
    order: torch.Tensor    # long [B, H, n, n]: per query tile, its non-forced tiles best first (forced ones last)
    held: torch.Tensor     # [B, H, n, n]: mass held before each of them is taken (forced tiles + better ones)
    total: torch.Tensor    # [B, H, n, 1]: row totals
    forced: torch.Tensor   # bool [n, n]: key tile 0 and the diagonal tile


def rank_tiles(scores: torch.Tensor) -> TileRanking:
    n = scores.shape[-1]
    r, c = torch.arange(n, device=scores.device)[:, None], torch.arange(n, device=scores.device)[None, :]
    forced = (c == 0) | (c == r)
    others, order = ranked(scores.masked_fill(forced, float("-inf")))
    forced_mass = torch.where(forced, scores, 0.0).sum(-1, keepdim=True)
    before = torch.nn.functional.pad(others.clamp(min=0).cumsum(-1), (1, 0))[..., :-1]
    held = torch.where(others > float("-inf"), forced_mass + before, float("inf"))  # forced slots: never "taken"
    return TileRanking(order, held, scores.sum(-1, keepdim=True), forced)


def select_tiles(ranking: TileRanking, threshold: float) -> torch.Tensor:
    """bool [B, H, n, n]: forced tiles, then the best others while the held mass is below threshold x total."""
    take = ranking.held < threshold * ranking.total
    keep = torch.zeros_like(take).scatter(-1, ranking.order, take) | ranking.forced
    return keep & causal_blocks(keep.shape[-1], keep.device)


@register
class XAttention(SparseMethod):
    name = "xattention"
    Config = XAttentionConfig
    description = "XAttention: antidiagonal-scored tiles, per-row threshold selection (block mask)"

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        cfg = self.config
        q_len, k_len = q.shape[2], k.shape[2]
        scores = antidiagonal_tile_scores(q, k, scale, cfg.stride, cfg.block)
        ranking = rank_tiles(scores)
        threshold = cfg.threshold
        if cfg.density > 0:
            cells = block_cells(q_len, k_len, cfg.block, q.device)

            def share(x: float) -> float:
                return float(blocks_density(select_tiles(ranking, x), cells).mean())

            threshold = solve(share, cfg.density, 0.0, 1.0)
        self.knobs = {"threshold": threshold}
        return SparsePattern(blocks=select_tiles(ranking, threshold), block=cfg.block)
