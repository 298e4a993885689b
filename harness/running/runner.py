"""Runs cells: (model, method, sample) -> TTFT, peak memory, greedy answer, task score.

The model is loaded once; methods are switched through the transformers bridge between cells.
"""
import inspect
import statistics
import sys
import traceback

import torch

from attention import hf
from attention.registry import AttentionMethod
from harness.options import InputError
from harness.models import device_map, long_prefill
from harness.models.loaded import LoadedModel
from harness.running.settings import RunOptions
from harness.running.timing import time_call
from tasks.base import Sample, Task


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def cache_argument(model) -> str:
    """transformers >= 5.24 renamed forward's `past_key_values` to `cache` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefill(model, input_ids, suppress=()):
    """Forward over the whole prompt and pick the first token: what TTFT measures. The first token is never one of
    `suppress` (generate()'s min_length=prompt+1, which official LongBench sets where it stops at a newline)."""
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    cache = out.get("cache") if cache_argument(model) == "cache" else out.past_key_values
    logits = out.logits[:, -1]
    if suppress:
        logits[:, list(suppress)] = float("-inf")
    return logits.argmax(dim=-1), cache


def greedy_decode(model, first_token, cache, prompt_len: int, max_new_tokens: int, stop_ids: set[int],
                  stop_after: set[int] = frozenset()) -> list[int]:
    """Greedy decode with explicit positions, so a cache compressed by the method (H2O) keeps true positions.
    stop_ids (EOS) end generation and are dropped; stop_after ids (a sample's stop strings) end it and are kept."""
    tokens = [int(first_token)]
    token = first_token.view(1, 1)
    for step in range(1, max_new_tokens):
        if tokens[-1] in stop_ids or tokens[-1] in stop_after:
            break
        position = torch.tensor([[prompt_len + step - 1]], device=token.device)
        out = model(input_ids=token, position_ids=position, use_cache=True, **{cache_argument(model): cache})
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
        tokens.append(int(token))
    return [t for t in tokens if t not in stop_ids]


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return {i for i in ids if i is not None}


def summarize_stats(stats: list[dict]) -> dict:
    """Mean density over layers and heads, the per-layer list, and how many layers fell back to dense."""
    stats = [{k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in stats]
    densities = [s["density"] for s in stats if "density" in s]
    flat = [float(x) for d in densities for x in (d if isinstance(d, list) else [d])]
    summary = {"layers": stats} if stats else {}
    if flat:
        summary["density"] = statistics.fmean(flat)
    fallbacks = sum(1 for s in stats if "dense_fallback" in s)
    if fallbacks:
        summary["dense_fallback_layers"] = fallbacks
    return summary


def stop_after_ids(tokenizer, sample: Sample) -> set[int]:
    """The last token of each of the sample's stop strings, as official LongBench pred.py."""
    return {tokenizer.encode(text, add_special_tokens=False)[-1] for text in sample.stop}


def time_prefill(loaded: LoadedModel, method: AttentionMethod, sample: Sample, options: RunOptions):
    """The timed batch 1 prefill of one sample: (fields: TTFT, peak memory, prompt tokens; first token, cache).
    method.stats holds the last prefill's per-layer stats."""
    model, tokenizer, device = loaded.model, loaded.tokenizer, options.device
    ids = torch.tensor([sample.input_ids], device=device)
    eos = stop_token_ids(model, tokenizer)
    stops = stop_after_ids(tokenizer, sample)
    suppress = sorted(eos | stops) if stops else ()

    def timed_prefill():
        method.stats.clear()  # keep only the last prefill's per-layer stats
        if options.prefill != "plain":  # memory linear in length; same first token
            return long_prefill.prefill(model, ids, options.prefill_chunk, keep_cache=options.prefill == "chunked")
        return prefill(model, ids, suppress)

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        device_map.reset_peaks(model)  # every GPU of a split model
    ttft_ms, all_ms, (first, cache) = time_call(timed_prefill, device, options.repeats, options.warmup,
                                                sync=lambda: device_map.synchronize(model, device))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
    split = device_map.peaks_gib(model) if device.startswith("cuda") else {}
    if split:  # a split model's peak is per GPU; peak_mem_gib is the largest
        peak = max(split.values())
    extra = long_prefill.cell_fields(options.prefill, options.prefill_chunk)
    if split:  # a split model's peak per GPU
        extra.update(peak_mem_gib_per_device=split, layers_per_device=device_map.layers_per_device(model))
    fields = {**extra, "ttft_ms": ttft_ms, "ttft_ms_all": all_ms, "peak_mem_gib": peak, "prompt_tokens": ids.shape[1]}
    return fields, first, cache


@torch.inference_mode()
def run_cell(loaded: LoadedModel, method: AttentionMethod, sample: Sample, options: RunOptions,
             timing_only: bool = False) -> dict:
    """One cell: the timed prefill, then (unless `timing_only`, or the KV cache was dropped) the greedy answer."""
    model, tokenizer = loaded.model, loaded.tokenizer
    method.stats.clear()
    fields, first, cache = time_prefill(loaded, method, sample, options)
    stats = summarize_stats(list(method.stats))
    if timing_only:
        return {**fields, "timing_only": True, **stats}  # random weights / timing task
    if cache is None:  # KV cache dropped during prefill: nothing to decode after the first token
        return {**fields, "timing_only": True, "first_token": int(first), **stats}
    hf.compress_cache(cache, method)
    eos, stops = stop_token_ids(model, tokenizer), stop_after_ids(tokenizer, sample)
    budget = options.max_new_tokens or sample.max_new_tokens
    new_tokens = greedy_decode(model, first, cache, fields["prompt_tokens"], budget, eos, stops)
    prediction = tokenizer.decode(new_tokens, skip_special_tokens=True)  # raw: each task scores it as its official code
    return {**fields, "new_tokens": len(new_tokens), "prediction": prediction, **stats}


class RunMeasure:
    """The measure of `run` and `sweep` cells (see harness.running.driver): TTFT, memory, greedy answer, task score."""

    file = None  # cells.jsonl
    unit = "cell"

    def fields(self, method, options) -> dict:
        return {"sdpa_backend": method.backend_used(options.device)} if hasattr(method, "backend_used") else {}

    def __call__(self, loaded, method, task, sample, options) -> dict:
        return {"answer": sample.answer, "meta": sample.meta, **execute_cell(loaded, method, sample, options, task),
                "batch_size": 1}  # harness/running/batch.py runs several at once


def failure(method, sample, err: BaseException) -> dict:
    """A failing cell is recorded with its traceback (a bug to fix, not bad input) and the grid goes on."""
    message = f"{type(err).__name__}: {' '.join(str(err).split())}"
    trace = "".join(traceback.format_exception(err))
    print(f"warning: {method.spec()} failed on {sample.id}: {message}\n{trace}", file=sys.stderr)
    return {"status": "error", "error": message, "traceback": trace}


def execute_cell(loaded: LoadedModel, method: AttentionMethod, sample: Sample, options: RunOptions,
                 task: Task) -> dict:
    timing_only = loaded.timing_only or task.timing_only  # random weights, or a task that only times
    try:
        with hf.install(loaded.model, method):  # the model's own attention is back after the cell
            result = run_cell(loaded, method, sample, options, timing_only)
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return {"status": "oom", "error": str(err).splitlines()[0]}
    except (RuntimeError, ValueError) as err:  # one broken cell must not end a long sweep; it is recorded
        return failure(method, sample, err)
    return scored(task, sample, result)


def scored(task: Task, sample: Sample, result: dict) -> dict:
    if not result.get("timing_only"):
        result["scores"] = task.score(sample, result["prediction"])
        result["score"] = result["scores"].get("score")
    result["status"] = "ok"
    return result
