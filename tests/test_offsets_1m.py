"""Pointer offsets at one million tokens, checked without allocating a 1M-token tensor.

Each kernel runs its heaviest-addressed programs (last head, last query/key block) in the CPU interpreter on fake
arguments (tests/offset_probe.py): Llama-3.1-8B attention shapes (32 query heads, 8 kv heads, head dim 128) at
2^20 tokens, where q and the output hold 2^32 elements. Both layouts a model hands over: contiguous [B, H, S, D]
and the [B, S, H, D] projection output seen through a transpose (row stride H*D: row x stride passes 2^31 from
512K rows). With 32-bit offsets these accesses wrap outside their tensors; the probe reports every one.
Covered: the portable and Hopper sparse kernels, the gather, both stage-1 passes, stage 2, and the peers'
kernels (MInference's band runs and band attention, XAttention's fused estimate).
"""
from types import SimpleNamespace

import pytest
import torch

import attention.kernels  # noqa: F401  (the interpreter compatibility patch)
from attention.kernels.gather import gather_rows_kernel
from attention.kernels.column_select import SPLITS, select_kernel
from attention.kernels.config import block_config, coordinates_fit, scores_config, sparse_path, tma_config
from attention.kernels.sampling import column_scores_kernel, row_stats_kernel
from attention.kernels.stage1 import BLOCK
from attention.kernels.sparse import sparse_fwd_kernel
from attention.kernels.sparse_tma import sparse_tma_kernel
from tests.offset_probe import Fake, Probe, run_programs

S = 1 << 20
B, H, HK, D = 1, 32, 8, 128
LAYOUTS = ("bhsd", "bshd")


def qkvo(layout: str):
    if layout == "bhsd":
        strides_q, strides_k = None, None
    else:  # projection output [B, S, H, D] transposed to [B, H, S, D]
        strides_q, strides_k = (S * H * D, D, H * D, 1), (S * HK * D, D, HK * D, 1)
    return (Fake("q", (B, H, S, D), strides=strides_q), Fake("k", (B, HK, S, D), strides=strides_k),
            Fake("v", (B, HK, S, D), strides=strides_k), Fake("o", (B, H, S, D)))


def strides(*ts):
    return [t.stride(d) for t in ts for d in range(3)]


def const(value):
    return lambda off: off * 0 + value


def column_and_slash_fakes(cols_name: str, n_qb: int, slots: int):
    """The sparse kernels' index arguments (columns near the end, 4 slash deltas, hit maps), both paths alike."""
    cols = Fake(cols_name, (B, H, slots), torch.int32, fill=lambda off: S - 8192 + (off % slots) * 16)
    return (cols, Fake("col_full", (B, H, n_qb), torch.int32, fill=const(128)),
            Fake("col_hi", (B, H, n_qb), torch.int32, fill=const(slots)),
            Fake("deltas", (B, H, 4), torch.int32, fill=lambda off: 10 + off % 4),
            Fake("n_delta", (B, H), torch.int32, fill=const(4)), Fake("colhit", (B, H, S), torch.int8),
            Fake("diaghit", (B, H, S), torch.int8, fill=const(1)))


def assert_clean(probe: Probe, far: Fake | None = None):
    assert not probe.errors, probe.errors[:5]
    if far is not None:  # the probe did reach past 2^31 elements: the case it exists for
        assert max(far.touched) >= 2**31


@pytest.mark.parametrize("layout", LAYOUTS)
def test_portable_sparse_kernel(layout):
    q, k, v, o = qkvo(layout)
    bm, bn, warps, _ = block_config(D, S)
    n_qb, slots, window = S // bm, 256, 256
    cols, col_full, col_hi, deltas, n_delta, colhit, diaghit = column_and_slash_fakes("cols", n_qb, slots)
    with Probe(q, k, v, o, cols, col_full, col_hi, deltas, n_delta, colhit, diaghit) as probe:
        run_programs(sparse_fwd_kernel, (n_qb, B * H), [(0, B * H - 1), (n_qb - 1, B * H - 1), (0, 0)],
                     q, k, v, o, cols, col_full, col_hi, deltas, n_delta, colhit, diaghit, *strides(q, k, v, o),
                     H, H // HK, S, S, 0, window, slots, n_qb, 4, 0.1,
                     HEAD_D=D, BLOCK_M=bm, BLOCK_N=bn, HAS_COLS=True, HAS_SLASH=True, F32=False, num_warps=warps)
    assert_clean(probe, o)
    assert max(q.touched) >= 2**31


