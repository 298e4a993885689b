"""Long prefill: a forward pass whose memory grows linearly in the prompt length, with the same first token.

A plain transformers forward holds, per layer, fp32 copies of the hidden states in RMSNorm, the MLP's
[S, intermediate] activations and (unless logits_to_keep) [S, vocab] logits: at 1M tokens on an 8B model that
is far beyond one GPU although attention itself (q, k, v) fits. Here every row-wise part of a decoder layer
(norms, q/k/v/o projections, rotary, MLP, residual adds) runs over chunks of `chunk` tokens, and only attention
sees the whole sequence, through the same attention function the model has installed (the harness bridge, or
SDPA). Each layer writes q, k, v in the exact layout the plain forward hands to attention, so attention and
every method see identical inputs; only the first token's logits are computed.

keep_cache=False (timing-only cells) drops each layer's k and v as soon as the layer is done, instead of
holding the whole KV cache (128 KiB per token on Llama-3.1-8B: 128 GiB at 1M), so nothing can be decoded after
the first token; the cell records it.

Supported: decoder-only models with the Llama layer layout (llama, mistral without a sliding window, qwen2,
qwen3); anything else is refused in one line.
"""
import sys

import torch
from transformers import DynamicCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from harness.options import PREFILL_CHUNK as DEFAULT_CHUNK
from harness.options import InputError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


def check_model(model, length: int | None = None) -> None:
    config = model.config
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED:
        raise InputError(f"--prefill chunked supports {', '.join(SUPPORTED)} models, not {kind!r}; "
                         "use --prefill plain")
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and (length is None or window < length):
        raise InputError(f"--prefill chunked: {kind} with a sliding window ({window}) needs a mask; use --prefill plain")


def _rotary_fn(layer):
    """apply_rotary_pos_emb of the layer's own modelling module (each family defines its own)."""
    return sys.modules[type(layer.self_attn).__module__].apply_rotary_pos_emb


def attention_function(model):
    """The attention function the model runs now: our bridge after hf.install, else transformers' SDPA.

    Called with attention_mask=None, which both read as causal over the whole prompt."""
    name = model.config._attn_implementation
    if name not in ALL_ATTENTION_FUNCTIONS:
        raise InputError(f"--prefill chunked needs sdpa or a harness method as attention, not {name!r}")
    return ALL_ATTENTION_FUNCTIONS[name]


def _device_of(module) -> torch.device:
    return next(module.parameters()).device


@torch.inference_mode()
def forward(model, input_ids: torch.Tensor, chunk: int = DEFAULT_CHUNK, keep_cache: bool = True,
            all_logits: bool = False):
    """(logits, cache): logits of the last position [B, 1, V] (every position, chunked, when all_logits),
    cache a transformers DynamicCache of the prompt, or None when keep_cache is False."""
    if chunk < 1:
        raise InputError("--prefill-chunk must be at least 1 token")
    check_model(model, input_ids.shape[1])
    body = model.model
    config = model.config
    attention = attention_function(model)
    batch, length = input_ids.shape
    device = _device_of(body.embed_tokens)
    hidden = body.embed_tokens(input_ids.to(device))  # [B, S, hidden]
    positions = torch.arange(length, device=device)[None].expand(batch, -1)
    cache = DynamicCache(config=config) if keep_cache else None
    for layer_idx, layer in enumerate(body.layers):
        device = _device_of(layer)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # Triton launches on the current device (split models)
        hidden, positions = hidden.to(device), positions.to(device)
        attn = layer.self_attn
        rotary = _rotary_fn(layer)
        head_dim = attn.head_dim
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        # [B, S, H, D] storage, viewed [B, H, S, D]: the layout the plain forward hands to attention
        q_all = hidden.new_empty(batch, length, heads, head_dim)
        k_all = hidden.new_empty(batch, length, kv_heads, head_dim)
        v_all = hidden.new_empty(batch, length, kv_heads, head_dim)
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            x = layer.input_layernorm(hidden[:, start:stop])
            q = attn.q_proj(x).view(batch, stop - start, heads, head_dim)
            k = attn.k_proj(x).view(batch, stop - start, kv_heads, head_dim)
            if hasattr(attn, "q_norm"):  # qwen3: per-head norms before rotary
                q, k = attn.q_norm(q), attn.k_norm(k)
            cos, sin = body.rotary_emb(x, positions[:, start:stop].to(device))
            q, k = rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            q_all[:, start:stop] = q.transpose(1, 2)
            k_all[:, start:stop] = k.transpose(1, 2)
            v_all[:, start:stop] = attn.v_proj(x).view(batch, stop - start, kv_heads, head_dim)
            del x, q, k, cos, sin
        query, key, value = q_all.transpose(1, 2), k_all.transpose(1, 2), v_all.transpose(1, 2)
        out = attention(attn, query, key, value, None, dropout=0.0, scaling=attn.scaling)[0]  # [B, S, H, D]
        del q_all, query
        if cache is not None:
            cache.update(key, value, layer_idx)
        del k_all, v_all, key, value
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            rows = hidden[:, start:stop]
            rows += attn.o_proj(out[:, start:stop].reshape(batch, stop - start, heads * head_dim))
            rows += layer.mlp(layer.post_attention_layernorm(rows))
        del out
    device = _device_of(body.norm)
    hidden = hidden.to(device)
    if not all_logits:
        logits = model.lm_head(body.norm(hidden[:, -1:]).to(_device_of(model.lm_head)))
    else:
        logits = torch.cat([model.lm_head(body.norm(hidden[:, s:s + chunk]).to(_device_of(model.lm_head)))
                            for s in range(0, length, chunk)], dim=1)
    return logits, cache


def prefill(model, input_ids: torch.Tensor, chunk: int = DEFAULT_CHUNK, keep_cache: bool = True):
    """Drop-in for harness.runner.prefill: (first token [B], cache or None)."""
    logits, cache = forward(model, input_ids, chunk=chunk, keep_cache=keep_cache)
    return logits[:, -1].argmax(dim=-1), cache


def cell_fields(mode: str, chunk: int) -> dict:
    """What a cell records about how its prefill ran."""
    if mode == "plain":
        return {"prefill": "plain"}
    return {"prefill": mode, "prefill_chunk": chunk, "kv_cache": "dropped" if mode == "chunked-nocache" else "kept"}


def held_bytes(config, length: int, batch: int = 1, element_bytes: int = 2, kept_kv_layers: int = 0) -> dict:
    """What forward() holds besides weights at its peak (a layer's attention call), by part, in bytes:
    the residual stream [B, S, hidden], that layer's q/k/v ([B, S, H|Hk, D] each), attention's output
    [B, S, H, D], and the KV cache of `kept_kv_layers` finished layers (0 with keep_cache=False). The chunked
    row-wise parts (a chunk's MLP activations) are freed before attention runs and are smaller than it at
    long lengths; the attention method's own workspace is not included (the caller adds it)."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    tokens = batch * length * element_bytes
    return {"hidden": tokens * config.hidden_size,
            "qkv": tokens * (heads + 2 * kv_heads) * head_dim,
            "attention_out": tokens * heads * head_dim,
            "kept_kv": kept_kv_layers * tokens * 2 * kv_heads * head_dim}
