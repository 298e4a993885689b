"""The single bridge into transformers: one attention function per installed method, via AttentionInterface.

Prefill on an empty cache goes to the method; decode steps, and layers that need a mask the method cannot
express (padding, sliding-window layers such as Gemma-3's local ones), use dense SDPA over the cache.
"""
import itertools
import weakref

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from attention import profiles
from attention.fallback import gpu_kind
from attention.method import AttentionMethod, ConfigError, SparseMethod

_names = itertools.count()
_registered: "weakref.WeakKeyDictionary[AttentionMethod, str]" = weakref.WeakKeyDictionary()


def _sliding_window_of(module, kwargs) -> int | None:
    window = kwargs.get("sliding_window")
    return window if window is not None else getattr(module, "sliding_window", None)


def make_attention_function(method: AttentionMethod):
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if kwargs.get("softcap") is not None:
            raise ConfigError(f"{method.name}: attention logit softcapping is not supported; use a model without it")
        q_len, k_len = query.shape[2], key.shape[2]
        window = _sliding_window_of(module, kwargs)
        whole_prompt = q_len == k_len and q_len > 1
        local_layer = window is not None and window < k_len
        if whole_prompt and attention_mask is None and not local_layer:
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            out = method.batched_prefill(query, key, value, scale, layer_idx=getattr(module, "layer_idx", 0) or 0)
            return out.transpose(1, 2).contiguous(), None
        if whole_prompt:
            method.record(getattr(module, "layer_idx", 0) or 0, dense_fallback="mask" if not local_layer else "sliding")
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)

    return attention


class Installed:
    """The handle install() returns: `with install(model, method):` restores the model's attention on exit."""

    def __init__(self, model, name: str, previous: str | None):
        self.model, self.name, self.previous = model, name, previous

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            self.model.set_attn_implementation(self.previous)


def install(model, method: AttentionMethod) -> Installed:
    """Route the model's attention through `method`. Used plainly it stays installed; as a context manager it
    restores the previous attention implementation on exit. A sparse method gets the model's density profile
    for its spec where one exists (attention/profiles.py; the model's name is the harness's, see LoadedModel)."""
    if isinstance(method, SparseMethod):
        device = next(model.parameters()).device
        method.use_profile(profiles.lookup(getattr(model.config, "sampleattn_model", None), method.spec(),
                                           gpu=gpu_kind(device)))
    name = _registered.get(method)
    if name is None:  # register once per method object; switching back later is only a name change
        name = _registered[method] = f"harness_{method.name}_{next(_names)}"
        AttentionInterface.register(name, make_attention_function(method))
        AttentionMaskInterface.register(name, sdpa_mask)
    previous = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation(name)
    return Installed(model, name, previous)


def compress_cache(cache, method: AttentionMethod) -> None:
    """After prefill, let the method evict keys from each layer of a transformers cache (H2O)."""
    for layer_idx, layer in enumerate(getattr(cache, "layers", [])):
        keys = getattr(layer, "keys", None)
        if keys is None or keys.numel() == 0:
            continue
        kept = method.compress_cache(layer_idx, layer.keys, layer.values)
        if kept is not None:
            layer.keys, layer.values = kept