@pytest.mark.parametrize("transformers_layout", [False, True])
def test_tma_sparse_kernel(transformers_layout):
    """q, K, V read in place through descriptors over their own layout; the kept columns from a gather buffer."""
    bm, bn, warps, stages, ws = tma_config(D, S, has_slash=True)
    n_qb, slots, window = S // bm, 256, 256
    if transformers_layout:  # [B, S, H, D] handed over transposed: rows b*S + s, columns h*D
        q_at, kv_at = (S, 0, D), (S, 0, D)
        q_shape, kv_shape = (B * S, H * D), (B * S, HK * D)
        k_strides = (S * HK * D, D, HK * D)
    else:  # head-major [B, H, S, D]: rows (b*H + h)*S + s
        q_at, kv_at = (H * S, S, 0), (HK * S, S, 0)
        q_shape, kv_shape = (B * H * S, D), (B * HK * S, D)
        k_strides = (HK * S * D, S * D, D)
    q, o = Fake("q", q_shape), Fake("o", (B, H, S, D))
    k, v = Fake("k", kv_shape), Fake("v", kv_shape)
    kc, vc = Fake("kc", (B * H * slots, D)), Fake("vc", (B * H * slots, D))
    colpos, col_full, col_hi, deltas, n_delta, colhit, diaghit = column_and_slash_fakes("colpos", n_qb, slots)
    assert coordinates_fit(B, H, HK, S, S, slots)
    with Probe(q, o, k, v, kc, vc, colpos, col_full, col_hi, deltas, n_delta, colhit, diaghit) as probe:
        run_programs(sparse_tma_kernel, (n_qb, B * H), [(0, B * H - 1), (n_qb - 1, B * H - 1)],
                     probe.desc(q, *q_shape, [bm, D]), probe.desc(k, *kv_shape, [bn, D]),
                     probe.desc(v, *kv_shape, [bn, D]), probe.desc(kc, B * H * slots, D, [bn, D]),
                     probe.desc(vc, B * H * slots, D, [bn, D]), o, colpos, col_full, col_hi, k, v, deltas, n_delta,
                     colhit, diaghit, o.stride(0), o.stride(1), o.stride(2), *k_strides, *k_strides, *q_at, *kv_at,
                     H, H // HK, HK, S, S, slots, 0, window, n_qb, 4, 0.1,
                     HEAD_D=D, BLOCK_M=bm, BLOCK_N=bn, HAS_COLS=True, HAS_SLASH=True, WARP_SPEC=ws, F32=False,
                     num_warps=warps, num_stages=stages)
    assert_clean(probe, o)


def test_tma_path_refuses_what_its_coordinates_cannot_address(monkeypatch):
    assert coordinates_fit(1, 32, 8, S, S, S)
    assert not coordinates_fit(64, 32, 8, S, S, S)  # 2^31 query rows: the portable kernel must take it
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    on_hopper = [SimpleNamespace(shape=(b, H, S, D), is_cuda=True, device="cuda") for b in (1, 64)]
    assert [sparse_path(q, S) for q in on_hopper] == ["tma", "portable"]


