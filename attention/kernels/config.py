"""Kernel constants and tile configurations, and the one sparse-path decision: the home the launchers share.

Plain Python and torch only (no triton), so the harness can read `kernel_settings()` into a run's manifest
without loading a kernel. Nothing here reads an environment variable: what changes speed is either a default
below or an explicit `override(...)` (benchmark sweeps), and `kernel_settings()` reports both.

Sparse path (`sparse_path`): the portable kernel (sparse.py: gathers column keys by index, any GPU and the CPU
interpreter) or the Hopper TMA kernel (sparse_tma.py: columns gathered once into a contiguous buffer, all tiles
through TMA descriptors; compute capability 9.x). TMA from TMA_MIN_LEN on, where the kernel bench has it faster
per computed cell (results/bench/NOTES.md v4: 128K 1.03-1.24 x cuDNN's rate against 1.60-1.79 portable).
"""
import os
from contextlib import contextmanager

import torch

LOG2E = 1.4426950408889634
HEAD_DIMS = (16, 32, 64, 128, 256)  # head dims the sparse kernels compile for
TMA_MIN_LEN = 32768  # below this the TMA path's gather and index work outweigh its faster tiles (NOTES.md v4)
LONG_TILES = 49152   # from this query length the larger tiles win (fewer programs still fill the SMs)

# explicit overrides (benchmarks and config sweeps only); every key is reported by kernel_settings()
OVERRIDE_KEYS = ("sparse_path", "sparse_blocks", "tma_blocks", "block_sparse_blocks", "scores_cfg", "scores_exp16",
                 "scores_pack", "estimate_graphs", "flex_fused")
_overrides: dict = {}


@contextmanager
def override(**settings):
    """Run a block with kernel settings other than the defaults, e.g. override(sparse_path="portable") or
    override(tma_blocks={128: (128, 64, 4, 2, 0)}) (tile settings per head dim). Keys: OVERRIDE_KEYS."""
    unknown = set(settings) - set(OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"unknown kernel setting(s) {sorted(unknown)}; use {', '.join(OVERRIDE_KEYS)}")
    if settings.get("sparse_path", "auto") not in ("auto", "tma", "portable"):
        raise ValueError(f"sparse_path={settings['sparse_path']!r} is not one of auto, tma, portable")
    saved = dict(_overrides)
    _overrides.update(settings)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def kernel_settings() -> dict:
    """What decides the kernels' speed in this process: the defaults' rule and any active override (manifest)."""
    return {"tma_min_len": TMA_MIN_LEN, "long_tiles_from": LONG_TILES,
            "overrides": {k: ({str(d): list(t) for d, t in v.items()} if isinstance(v, dict) else v)
                          for k, v in _overrides.items()}}


def estimate_graphs() -> bool:
    """Whether the peers' default estimates replay from CUDA graphs where they can (attention/peer_estimation.py);
    override(estimate_graphs=False) runs them eagerly (recorded in the manifest as every override is)."""
    return bool(_overrides.get("estimate_graphs", True))


def flex_fused() -> bool:
    """Whether FlexPrefill's estimate runs as attention/kernels/flex_estimate.py's fixed chain of launches where it
    applies; override(flex_fused=False) runs the unfused statistics (benchmarks' before/after, tests)."""
    return bool(_overrides.get("flex_fused", True))


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def interpreter_f32(x: torch.Tensor) -> bool:
    """Under TRITON_INTERPRET=1, bf16 dots must be done on upcast operands (the interpreter has no bf16 math)."""
    return interpreting() and x.dtype == torch.bfloat16


def block_config(head_dim: int, q_len: int = 0) -> tuple[int, int, int, int]:
    """Portable kernel (BLOCK_M, BLOCK_N, num_warps, num_stages) per head dim; BLOCK_M is a multiple of BLOCK_N.

    D=128: H100 sweep (results/bench/v2/sweep.log): 64x64 tiles at 32K (more programs to fill 132 SMs), 128x64 at
    128K. D=64: half the bytes per key tile, so 128-row query blocks with 64-key tiles and 4 warps at any length."""
    if head_dim in _overrides.get("sparse_blocks", {}):
        return tuple(_overrides["sparse_blocks"][head_dim])
    if head_dim <= 64:
        return 128, 64, 4, 3
    if head_dim <= 128:
        return (64, 64, 4, 3) if q_len < LONG_TILES else (128, 64, 8, 3)
    return 64, 32, 4, 2


def block_sparse_config(head_dim: int, q_len: int = 0, block: int = 0) -> tuple[int, int, int, int]:
    """Portable block-sparse kernel (BLOCK_M, BLOCK_N, num_warps, num_stages): the portable kernel's tiles (same
    inner loop, key tiles read whole and contiguous as in its window part) until a sweep says otherwise. A pattern
    block smaller than BLOCK_M (a power of two, at least BLOCK_N) becomes BLOCK_M, so tiles line up with the
    blocks: exact tile lists and one table entry per tile instead of a cell-level lookup and wasted cells."""
    if head_dim in _overrides.get("block_sparse_blocks", {}):
        return tuple(_overrides["block_sparse_blocks"][head_dim])
    bm, bn, warps, stages = block_config(head_dim, q_len)
    return _line_up(bm, bn, block), bn, warps, stages


