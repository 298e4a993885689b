"""Stage 1 in plain PyTorch (fp32, chunked over sampled rows): the CPU path when Triton is not used."""
import torch

from attention.reference import expand_kv

ROW_CHUNK = 256


def torch_sampled_scores(q, k, scale: float, rows: torch.Tensor, with_diag: bool = False):
    """Same contract as attention.kernels.sampled_scores: (columns [B,Hq,Sk], diagonals or None), fp32."""
    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    rows = rows.to(q.device).long().flatten()
    rows = rows[rows >= 0]
    kf = expand_kv(k.float(), heads)
    keys = torch.arange(k_len, device=q.device)
    col = torch.zeros(batch, heads, k_len, dtype=torch.float32, device=q.device)
    diag = torch.zeros_like(col) if with_diag else None
    for start in range(0, rows.numel(), ROW_CHUNK):
        r = rows[start:start + ROW_CHUNK]
        pos = r + (k_len - q_len)
        s = torch.einsum("bhrd,bhkd->bhrk", q[:, :, r].float(), kf) * scale
        allowed = keys[None, :] <= pos[:, None]
        p = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1)
        col += p.sum(2)
        if with_diag:
            offset = (pos[:, None] - keys[None, :]).clamp(min=0).expand(batch, heads, -1, -1)
            diag.scatter_add_(2, offset.reshape(batch, heads, -1), p.reshape(batch, heads, -1))
    return col, diag