def test_gather_rows_kernel():
    slots = S  # one slot per key: the pattern's column tensor at its widest
    k, v = Fake("k", (B, HK, S, D)), Fake("v", (B, HK, S, D))
    kc, vc = Fake("kc", (B * H * slots, D)), Fake("vc", (B * H * slots, D))
    cols = Fake("cols", (B, H, slots), torch.int32, fill=lambda off: off % slots)
    n_real = Fake("n_real", (B, H), torch.int32, fill=const(slots))
    tiles = slots // 128
    with Probe(k, v, kc, vc, cols, n_real) as probe:
        run_programs(gather_rows_kernel, (tiles, B * H), [(tiles - 1, B * H - 1), (0, B * H - 1)],
                     k, v, kc, vc, cols, n_real, *(k.stride(i) for i in range(3)), *(v.stride(i) for i in range(3)),
                     H, H // HK, slots,
                     HEAD_D=D, ROWS=128, num_warps=4)
    assert_clean(probe, kc)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stage1_row_stats(layout):
    q, k, _, _ = qkvo(layout)
    kb1, _, warps, stages = scores_config(D)
    n_rows = 4 * BLOCK
    n_rb = n_rows // BLOCK
    # sampled rows: the last BLOCK rows of the sequence in the last row block, small ones before
    rows = Fake("rows", (n_rows,), torch.int32,
                fill=lambda off: (off >= n_rows - BLOCK) * (S - n_rows) + off)
    m, l = Fake("m", (B * H, n_rows), torch.float32), Fake("l", (B * H, n_rows), torch.float32)
    with Probe(q, k, rows, m, l) as probe:
        # q_off places the sampled rows' keys early, so the key loop is short; q rows are still the last ones
        run_programs(row_stats_kernel, (n_rb, B * H), [(0, B * H - 1)],
                     q, k, rows, m, l, *strides(q, k), H, H // HK, S, -(S - 2 * kb1), n_rows, 0.1,
                     HEAD_D=D, BLOCK_M=BLOCK, BLOCK_N=kb1, PACK=1, F32=False, num_warps=warps, num_stages=stages)
    assert_clean(probe, q)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_diag", [False, True])
def test_stage1_column_scores(layout, with_diag):
    q, k, _, _ = qkvo(layout)
    _, kb2, warps, stages = scores_config(D)
    kb2 = BLOCK if with_diag else kb2
    n_rows = 4 * BLOCK
    n_rb, n_kb = n_rows // BLOCK, S // kb2
    rows = Fake("rows", (n_rows,), torch.int32, fill=lambda off: S - n_rows + off)
    m, l = Fake("m", (B * H, n_rows), torch.float32), Fake("l", (B * H, n_rows), torch.float32, fill=const(1.0))
    first_rb = Fake("first_rb", (n_kb,), torch.int32, fill=const(n_rb - 2))
    full_rb = Fake("full_rb", (n_kb,), torch.int32, fill=const(n_rb - 1))
    full_end = Fake("full_end", (1,), torch.int32, fill=const(n_rb))
    col, diag = Fake("col", (B, H, S), torch.float32), Fake("diag", (B, H, S), torch.float32)
    with Probe(q, k, rows, m, l, first_rb, full_rb, full_end, col, diag) as probe:
        run_programs(column_scores_kernel, (n_kb, B * H), [(n_kb - 1, B * H - 1)],
                     q, k, rows, m, l, first_rb, full_rb, full_end, col, diag, *strides(q, k),
                     H, H // HK, S, 0, n_rows, n_rb, 0.1, HEAD_D=D, BLOCK_M=BLOCK, BLOCK_N=kb2,
                     WITH_DIAG=with_diag, F32=False, num_warps=warps, num_stages=stages)
    assert_clean(probe, q)


