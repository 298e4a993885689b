"""Diagnose runs: one model prefill per (method, length, sample), each layer's mask measured as it runs.

A wrapper method is installed through attention.hf: it returns the wrapped method's own prefill output (so
every layer sees exactly what a normal run sees) and measures that layer's q, k with
attention.diagnostics.layer_diagnostics. One JSON line per (model, method, task, length, sample) goes to
diagnostics.jsonl in the run folder, with per-layer, per-head lists; the run folder's manifest carries the
same provenance as runs.
"""
import dataclasses
import sys
import time

import torch

from attention import diagnostics, hf
from attention.registry import AttentionMethod

DIAGNOSTICS_FILE = "diagnostics.jsonl"


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


def requested_methods(spec) -> list[AttentionMethod]:
    """The methods asked for (grids a|b expanded), without the dense baseline runs add: dense has recall 1."""
    from harness.sweep import expand_alternatives

    return [m for text in spec.methods for m in expand_alternatives(text)]


def validate(spec):
    """Everything checkable before loading: (methods, tasks, options). Raises ConfigError / ValueError."""
    from harness import sweep

    # validate with dense listed, so the sweep's 'adding the dense baseline' note is not printed for diagnose
    _, tasks, options = sweep.validate(dataclasses.replace(spec, methods=[*spec.methods, "dense"]))
    return requested_methods(spec), tasks, options


def cell_key(model: str, method_spec: str, task: str, sample_id: str) -> str:
    return f"{model}|{method_spec}|{task}|{sample_id}"


@torch.inference_mode()
def diagnose_sample(loaded, method: AttentionMethod, input_ids: list[int], device: str, rows: int, seed: int
                    ) -> list[dict]:
    """Per-layer diagnostics of one prefill of `input_ids` with `method`."""
    method.stats.clear()  # the wrapped method still records its own per-layer stats
    wrapper = getattr(method, "_diagnosing", None)
    if wrapper is None or (wrapper.n_rows, wrapper.seed) != (rows, seed):
        # one wrapper per method, so the bridge registers one attention function per method, not per prefill
        wrapper = method._diagnosing = Diagnosing(method, rows, seed)
    wrapper.layers = []
    hf.install(loaded.model, wrapper)
    ids = torch.tensor([input_ids], device=device)
    loaded.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return sorted(wrapper.layers, key=lambda d: d["layer"])


def heads_below(layers: list[dict], alpha: float) -> float | None:
    """Share of measured (layer, head) pairs whose worst sampled row keeps less than alpha of the dense mass."""
    worst = [r for d in layers for r in d.get("recall_min", [])]
    return sum(r < alpha for r in worst) / len(worst) if worst else None


def run(spec, store, rows: int, done=frozenset(), progress: bool = True) -> dict:
    """Every (model x task x length x sample x method) line not in `done`; counts by status."""
    from tqdm.auto import tqdm

    from harness.models import load_model

    methods, tasks, options = validate(spec)
    counts: dict[str, int] = {}
    total = len(spec.models) * len(spec.lengths) * len(methods) * sum(t.count(spec.samples) for t in tasks)
    with tqdm(total=total, unit="prefill", disable=not progress) as bar:
        for model_name in spec.models:
            loaded = load_model(model_name, options.device)
            for task in tasks:
                for length in spec.lengths:
                    too_long = loaded.max_context and length > loaded.max_context and not options.beyond_context
                    samples = [None] * task.count(spec.samples) if too_long else list(
                        task.samples(loaded.tokenizer, [length], spec.samples, spec.seed))
                    for index, sample in enumerate(samples):
                        sample_id = sample.id if sample else f"{task.name}-{length}-{index}"
                        for method in methods:
                            bar.update(1)
                            key = cell_key(loaded.name, method.spec(), task.name, sample_id)
                            if key in done:
                                counts["resumed"] = counts.get("resumed", 0) + 1
                                continue
                            line = {"key": key, "model": loaded.name, "method": method.name,
                                    "method_spec": method.spec(), "method_config": dataclasses.asdict(method.config),
                                    "alpha": diagnostics.method_alpha(method), "task": task.name,
                                    "sample_id": sample_id, "length": length, "device": options.device}
                            if sample is None:
                                line.update(status="too_long", error=f"length {length} > model context "
                                            f"{loaded.max_context}")
                            else:
                                line.update(measure(loaded, method, sample, options.device, rows, spec.seed))
                            store.append(line, DIAGNOSTICS_FILE)
                            counts[line["status"]] = counts.get(line["status"], 0) + 1
            del loaded
    return counts


def measure(loaded, method, sample, device, rows, seed) -> dict:
    """One line's measured fields; a failure is recorded (status error / oom) and the grid goes on."""
    start = time.perf_counter()
    try:
        layers = diagnose_sample(loaded, method, sample.input_ids, device, rows, seed)
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return {"status": "oom", "error": str(err).splitlines()[0]}
    except (RuntimeError, ValueError, NotImplementedError) as err:
        message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"warning: diagnose {method.spec()} failed on {sample.id}: {message}", file=sys.stderr)
        return {"status": "error", "error": message}
    alpha = diagnostics.method_alpha(method)
    return {"status": "ok", "prompt_tokens": len(sample.input_ids), "rows": rows,
            "seconds": time.perf_counter() - start,
            **diagnostics.summary(layers), "heads_below_alpha": heads_below(layers, alpha), "layers": layers}
