"""The fp32 reference itself as a method: slow, exact, small inputs only."""
from attention.method import AttentionMethod
from attention.reference import reference_attention
from attention.registry import register


@register
class EagerAttention(AttentionMethod):
    name = "eager"
    description = "plain PyTorch fp32 reference attention (slow; for checking)"

    def prefill(self, q, k, v, scale, layer_idx=0):
        return reference_attention(q, k, v, scale=scale).to(q.dtype)