def test_stage2_select_last_row():
    n, bm = S, block_config(D, S)[0]
    n_qb, rows = S // bm, B * H
    scores = Fake("scores", (rows, n), torch.float32, fill=lambda off: (off % 7 + 1).astype("float32"))
    out, prefix = Fake("cols", (rows, n), torch.int32), Fake("prefix", (rows, n), torch.int32)
    count = Fake("count", (rows,), torch.int32)
    col_full, col_hi = Fake("col_full", (rows, n_qb), torch.int32), Fake("col_hi", (rows, n_qb), torch.int32)
    dens = Fake("density", (rows,), torch.float32)
    with Probe(scores, out, count, prefix, col_full, col_hi, dens) as probe:
        run_programs(select_kernel, (rows,), [(rows - 1,)],
                     scores, out, count, prefix, col_full, col_hi, dens, count, n, n, n, 4, 256, 0, n, n_qb, bm,
                     1.0, 0.0, 0.0, 0.0, 0.0, 1.0, MODE=0, FUSED=True, BLOCK=1024, NS=SPLITS, num_warps=4)
    assert_clean(probe)
    assert max(prefix.touched) == rows * n - 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_peer_minference_band_kernels(layout):
    from attention.kernels.bands import BAND, RUN_BLOCKS, band_attention_kernel, band_runs_kernel

    q, k, v, o = qkvo(layout)
    n_rb, n_slots, col_slots, n_offs = S // BAND, 64, 256, 6
    lo = Fake("run_lo", (B * H, n_rb, n_slots), torch.int32, fill=const(S - 4 * BAND))
    hi = Fake("run_hi", (B * H, n_rb, n_slots), torch.int32, fill=const(S - 2 * BAND))
    count = Fake("run_n", (B * H, n_rb), torch.int32, fill=const(2))
    cols = Fake("cols", (B, H, col_slots), torch.int32, fill=lambda off: S - 8192 + (off % col_slots) * 16)
    col_hi = Fake("col_hi", (B, H, n_rb), torch.int32, fill=const(col_slots))
    colhit = Fake("colhit", (B, H, S), torch.int8)
    with Probe(q, k, v, o, lo, hi, count, cols, col_hi, colhit) as probe:
        run_programs(band_attention_kernel, (n_rb, B * H), [(0, B * H - 1), (n_rb - 1, B * H - 1)],
                     q, k, v, o, lo, hi, count, cols, col_hi, colhit, *strides(q, k, v, o),
                     H, H // HK, S, S, 0, 0, n_rb, n_slots, col_slots, 0.1,
                     HEAD_D=D, BAND=BAND, HAS_COLS=True, F32=False, num_warps=4)
    assert_clean(probe, o)
    offs = Fake("offsets", (B, H, n_offs), torch.int64, fill=lambda off: S - 1000 * (off % n_offs + 1))
    n_off = Fake("n_offsets", (B, H), torch.int32, fill=const(n_offs))
    programs = triton_cdiv(n_rb, RUN_BLOCKS)
    with Probe(offs, n_off, lo, hi, count) as probe:
        run_programs(band_runs_kernel, (programs, B * H), [(programs - 1, B * H - 1)],
                     offs, n_off, lo, hi, count, n_slots, n_offs, 0, n_rb, BAND=BAND, RB=RUN_BLOCKS)
    assert_clean(probe)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_peer_xattention_estimate_kernel(layout):
    from attention.kernels.estimate_xattention import tile_config, xattention_tiles_kernel

    q, k, _, _ = qkvo(layout)
    stride, block = 16, 128
    per_tile = block // stride
    n_tiles = S // block
    n_groups = S // stride
    bm, bn, warps, _, flat = tile_config(D, per_tile)
    n_qblocks = n_groups // bm
    n_cols = n_groups // bn * (bn // per_tile)
    programs = n_qblocks * B * H  # one work item per program: the probe runs the last one alone
    out = Fake("tiles", (B, H, n_tiles, n_tiles), torch.float32)
    part = Fake("partials", (programs, bm, n_cols), torch.float32)
    mref = Fake("row_max", (programs, bm, n_groups // bn), torch.float32)
    with Probe(q, k, out, part, mref) as probe:
        # the last item: the first query block (one key block) of the last head, in the last scratch rows
        run_programs(xattention_tiles_kernel, (programs,), [(programs - 1,)],
                     q, k, out, part, mref, *strides(q, k), B * H, H, H // HK, S, 0, n_groups, n_tiles, n_qblocks,
                     n_cols, 0.1, HEAD_D=D, STRIDE=stride, PER_TILE=per_tile, BM=bm, BN=bn, F32=False, FLAT=flat,
                     num_warps=warps)
    assert_clean(probe)
    assert max(part.touched) >= 2**31  # the scratch rows of the last program lie past 2^31 elements
    if layout == "bhsd":  # the last head's rows lie past 2^31 elements (bshd: only its first rows, near the start)
        assert max(q.touched) >= 2**31


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
