"""Launcher of the Hopper (TMA) sparse prefill path: same inputs and result as the portable launcher.

Two steps, timed apart by the benchmarks: `prepare_indices` (each head's distinct columns ascending through a
hit map and a cumsum, per-block column bounds, slash blocks: small index tensors, device-side, no host sync) and
`launch` (the gathered columns, the TMA descriptors over q, K, V in place, the kernel).
"""
from dataclasses import dataclass

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from attention.indices import BIG, hit_map, slash_blocks
from attention.kernels.config import LOG2E, coordinates_fit, interpreter_f32, tma_config
from attention.kernels.gather import column_lists, gather_columns, kept_up_to
from attention.kernels.sparse_tma import sparse_tma_kernel


@dataclass
class Indices:
    """What the kernel reads besides q/k/v: built once per pattern (no host sync)."""
    config: tuple[int, int, int, int, bool]
    cols: torch.Tensor | None      # int32 [B, Hq, slots], sorted unique key positions, BIG = unused
    col_full: torch.Tensor | None  # int32 [B, Hq, n_qb]: slots every row of query block qb may use
    col_hi: torch.Tensor | None    # int32 [B, Hq, n_qb]: slots some row of the block may use
    n_real: torch.Tensor | None    # int32 [B, Hq]: columns in cols
    deltas: torch.Tensor | None    # slash key-block offsets (see prefill.slash_blocks), n_delta, hit maps
    n_delta: torch.Tensor | None
    colhit: torch.Tensor | None
    diaghit: torch.Tensor | None
    sink: int
    window: int


def prepare_indices(q, k, *, sink: int, window: int, columns=None, slashes=None) -> Indices:
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    device = q.device
    has_slash = slashes is not None and slashes.shape[-1] > 0
    config = tma_config(head_dim, q_len, has_slash)
    bm, bn = config[:2]
    n_qb = triton.cdiv(q_len, bm)
    q_off = k_len - q_len
    sink, window = int(sink), int(window)
    cols = col_full = col_hi = n_real = hit = None
    if sink or (columns is not None and columns.shape[-1] > 0):  # sinks ride along as columns
        hit, cnt, cols, _ = column_lists(columns, sink, batch, heads, k_len, device)
        n_real = cnt[..., -1].contiguous()
        first = q_off + torch.arange(n_qb, device=device) * bm
        last = (first + bm - 1).clamp(max=k_len - 1)
        col_full, col_hi = kept_up_to(cnt, first - window), kept_up_to(cnt, last - window)
    deltas = n_delta = colhit = diaghit = None
    if has_slash:
        s = slashes.to(device)
        deltas, n_delta = slash_blocks(s, batch, heads, k_len, window, bm, bn)
        deltas, n_delta = deltas.to(torch.int32).contiguous(), n_delta.to(torch.int32).contiguous()
        diaghit = hit_map(s, batch, heads, k_len, device)
        colhit = (hit.to(torch.int8) if hit is not None
                  else torch.zeros(batch, heads, k_len, dtype=torch.int8, device=device))
    return Indices(config, cols, col_full, col_hi, n_real, deltas, n_delta, colhit, diaghit, sink, window)


