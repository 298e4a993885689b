"""Accuracy cells in batches (`--batch-size N`): N samples of one cell group (same model, task, length, method;
consecutive samples) through one prefill and one batched greedy decode. Prompts are not padded: the group's
prompts of each token length form one batch (a prompt alone at its length runs at batch 1).

TTFT is still timed at batch 1 on the group's first sample (as runner.run_cell times every cell), so timings
stay comparable with batch 1 runs; every cell of the group records that time and which sample it came from.
Each row decodes as it would alone: a row that reached its stop token or its budget keeps its tokens while the
others go on (its later tokens are computed and dropped). The methods run a batch per sample where they would
otherwise share a choice over the rows (attention.method.AttentionMethod.batched_prefill).
"""
import sys

import torch

from attention import hf
from attention.method import AttentionMethod
from harness.models.loaded import LoadedModel
from harness.running.runner import (RunMeasure, cache_argument, failure, run_cell, scored, stop_after_ids,
                                    stop_token_ids, summarize_stats, time_prefill)
from harness.running.settings import RunOptions
from tasks.base import Sample, Task


def unbatchable(options: RunOptions, timing_only: bool) -> str | None:
    """Why no samples of this run share a prefill (they then run at batch 1), or None."""
    if options.prefill != "plain":
        return f"--prefill {options.prefill} runs one prompt at a time: batch 1"
    if timing_only:
        return "the cells are timing only (nothing to decode): batch 1"
    return None


def equal_lengths(samples: list[Sample]) -> list[list[int]]:
    """Indices of the samples by prompt length, in order of first appearance: each list can share one prefill
    (prompts are not padded; a prompt whose length no other shares runs alone)."""
    by_length: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        by_length.setdefault(len(sample.input_ids), []).append(index)
    return list(by_length.values())


def batch_prefill(model, input_ids, suppress: list):
    """runner.prefill for a batch of equal-length prompts: each row's first token never one of its `suppress`."""
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    cache = out.get("cache") if cache_argument(model) == "cache" else out.past_key_values
    logits = out.logits[:, -1]
    for row, ids in enumerate(suppress):
        if ids:
            logits[row, list(ids)] = float("-inf")
    return logits.argmax(dim=-1), cache


def batch_greedy_decode(model, first_tokens, cache, prompt_len: int, budgets: list[int], stop_ids: set[int],
                        stop_after: list[set[int]]) -> list[list[int]]:
    """runner.greedy_decode row by row in one batch: a row ends at its budget, an EOS (dropped) or one of its
    stop_after ids (kept), exactly where it would end alone; the batch ends when every row has."""
    rows = len(budgets)
    tokens = [[int(t)] for t in first_tokens.tolist()]
    token = first_tokens.view(rows, 1)
    for step in range(1, max(budgets)):
        live = [step < budgets[r] and tokens[r][-1] not in stop_ids and tokens[r][-1] not in stop_after[r]
                for r in range(rows)]
        if not any(live):
            break
        position = torch.full((rows, 1), prompt_len + step - 1, device=token.device)
        out = model(input_ids=token, position_ids=position, use_cache=True, **{cache_argument(model): cache})
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
        for r, value in enumerate(token.view(-1).tolist()):
            if live[r]:
                tokens[r].append(value)
    return [[t for t in row if t not in stop_ids] for row in tokens]


