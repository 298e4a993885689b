"""Plain PyTorch fp32 masked attention: the truth every kernel and method is tested against."""
import math

import torch


def causal_mask(q_len: int, k_len: int, device=None) -> torch.Tensor:
    """Bool [q_len, k_len]; queries are the last q_len positions of the k_len keys (bottom-right aligned)."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return k_pos <= q_pos


def expand_kv(x: torch.Tensor, n_q_heads: int) -> torch.Tensor:
    """[B, Hkv, S, D] -> [B, Hq, S, D] by repeating each kv head for its group of query heads."""
    groups = n_q_heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def attention_probs(q, k, keep=None, scale=None, causal=True) -> torch.Tensor:
    """fp32 softmax probabilities [B, Hq, Sq, Sk] under causal & keep (keep broadcastable to that shape)."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    qf, kf = q.float(), expand_kv(k.float(), q.shape[1])
    scores = torch.einsum("bhqd,bhkd->bhqk", qf, kf) * scale
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        allowed = causal_mask(q.shape[2], k.shape[2], q.device)
    allowed = allowed.expand_as(scores)
    if keep is not None:
        allowed = allowed & keep.to(torch.bool)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # a row with nothing allowed has no defined softmax; define its output as zero instead of NaN
    return torch.nan_to_num(probs, nan=0.0)


def reference_attention(q, k, v, keep=None, scale=None, causal=True) -> torch.Tensor:
    """fp32 attention output [B, Hq, Sq, D] for q [B, Hq, Sq, D], k/v [B, Hkv, Sk, D] (grouped-query heads allowed).

    keep: optional bool mask broadcastable to [B, Hq, Sq, Sk]; True = the key may be attended.
    """
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of kv heads ({k.shape[1]})")
    probs = attention_probs(q, k, keep, scale, causal)
    return torch.einsum("bhqk,bhkd->bhqd", probs, expand_kv(v.float(), q.shape[1]))
