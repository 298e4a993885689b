"""Build the combined key/value buffer the Hopper sparse kernel reads through one TMA descriptor each:

  rows [0, B*Hk*Sk)                      K (resp. V) itself, [B*Hk*Sk, D] (the window part reads it)
  rows [B*Hk*Sk + (b*Hq+h)*slots, + n)   the n distinct selected columns of query head (b, h), ascending

Only real columns are copied (a Triton kernel skips the unused slots; the pattern's column tensor usually has
one slot per key, mostly unused), so the copy is K + V once plus 2 x (B * Hq * n * D) elements, memory-bound.
Each head's first gather tile and the tile holding its last column are written whole (zeros past the last
column), so every row a kernel tile can touch is finite (a 0 * NaN in P @ V would poison a row); slots past
that stay unwritten and are never read.
"""
import torch
import triton
import triton.language as tl

from attention.indices import BIG


def dedup_sorted(c: torch.Tensor) -> torch.Tensor:
    """Sorted [B, H, C] with BIG padding -> same shape, repeats replaced by BIG and moved to the end."""
    repeat = torch.zeros_like(c, dtype=torch.bool)
    repeat[..., 1:] = c[..., 1:] == c[..., :-1]
    return torch.where(repeat, BIG, c).sort(-1).values


@triton.jit
def gather_rows_kernel(K, V, KX, VX, COLS, N_REAL, out_base, H, GROUP, HK, Sk, slots,
                       HEAD_D: tl.constexpr, ROWS: tl.constexpr):
    tile = tl.program_id(0)
    bh = tl.program_id(1)
    n = tl.load(N_REAL + bh)
    if (tile == 0) | (tile * ROWS < n):
        slot = tile * ROWS + tl.arange(0, ROWS)
        ok = slot < n
        col = tl.load(COLS + bh * slots + slot, mask=ok, other=0).to(tl.int64)
        src = ((bh // H) * HK + (bh % H) // GROUP).to(tl.int64) * Sk + col
        dst = out_base + bh.to(tl.int64) * slots + slot
        offs_d = tl.arange(0, HEAD_D)
        k = tl.load(K + src[:, None] * HEAD_D + offs_d[None, :], mask=ok[:, None], other=0.0)
        tl.store(KX + dst[:, None] * HEAD_D + offs_d[None, :], k)
        v = tl.load(V + src[:, None] * HEAD_D + offs_d[None, :], mask=ok[:, None], other=0.0)
        tl.store(VX + dst[:, None] * HEAD_D + offs_d[None, :], v)


def combined_kv(k: torch.Tensor, v: torch.Tensor, cols: torch.Tensor | None, slots: int, heads: int):
    """k, v [B, Hk, Sk, D] contiguous; cols sorted unique int32 [B, Hq, slots] (BIG = unused) or None.

    Returns kx, vx [B*Hk*Sk + B*Hq*slots, D] laid out as the module docstring says."""
    batch, kv_heads, k_len, dim = k.shape
    base = batch * kv_heads * k_len
    if cols is None or not slots:
        return k.view(base, dim), v.view(base, dim)  # window (and slashes) only: no copy
    kx = torch.empty(base + batch * heads * slots, dim, dtype=k.dtype, device=k.device)
    vx = torch.empty_like(kx)
    kx[:base].copy_(k.view(base, dim))
    vx[:base].copy_(v.view(base, dim))
    n_real = (cols < BIG).sum(-1, dtype=torch.int32).reshape(-1)
    rows = 128  # >= the kernel's BLOCK_N, and slots is a multiple of it
    gather_rows_kernel[(triton.cdiv(slots, rows), batch * heads)](
        k, v, kx, vx, cols, n_real, base, heads, heads // kv_heads, kv_heads, k_len, slots,
        HEAD_D=dim, ROWS=rows, num_warps=4)
    return kx, vx
