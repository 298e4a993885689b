"""Launcher of the Hopper (TMA) sparse prefill path: gathers the columns, builds the tensor descriptors, launches
attention/kernels/sparse_tma.py. Same inputs and result as the portable launcher; device-side prep only.
"""
import os

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from attention.kernels.gather import BIG, combined_kv, dedup_sorted
from attention.kernels.prefill import LOG2E, _per_head, hit_map, interpreter_f32, prepare_columns, slash_blocks
from attention.kernels.sparse_tma import sparse_tma_kernel


def supported(q: torch.Tensor) -> bool:
    """TMA descriptors need compute capability 9.0+ (Hopper, Blackwell); the interpreter emulates them."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 9


def tma_config(head_dim: int, q_len: int) -> tuple[int, int, int, int, bool]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize) per head dim.

    ATTN_TMA_BLOCKS="128,64,4,2,0" overrides it for head dim 128 (scripts/sweep_configs.py compares configs)."""
    if os.environ.get("ATTN_TMA_BLOCKS") and head_dim == 128:
        bm, bn, w, s, ws = (int(x) for x in os.environ["ATTN_TMA_BLOCKS"].split(","))
        return bm, bn, w, s, bool(ws)
    if head_dim <= 64:
        return 128, 64, 4, 3, False
    if head_dim <= 128:
        return (128, 64, 4, 2, False) if q_len <= 49152 else (128, 128, 8, 3, False)
    return 64, 64, 4, 2, False


def sparse_attention_tma(q, k, v, scale: float, *, sink: int, window: int, columns: torch.Tensor | None = None,
                         slashes: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run sink + window + columns (+ slashes) on the TMA kernel. Returns [B, Hq, Sq, D]."""
    grid, args, meta = prepare(q, k, v, scale, sink=sink, window=window, columns=columns, slashes=slashes, out=out)
    sparse_tma_kernel[grid](*args, **meta)
    return args[3]


def prepare(q, k, v, scale: float, *, sink: int, window: int, columns=None, slashes=None, out=None):
    """Everything before the launch (column sort and dedup, block bounds, gather copy, descriptors): the kernel's
    (grid, args, meta). Timed alone by scripts/sweep_configs.py."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # descriptors read the [B*H*S, D] views
    out = torch.empty_like(q) if out is None else out
    device = q.device
    bm, bn, warps, stages, ws = tma_config(head_dim, q_len)
    n_qb = triton.cdiv(q_len, bm)
    q_off = k_len - q_len
    sink, window = int(sink), int(window)
    dummy = torch.zeros(1, dtype=torch.int32, device=device)
    dummy8 = torch.zeros(1, dtype=torch.int8, device=device)

    if sink:
        sinks = torch.arange(min(sink, k_len), device=device).expand(batch, heads, -1)
        columns = sinks if columns is None else torch.cat([sinks, _per_head(columns.to(device).long(), batch, heads)],
                                                          -1)
    has_cols = columns is not None and columns.shape[-1] > 0
    colpos = col_full = col_hi = cols = None
    col_slots = 0
    if has_cols:
        columns = columns.to(device)
        c = dedup_sorted(prepare_columns(columns, batch, heads, k_len))
        col_slots = triton.cdiv(c.shape[-1], 128) * 128  # whole gather tiles and whole kernel tiles
        first = q_off + torch.arange(n_qb, device=device) * bm
        last = (first + bm - 1).clamp(max=k_len - 1)
        col_full, col_hi = (torch.searchsorted(c, (x - window).expand(batch, heads, n_qb).contiguous(), right=True)
                            .to(torch.int32).contiguous() for x in (first, last))
        cols = torch.nn.functional.pad(c, (0, col_slots - c.shape[-1]), value=BIG).to(torch.int32).contiguous()
    kx, vx = combined_kv(k, v, cols, col_slots, heads)
    colpos = cols if has_cols else dummy
    col_full = col_full if has_cols else dummy
    col_hi = col_hi if has_cols else dummy

    deltas = n_delta = dummy
    colhit = diaghit = dummy8
    delta_slots = 0
    has_slash = slashes is not None and slashes.shape[-1] > 0
    if has_slash:
        s = slashes.to(device)
        deltas, n_delta = slash_blocks(s, batch, heads, k_len, window, bm, bn)
        delta_slots = deltas.shape[-1]
        deltas, n_delta = deltas.to(torch.int32).contiguous(), n_delta.to(torch.int32).contiguous()
        diaghit = hit_map(s, batch, heads, k_len, device)
        colhit = (hit_map(columns, batch, heads, k_len, device) if has_cols
                  else torch.zeros(batch, heads, k_len, dtype=torch.int8, device=device))

    def desc(t, rows):
        flat = t.reshape(-1, head_dim)
        return TensorDescriptor(flat, list(flat.shape), [head_dim, 1], [rows, head_dim])

    args = (desc(q, bm), desc(kx, bn), desc(vx, bn), out, colpos, col_full, col_hi,
            k, v, deltas, n_delta, colhit, diaghit,
            out.stride(0), out.stride(1), out.stride(2),
            heads, heads // kv_heads, kv_heads, q_len, k_len, batch * kv_heads * k_len, col_slots, q_off, window,
            n_qb, delta_slots, scale * LOG2E)
    meta = dict(HEAD_D=head_dim, BLOCK_M=bm, BLOCK_N=bn, HAS_COLS=has_cols, HAS_SLASH=has_slash, WARP_SPEC=ws,
                F32=interpreter_f32(q), num_warps=warps, num_stages=stages)
    return (n_qb, batch * heads), args, meta


__all__ = ["BIG", "prepare", "sparse_attention_tma", "supported", "tma_config"]
