"""Dense baselines: PyTorch SDPA with a chosen backend, and the flash_attn package."""
import dataclasses
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attention.method import AttentionMethod, ConfigError, MethodConfig
from attention.registry import register

SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


@dataclasses.dataclass
class DenseConfig(MethodConfig):
    backend: str = "auto"

    def validate(self):
        if self.backend != "auto" and self.backend not in SDPA_BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is not one of: auto, {', '.join(SDPA_BACKENDS)}")


def sdpa_causal(q, k, v, scale, backend: str = "auto"):
    """Causal SDPA over grouped-query heads without expanding kv in memory where the backend allows it."""
    context = nullcontext() if backend == "auto" else sdpa_kernel([SDPA_BACKENDS[backend]])
    with context:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


@register
class DenseAttention(AttentionMethod):
    name = "dense"
    Config = DenseConfig
    description = "PyTorch scaled_dot_product_attention (FlashAttention-2 / cuDNN / efficient / math backend)"

    def prefill(self, q, k, v, scale, layer_idx=0):
        backend = self.config.backend
        if backend in ("flash", "cudnn") and q.shape[1] != k.shape[1]:
            # these backends reject enable_gqa on some torch versions; a view-free expand keeps it a fair timing
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        return sdpa_causal(q, k, v, scale, backend)

    def backend_used(self, device: str) -> str:
        """The backend that runs: the forced one, or 'auto' (PyTorch picks by its priority list and the inputs)."""
        if self.config.backend != "auto":
            return self.config.backend
        return f"auto({'cuda' if str(device).startswith('cuda') else 'cpu'})"


@register
class FlashAttnPackage(AttentionMethod):
    name = "flash-attn"
    description = "the flash_attn package's flash_attn_func (needs `pip install flash-attn` and a CUDA GPU)"

    def __init__(self, config=None):
        super().__init__(config)
        try:
            from flash_attn import flash_attn_func
        except ImportError:
            raise ConfigError("flash-attn: the flash_attn package is not installed; "
                              "run `pip install flash-attn --no-build-isolation` or use --methods dense:backend=flash") from None
        self._fn = flash_attn_func

    def prefill(self, q, k, v, scale, layer_idx=0):
        out = self._fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
        return out.transpose(1, 2)
