"""Diagnose runs: one model prefill per (method, length, sample), each layer's mask measured as it runs.

A wrapper method is installed through attention.hf: it returns the wrapped method's own prefill output (so
every layer sees exactly what a normal run sees) and measures that layer's q, k with
attention.diagnostics.layer_diagnostics. One JSON line per (model, method, task, length, sample) goes to
diagnostics.jsonl in the run folder, with per-layer, per-head lists; the run folder's manifest carries the
same provenance as runs.
"""
import time

import torch

from attention import diagnostics, hf
from attention.registry import AttentionMethod
from harness.running.runner import failure
from harness.running.store import DIAGNOSTICS_FILE


class Diagnosing(AttentionMethod):
    """Runs `inner`'s prefill unchanged and keeps each layer's diagnostics in self.layers."""

    sparse = False

    def __init__(self, inner: AttentionMethod, rows: int = 64, seed: int = 0):
        super().__init__(inner.config)
        self.inner, self.n_rows, self.seed = inner, rows, seed
        self.name = f"diagnose-{inner.name}"
        self.layers: list[dict] = []

    def prefill(self, q, k, v, scale, layer_idx=0):
        out = self.inner.prefill(q, k, v, scale, layer_idx)
        rows = diagnostics.sample_rows(k.shape[2], self.n_rows, self.seed)
        self.layers.append(diagnostics.layer_diagnostics(self.inner, q, k, scale, layer_idx, rows))
        return out

    def record(self, layer_idx, **values):
        # the bridge reports layers it kept dense (padding mask, sliding-window layers): nothing to measure there
        if "dense_fallback" in values:
            self.layers.append({"layer": layer_idx, "dense_fallback": values["dense_fallback"]})
        self.inner.record(layer_idx, **values)

    def spec(self) -> str:
        return self.inner.spec()


@torch.inference_mode()
def diagnose_sample(loaded, wrapper: Diagnosing, input_ids: list[int], device: str) -> list[dict]:
    """Per-layer diagnostics of one prefill of `input_ids` with the wrapped method."""
    wrapper.inner.stats.clear()  # the wrapped method still records its own per-layer stats
    wrapper.layers = []
    with hf.install(loaded.model, wrapper):
        ids = torch.tensor([input_ids], device=device)
        loaded.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return sorted(wrapper.layers, key=lambda d: d["layer"])


def heads_below(layers: list[dict], alpha: float) -> float | None:
    """Share of measured (layer, head) pairs whose worst sampled row keeps less than alpha of the dense mass."""
    worst = [r for d in layers for r in d.get("recall_min", [])]
    return sum(r < alpha for r in worst) / len(worst) if worst else None


class DiagnoseMeasure:
    """The measure of `diagnose` lines (see harness.running.driver): per-layer, per-head density and recall of one prefill."""

    file = DIAGNOSTICS_FILE
    unit = "prefill"

    def __init__(self, rows: int):
        self.rows = rows
        self.wrappers: dict[int, Diagnosing] = {}  # one per method, so the bridge registers one function each

    def fields(self, method, options) -> dict:
        return {"alpha": diagnostics.method_alpha(method)}

    def __call__(self, loaded, method, task, sample, options) -> dict:
        """One line's measured fields; a failure is recorded (status error / oom) and the grid goes on."""
        start = time.perf_counter()
        try:
            wrapper = self.wrappers.get(id(method))
            if wrapper is None:
                wrapper = self.wrappers[id(method)] = Diagnosing(method, self.rows, options.seed)
            layers = diagnose_sample(loaded, wrapper, sample.input_ids, options.device)
        except torch.cuda.OutOfMemoryError as err:
            torch.cuda.empty_cache()
            return {"status": "oom", "error": str(err).splitlines()[0]}
        except (RuntimeError, ValueError, NotImplementedError) as err:
            return failure(method, sample, err)
        alpha = diagnostics.method_alpha(method)
        return {"status": "ok", "prompt_tokens": len(sample.input_ids), "rows": self.rows,
                "seconds": time.perf_counter() - start,
                **diagnostics.summary(layers), "heads_below_alpha": heads_below(layers, alpha), "layers": layers}
