"""FlexPrefill's head choice in one launch: per (batch, head) row, the softmax of the pooled logits (the last
queries' mean against block-mean keys) and the square root of its Jensen-Shannon divergence (natural log) from
the column mass pooled to key tiles. What attention.peer_estimation.js_distance(softmax(logits), tiles) computes
in ~24 launches; one program per row, three passes over its n tiles (max, sum, divergence)."""
import torch
import triton
import triton.language as tl

TINY = 1.1754943508222875e-38  # float32's smallest normal: the floor of the mixture in the log ratio


@triton.jit
def js_distance_kernel(LOGITS, TILES, OUT, n, stride_l, stride_t, tiny, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    logits = LOGITS + row.to(tl.int64) * stride_l
    tiles = TILES + row.to(tl.int64) * stride_t
    offs = tl.arange(0, BLOCK)
    top = tl.full([BLOCK], float("-inf"), tl.float32)
    for start in range(0, n, BLOCK):
        x = tl.load(logits + start + offs, mask=start + offs < n, other=float("-inf"))
        top = tl.maximum(top, x)
    m = tl.max(top, 0)
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n, BLOCK):
        x = tl.load(logits + start + offs, mask=start + offs < n, other=float("-inf"))
        total += tl.exp(x - m)
    total_sum = tl.sum(total, 0)
    acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n, BLOCK):
        ok = start + offs < n
        p = tl.exp(tl.load(logits + start + offs, mask=ok, other=float("-inf")) - m) / total_sum
        q = tl.load(tiles + start + offs, mask=ok, other=0.0)
        mid = tl.maximum((p + q) / 2, tiny)
        acc += tl.where(p > 0, 0.5 * p * tl.log(p / mid), 0.0) + tl.where(q > 0, 0.5 * q * tl.log(q / mid), 0.0)
    tl.store(OUT + row, tl.sqrt(tl.maximum(tl.sum(acc, 0), 0.0)))


def js_distance_from_logits(logits: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """float32 [B, H]: sqrt JS(softmax(logits), tiles) per row; logits and tiles float32 [B, H, n], each with unit
    stride along n and rows evenly spaced (a [B, H, 2, n] slice is)."""
    batch, heads, n = logits.shape
    logits = logits.reshape(batch * heads, n)
    tiles = tiles.reshape(batch * heads, n)  # a view for a [B, H, 2, n] slice
    if logits.stride(-1) != 1 or tiles.stride(-1) != 1:
        logits, tiles = logits.contiguous(), tiles.contiguous()
    out = torch.empty(batch * heads, dtype=torch.float32, device=logits.device)
    block = min(triton.next_power_of_2(max(n, 16)), 1024)
    js_distance_kernel[(batch * heads,)](logits, tiles, out, n, logits.stride(0), tiles.stride(0), TINY,
                                         BLOCK=block, num_warps=4)
    return out.view(batch, heads)
