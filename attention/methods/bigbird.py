"""BigBird (Zaheer et al. 2020) as causal block-sparse prefill: window, global and random blocks.

Each query block attends to its diagonal block and the `window_blocks - 1` blocks before it, the first
`global_blocks` blocks, and `random_blocks` blocks drawn uniformly from the rest of its causal past
(seeded per layer from `seed`, like transformers' BigBird, so runs repeat exactly).
Defaults follow BigBird's ITC setting (2 global, 3 window, 3 random blocks) with 128-token blocks, the
granularity FlexAttention's block masks run at (attention/flex_blocks.py). That is a density of about 41% at
4K, 5.8% at 32K and 1.5% at 128K. With `density` > 0 the random-block count is solved so that the kept
share of the causal area is closest to it; window and global blocks stay, so short prompts cannot go below
their share (recorded density shows what was kept).
"""
import dataclasses

import torch

from attention.density import block_cells
from attention.method import ConfigError, FallbackConfig, SparseMethod, check_range
from attention.pattern import SparsePattern
from attention.registry import register

DRAW_CHUNK = 1 << 26  # uniform scores drawn at once (256 MiB fp32: one head's at 1M tokens)
DRAW_CACHE_BYTES = 1 << 30  # drawn tables kept per method (bool: a byte per block): 32 layers at 128K


@dataclasses.dataclass
class BigBirdConfig(FallbackConfig):
    block: int = 128
    window_blocks: int = 3    # diagonal block included
    global_blocks: int = 2
    random_blocks: int = 3    # per query block; replaced by the solved count when density > 0
    density: float = 0.0      # 0 = use the block counts as given
    seed: int = 0

    def validate(self):
        super().validate()
        if self.block < 1:
            raise ConfigError(f"block={self.block} must be a positive number of tokens")
        if self.window_blocks < 1:
            raise ConfigError(f"window_blocks={self.window_blocks} must be >= 1 (the diagonal block)")
        if self.global_blocks < 0 or self.random_blocks < 0:
            raise ConfigError("global_blocks and random_blocks must be >= 0")
        check_range("density", self.density, 0.0, 1.0)


@register
class BigBird(SparseMethod):
    name = "bigbird"
    Config = BigBirdConfig
    description = "BigBird block-sparse prefill: window + global + seeded random blocks"

    def __init__(self, config=None):
        super().__init__(config)
        self._drawn = {}  # (layer, heads, length, device) -> blocks: the pattern is static per shape

    def fixed_blocks(self, n: int) -> torch.Tensor:
        """Window and global blocks, causal: bool [n, n]."""
        row, col = torch.arange(n)[:, None], torch.arange(n)[None, :]
        window = (row - col >= 0) & (row - col < self.config.window_blocks)
        return window | ((col < self.config.global_blocks) & (col <= row))

    def random_count(self, n: int, length: int) -> int:
        """Random blocks per query block: the configured count, or the one whose kept share is closest to
        `density` (found by bisection: the share grows with the count)."""
        if self.config.density == 0:
            return self.config.random_blocks
        fixed = self.fixed_blocks(n)
        cells = block_cells(length, length, self.config.block)
        free = (torch.tril(torch.ones(n, n, dtype=torch.bool)) & ~fixed).sum(1)  # eligible blocks per row
        off_diagonal = cells[:, 0]  # cells of one whole block below the diagonal, per query-block row
        base, total = (cells * fixed).sum(), cells.sum()

        def share(count: int) -> float:
            return float((base + (torch.clamp(free, max=count) * off_diagonal).sum()) / total)

        low, high = 0, n
        while low < high:
            mid = (low + high) // 2
            low, high = (mid + 1, high) if share(mid) < self.config.density else (low, mid)
        below = max(low - 1, 0)
        return below if abs(share(below) - self.config.density) <= abs(share(low) - self.config.density) else low

    def draw(self, heads: int, length: int, layer_idx: int, device="cpu") -> torch.Tensor:
        """blocks bool [1, H, n, n]: drawn per layer, shape and device; cached while the cache holds at most
        DRAW_CACHE_BYTES (32 layers at 128K), else drawn again for each call (the same blocks: seeded)."""
        n = -(-length // self.config.block)
        key = (layer_idx, heads, length, str(device))
        if key in self._drawn:
            return self._drawn[key]
        # drawn where attention runs (on the CPU it takes seconds per layer at 128K); the same seed on the same
        # device type gives the same blocks. In head chunks of at most DRAW_CHUNK scores: all heads' uniform scores at
        # once are 4 x H x n^2 bytes (8 GiB at 1M tokens); one chunk up to ~256K tokens with 32 heads
        gen = torch.Generator(device=device).manual_seed(self.config.seed * 100_003 + layer_idx)
        fixed = self.fixed_blocks(n).to(device)
        eligible = torch.tril(torch.ones(n, n, dtype=torch.bool, device=device)) & ~fixed
        count = min(self.random_count(n, length), n)
        blocks = fixed.expand(1, heads, n, n).clone()
        step = max(1, DRAW_CHUNK // (n * n))
        for first in range(0, heads if count else 0, step):
            part = min(step, heads - first)
            # uniform draw without replacement: the `count` largest of uniform scores over eligible blocks
            scores = torch.rand(part, n, n, generator=gen, device=device).masked_fill_(~eligible, -1.0)
            top = scores.topk(count, dim=-1)
            # scattered apart, then or-ed: a row with fewer eligible blocks than `count` also tops fixed ones (-1)
            blocks[0, first:first + part] |= torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top.indices,
                                                                                                  top.values >= 0)
            del scores, top
        held = sum(x.numel() for x in self._drawn.values())
        while self._drawn and held + blocks.numel() > DRAW_CACHE_BYTES:  # the oldest go first
            held -= self._drawn.pop(next(iter(self._drawn))).numel()
        if blocks.numel() <= DRAW_CACHE_BYTES:
            self._drawn[key] = blocks
        return blocks

    def build_pattern(self, q, k, scale, layer_idx=0) -> SparsePattern:
        blocks = self.draw(q.shape[1], k.shape[2], layer_idx, q.device)  # drawn where attention runs
        return SparsePattern(blocks=blocks, block=self.config.block)
