"""Build the gather buffers of kept key/value columns the Hopper sparse kernel reads through TMA descriptors of
their own (the window part reads K and V in place):

  rows [(b*Hq+h)*slots, + n)   the n distinct selected columns of query head (b, h), ascending, [B*Hq*slots, D]

Only real columns are copied (a Triton kernel skips the unused slots; the pattern's column tensor usually has
one slot per key, mostly unused), so the copy is 2 x (B * Hq * n * D) elements, memory-bound; K and V are read
through their strides (any layout whose last dimension is contiguous).
Each head's first gather tile and the tile holding its last column are written whole (zeros past the last
column), so every row a kernel tile can touch is finite (a 0 * NaN in P @ V would poison a row); slots past
that stay unwritten and are never read.
"""
import torch
import triton
import triton.language as tl

from attention.indices import BIG, per_head


def column_lists(columns: torch.Tensor | None, sink: int, batch: int, heads: int, k_len: int, device):
    """Sinks + columns per query head without sorting (any order, repeats, -1 or out-of-range slots allowed).

    Returns hit int32 [B, H, Sk] (1 = kept key), cnt int32 [B, H, Sk] (kept keys <= j, inclusive), cols int32
    [B, H, slots] (the kept keys ascending, BIG after them) and slots (a multiple of 128). A scatter and a
    cumsum instead of two sorts: at 128K the sorts cost 1.3 ms (results/bench/NOTES.md v4)."""
    cap = min(k_len, sink + (columns.shape[-1] if columns is not None else 0))
    slots = triton.cdiv(max(cap, 1), 128) * 128
    hit = torch.zeros(batch, heads, k_len + 1, dtype=torch.int32, device=device)
    if columns is not None:
        c = per_head(columns.to(device).long(), batch, heads)
        hit.scatter_(2, torch.where((c >= 0) & (c < k_len), c, k_len), 1)
    if sink:
        hit[..., :min(sink, k_len)] = 1
    hit = hit[..., :k_len]
    cnt = hit.cumsum(-1, dtype=torch.int32)
    cols = torch.full((batch, heads, slots + 1), BIG, dtype=torch.int32, device=device)
    pos = torch.arange(k_len, dtype=torch.int32, device=device).expand(batch, heads, -1)
    cols.scatter_(2, torch.where(hit.bool(), cnt - 1, slots).long(), pos)
    return hit, cnt, cols[..., :slots].contiguous(), slots


def kept_up_to(cnt: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """int32 [B, H, len(x)]: kept keys at positions <= x (x may be negative: none)."""
    return torch.where(x >= 0, cnt.index_select(-1, x.clamp(min=0)), 0).to(torch.int32).contiguous()


@triton.jit
def gather_rows_kernel(K, V, KC, VC, COLS, N_REAL, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, H, GROUP, slots,
                       HEAD_D: tl.constexpr, ROWS: tl.constexpr):
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    n = tl.load(N_REAL + bh)
    if (tile == 0) | (tile * ROWS < n):
        slot = tile * ROWS + tl.arange(0, ROWS)
        ok = slot < n
        col = tl.load(COLS + bh.to(tl.int64) * slots + slot, mask=ok, other=0).to(tl.int64)
        b = (bh // H).to(tl.int64)
        hk = ((bh % H) // GROUP).to(tl.int64)
        dst = bh.to(tl.int64) * slots + slot
        offs_d = tl.arange(0, HEAD_D)
        k = tl.load(K + b * sk_b + hk * sk_h + col[:, None] * sk_s + offs_d[None, :], mask=ok[:, None], other=0.0)
        tl.store(KC + dst[:, None] * HEAD_D + offs_d[None, :], k)
        v = tl.load(V + b * sv_b + hk * sv_h + col[:, None] * sv_s + offs_d[None, :], mask=ok[:, None], other=0.0)
        tl.store(VC + dst[:, None] * HEAD_D + offs_d[None, :], v)


def gather_columns(k: torch.Tensor, v: torch.Tensor, cols: torch.Tensor, slots: int, heads: int,
                   n_real: torch.Tensor | None = None):
    """k, v [B, Hk, Sk, D] (last dimension contiguous); cols sorted unique int32 [B, Hq, slots] (BIG = unused);
    n_real int32 [B, Hq]: real entries per row (counted from cols when not given).

    Returns kc, vc [B*Hq*slots, D] laid out as the module docstring says."""
    batch, kv_heads, k_len, dim = k.shape
    assert k.stride(3) == 1 and v.stride(3) == 1, "the gather reads rows of D contiguous elements"
    kc = torch.empty(batch * heads * slots, dim, dtype=k.dtype, device=k.device)
    vc = torch.empty_like(kc)
    n_real = ((cols < BIG).sum(-1, dtype=torch.int32) if n_real is None else n_real).reshape(-1).contiguous()
    rows = 128  # >= the kernel's BLOCK_N, and slots is a multiple of it
    gather_rows_kernel[(triton.cdiv(slots, rows), batch * heads)](
        k, v, kc, vc, cols, n_real, *k.stride()[:3], *v.stride()[:3], heads, heads // kv_heads, slots,
        HEAD_D=dim, ROWS=rows, num_warps=4)
    return kc, vc
