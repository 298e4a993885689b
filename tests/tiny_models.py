"""Tiny random-weight models of several families, for bridge tests."""
import torch
from transformers import (AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config)

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)

CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    "qwen2": lambda: Qwen2Config(**COMMON),
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=None),
    "gemma3": lambda: Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 3}, head_dim=16, sliding_window=16,
                                       layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
}


def tiny_model(family: str, attn: str = "sdpa"):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CONFIGS[family](), attn_implementation=attn).eval()