def matrix_of(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """x [B, H, S, D] as the 2-D matrix a TMA descriptor reads in place, and (rb, rh, ch): (batch b, head h,
    position s) is row b x rb + h x rh + s, columns from h x ch. Head-major x ([B, H, S, D] contiguous) and
    transformers' layout ([B, S, H, D] contiguous, handed over transposed) are read as they are; any other layout,
    or a base address TMA cannot take (16-byte aligned), is copied to head-major first."""
    batch, heads, length, dim = x.shape
    if x.data_ptr() % 16 == 0:
        if x.is_contiguous():
            return x.view(batch * heads * length, dim), heads * length, length, 0
        if x.transpose(1, 2).is_contiguous():
            return x.transpose(1, 2).view(batch * length, heads * dim), length, 0, dim
    return matrix_of(x.contiguous())


def launch(q, k, v, scale: float, idx: Indices, out: torch.Tensor | None = None) -> torch.Tensor:
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    out = torch.empty_like(q) if out is None else out
    bm, bn, warps, stages, ws = idx.config
    n_qb = triton.cdiv(q_len, bm)
    has_cols, has_slash = idx.cols is not None, idx.deltas is not None
    slots = idx.cols.shape[-1] if has_cols else 0
    if not coordinates_fit(batch, heads, kv_heads, q_len, k_len, slots):
        raise ValueError(f"{batch}x{heads} heads x {k_len} keys exceed the TMA path's 32-bit tile coordinates; "
                         "run the portable kernel (attention.kernels.config.override(sparse_path='portable'))")
    (qm, q_rb, q_rh, q_ch), (km, kv_rb, kv_rh, kv_ch) = matrix_of(q), matrix_of(k)
    vm, *v_at = matrix_of(v)
    if tuple(v_at) != (kv_rb, kv_rh, kv_ch):  # K and V share one row formula: V in K's layout
        v = v.contiguous() if kv_ch == 0 else v.transpose(1, 2).contiguous().transpose(1, 2)
        vm = matrix_of(v)[0]
    kc, vc = gather_columns(k, v, idx.cols, slots, heads, idx.n_real) if has_cols and slots else (km, vm)
    dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
    dummy8 = torch.zeros(1, dtype=torch.int8, device=q.device)

    def desc(matrix, rows):
        return TensorDescriptor(matrix, list(matrix.shape), [matrix.shape[1], 1], [rows, head_dim])

    sparse_tma_kernel[(n_qb, batch * heads)](
        desc(qm, bm), desc(km, bn), desc(vm, bn), desc(kc, bn), desc(vc, bn), out,
        *(x if x is not None else dummy for x in (idx.cols, idx.col_full, idx.col_hi)),
        k, v, *(x if x is not None else dummy for x in (idx.deltas, idx.n_delta)),
        *(x if x is not None else dummy8 for x in (idx.colhit, idx.diaghit)),
        out.stride(0), out.stride(1), out.stride(2), *k.stride()[:3], *v.stride()[:3],
        q_rb, q_rh, q_ch, kv_rb, kv_rh, kv_ch,
        heads, heads // kv_heads, kv_heads, q_len, k_len, slots, k_len - q_len,
        idx.window, n_qb, idx.deltas.shape[-1] if has_slash else 0, scale * LOG2E,
        HEAD_D=head_dim, BLOCK_M=bm, BLOCK_N=bn, HAS_COLS=has_cols, HAS_SLASH=has_slash, WARP_SPEC=ws,
        F32=interpreter_f32(q), num_warps=warps, num_stages=stages,
    )
    return out


def sparse_attention_tma(q, k, v, scale: float, *, sink: int = 0, window: int = 0,
                         columns: torch.Tensor | None = None, slashes: torch.Tensor | None = None,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Run sink + window + columns (+ slashes) on the TMA kernel. Returns [B, Hq, Sq, D]."""
    idx = prepare_indices(q, k, sink=sink, window=window, columns=columns, slashes=slashes)
    return launch(q, k, v, scale, idx, out)


def column_attention_tma(q, k, v, scale: float, *, window: int, cols, col_full, col_hi, counts, max_count: int,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """The TMA kernel over window + a ready column list (as prefill.column_attention; ranges for tma_config's
    BLOCK_M rows), counts int32 [B, Hq] real entries per head, max_count their maximum (a host int): the gather
    buffer is sized by the kept columns, not by one slot per key."""
    config = tma_config(q.shape[3], q.shape[2])
    slots = triton.cdiv(max(max_count, 1), 128) * 128
    slots = min(slots, cols.shape[-1]) if cols.shape[-1] % 128 == 0 else slots
    trimmed = cols[..., :slots]
    if trimmed.shape[-1] < slots:  # pad to whole gather tiles
        trimmed = torch.nn.functional.pad(trimmed, (0, slots - trimmed.shape[-1]), value=-1)
    trimmed = torch.where(trimmed >= 0, trimmed, BIG).to(torch.int32).contiguous()  # padding sorts past every row
    idx = Indices(config, trimmed, col_full, col_hi, counts.to(torch.int32).contiguous(), None, None, None, None,
                  0, int(window))
    return launch(q, k, v, scale, idx, out)
