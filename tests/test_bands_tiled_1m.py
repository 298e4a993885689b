"""The tiled band kernels' addresses at one million tokens (Llama-3.1-8B shapes: 32 query heads, 8 kv heads, head
dim 128; q and the output hold 2^32 elements), checked without allocating them (tests/offset_probe.py, as
tests/test_offsets_1m.py does for the other kernels): the heaviest-addressed programs of the last head, both
memory layouts a model hands over, both paths (pointer loads, TMA descriptors) and both query tile sizes."""
import pytest
import torch

import attention.kernels  # noqa: F401  (the interpreter compatibility patch)
from attention.kernels.band_tiles import BAND, RUN_BLOCKS, band_block_tiles_kernel
from attention.kernels.bands_tiled import band_tiled_kernel
from attention.kernels.config import coordinates_fit
from tests.offset_probe import Fake, Probe, run_programs

S = 1 << 20
B, H, HK, D = 1, 32, 8, 128


def const(value):
    return lambda off: off * 0 + value


def index_fakes(n_rb: int, n_qt: int, ent_slots: int, blk_slots: int, col_slots: int):
    """Tile entries near the end (2 unmasked, 2 masked, both halves' flags), block tile lists, columns."""
    entries = Fake("entries", (B * H, n_qt, ent_slots), torch.int32,
                   fill=lambda off: (S - 8 * BAND + (off % 4) * BAND) * 4 + 3)
    counts = Fake("counts", (B * H, n_qt, 3), torch.int32, fill=const(2))
    blk_tiles = Fake("blk_tiles", (B * H, n_rb, blk_slots), torch.int32,
                     fill=lambda off: S - 8192 + (off % blk_slots) * BAND)
    blk_n = Fake("blk_n", (B * H, n_rb), torch.int32, fill=const(blk_slots))
    cols = Fake("cols", (B, H, col_slots), torch.int32, fill=lambda off: S - 8192 + (off % col_slots) * 16)
    col_hi = Fake("col_hi", (B * H, n_qt), torch.int32, fill=const(col_slots))
    return entries, counts, blk_tiles, blk_n, cols, col_hi


@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
@pytest.mark.parametrize("use_tma", [False, True])
@pytest.mark.parametrize("tile_m,pairs", [(64, True), (128, False)])
def test_band_tiled_kernel(layout, use_tma, tile_m, pairs):
    n_rb = S // BAND
    n_qt = n_rb // (tile_m // BAND)
    blk_slots, col_slots = 6144, 128  # list rows x slots pass 2^31 as at MInference's sizes
    ent_slots = blk_slots * tile_m // BAND
    if layout == "bhsd":
        q_strides, k_strides = None, None
        kv_at, kv_shape = (HK * S, S, 0), (B * HK * S, D)
    else:  # projection output [B, S, H, D] transposed to [B, H, S, D]
        q_strides, k_strides = (S * H * D, D, H * D, 1), (S * HK * D, D, HK * D, 1)
        kv_at, kv_shape = (S, 0, D), (B * S, HK * D)
    q, o = Fake("q", (B, H, S, D), strides=q_strides), Fake("o", (B, H, S, D))
    k, v = Fake("k", (B, HK, S, D), strides=k_strides), Fake("v", (B, HK, S, D), strides=k_strides)
    fakes = index_fakes(n_rb, n_qt, ent_slots, blk_slots, col_slots)
    km, vm = Fake("km", kv_shape), Fake("vm", kv_shape)  # TMA: K and V as the descriptors' matrices
    assert coordinates_fit(B, H, HK, S, S, 0)
    with Probe(q, o, k, v, km, vm, *fakes) as probe:
        descs = [probe.desc(x, *kv_shape, [rows, D]) for rows in (BAND, 2 * BAND) for x in (km, vm)] if use_tma \
            else [k, v, k, v]
        run_programs(band_tiled_kernel, (n_qt, B * H), [(0, B * H - 1), (n_qt - 1, B * H - 1)],
                     q, *descs, k, v, o, *fakes,
                     *[t.stride(d) for t in (q, k, v, o) for d in range(3)], *(kv_at if use_tma else (0, 0, 0)),
                     H, H // HK, S, S, 0, 0, n_rb, n_qt, ent_slots, blk_slots, col_slots, 14, 0.1,
                     HEAD_D=D, TILE_M=tile_m, BAND=BAND, HAS_COLS=True, USE_TMA=use_tma, PAIRS=pairs, F32=False,
                     num_warps=4)
    assert not probe.errors, probe.errors[:5]
    far = (o, fakes[0], fakes[2])  # output, entries, block tile lists
    assert all(max(t.touched) >= 2**31 for t in far)  # the probe reached past 2^31 elements: the case it exists for


def test_band_block_tiles_kernel():
    n_rb, n_slots, n_offs = S // BAND, 6144, 6  # MInference's 6096 offsets: slots = min(blocks, L)
    offs = Fake("offsets", (B * H, n_offs), torch.int32, fill=lambda off: S - 1000 * (off % n_offs + 1))
    n_off = Fake("n_offsets", (B * H,), torch.int32, fill=const(n_offs))
    tiles = Fake("tiles", (B * H, n_rb, n_slots), torch.int32)
    count = Fake("count", (B * H, n_rb), torch.int32)
    programs = n_rb // RUN_BLOCKS
    with Probe(offs, n_off, tiles, count) as probe:
        run_programs(band_block_tiles_kernel, (programs, B * H), [(programs - 1, B * H - 1)],
                     offs, n_off, tiles, count, n_slots, n_offs, 0, n_rb, BAND=BAND, RB=RUN_BLOCKS)
    assert not probe.errors, probe.errors[:5]
    assert max(tiles.touched) >= 2**31
