"""What every attention method is: a name, a validated dataclass config and a causal prefill.

Tensors use transformers' layout: q [B, Hq, S, D], k/v [B, Hkv, S, D] with kv heads not expanded.

A sparse method subclasses SparseMethod and only builds its pattern (`build_pattern`), like a kvpress press;
the base runs it on the shared executor and derives from it the keep mask, the density and the per-layer
stats. Methods whose kept set is not a SparsePattern say what it is through `plan` (e.g. oracle-topk's RowTopK).
"""
import dataclasses
from typing import ClassVar

import torch

from attention.backend import triton_enabled
from attention.density import pattern_density
from attention.executor import dense_attention, pattern_heads, run_pattern, split_heads
from attention.fallback import NEVER, Limits, dense_heads, limits_for
from attention.pattern import SparsePattern
from attention.profiles import Profile
from harness.options import InputError, changed_options
from harness.options import check_range as _check_range

FULL_MASK_MAX = 4096  # a method known only by its dense keep_mask can be measured up to this length


class ConfigError(InputError):
    """A bad method name or option; the message is one line naming the fix."""


def check_range(name: str, value: float, low: float, high: float, low_open=False, high_open=False) -> None:
    _check_range(name, value, low, high, low_open, high_open, error=ConfigError)


@dataclasses.dataclass
class MethodConfig:
    def validate(self) -> None:
        """Raise ConfigError with a one-line message when a field is out of range."""


@dataclasses.dataclass
class FallbackConfig(MethodConfig):
    """A sparse method's share of the dense fallback (attention/fallback.py), for methods whose config has no
    field of its own for it (SampleAttention and StreamingLLM keep theirs where their users know it)."""
    dense_above: float = -1.0  # GPU: run dense at this density or more (-1: the calibrated limits and the model's
                               # profile; 0: always; 1: never, the method's sparse path in every layer)

    def validate(self) -> None:
        if self.dense_above != -1.0:
            check_range("dense_above", self.dense_above, 0.0, 1.0)


@dataclasses.dataclass
class FullMask:
    """A method's own dense keep mask [B, H, S, S] (methods with no pattern; small S only)."""
    keep: torch.Tensor


class AttentionMethod:
    """Base class. Subclasses set name, Config and description, and implement prefill."""

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

    def keep_mask(self, q, k, scale: float, layer_idx: int = 0) -> torch.Tensor | None:
        """Dense bool [B, Hq, S, S] of what prefill attends (small sizes; None = dense causal)."""
        return None

    # batches (harness/running/batch.py): every sample must get what it gets alone
    def per_sample(self, q, k) -> bool:
        """Whether a batch runs one sample at a time: True where a choice would otherwise be shared by the rows."""
        return False

    def batched_prefill(self, q, k, v, scale: float, layer_idx: int = 0) -> torch.Tensor:
        """prefill of a batch, per sample where per_sample says so (what the transformers bridge calls)."""
        if q.shape[0] == 1 or not self.per_sample(q, k):
            return self.prefill(q, k, v, scale, layer_idx)
        outs = []
        for row in range(q.shape[0]):
            self.row = row  # its stats say which sample they are (harness/running/batch.py splits them)
            try:
                outs.append(self.prefill(q[row:row + 1], k[row:row + 1], v[row:row + 1], scale, layer_idx))
            finally:
                self.row = None
        return torch.cat(outs)

    def batched_keep_mask(self, q, k, scale: float, layer_idx: int = 0) -> torch.Tensor | None:
        """keep_mask of what batched_prefill attends, row by row."""
        if q.shape[0] == 1 or not self.per_sample(q, k):
            return self.keep_mask(q, k, scale, layer_idx)
        masks = [self.keep_mask(q[i:i + 1], k[i:i + 1], scale, layer_idx) for i in range(q.shape[0])]
        return None if masks[0] is None else torch.cat(masks)

    def plan(self, q, k, scale: float, layer_idx: int = 0):
        """What prefill keeps for these q, k, for diagnostics: a SparsePattern, another plan (RowTopK,
        FullMask), or None for dense causal. A sparse method known only by its keep_mask is measured through
        that mask at small lengths; one with neither raises, so a mask is never silently taken for dense."""
        if not self.sparse:
            return None
        if q.shape[2] > FULL_MASK_MAX:
            raise NotImplementedError(f"{self.name}: no pattern and length {q.shape[2]} > {FULL_MASK_MAX} for its "
                                      "dense keep_mask; build it as a SparseMethod")
        keep = self.keep_mask(q, k, scale, layer_idx)
        if keep is None:
            raise NotImplementedError(f"{self.name}: neither a pattern nor a keep_mask; diagnostics cannot see "
                                      "its prefill mask")
        causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - q.shape[2])
        return FullMask(keep.to(torch.bool) & causal)

    @property
    def recall_target(self) -> float | None:
        """The share of attention mass the method itself aims to keep (SampleAttention's alpha), if it has one."""
        return None

    def compress_cache(self, layer_idx: int, k, v):
        """Optional hook after prefill: return (k, v) to keep in the cache, or None to keep all."""
        return None

    def spec(self) -> str:
        """Name plus the options that differ from their defaults, e.g. 'sample:alpha=0.8' (the full config is
        stored beside it in every cell)."""
        changed = changed_options(self.config)
        return f"{self.name}:{changed}" if changed else self.name

    row: int | None = None  # the sample of a batch being run alone (batched_prefill), else None

    def record(self, layer_idx: int, **values) -> None:
        self.stats.append({"layer": layer_idx, **values, **({"row": self.row} if self.row is not None else {})})


