"""Launchers for the sparse prefill kernel: turn sink, window, key columns and diagonal offsets into the index
tensors the kernels read. Two paths compute the same function:

  portable   attention/kernels/sparse.py: gathers column keys by index inside the kernel; any GPU, and the CPU
             interpreter in CI
  tma        attention/kernels/sparse_tma.py via hopper.py: columns gathered once into a contiguous buffer, all
             tiles through TMA descriptors; compute capability 9.0+ (Hopper)

`sparse_attention` picks one (ATTN_SPARSE_PATH=auto|tma|portable; auto = tma on Hopper-class GPUs from the
length where the benchmark shows it faster, results/bench/NOTES.md "v4"). All preparation is device-side tensor
ops (sort, searchsorted, scatter): no host sync.
"""
import os

import torch
import triton

from attention.indices import BIG, hit_map, per_head, prepare_columns
from attention.kernels.sparse import sparse_fwd_kernel

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


def slash_blocks(slashes: torch.Tensor, batch: int, heads: int, k_len: int, window: int, block_m: int,
                 block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-block offsets delta (sorted, unused = BIG) whose block [p0 - delta*BN, +BN) holds some kept diagonal.

    Query row m and key n of such a block lie on diagonal delta*BN + m - n, so diagonal d needs every delta with
    d - delta*BN in [-(BN-1), BM-1]. Diagonals inside the window are skipped (the window covers them).
    """
    d = per_head(slashes.long(), batch, heads)
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


TMA_MIN_LEN = 32768  # auto: below this the TMA path's extra launch work outweighs its faster tiles (NOTES.md v4)


def sparse_path(q: torch.Tensor, k_len: int = 0) -> str:
    """'tma' or 'portable' for these queries under $ATTN_SPARSE_PATH (auto|tma|portable); auto keeps to the
    portable kernel where the TMA path's 32-bit tile coordinates could not address every row (k_len keys)."""
    choice = os.environ.get("ATTN_SPARSE_PATH", "auto")
    if choice not in ("auto", "tma", "portable"):
        raise ValueError(f"ATTN_SPARSE_PATH={choice!r} is not one of auto, tma, portable")
    if choice != "auto":
        return choice
    if os.environ.get("TRITON_INTERPRET") == "1" or not q.is_cuda:
        return "portable"
    batch, heads, q_len = q.shape[:3]
    rows = batch * heads * (2 * max(k_len, q_len) + 256)  # bound on q rows and on K + gathered-column rows
    fits = rows < 2**31
    return "tma" if torch.cuda.get_device_capability(q.device)[0] == 9 and q_len >= TMA_MIN_LEN and fits else "portable"


def sparse_attention(q, k, v, scale: float, *, sink: int = 0, window: int = 0, columns: torch.Tensor | None = None,
                     slashes: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of q [B, Hq, Sq, D] (the last Sq of Sk positions) over k/v [B, Hkv, Sk, D] restricted to
    keys j < sink, i - window < j, j in columns (long [B|1, H|1, C], -1 = unused) and i - j in slashes (same
    layout). Returns [B, Hq, Sq, D] in q's dtype."""
    heads, head_dim, kv_heads = q.shape[1], q.shape[3], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of kv heads ({kv_heads})")
    if head_dim not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim {head_dim} is not supported; use 16, 32, 64, 128 or 256")
    if sparse_path(q, k.shape[2]) == "tma":
        from attention.kernels.hopper import sparse_attention_tma

        return sparse_attention_tma(q, k, v, scale, sink=sink, window=window, columns=columns, slashes=slashes,
                                    out=out)
    return sparse_attention_portable(q, k, v, scale, sink=sink, window=window, columns=columns, slashes=slashes,
                                     out=out)


def sparse_attention_portable(q, k, v, scale: float, *, sink: int = 0, window: int = 0,
                              columns: torch.Tensor | None = None, slashes: torch.Tensor | None = None,
                              out: torch.Tensor | None = None) -> torch.Tensor:
    """The portable kernel (sparse.py); same contract as sparse_attention."""
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q) if out is None else out
    device = q.device
    bm, bn, warps, stages = block_config(head_dim, q_len)
    n_qb = triton.cdiv(q_len, bm)
    q_off = k_len - q_len
    sink, window = int(sink), int(window)
    dummy = torch.zeros(1, dtype=torch.int32, device=device)
    dummy8 = torch.zeros(1, dtype=torch.int8, device=device)

    # sinks ride along as the first columns: one gathered chunk instead of a masked block of their own
    columns = columns.to(device) if columns is not None else None
    if sink:
        sinks = torch.arange(min(sink, k_len), device=device).expand(batch, heads, -1)
        columns = sinks if columns is None else torch.cat([sinks, per_head(columns.long(), batch, heads)], -1)
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
    has_slash = slashes is not None and slashes.shape[-1] > 0
    if has_slash:
        s = slashes.to(device)
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
