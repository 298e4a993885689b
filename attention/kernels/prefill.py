"""Launchers of the sparse prefill kernel: turn sink, window, key columns and diagonal offsets into the index
tensors the kernels read. Two paths compute the same function:

  portable   attention/kernels/sparse.py: gathers column keys by index inside the kernel; any GPU, and the CPU
             interpreter in CI
  tma        attention/kernels/sparse_tma.py via hopper.py: columns gathered once into a contiguous buffer, all
             tiles through TMA descriptors; compute capability 9.0+ (Hopper)

`sparse_attention` takes the path config.sparse_path picks (the one decision). `column_attention` launches the
portable kernel on a ready column list (SampleAttention's fused stage 2 writes it). All preparation is
device-side tensor ops (sort, searchsorted, scatter): no host sync.
"""
import torch
import triton

from attention.indices import hit_map, per_head, prepare_columns, slash_blocks
from attention.kernels.config import HEAD_DIMS, LOG2E, block_config, interpreter_f32, sparse_path
from attention.kernels.hopper import sparse_attention_tma
from attention.kernels.sparse import sparse_fwd_kernel


def sparse_attention(q, k, v, scale: float, *, sink: int = 0, window: int = 0, columns: torch.Tensor | None = None,
                     slashes: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of q [B, Hq, Sq, D] (the last Sq of Sk positions) over k/v [B, Hkv, Sk, D] restricted to
    keys j < sink, i - window < j, j in columns (long [B|1, H|1, C], -1 = unused) and i - j in slashes (same
    layout). Returns [B, Hq, Sq, D] in q's dtype."""
    heads, head_dim, kv_heads = q.shape[1], q.shape[3], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of kv heads ({kv_heads})")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"head dim {head_dim} is not supported; use 16, 32, 64, 128 or 256")
    if sparse_path(q, k.shape[2]) == "tma":
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

    return _launch(q, k, v, out, scale, window, (cols, col_full, col_hi, col_slots, has_cols),
                   (deltas, n_delta, colhit, diaghit, delta_slots, has_slash))


def column_attention(q, k, v, scale: float, *, window: int, cols, col_full, col_hi, block_m: int,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """The portable kernel over window + a ready column list (int32 [B, Hq, slots], sinks included, ascending,
    -1 after the last) with its per-query-block ranges col_full / col_hi for block_m-row blocks: one launch."""
    bm = block_config(q.shape[3], q.shape[2])[0]
    if bm != block_m:
        raise ValueError(f"column ranges were built for {block_m}-row blocks, the kernel runs {bm}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q) if out is None else out
    none = torch.zeros(1, dtype=torch.int32, device=q.device)
    none8 = torch.zeros(1, dtype=torch.int8, device=q.device)
    return _launch(q, k, v, out, scale, int(window), (cols, col_full, col_hi, cols.shape[-1], True),
                   (none, none, none8, none8, 0, False))


def _launch(q, k, v, out, scale, window, columns, slashes):
    batch, heads, q_len, head_dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    cols, col_full, col_hi, col_slots, has_cols = columns
    deltas, n_delta, colhit, diaghit, delta_slots, has_slash = slashes
    bm, bn, warps, stages = block_config(head_dim, q_len)
    n_qb = triton.cdiv(q_len, bm)
    sparse_fwd_kernel[(n_qb, batch * heads)](
        q, k, v, out, cols, col_full, col_hi, deltas, n_delta, colhit, diaghit,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        heads, heads // kv_heads, q_len, k_len, k_len - q_len, window, col_slots, n_qb, delta_slots,
        scale * LOG2E,
        HEAD_D=head_dim, BLOCK_M=bm, BLOCK_N=bn, HAS_COLS=has_cols, HAS_SLASH=has_slash, F32=interpreter_f32(q),
        num_warps=warps, num_stages=stages,
    )
    return out
