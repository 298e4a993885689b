"""Index helpers shared by the pattern code and the kernel launchers (plain PyTorch, device-side, no host sync).

Index lists are per (batch, head) rows of key positions or diagonal offsets; unused slots are -1 (or out of
range) in patterns and BIG once sorted for the kernels.
"""
import torch

BIG = 1 << 30  # sorts after every real index


def per_head(x: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """[C], [1, 1, C] or [B, H, C] -> a [B, H, C] view."""
    return x.expand(batch, heads, x.shape[-1])


def prepare_columns(columns: torch.Tensor, batch: int, heads: int, k_len: int) -> torch.Tensor:
    """Sorted int64 [B, H, C], unused slots (-1, out of range) moved to the end as BIG. Repeats stay next to
    each other; the kernel and first_of_run skip all but the first."""
    c = per_head(columns.long(), batch, heads)
    return torch.where((c >= 0) & (c < k_len), c, BIG).sort(-1).values


def first_of_run(c: torch.Tensor) -> torch.Tensor:
    """bool like sorted c: True on real entries that differ from their left neighbour."""
    first = c < BIG
    first[..., 1:] &= c[..., 1:] != c[..., :-1]
    return first


def hit_map(idx: torch.Tensor, batch: int, heads: int, k_len: int, device) -> torch.Tensor:
    """int8 [B, H, k_len]: 1 where an index in idx (any order, unused slots out of range) occurs."""
    idx = per_head(idx.long(), batch, heads)
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
