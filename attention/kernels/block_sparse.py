"""Block-sparse causal prefill: sink + window + kept pattern blocks, visited as lists of key tiles per query tile.

Two launches per span of query tiles (one span up to ~180K tokens with 32 heads; LIST_BYTES bounds each span's lists)
(after two cumsums of the block table where the tiles do not line up with the pattern's blocks), no host sync:
  tile_lists_kernel   per (batch|1, head|1, query tile): which key tiles hold a kept cell, split into full tiles
                      (every causal cell kept, all keys in range: no mask) and partial ones (the cell rule is
                      evaluated in the attention kernel). Decided from the block table where every tile lies
                      inside one pattern block, else from its summed-area table: no S x S work either way.
                      Written compacted into one buffer per row: full tiles ascending from the first slot on,
                      partial tiles ascending from the last slot backwards (together at most one per key tile).
  block_sparse_kernel FlashAttention-style online softmax over the full tiles, then the partial ones; on Hopper
                      from config.TMA_MIN_LEN queries (config.sparse_path) block_sparse_tma_kernel instead, the
                      same walk with every tile through a TMA descriptor (block_sparse_tma.py).

Cell rule (the pattern's keep mask; block_rule.py, shared with the Hopper kernel): key j <= query i, and j < sink,
or i - j < window, or the pattern block (i // block, j // block) kept. Positions are absolute: queries are the last Sq of the Sk keys. The block table
is read per cell only where the pattern's blocks do not line up with the tiles; aligned, one entry per tile.
Offsets that can pass 2^31 at 1M tokens (batch x head x row strides, list rows) are 64-bit.
"""
import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from attention.kernels.block_rule import partial_tile_keep, query_tile, store_rows, tile_list
from attention.kernels.block_sparse_tma import block_sparse_tma_kernel
from attention.kernels.config import (HEAD_DIMS, LOG2E, block_sparse_config, block_sparse_tma_config,
                                      coordinates_fit, interpreter_f32, sparse_path)
from attention.kernels.hopper import matrix_of
from attention.kernels.sparse import NEG_INF, _online_step
from attention.kernels.sparse_tma import _step_full

LIST_CHUNK = 128  # key tiles a list-building program decides at once
LIST_BYTES = 1 << 27  # tile lists built and run per span of query tiles of at most this size: at 1M tokens with 32
                      # heads and 128-key tiles the whole-sequence lists are 4-8 GiB (n_qt x n_kt slots per head)


@triton.jit
def _area(AREA, base, r, c, s_r, s_c):
    # summed-area table A[r, c] = kept blocks in rows < r, columns < c; the leading zero row/column is implicit
    inside = ((c * 0 + r) > 0) & (c > 0)  # r broadcast first: the interpreter rejects scalar & vector masks
    return tl.load(AREA + base + (r - 1).to(tl.int64) * s_r + (c - 1).to(tl.int64) * s_c, mask=inside, other=0)


@triton.jit(do_not_specialize=["HL", "k_len", "q_off", "sink", "window", "block", "n_rows", "n_cols", "n_qt",
                               "n_kt", "qt0"])
