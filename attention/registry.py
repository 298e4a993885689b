"""Method registry: a method has a name, a validated dataclass config and a prefill attention function.

Tensors use transformers' layout: q [B, Hq, S, D], k/v [B, Hkv, S, D] with kv heads not expanded.
"""
import dataclasses
from typing import ClassVar

import torch

from attention.reference import reference_attention


class ConfigError(ValueError):
    """A bad method name or option; the message is one line naming the fix."""


@dataclasses.dataclass
class MethodConfig:
    def validate(self) -> None:
        """Raise ConfigError with a one-line message when a field is out of range."""


def check_range(name: str, value: float, low: float, high: float, low_open=False, high_open=False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name}={value} is out of range: it must be in {lo}{low}, {high}{hi}")


class AttentionMethod:
    """Base class. Subclasses set name, Config, and implement prefill (and keep_mask when sparse)."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    sparse: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, config: MethodConfig | None = None):
        self.config = config if config is not None else self.Config()
        self.config.validate()
        self.stats: list[dict] = []  # one entry per prefill call (per layer), e.g. per-head density

    def prefill(self, q, k, v, scale: float, layer_idx: int = 0) -> torch.Tensor:
        """Causal prefill attention; returns [B, Hq, S, D] in q's dtype."""
        raise NotImplementedError

    def keep_mask(self, q, k, scale: float) -> torch.Tensor | None:
        """Dense bool [B, Hq, S, S] of what prefill attends (small sizes; None = dense causal)."""
        return None

    def sparse_pattern(self, q, k, scale: float, layer_idx: int = 0):
        """The SparsePattern prefill runs for these q, k (diagnostics), or None when prefill is dense causal.

        Sparse methods override this (or get an adapter in attention.diagnostics); a sparse method with neither
        raises, so a mask is never silently taken for dense.
        """
        if self.sparse:
            raise NotImplementedError(f"{self.name}: no sparse_pattern; diagnostics cannot see its prefill mask")
        return None

    def compress_cache(self, layer_idx: int, k, v):
        """Optional hook after prefill: return (k, v) to keep in the cache, or None to keep all."""
        return None

    def spec(self) -> str:
        """Name plus the options that differ from their defaults, e.g. 'sample:alpha=0.8' (the full config is
        stored beside it in every cell)."""
        changed = [f"{f.name}={getattr(self.config, f.name)}" for f in dataclasses.fields(self.config)
                   if getattr(self.config, f.name) != f.default]
        return f"{self.name}:{','.join(changed)}" if changed else self.name

    def record(self, layer_idx: int, **values) -> None:
        self.stats.append({"layer": layer_idx, **values})


class EagerAttention(AttentionMethod):
    """The fp32 reference itself: slow, exact, small inputs only."""

    name = "eager"
    description = "plain PyTorch fp32 reference attention (slow; for checking)"

    def prefill(self, q, k, v, scale, layer_idx=0):
        return reference_attention(q, k, v, scale=scale).to(q.dtype)


REGISTRY: dict[str, type[AttentionMethod]] = {}


def register(cls: type[AttentionMethod]) -> type[AttentionMethod]:
    REGISTRY[cls.name] = cls
    return cls


register(EagerAttention)


_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool}


def _convert(field: dataclasses.Field, text: str, method: str):
    kind = field.type if isinstance(field.type, type) else _TYPE_NAMES.get(str(field.type), str)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise ConfigError(f"{method}: option {field.name}={text!r} is not a valid {kind.__name__}") from None


def build_method(name: str, options: dict[str, str] | None = None) -> AttentionMethod:
    """Build a method from its name and string options (as given on the command line)."""
    _load_builtin_methods()
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose from: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    values = {}
    for key, text in (options or {}).items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ConfigError(f"{name}: unknown option {key!r}; valid options: {valid}")
        values[key] = _convert(fields[key], text, name)
    config = cls.Config(**values)
    try:
        config.validate()
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
    return cls(config)


def parse_method_specs(text: str) -> list[tuple[str, dict[str, str]]]:
    """'dense,sample:alpha=0.9,r_row=0.05,bigbird' -> [(name, options)]; key=value items attach to the method
    before them."""
    specs: list[tuple[str, dict]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if ":" in item:
            name, first = item.split(":", 1)
            specs.append((name.strip(), {}))
            item = first
        elif "=" not in item:
            specs.append((item, {}))
            continue
        if not specs:
            raise ConfigError(f"option {item!r} comes before any method name; write name:key=value")
        if "=" not in item:
            raise ConfigError(f"{specs[-1][0]}: option {item!r} must be key=value")
        key, value = item.split("=", 1)
        specs[-1][1][key.strip()] = value.strip()
    if not specs:
        raise ConfigError("no method given; choose from: " + ", ".join(sorted(available_methods())))
    return specs


def parse_methods(text: str) -> list[AttentionMethod]:
    return [build_method(name, options) for name, options in parse_method_specs(text)]


def available_methods() -> dict[str, type[AttentionMethod]]:
    _load_builtin_methods()
    return dict(REGISTRY)


def _load_builtin_methods() -> None:
    # importing a method module registers it; kept lazy so `attention.registry` stays light
    import importlib
    import pkgutil

    import attention

    for info in pkgutil.iter_modules(attention.__path__):
        if info.name not in ("registry", "reference", "pattern", "hf", "kernels"):
            importlib.import_module(f"attention.{info.name}")