class SparseMethod(AttentionMethod):
    """A method whose prefill is a SparsePattern run on the shared executor; subclasses build the pattern.
    build_pattern may set self.knobs (what it solved or chose for this layer): they are recorded beside the
    layer's density."""

    sparse = True
    predicted_is_exact: ClassVar[bool] = True  # predicted_density is the pattern's density, not a lower bound

    def __init__(self, config: MethodConfig | None = None):
        super().__init__(config)
        self.knobs: dict = {}
        self._limits: dict = {}  # per layer shape: the fallback limits (host lookups once, not per layer)
        self.profile: Profile | None = None  # the model's offline per-layer densities (attention/profiles.py)

    def record(self, layer_idx: int, **values) -> None:
        super().record(layer_idx, **values, **self.knobs)

    def build_pattern(self, q, k, scale: float, layer_idx: int = 0) -> SparsePattern:
        raise NotImplementedError

    def per_sample(self, q, k) -> bool:
        """A density target is solved over the whole call (MInference, FlexPrefill, XAttention) and an active dense
        fallback decides from the call's selected density (execute: per head or per layer, averaged over the
        batch): a batch then runs sample by sample, so that each gets its own knob and decision. A fixed density
        (top-k budget) needs no loop, but one costs nothing but launches."""
        return getattr(self.config, "density", 0) > 0 or self.limits(q, k).active

    def prefill(self, q, k, v, scale, layer_idx=0):
        limits = self.limits(q, k)
        predicted = self.predicted_density(q.shape[2], k.shape[2])
        if limits.dense_before(predicted):
            return self.run_dense(q, k, v, scale, layer_idx, predicted, limits)
        profiled = self.profiled_density(layer_idx, k.shape[2], predicted)
        if limits.dense_before(profiled) or self.profiled_slower(limits, k.shape[2]):  # skip the estimate
            return self.run_dense(q, k, v, scale, layer_idx, profiled, limits, reason="profile")
        return self.sparse_prefill(q, k, v, scale, layer_idx, limits, predicted)

    def use_profile(self, profile: Profile | None) -> None:
        """The model's per-layer densities for this method (attention/profiles.py), or None for none."""
        self.profile = profile

    def profiled_slower(self, limits: Limits, k_len: int) -> bool:
        """Whether the model's profile timed this method's whole sparse prefill no faster than dense at this length
        (not asked where no limit applies: dense_above=1, the CPU)."""
        return limits.active and self.profile is not None and self.profile.sparse_slower(k_len)

    PROFILE_MARGIN: ClassVar[float] = 0.15  # profiled this far below the after-limit: no sync to decide

    def profiled_clear(self, layer_idx: int, k_len: int, limits: Limits) -> bool:
        """Whether the model's profile puts this layer so far below the after-limit that reading the selected
        density back (the layer's host sync, which stalls the launch queue: ~0.25 ms a layer on Qwen at 16K) is not
        worth it; the layer then runs sparse. A prompt that selects above the limit there costs speed, not accuracy.
        (A length where the profile timed the sparse path slower never gets here: prefill ran it dense.)"""
        if self.profile is None:
            return False
        profiled = self.profile.density(layer_idx, k_len)
        return profiled is not None and profiled <= limits.after - self.PROFILE_MARGIN

    def profiled_density(self, layer_idx: int, k_len: int, predicted: float | None) -> float | None:
        """The density the profile predicts for this layer, where the host does not know it exactly already."""
        if self.profile is None or (predicted is not None and self.predicted_is_exact):
            return None
        return self.profile.density(layer_idx, k_len)

    def sparse_prefill(self, q, k, v, scale, layer_idx, limits: Limits, predicted: float | None) -> torch.Tensor:
        """The layer once the density known before estimating did not send it dense: build the pattern, then
        execute it (sparse, dense, or split by head). A method with its own estimation path overrides this."""
        pattern = self.build_pattern(q, k, scale, layer_idx)
        density = self.density(pattern, q, k)

        def sparse(qs, ks, vs, heads):
            return run_pattern(qs, ks, vs, pattern if heads is None else pattern_heads(pattern, heads), scale)
        # an exact density known before building was decided above: no sync for it. Heads split only for a plain
        # SparsePattern on our column kernel: a pattern with its own execution (attention/bands.py) and a block
        # pattern decide per layer (where a block pattern still runs on compiled FlexAttention, a head dim without
        # a block-kernel tile config, a new sparse-head count would recompile it, and past the recompile limit it
        # falls back to an unfused path that materialises the scores)
        exact = predicted is not None and self.predicted_is_exact
        return self.execute(q, k, v, scale, layer_idx, density, limits, sparse, decide=not exact,
                            per_head=type(pattern) is SparsePattern and pattern.blocks is None)

    # the dense fallback (attention/fallback.py), the same for every sparse method: a layer runs dense when the
    # density known before estimating reaches limits.before; after estimating, each head whose selected density
    # reaches limits.after runs dense (one host sync reads the per-head densities; none when no limit applies)
    def limits(self, q, k) -> Limits:
        """The fallback limits for this layer's shape and device (the method's dense_above option first)."""
        dense_above = getattr(self.config, "dense_above", -1.0)
        if not triton_enabled(q.device):
            return Limits(NEVER, NEVER, "none:torch-path")  # the exact PyTorch path is for accuracy only
        key = (str(q.device), q.shape[3], q.shape[1] // k.shape[1], k.shape[2], dense_above)
        if key not in self._limits:
            self._limits[key] = limits_for(q.device, q.shape[3], q.shape[1] // k.shape[1], k.shape[2], dense_above)
        return self._limits[key]

    def predicted_density(self, q_len: int, k_len: int) -> float | None:
        """The density the pattern will have, when the host knows it without looking at q, k (fixed patterns,
        fixed budgets); None = only the built pattern tells."""
        return None

    def execute(self, q, k, v, scale, layer_idx, density: torch.Tensor, limits: Limits, run_sparse,
                extra: torch.Tensor | None = None, decide: bool = True, per_head: bool = True) -> torch.Tensor:
        """Run the layer on the selected per-head density [Hq] (a device tensor): sparse, dense, or split by head.
        run_sparse(q, k, v, heads, extra_host) runs the sparse path on all heads (heads None, kv unexpanded) or
        on a subset; extra (float [n], optional) is read in the same sync and handed over as a host list."""
        clear = decide and limits.active and self.profiled_clear(layer_idx, k.shape[2], limits)
        decide = decide and limits.active and not clear
        if not decide and extra is None:  # nothing to decide: no sync
            self.record(layer_idx, density=density, selected_density=density, path="sparse", **limits.record(),
                        **({"decided": "profile"} if clear else {}))
            return run_sparse(q, k, v, None)
        host = torch.cat([density.float().flatten(), extra.float().flatten() if extra is not None
                          else density.new_zeros(0)]).tolist()  # the layer's one host sync
        selected, extra_host = host[:density.numel()], host[density.numel():]
        dense = dense_heads(selected, limits) if decide else [False] * len(selected)
        if not per_head:  # the layer as a whole: dense when its mean selected density reaches the limit
            dense = [sum(selected) / len(selected) >= limits.after] * len(selected) if decide else dense
        sparse = (lambda qs, ks, vs, heads: run_sparse(qs, ks, vs, heads, extra_host)) if extra is not None \
            else run_sparse
        if all(dense):
            return self.run_dense(q, k, v, scale, layer_idx, selected, limits)
        if any(dense) and limits.split_costs_more(selected, dense):  # the split's copies eat what its heads save
            return self.run_dense(q, k, v, scale, layer_idx, selected, limits, reason="split")
        if not any(dense):
            self.record(layer_idx, density=density, selected_density=density, path="sparse", **limits.record())
            return sparse(q, k, v, None)
        executed = [1.0 if d else x for d, x in zip(dense, selected)]
        self.record(layer_idx, density=executed, selected_density=selected, path="mixed", dense_heads=sum(dense),
                    dense_fallback="density", **limits.record())
        return split_heads(q, k, v, scale, dense, sparse, getattr(self.config, "dense_backend", "cudnn"))

    def run_dense(self, q, k, v, scale, layer_idx, selected, limits: Limits, reason: str = "density") -> torch.Tensor:
        """Dense causal attention for this layer, recorded as such: executed density 1, path dense. reason:
        density (the known or selected density reached the limit), profile (the model's profile did) or split
        (some heads reached it, and splitting the layer is priced no faster than running it dense)."""
        extra = {"profile": self.profile.source} if reason == "profile" else {}
        self.record(layer_idx, density=1.0, selected_density=selected, path="dense", dense_fallback=reason,
                    **limits.record(), **extra)
        return dense_attention(q, k, v, scale, getattr(self.config, "dense_backend", "cudnn"))

    def density(self, pattern: SparsePattern, q, k) -> torch.Tensor:
        """Kept share of the causal area per head, a device tensor (no host sync inside the prefill)."""
        return pattern_density(pattern, q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device).mean(0)

    def plan(self, q, k, scale, layer_idx=0):
        return self.build_pattern(q, k, scale, layer_idx)

    def keep_mask(self, q, k, scale, layer_idx=0):
        pattern = self.build_pattern(q, k, scale, layer_idx)
        return pattern.keep_mask(q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