def tile_lists_kernel(AREA, COUNTS, LISTS, sa_b, sa_h, sa_r, sa_c,
                      HL, k_len, q_off, sink, window, block, n_rows, n_cols, n_qt, n_kt, qt0,
                      TILE_Q: tl.constexpr, TILE_K: tl.constexpr, CHUNK: tl.constexpr, HAS_BLOCKS: tl.constexpr,
                      ALIGNED: tl.constexpr):
    # AREA: the summed-area table of the kept blocks (int32), or where every tile lies inside one pattern block
    # (ALIGNED) the block table itself (int8): one entry decides the tile. Query tiles qt0 .. qt0 + n_qt - 1 (one
    # span), listed in rows 0 .. n_qt - 1 per head
    qt = qt0 + tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    row = bh * n_qt + tl.program_id(0)
    qf = q_off + qt * TILE_Q
    ql = tl.minimum(qf + TILE_Q - 1, k_len - 1)
    r0 = tl.minimum(qf // block, n_rows - 1)
    r1 = tl.minimum(ql // block, n_rows - 1) + 1
    area_base = (bh // HL) * sa_b + (bh % HL) * sa_h
    n_full = 0
    n_part = 0
    for c0 in range(0, n_kt, CHUNK):
        kt = c0 + tl.arange(0, CHUNK)
        kf = kt * TILE_K
        kl = tl.minimum(kf + TILE_K - 1, k_len - 1)
        # full needs the whole key tile below the first query (so also inside [0, Sk)): no mask, no bounds
        any_cell = (kt < n_kt) & (kf <= ql)
        all_cells = (kt < n_kt) & (kf + TILE_K - 1 <= qf)
        some = (kf < sink) | (qf - kl < window)
        every = (kl < sink) | (ql - kf < window)
        if HAS_BLOCKS:
            cb0 = tl.minimum(kf // block, n_cols - 1)
            if ALIGNED:
                hit = tl.load(AREA + area_base + r0.to(tl.int64) * sa_r + cb0.to(tl.int64) * sa_c) != 0
                some = some | hit
                every = every | hit
            else:
                cb1 = tl.minimum(kl // block, n_cols - 1) + 1
                kept = (_area(AREA, area_base, r1, cb1, sa_r, sa_c) - _area(AREA, area_base, r0, cb1, sa_r, sa_c)
                        - _area(AREA, area_base, r1, cb0, sa_r, sa_c) + _area(AREA, area_base, r0, cb0, sa_r, sa_c))
                some = some | (kept > 0)
                every = every | (kept == (r1 - r0) * (cb1 - cb0))
        full = all_cells & every
        part = any_cell & some & ~full
        f_at = n_full + tl.cumsum(full.to(tl.int32), 0) - 1
        p_at = n_kt - n_part - tl.cumsum(part.to(tl.int32), 0)  # from the last slot backwards
        tl.store(LISTS + row * n_kt + f_at, kt, mask=full)
        tl.store(LISTS + row * n_kt + p_at, kt, mask=part)
        n_full += tl.sum(full.to(tl.int32), 0)
        n_part += tl.sum(part.to(tl.int32), 0)
    tl.store(COUNTS + row * 2, n_full)
    tl.store(COUNTS + row * 2 + 1, n_part)


@triton.jit(do_not_specialize=["H", "GROUP", "Sq", "Sk", "q_off", "sink", "window", "block", "n_rows",
                               "n_cols", "n_qt", "n_kt", "qt0"])
def block_sparse_kernel(
    Q, K, V, O, COUNTS, LISTS, BLOCKS,
    sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_b, so_h, so_s, sl_b, sl_h, sb_b, sb_h, sb_r,
    H, GROUP, Sq, Sk, q_off, sink, window, block, n_rows, n_cols, n_qt, n_kt, qt0, qk_scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_BLOCKS: tl.constexpr,
    ALIGNED: tl.constexpr, F32: tl.constexpr,
):
    # this span's query tiles qt0 .. qt0 + n_qt - 1 (list rows 0 .. n_qt - 1); b, h 64-bit: pointer offsets
    span_row, qt, b, h, hk, offs_m, row_ok, pos = query_tile(H, GROUP, Sq, q_off, qt0, BLOCK_M, True)
    offs_d = tl.arange(0, HEAD_D)
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None].to(tl.int64) * sq_s + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    k_base = K + b * sk_b + hk * sk_h
    v_base = V + b * sv_b + hk * sv_h
    n_full, n_part, entries = tile_list(COUNTS, LISTS, b, h, sl_b, sl_h, span_row, n_qt, n_kt)

    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    for i in range(0, n_full):  # every causal cell kept and every key in range: no mask
        offs_n = tl.load(entries + i).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = tl.load(k_base + offs_n[:, None] * sk_s + offs_d[None, :])
        v = tl.load(v_base + offs_n[:, None] * sv_s + offs_d[None, :])
        acc, m_i, l_i = _step_full(acc, m_i, l_i, q, k, v, qk_scale, F32)  # scale folded into one FMA per cell

    blocks_base = BLOCKS + b * sb_b + h * sb_h
    for i in range(0, n_part):  # the cell rule evaluated here
        start = tl.load(entries + n_kt - 1 - i).to(tl.int32) * BLOCK_N
        offs_n = start + tl.arange(0, BLOCK_N)
        kv_ok = offs_n < Sk
        k = tl.load(k_base + offs_n[:, None].to(tl.int64) * sk_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None].to(tl.int64) * sv_s + offs_d[None, :], mask=kv_ok[:, None], other=0.0)
        keep = partial_tile_keep(pos, offs_n, start, q_off + qt * BLOCK_M, Sk, sink, window, blocks_base, sb_r, block,
                                 n_rows, n_cols, HAS_BLOCKS, ALIGNED)
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, keep, qk_scale, True, F32)

    store_rows(O, acc, l_i, b, h, offs_m, offs_d, row_ok, so_b, so_h, so_s)


def aligned(block: int, tile_q: int, tile_k: int, q_len: int, k_len: int) -> bool:
    """Whether every query tile and key tile lies inside one pattern block (queries start at k_len - q_len)."""
    return block % tile_q == 0 and block % tile_k == 0 and (k_len - q_len) % tile_q == 0


def kept_blocks(blocks: torch.Tensor, device) -> torch.Tensor:
    """blocks as bool on the device (a no-op for the bool tables the methods build there)."""
    blocks = blocks.to(device)
    return blocks if blocks.dtype == torch.bool else blocks != 0


def block_table(blocks: torch.Tensor, device) -> tuple[torch.Tensor, list[int]]:
    """The block table as int8 (a view, no copy) and its element strides, 0 where batch or heads broadcast."""
    table = kept_blocks(blocks, device)
    if table.stride(-1) != 1:
        table = table.contiguous()
    table = table.view(torch.int8)
    return table, [table.stride(i) if table.shape[i] > 1 else 0 for i in range(4)]


def tile_lists(blocks: torch.Tensor | None, block: int, sink: int, window: int, q_len: int, k_len: int,
               tile_q: int, tile_k: int, device, span: tuple[int, int] | None = None,
               table: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int32 [B', H', rows, 2], lists [B', H', rows, n_kt]) with B', H' the block table's (1 without one), for
    the query tiles span = (first, rows) (default: all n_qt of them).

    counts[..., 0] full key tiles (every causal cell kept, keys in range), listed ascending from the front;
    counts[..., 1] partial ones (some cell kept), listed ascending from the last slot backwards. Lists are
    int16 while key tile indices fit (half the memory at 1M tokens), else int32; unused slots are not written.
    One launch where the tiles line up with the pattern's blocks; else two cumsums first (the summed-area table,
    which `table` = list_table(...) passes in when several spans share it)."""
    n_qt, n_kt = triton.cdiv(q_len, tile_q), triton.cdiv(k_len, tile_k)
    first, rows = span if span is not None else (0, n_qt)
    table, strides, lined_up, lead, n_rows, n_cols = (
        table if table is not None else list_table(blocks, block, q_len, k_len, tile_q, tile_k, device))
    counts = torch.empty(*lead, rows, 2, dtype=torch.int32, device=device)
    lists = torch.empty(*lead, rows, n_kt, dtype=torch.int16 if n_kt < 2**15 else torch.int32, device=device)
    tile_lists_kernel[(rows, lead[0] * lead[1])](
        table, counts, lists, *strides, lead[1], k_len, k_len - q_len, int(sink), int(window), int(block),
        n_rows, n_cols, rows, n_kt, first, TILE_Q=tile_q, TILE_K=tile_k, CHUNK=LIST_CHUNK,
        HAS_BLOCKS=blocks is not None, ALIGNED=lined_up)
    return counts, lists


def list_table(blocks: torch.Tensor | None, block: int, q_len: int, k_len: int, tile_q: int, tile_k: int, device):
    """(table, strides, lined_up, (B', H'), rows, cols): what tile_lists_kernel reads the kept blocks from."""
    if blocks is None:
        return torch.empty(1, dtype=torch.int32, device=device), [0, 0, 0, 0], False, (1, 1), 1, 1  # never read
    lined_up = aligned(block, tile_q, tile_k, q_len, k_len)
    if lined_up:
        table, strides = block_table(blocks, device)
    else:
        table = kept_blocks(blocks, device).cumsum(-2, dtype=torch.int32).cumsum(-1, dtype=torch.int32)
        strides = [table.stride(i) if table.shape[i] > 1 else 0 for i in range(4)]
    return (table, strides, lined_up, tuple(table.shape[:2])) + tuple(table.shape[2:])


def list_spans(lead: tuple[int, int], n_qt: int, n_kt: int) -> list[tuple[int, int]]:
    """(first query tile, rows) spans whose tile lists take at most LIST_BYTES each (int16 slots; one span up to
    ~180K tokens with 32 heads and 128x128 tiles): the lists of a span are built, run and freed before the next one's."""
    per_row = lead[0] * lead[1] * n_kt * (2 if n_kt < 2**15 else 4)
    rows = max(1, min(n_qt, LIST_BYTES // max(1, per_row)))
    return [(first, min(rows, n_qt - first)) for first in range(0, n_qt, rows)]


def block_sparse_attention(q, k, v, scale: float, *, sink: int = 0, window: int = 0,
                           blocks: torch.Tensor | None = None, block: int = 128,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of q [B, Hq, Sq, D] (the last Sq of Sk positions) over k/v [B, Hkv, Sk, D] restricted to
    keys j < sink, i - window < j, or (i // block, j // block) kept in blocks (bool [B|1, Hq|1, rows, cols],
    indexed by absolute position). Returns [B, Hq, Sq, D] in q's dtype. The path is config.sparse_path's (the one
    decision): the Hopper TMA kernel (block_sparse_tma.py) or the portable one (here)."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of kv heads ({kv_heads})")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head dim {head_dim} is not supported; use one of {HEAD_DIMS}")
    out = torch.empty_like(q) if out is None else out
    if q_len == 0:
        return out
    pattern_block = block if blocks is not None else 0
    if sparse_path(q, k_len) == "tma" and coordinates_fit(batch, heads, kv_heads, q_len, k_len, 0):
        bm, bn, warps, stages, ws = block_sparse_tma_config(head_dim, q_len, pattern_block)
        if blocks is not None and not aligned(block, bm, bn, q_len, k_len):
            stages = min(stages, 2)  # the cell-level table lookup needs shared memory: 3 stages of 128x128 overflow
    else:
        bm, bn, warps, stages = block_sparse_config(head_dim, q_len, pattern_block)
        ws = None
    listed = list_table(blocks, block, q_len, k_len, bm, bn, q.device)
    n_qt, n_kt = triton.cdiv(q_len, bm), triton.cdiv(k_len, bn)
    if blocks is not None:
        table, sb = block_table(blocks, q.device)
        n_rows, n_cols = table.shape[2:]
    else:
        table, n_rows, n_cols, sb = torch.empty(1, dtype=torch.int8, device=q.device), 1, 1, [0, 0, 0, 0]
    lead = listed[3]
    sl_b = lead[1] if lead[0] > 1 else 0  # list rows of (b, h) = (b * sl_b + h * sl_h) * rows + span row
    sl_h = 1 if lead[1] > 1 else 0
    flags = dict(HEAD_D=head_dim, BLOCK_M=bm, BLOCK_N=bn, HAS_BLOCKS=blocks is not None,
                 ALIGNED=aligned(block, bm, bn, q_len, k_len), F32=interpreter_f32(q), num_warps=warps,
                 num_stages=stages)
    if ws is not None:
        (qm, q_rb, q_rh, q_ch), (km, kv_rb, kv_rh, kv_ch) = matrix_of(q), matrix_of(k)
        vm, *v_at = matrix_of(v)
        if tuple(v_at) != (kv_rb, kv_rh, kv_ch):  # K and V share one row formula: V in K's layout
            v = v.contiguous() if kv_ch == 0 else v.transpose(1, 2).contiguous().transpose(1, 2)
            vm = matrix_of(v)[0]

        def desc(matrix, rows):
            return TensorDescriptor(matrix, list(matrix.shape), [matrix.shape[1], 1], [rows, head_dim])

        descs = desc(qm, bm), desc(km, bn), desc(vm, bn)
    elif q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    for first, rows in list_spans(lead, n_qt, n_kt):  # one span below ~180K tokens: lists built once
        counts, lists = tile_lists(blocks, block, sink, window, q_len, k_len, bm, bn, q.device, (first, rows), listed)
        shape_args = (heads, heads // kv_heads, q_len, k_len, k_len - q_len, int(sink), int(window), int(block),
                      n_rows, n_cols, rows, n_kt, first, scale * LOG2E)
        if ws is not None:
            block_sparse_tma_kernel[(rows, batch * heads)](
                *descs, out, counts, lists, table,
                out.stride(0), out.stride(1), out.stride(2), sl_b, sl_h, *sb[:3], q_rb, q_rh, q_ch, kv_rb, kv_rh,
                kv_ch, *shape_args, WARP_SPEC=ws, **flags)
        else:
            block_sparse_kernel[(rows, batch * heads)](
                q, k, v, out, counts, lists, table,
                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), sl_b, sl_h,
                *sb[:3], *shape_args, **flags)
        del counts, lists  # freed before the next span's are made
    return out