@torch.inference_mode()
def run_group(loaded: LoadedModel, method: AttentionMethod, samples: list[Sample], options: RunOptions) -> list[dict]:
    """One result per sample, as runner.run_cell gives it, from one batched prefill and decode; TTFT and peak
    memory from the batch 1 prefill of the first sample. Per-layer stats (density): see row_stats."""
    model, tokenizer, device = loaded.model, loaded.tokenizer, options.device
    method.stats.clear()
    timed, _, _ = time_prefill(loaded, method, samples[0], options)  # TTFT at batch 1, as every cell; cache freed
    ids = torch.tensor([s.input_ids for s in samples], device=device)
    eos = stop_token_ids(model, tokenizer)
    stops = [stop_after_ids(tokenizer, s) for s in samples]
    method.stats.clear()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    first, cache = batch_prefill(model, ids, [sorted(eos | s) if s else () for s in stops])
    batch_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
    stats = row_stats(method.stats, len(samples))
    hf.compress_cache(cache, method)
    budgets = [options.max_new_tokens or s.max_new_tokens for s in samples]
    rows = batch_greedy_decode(model, first, cache, ids.shape[1], budgets, eos, stops)
    return [{**timed, "ttft_sample": samples[0].id, "batch_size": len(samples), "batch_peak_mem_gib": batch_peak,
             "new_tokens": len(new_tokens), "prediction": tokenizer.decode(new_tokens, skip_special_tokens=True),
             **own} for new_tokens, own in zip(rows, stats)]


def row_stats(stats: list[dict], rows: int) -> list[dict]:
    """Each row's summarized per-layer stats: entries a method recorded for one sample (`row`, where it ran the
    batch sample by sample) go to that sample; the others (a method that ran the whole batch: densities averaged
    over its samples) to every sample, and the cell says so with stats_scope batch."""
    own: list[list[dict]] = [[] for _ in range(rows)]
    shared = []
    for entry in stats:
        if "row" in entry:
            own[entry["row"]].append({k: v for k, v in entry.items() if k != "row"})
        else:
            shared.append(entry)
    scope = "batch" if any("density" in entry for entry in shared) else "sample"
    return [{**summarize_stats(sorted(shared + mine, key=lambda e: e["layer"])), "stats_scope": scope}
            for mine in own]


class BatchMeasure(RunMeasure):
    """RunMeasure with `group`: the driver hands it up to --batch-size samples of one cell group at once."""

    def __init__(self):
        self.noted: set[tuple[str, str]] = set()  # (task, why) said about smaller batches, once per run

    def group(self, loaded: LoadedModel, method: AttentionMethod, task: Task, samples: list[Sample],
              options: RunOptions) -> list[dict]:
        timing_only = loaded.timing_only or task.timing_only  # random weights, or a task that only times
        reason = unbatchable(options, timing_only)
        parts = [[i] for i in range(len(samples))] if reason else equal_lengths(samples)
        if len(parts) > 1 and not reason:
            reason = "prompts differ in token length (not padded): each length runs as its own batch"
        self.note(task, reason)
        try:
            results: list = [None] * len(samples)
            with hf.install(loaded.model, method):  # the model's own attention is back after the group
                for part in parts:
                    if len(part) == 1:
                        batch = [{**run_cell(loaded, method, samples[part[0]], options, timing_only), "batch_size": 1}]
                    else:
                        batch = run_group(loaded, method, [samples[i] for i in part], options)
                    for i, result in zip(part, batch):
                        results[i] = result
        except torch.cuda.OutOfMemoryError as err:
            results = [{"status": "oom", "error": str(err).splitlines()[0], "batch_size": len(samples)}
                       for _ in samples]
        except (RuntimeError, ValueError) as err:  # recorded in each cell of the group; the grid goes on
            results = [{**failure(method, samples[0], err), "batch_size": len(samples)} for _ in samples]
        if results[0].get("status") == "oom":
            torch.cuda.empty_cache()  # outside the except block: its traceback no longer holds the batch's tensors
            if len(samples) > 1:
                self.note(task, "a batch ran out of GPU memory: its samples ran again one at a time")
                return [cell for s in samples for cell in self.group(loaded, method, task, [s], options)]
        return [{"answer": s.answer, "meta": s.meta, **(scored(task, s, r) if "status" not in r else r)}
                for s, r in zip(samples, results)]

    def note(self, task: Task, reason: str | None) -> None:
        """Say once per run (and task) why cells ran in smaller batches than asked."""
        if reason and (task.name, reason) not in self.noted:
            self.noted.add((task.name, reason))
            print(f"note: --batch-size: {task.name}: {reason}", file=sys.stderr)
