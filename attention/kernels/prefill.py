"""Launcher for the sparse prefill kernel: turns a SparsePattern into the index tensors the kernel reads.

All preparation is device-side tensor ops (sort, searchsorted, scatter): no host sync.
"""
import os

import torch
import triton

from attention.kernels.sparse import sparse_fwd_kernel
from attention.pattern import SparsePattern

BIG = 1 << 30  # sorts after every real index
LOG2E = 1.4426950408889634


def interpreter_f32(x: torch.Tensor) -> bool:
    """Under TRITON_INTERPRET=1, bf16 dots must be done on upcast operands (the interpreter has no bf16 math)."""
    return os.environ.get("TRITON_INTERPRET") == "1" and x.dtype == torch.bfloat16


def block_config(head_dim: int, q_len: int = 0) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) per head dim; BLOCK_M is a multiple of BLOCK_N.

    ATTN_SPARSE_BLOCKS="128,64,8,3" overrides it for head dim 128 (scripts/sweep_configs.py compares configs)."""
    if os.environ.get("ATTN_SPARSE_BLOCKS") and head_dim == 128:
        return tuple(int(x) for x in os.environ["ATTN_SPARSE_BLOCKS"].split(","))
    if head_dim <= 64:
        return 128, 64, 4, 3
    if head_dim <= 128:
        # H100 sweep (results/bench/v2/sweep.log): 64x64 tiles won at 32K (more programs to fill 132 SMs), 128x64 at 128K
        return (64, 64, 4, 3) if q_len <= 49152 else (128, 64, 8, 3)
    return 64, 32, 4, 2


def _per_head(x: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """[C], [1, 1, C] or [B, H, C] -> a [B, H, C] view."""
    return x.expand(batch, heads, x.shape[-1])


def prepare_columns(columns: torch.Tensor, batch: int, heads: int, k_len: int) -> torch.Tensor:
    """Sorted int64 [B, H, C], unused slots (-1, out of range) moved to the end as BIG. Repeats stay next to
    each other; the kernel and first_of_run skip all but the first."""
    c = _per_head(columns.long(), batch, heads)
    return torch.where((c >= 0) & (c < k_len), c, BIG).sort(-1).values


def first_of_run(c: torch.Tensor) -> torch.Tensor:
    """bool like sorted c: True on real entries that differ from their left neighbour."""
    first = c < BIG
    first[..., 1:] &= c[..., 1:] != c[..., :-1]
    return first


def hit_map(idx: torch.Tensor, batch: int, heads: int, k_len: int, device) -> torch.Tensor:
    """int8 [B, H, k_len]: 1 where an index in idx (any order, unused slots out of range) occurs."""
    idx = _per_head(idx.long(), batch, heads)
    idx = torch.where((idx >= 0) & (idx < k_len), idx, k_len)
    hit = torch.zeros(batch, heads, k_len + 1, dtype=torch.int8, device=device)
    hit.scatter_(2, idx, 1)
    return hit[..., :k_len].contiguous()


def slash_blocks(slashes: torch.Tensor, batch: int, heads: int, k_len: int, window: int, block_m: int,
                 block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-block offsets delta (sorted, unused = BIG) whose block [p0 - delta*BN, +BN) holds some kept diagonal.

    Query row m and key n of such a block lie on diagonal delta*BN + m - n, so diagonal d needs every delta with
    d - delta*BN in [-(BN-1), BM-1]. Diagonals inside the window are skipped (the window covers them).
    """
    d = _per_head(slashes.long(), batch, heads)
    valid = (d >= window) & (d >= 0) & (d < k_len)
    shift = block_m // block_n  # delta can be negative (down to 1 - BM/BN): keys right of the block's first row
    n_slots = k_len // block_n + 2 * shift + 2
    hit = torch.zeros(batch, heads, n_slots + 1, dtype=torch.bool, device=d.device)
    top = torch.div(d + block_n - 1, block_n, rounding_mode="floor")
    for back in range(shift + 1):
        delta = top - back
        ok = valid & (delta > -shift) & (d - delta * block_n <= block_m - 1)
        hit.scatter_(2, torch.where(ok, delta + shift, n_slots).clamp(0, n_slots), True)
    hit = hit[..., :n_slots]
    slots = torch.arange(n_slots, device=d.device) - shift
    deltas = torch.where(hit, slots, BIG).sort(-1).values
    return deltas, hit.sum(-1)


def sparse_attention(q, k, v, pattern: SparsePattern, scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run `pattern` (sink, window, columns, slashes; not blocks) with the Triton kernel. Returns [B, Hq, Sq, D]."""
    if pattern.blocks is not None:
        raise ValueError("sparse_attention runs sink/window/column/slash patterns; block masks go elsewhere")
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of kv heads ({kv_heads})")
    if head_dim not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim {head_dim} is not supported; use 16, 32, 64, 128 or 256")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q) if out is None else out
    device = q.device
    bm, bn, warps, stages = block_config(head_dim, q_len)
    n_qb = triton.cdiv(q_len, bm)
    q_off = k_len - q_len
    sink, window = int(pattern.sink), int(pattern.window)
    dummy = torch.zeros(1, dtype=torch.int32, device=device)
    dummy8 = torch.zeros(1, dtype=torch.int8, device=device)

    # sinks ride along as the first columns: one gathered chunk instead of a masked block of their own
    columns = pattern.columns.to(device) if pattern.columns is not None else None
    if sink:
        sinks = torch.arange(min(sink, k_len), device=device).expand(batch, heads, -1)
        columns = sinks if columns is None else torch.cat([sinks, _per_head(columns.long(), batch, heads)], -1)
    cols = col_full = col_hi = dummy
    col_slots = 0
    has_cols = columns is not None and columns.shape[-1] > 0
    if has_cols:
        c = prepare_columns(columns, batch, heads, k_len)
        col_slots = c.shape[-1]
        first = q_off + torch.arange(n_qb, device=device) * bm
        last = (first + bm - 1).clamp(max=k_len - 1)
        col_full, col_hi = (torch.searchsorted(c, (x - window).expand(batch, heads, n_qb).contiguous(), right=True)
                            for x in (first, last))
        cols, col_full, col_hi = (x.to(torch.int32).contiguous() for x in (c, col_full, col_hi))

    deltas = n_delta = dummy
    colhit = diaghit = dummy8
    delta_slots = 0
    has_slash = pattern.slashes is not None and pattern.slashes.shape[-1] > 0
    if has_slash:
        s = pattern.slashes.to(device)
        deltas, n_delta = slash_blocks(s, batch, heads, k_len, window, bm, bn)
        delta_slots = deltas.shape[-1]
        deltas, n_delta = deltas.to(torch.int32).contiguous(), n_delta.to(torch.int32).contiguous()
        diaghit = hit_map(s, batch, heads, k_len, device)
        colhit = (hit_map(columns, batch, heads, k_len, device) if has_cols
                  else torch.zeros(batch, heads, k_len, dtype=torch.int8, device=device))

    grid = (n_qb, batch * heads)
    sparse_fwd_kernel[grid](
        q, k, v, out, cols, col_full, col_hi, deltas, n_delta, colhit, diaghit,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        heads, heads // kv_heads, q_len, k_len, q_off, window, col_slots, n_qb, delta_slots,
        scale * LOG2E,
        HEAD_D=head_dim, BLOCK_M=bm, BLOCK_N=bn, HAS_COLS=has_cols, HAS_SLASH=has_slash, F32=interpreter_f32(q),
        num_warps=warps, num_stages=stages,
    )
    return out
