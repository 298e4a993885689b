"""MInference's executed pattern on flat tile lists (band_tiles.py): one pipelined loop over a query tile's key tiles.

One program per (query tile of TILE_M = 64 or 128 rows, batch x head). Query tiles start on MInference's 64-row
blocks (absolute positions); a 128-row tile runs the union of its two blocks' tiles, each cell kept only where its
own row's block keeps that tile (the entry's flag bits), so the result is exactly the executed pattern.

  pairs:    with PAIRS (64-row tiles), two adjacent unmasked tiles of a run as one 128-key tile (half the
            accumulator rescales per key)
  unmasked: entries both halves keep, every key at or before the tile's first row (one FMA-folded step, no mask)
  masked:   the others (one half's tiles, the diagonal): causal and the row's own flag
  columns:  the kept columns at or before the tile's last row, gathered by index, minus those inside the row's
            block's tiles (a binary search in the block's own sorted tile list), so each key is counted once and
            the tile loops need no column mask

K/V tiles start at any key (MInference's ranges are unaligned): through TMA descriptors on Hopper (USE_TMA: a
descriptor takes any row coordinate), by pointer elsewhere. Offsets that pass 2^31 at 1M tokens are 64-bit.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from attention.indices import prepare_columns
from attention.kernels.band_tiles import BAND, block_tiles, tile_lists
from attention.kernels.config import LOG2E, coordinates_fit, interpreter_f32, sparse_path, tma_supported
from attention.kernels.hopper import matrix_of
from attention.kernels.sparse import NEG_INF
from attention.kernels.sparse_tma import _step_full, _step_masked


@triton.jit
def _covered(TILES, n, cols, steps, BAND: tl.constexpr):
    """bool like cols: whether each key lies in one of the n ascending 64-key tiles at TILES (binary search for
    the last start <= key)."""
    lo = tl.zeros_like(cols)
    hi = lo + n
    for _ in range(0, steps):
        active = lo < hi
        mid = (lo + hi) // 2
        start = tl.load(TILES + mid, mask=active, other=0)
        right = active & (start <= cols)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & ~right, mid, hi)
    last = tl.load(TILES + lo - 1, mask=lo > 0, other=-2 * BAND)
    return (lo > 0) & (cols < last + BAND)


@triton.jit
def _kv_tile(desc_k, desc_v, k_base, v_base, start, kv_row, kv_col, offs_n, offs_d, sk_s, sv_s, Sk,
             USE_TMA: tl.constexpr, MASK_KEYS: tl.constexpr):
    # offs_n: arange over the tile's keys (its length is the descriptor's block rows)
    if USE_TMA:  # rows past the head's last key are the next head's (finite) or zeros; their cells are masked
        k = desc_k.load([kv_row + start, kv_col])
        v = desc_v.load([kv_row + start, kv_col])
    else:
        keys = (start + offs_n).to(tl.int64)
        if MASK_KEYS:
            ok = (start + offs_n) < Sk
            k = tl.load(k_base + keys[:, None] * sk_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            v = tl.load(v_base + keys[:, None] * sv_s + offs_d[None, :], mask=ok[:, None], other=0.0)
        else:
            k = tl.load(k_base + keys[:, None] * sk_s + offs_d[None, :])
            v = tl.load(v_base + keys[:, None] * sv_s + offs_d[None, :])
    return k, v


@triton.jit(do_not_specialize=["H", "GROUP", "Sq", "Sk", "q_off", "m0", "n_rb", "n_qt", "ent_slots", "blk_slots",
                               "col_slots", "steps", "kv_rb", "kv_rh"])
def band_tiled_kernel(
    Q, desc_k, desc_v, desc_k2, desc_v2, K, V, O, ENTRIES, COUNTS, BLK_TILES, BLK_N, COLS, COL_HI,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s, kv_rb, kv_rh, kv_ch,
    H, GROUP, Sq, Sk, q_off, m0, n_rb, n_qt, ent_slots, blk_slots, col_slots, steps, qk_scale,
    HEAD_D: tl.constexpr, TILE_M: tl.constexpr, BAND: tl.constexpr, HAS_COLS: tl.constexpr,
    USE_TMA: tl.constexpr, PAIRS: tl.constexpr, F32: tl.constexpr,
):
    t = tl.num_programs(0) - 1 - tl.program_id(0)  # the last query tiles have the most work: start them first
    pid_bh = tl.program_id(1)
    bh = pid_bh.to(tl.int64)  # 64-bit from here: b, h, hk x strides pass 2^31 at 1M tokens
    b = bh // H
    h = bh % H
    hk = h // GROUP
    G: tl.constexpr = TILE_M // BAND
    first = (m0 + t * G) * BAND                     # absolute position of the tile's first row
    rows = tl.arange(0, TILE_M)
    pos = first + rows
    row_ok = (pos >= q_off) & (pos < Sk)
    offs_d = tl.arange(0, HEAD_D)
    offs_n = tl.arange(0, BAND)
    q = tl.load(Q + b * sq_b + h * sq_h + (pos - q_off)[:, None].to(tl.int64) * sq_s + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    b32 = pid_bh // H  # TMA coordinates are 32-bit (config.coordinates_fit checked by the launcher)
    hk32 = (pid_bh % H) // GROUP
    kv_row = b32 * kv_rb + hk32 * kv_rh
    kv_col = hk32 * kv_ch
    row = bh * n_qt + t
    n_pairs = tl.load(COUNTS + row * 3)
    n_whole = tl.load(COUNTS + row * 3 + 1)
    n_masked = tl.load(COUNTS + row * 3 + 2)
    entries = ENTRIES + row * ent_slots

    acc = tl.zeros([TILE_M, HEAD_D], dtype=tl.float32)
    m_i = tl.full([TILE_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([TILE_M], dtype=tl.float32)

    if PAIRS:
        offs_2n = tl.arange(0, 2 * BAND)
        for i in tl.range(0, n_pairs):  # two adjacent tiles of a run, every cell kept
            start = tl.load(entries + i) >> 2
            k, v = _kv_tile(desc_k2, desc_v2, k_base, v_base, start, kv_row, kv_col, offs_2n, offs_d, sk_s, sv_s,
                            Sk, USE_TMA, False)
            acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)

    for i in tl.range(n_pairs, n_pairs + n_whole):  # every cell kept: no mask
        start = tl.load(entries + i) >> 2
        k, v = _kv_tile(desc_k, desc_v, k_base, v_base, start, kv_row, kv_col, offs_n, offs_d, sk_s, sv_s, Sk,
                        USE_TMA, False)
        acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)

    second = rows >= BAND  # rows of the tile's second block (none when TILE_M = 64)
    for i in range(0, n_masked):
        e = tl.load(entries + ent_slots - 1 - i)
        start = e >> 2
        k, v = _kv_tile(desc_k, desc_v, k_base, v_base, start, kv_row, kv_col, offs_n, offs_d, sk_s, sv_s, Sk,
                        USE_TMA, True)
        own = tl.where(second, e & 2, e & 1) != 0
        keep = ((start + offs_n)[None, :] <= pos[:, None]) & own[:, None]
        acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32)

    if HAS_COLS:  # COLS sorted; [0, COL_HI) are at or before the tile's last row; repeats skipped
        c_hi = tl.load(COL_HI + row)
        blk = bh * n_rb + t * G
        tiles_a = BLK_TILES + blk * blk_slots
        n_a = tl.load(BLK_N + blk)
        n_b = 0
        if G == 2:
            n_b = tl.load(BLK_N + blk + 1, mask=t * G + 1 < n_rb, other=0)
        for c0 in range(0, c_hi, BAND):
            slot = c0 + offs_n
            live = slot < c_hi
            cols = tl.load(COLS + bh * col_slots + slot, mask=live, other=0)
            prev = tl.load(COLS + bh * col_slots + slot - 1, mask=live & (slot > 0), other=-1)
            ok = live & (cols != prev)
            k = tl.load(k_base + cols[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=ok[:, None], other=0.0)
            inside = _covered(tiles_a, n_a, cols, steps, BAND)[None, :]
            if G == 2:
                inside_b = _covered(tiles_a + blk_slots, n_b, cols, steps, BAND)[None, :]
                inside = tl.where(second[:, None], inside_b, inside)
            keep = ok[None, :] & (cols[None, :] <= pos[:, None]) & ~inside
            acc, m_i, l_i = _step_masked(acc, m_i, l_i, q, k, v, keep, qk_scale, F32)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # a row with nothing kept outputs zero, as the reference does
    out = acc / l_safe[:, None]
    tl.store(O + b * so_b + h * so_h + (pos - q_off)[:, None].to(tl.int64) * so_s + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])


@dataclass(frozen=True)
class BandConfig:
    tile_m: int    # query rows per program: 64 (one of MInference's blocks) or 128 (two, the union of their tiles)
    pairs: bool    # 64-row tiles: adjacent unmasked tiles of a run as one 128-key tile
    warps: int
    stages: int


def default_config(head_dim: int, use_tma: bool) -> BandConfig:
    """64-row tiles, 4 warps, 3 stages; adjacent unmasked tiles paired up to D=64. The H200 sweeps
    (results/bench/bands, cell ratio at 128K, density 0.1 / defaults): D128 unpaired 1.38 / 1.35, paired 2.11 / 1.84
    (64x128 K and V tiles take twice the shared memory: fewer programs per SM; 4 stages the same); D64 paired
    1.17 / 1.16, unpaired 1.26 / 1.22. 128-row tiles (the union of two blocks' tiles) computed 1.27-1.8 tile cells
    per kept cell and ran 1.2-2x slower. D=256: 2 stages so that K/V buffers fit (not timed)."""
    if head_dim <= 64:
        return BandConfig(64, True, 4, 3)
    return BandConfig(64, False, 4, 3 if head_dim <= 128 else 2)


def band_tiled_path(q: torch.Tensor, k: torch.Tensor) -> tuple[bool, BandConfig]:
    """(use_tma, config) for these queries and keys: TMA where config.sparse_path says so (Hopper, its override)
    and the 32-bit tile coordinates reach every row."""
    batch, heads, q_len, head_dim = q.shape
    use_tma = (sparse_path(q, k.shape[2]) == "tma"
               and coordinates_fit(batch, heads, k.shape[1], q_len, k.shape[2], 0))
    return use_tma, default_config(head_dim, use_tma)


class TiledBands:
    """What the kernel reads besides q/k/v, built once per pattern and shape (device-side, no host sync)."""

    def __init__(self, offsets, columns, batch: int, heads: int, q_len: int, k_len: int, tile_m: int, device,
                 pairs: bool = False, blocks: tuple[torch.Tensor, torch.Tensor] | None = None):
        """blocks: block_tiles' output for these query blocks when the caller has it already."""
        q_off = k_len - q_len
        self.m0 = q_off // BAND
        self.tile_m = tile_m
        self.pairs = pairs and tile_m == BAND
        self.blk_tiles, self.blk_n = blocks if blocks is not None else block_tiles(offsets.to(device), batch, heads,
                                                                                   k_len, self.m0)
        self.entries, self.counts = tile_lists(self.blk_tiles, self.blk_n, self.m0, tile_m, self.pairs)
        self.n_qt = self.entries.shape[1]
        self.cols = self.col_hi = None
        if columns is not None and columns.shape[-1] > 0:
            c = prepare_columns(columns.to(device), batch, heads, k_len)
            last = ((self.m0 + (torch.arange(self.n_qt, device=device) + 1) * (tile_m // BAND)) * BAND - 1)
            col_hi = torch.searchsorted(c, last.clamp(max=k_len - 1).expand(batch, heads, -1).contiguous(), right=True)
            self.cols, self.col_hi = c.to(torch.int32).contiguous(), col_hi.to(torch.int32).contiguous()


def band_tiled_attention(q, k, v, scale: float, offsets: torch.Tensor, columns: torch.Tensor | None, *,
                         tiles: TiledBands | None = None, config: BandConfig | None = None,
                         use_tma: bool | None = None, out: torch.Tensor | None = None,
                         keys: int | None = None) -> torch.Tensor:
    """Attention over MInference's executed pattern (as bands.band_attention): offsets long [B, H, L] as 64-key
    tiles per 64-row query block, columns long [B, H, C] (-1 unused) gathered; queries the last q_len of k_len.
    tiles: a TiledBands for these shapes when the caller has one (its tile size and pairs win over config's).
    use_tma: None = where the card has TMA and the 32-bit tile coordinates reach every row.
    keys: the sequence is k's first `keys` positions (default all): a span of queries reads k and v in place."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], (k.shape[2] if keys is None else keys)
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q) if out is None else out
    if q_len == 0:
        return out
    if use_tma is None:
        use_tma = tma_supported(q) and coordinates_fit(batch, heads, kv_heads, q_len, k_len, 0)
    config = config or default_config(head_dim, use_tma)
    if tiles is None:
        tiles = TiledBands(offsets, columns, batch, heads, q_len, k_len, config.tile_m, q.device, config.pairs)
    dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
    has_cols = tiles.cols is not None
    desc_k, desc_v, desc_k2, desc_v2, kv_rb, kv_rh, kv_ch = k, v, k, v, 0, 0, 0
    if use_tma:
        (km, kv_rb, kv_rh, kv_ch), (vm, *v_at) = matrix_of(k), matrix_of(v)
        if tuple(v_at) != (kv_rb, kv_rh, kv_ch):  # K and V share one row formula: V in K's layout
            v = v.contiguous() if kv_ch == 0 else v.transpose(1, 2).contiguous().transpose(1, 2)
            vm = matrix_of(v)[0]

        def desc(matrix, rows):
            return TensorDescriptor(matrix, list(matrix.shape), [matrix.shape[1], 1], [rows, head_dim])
        desc_k, desc_v, desc_k2, desc_v2 = desc(km, BAND), desc(vm, BAND), desc(km, 2 * BAND), desc(vm, 2 * BAND)
    blk_slots = tiles.blk_tiles.shape[-1]
    band_tiled_kernel[(tiles.n_qt, batch * heads)](
        q, desc_k, desc_v, desc_k2, desc_v2, k, v, out, tiles.entries, tiles.counts, tiles.blk_tiles, tiles.blk_n,
        tiles.cols if has_cols else dummy, tiles.col_hi if has_cols else dummy,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), kv_rb, kv_rh, kv_ch,
        heads, heads // kv_heads, q_len, k_len, k_len - q_len, tiles.m0, tiles.blk_n.shape[1], tiles.n_qt,
        tiles.entries.shape[-1], blk_slots, tiles.cols.shape[-1] if has_cols else 0,
        max(1, blk_slots.bit_length() + 1), scale * LOG2E,
        HEAD_D=head_dim, TILE_M=tiles.tile_m, BAND=BAND, HAS_COLS=has_cols, USE_TMA=use_tma, PAIRS=tiles.pairs,
        F32=interpreter_f32(q), num_warps=config.warps, num_stages=config.stages,
    )
    return out