def block_sparse_tma_config(head_dim: int, q_len: int = 0, block: int = 0) -> tuple[int, int, int, int, bool]:
    """Hopper block-sparse kernel (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize): the TMA sparse
    kernel's tiles (tma_config, its override tma_blocks included), lined up with smaller pattern blocks the same
    way."""
    bm, bn, warps, stages, ws = tma_config(head_dim, q_len)
    return _line_up(bm, bn, block), bn, warps, stages, ws


def _line_up(bm: int, bn: int, block: int) -> int:
    return block if bn <= block < bm and block & (block - 1) == 0 else bm


def tma_config(head_dim: int, q_len: int, has_slash: bool = False) -> tuple[int, int, int, int, bool]:
    """TMA kernel (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize) per head dim.

    D=128: H200 sweep (results/bench/v4/run2): 128x128, 8 warps, 3 stages at 128K; 128x64, 4 warps, 2 stages
    (two programs per SM) at 32K and 8K. warp_specialize made no difference with triton 3.6 on Hopper.
    D=64: 128x64, 4 warps, 3 stages (the portable kernel's D=64 tiles; not swept yet)."""
    if head_dim in _overrides.get("tma_blocks", {}):
        bm, bn, w, s, ws = _overrides["tma_blocks"][head_dim]
    elif head_dim <= 64:
        bm, bn, w, s, ws = 128, 64, 4, 3, 0
    elif head_dim <= 128:
        bm, bn, w, s, ws = (128, 64, 4, 2, 0) if q_len < LONG_TILES else (128, 128, 8, 3, 0)
    else:
        bm, bn, w, s, ws = 64, 64, 4, 2, 0
    if has_slash:  # the slash loop's pointer loads need shared memory of their own
        s = min(s, 2)
    return bm, bn, w, s, bool(ws)


def scores_config(head_dim: int) -> tuple[int, int, int, int]:
    """Stage 1 (keys per block in pass 1, in pass 2, num_warps, num_stages): the H100 sweep's best
    (results/bench/v2/sweep.log), 128-key blocks in both passes; D<=64 with 64-key blocks in pass 2 (H200, 128K:
    pass 2 4.08 -> 3.28 ms, the same column sums bit for bit; results/bench/stage1, NOTES.md stage1)."""
    if head_dim in _overrides.get("scores_cfg", {}):
        return tuple(_overrides["scores_cfg"][head_dim])
    if head_dim <= 64:
        return 128, 64, 4, 3
    return (128, 128, 4, 3) if head_dim <= 128 else (64, 64, 8, 3)


def half_exp(q: torch.Tensor) -> bool:
    """Packed fp16 exp2 in stage 1 (an experiment for its SFU-bound share; override(scores_exp16=True), GPU only)."""
    return bool(_overrides.get("scores_exp16", False)) and q.is_cuda and not interpreting()


def scores_pack_limit() -> int:
    """Query heads per stage-1 pass-1 program at most (1: off; 4 measured no faster on the H100, NOTES.md v3)."""
    return int(_overrides.get("scores_pack", 1))


def tma_supported(q: torch.Tensor) -> bool:
    """TMA descriptors need compute capability 9.0+ (Hopper, Blackwell); the interpreter emulates them."""
    if interpreting():
        return True
    return q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 9


def coordinates_fit(batch: int, heads: int, kv_heads: int, q_len: int, k_len: int, slots: int) -> bool:
    """TMA tile coordinates are 32-bit: every row of q, K and V as the descriptors read them (at most [B*Hq*Sq, D],
    [B*Hk*Sk, D]) and of the column gather buffer ([B*Hq*slots, D]) must be below 2^31 (addresses themselves are
    64-bit in the hardware)."""
    return max(batch * heads * q_len, batch * kv_heads * k_len, batch * heads * slots) < 2**31


def sparse_path(q: torch.Tensor, k_len: int = 0) -> str:
    """'tma' or 'portable' for these queries [B, H, Sq, D] over k_len keys: the one decision every sparse launch
    goes through. TMA on Hopper from TMA_MIN_LEN queries, where its 32-bit tile coordinates reach every row."""
    choice = _overrides.get("sparse_path", "auto")
    if choice != "auto":
        return choice
    if interpreting() or not q.is_cuda:
        return "portable"
    batch, heads, q_len = q.shape[:3]
    rows = batch * heads * (2 * max(k_len, q_len) + 256)  # bound on q rows and on K + gathered-column rows
    hopper = torch.cuda.get_device_capability(q.device)[0] == 9
    return "tma" if hopper and q_len >= TMA_MIN_LEN and rows < 2**31 else "portable"
