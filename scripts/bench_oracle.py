"""oracle-topk's prefill on the GPU: the sort-based path it had until the row-threshold kernel (kept here as it
was, `sort_prefill`, the method at 5c2e857) against the method as it is (attention.kernels.row_threshold), one
attention layer at Qwen2.5-0.5B's shape (14 q / 2 kv heads, D=64, bf16 inputs) per (length, batch).

Per case: ms per layer call of each path (CUDA events, after one warm-up call each; the median of --repeats), the
speed-up, whether the two outputs are bit-identical, and whether the keep masks are identical on --check-chunks
row chunks spread over the prompt (first and last included; each compares the sort threshold and the kernel's on
the same scores). Also the threshold alone on the prompt's last chunk: sort + gather against row_thresholds.
Random bf16 q/k/v with planted key stripes (bench_attention.planted_inputs), one seed per batch sample.
One JSON line per case to --out, with provenance.

  PYTHONPATH=. python scripts/bench_oracle.py --lengths 8192,16384,32768 --batches 1,10 --out $OUT/oracle.jsonl
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.kernels.row_threshold import row_thresholds  # noqa: E402
from attention.kv_filter import row_budgets, row_topk_keep, sorted_row_thresholds  # noqa: E402
from attention.reference import expand_kv  # noqa: E402
from attention.registry import build_method  # noqa: E402
from attention.scores import causal_scores, row_chunk  # noqa: E402
from harness.running.timing import time_call  # noqa: E402
from scripts.bench_attention import planted_inputs, provenance  # noqa: E402

HEADS, KV_HEADS, DIM = 14, 2, 64  # Qwen2.5-Coder-0.5B


def sort_keep(scores, positions, density):
    """row_topk_keep as it was: a full descending sort of every row (kv_filter keeps that definition)."""
    threshold = sorted_row_thresholds(scores, row_budgets(positions, density))[..., None]
    causal = torch.arange(scores.shape[-1], device=scores.device)[None, :] <= positions[:, None]
    return causal & (scores >= threshold)


def sort_prefill(q, k, v, scale, density):
    """OracleTopK.prefill as it was (full-width keep mask, a second score buffer for the masked scores)."""
    out = torch.empty_like(q)
    values = expand_kv(v.float(), q.shape[1])
    q_len, k_len = q.shape[2], k.shape[2]
    chunk = min(256, row_chunk(q.shape[0], q.shape[1], k_len))
    for start in range(0, q_len, chunk):
        stop = min(start + chunk, q_len)
        q_pos = torch.arange(k_len - q_len + start, k_len - q_len + stop, device=q.device)
        scores = causal_scores(q, k, scale, q_pos, rows=slice(start, stop))
        keep = sort_keep(scores, q_pos, density)
        out[:, :, start:stop] = (torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1) @ values).to(q.dtype)
    return out


def timed_ms(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Median ms of `repeats` calls after one warm-up (compiles the kernel on first use), and the last result."""
    ms, _, result = time_call(fn, "cuda", repeats=repeats, warmup=1)
    return ms, result


def masks_agree(method, q, k, scale, density, check_chunks: int) -> dict:
    """Keep masks on chunks spread over the prompt: the sort's on causal_scores against the method's own (the fused
    kernel's) and against row_topk_keep's (the threshold kernel's) on the same scores; cells that differ."""
    q_len = q.shape[2]
    chunk = min(256, row_chunk(q.shape[0], q.shape[1], q_len))
    starts = list(range(0, q_len, chunk))
    picked = {starts[round(i * (len(starts) - 1) / max(1, check_chunks - 1))] for i in range(check_chunks)}
    fused_differ = threshold_differ = 0
    for start, stop, _, keep in method._chunks(q, k, scale):
        if start not in picked:
            continue
        q_pos = torch.arange(start, stop, device=q.device)
        scores = causal_scores(q, k, scale, q_pos, rows=slice(start, stop))
        want = sort_keep(scores, q_pos, density)
        assert not want[..., stop:].any()
        fused_differ += int((want[..., :stop] != keep).sum())
        threshold_differ += int((want[..., :stop] != row_topk_keep(scores[..., :stop], q_pos, density)).sum())
    return {"chunks_checked": len(picked), "chunks": len(starts), "mask_cells_differ_fused": fused_differ,
            "mask_cells_differ_row_topk_keep": threshold_differ}


def threshold_only(q, k, scale, density, repeats: int) -> dict:
    """The prompt's last row chunk (the widest rows): sort + gather against the bisection kernel."""
    q_len = q.shape[2]
    chunk = min(256, row_chunk(q.shape[0], q.shape[1], q_len))
    q_pos = torch.arange(max(0, q_len - chunk), q_len, device=q.device)
    scores = causal_scores(q, k, scale, q_pos, rows=q_pos)
    budget = row_budgets(q_pos, density)
    rows = scores.reshape(-1, q_len)
    flat_budget = budget.expand(scores.shape[:-1]).reshape(-1)
    lengths = (q_pos + 1).expand(scores.shape[:-1]).reshape(-1)
    sort_ms, want = timed_ms(lambda: sorted_row_thresholds(scores, budget).reshape(-1), repeats)
    kernel_ms, got = timed_ms(lambda: row_thresholds(rows, flat_budget, lengths), repeats)
    return {"chunk_rows": rows.shape[0], "sort_ms": round(sort_ms, 3), "kernel_ms": round(kernel_ms, 3),
            "thresholds_equal": bool(torch.equal(want, got))}


def case(length, batch, density, repeats, old_repeats, check_chunks) -> dict:
    parts = [planted_inputs(length, HEADS, KV_HEADS, DIM, seed=i) for i in range(batch)]
    q, k, v = (torch.cat(x, dim=0) for x in zip(*parts))
    scale = 1 / math.sqrt(DIM)
    method = build_method("oracle-topk", {"density": str(density)})
    new_ms, new_out = timed_ms(lambda: method.prefill(q, k, v, scale), repeats)
    row = {"length": length, "batch": batch, "density": density, "heads": HEADS, "kv_heads": KV_HEADS, "dim": DIM,
           "new_ms": round(new_ms, 2), "gpu": torch.cuda.get_device_name(), **provenance()}
    if old_repeats:
        old_ms, old_out = timed_ms(lambda: sort_prefill(q, k, v, scale, density), old_repeats)
        row.update(old_ms=round(old_ms, 2), speedup=round(old_ms / new_ms, 2),
                   outputs_identical=bool(torch.equal(old_out, new_out)),
                   outputs_max_diff=float((old_out.float() - new_out.float()).abs().max()))  # bf16 ulps if not equal
    row.update(masks_agree(method, q, k, scale, density, check_chunks))
    row["threshold_last_chunk"] = threshold_only(q, k, scale, density, repeats)
    return row


def int_list(text: str) -> list[int] | None:
    """Positive integers separated by commas, or None."""
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        return None
    return values if values and min(values) >= 1 else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="8192,16384,32768")
    ap.add_argument("--batches", default="1,10")
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of the new path (median)")
    ap.add_argument("--old-repeats", type=int, default=1, help="timed calls of the sort path (0: not timed)")
    ap.add_argument("--old-max-cells", type=int, default=10 * 16384 ** 2,
                    help="time the sort path only where batch x length^2 is at most this (it is ~0.6 s a layer at 16K)")
    ap.add_argument("--check-chunks", type=int, default=32, help="row chunks whose keep masks are compared")
    ap.add_argument("--out", help="append one JSON line per case here")
    args = ap.parse_args(argv)
    lengths, batches = int_list(args.lengths), int_list(args.batches)
    if lengths is None or batches is None:
        print("error: --lengths and --batches take positive integers separated by commas, e.g. --lengths 8192,16384",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: bench_oracle times the GPU path; run it on a machine with CUDA", file=sys.stderr)
        return 2
    if not 0 < args.density <= 1 or args.repeats < 1 or args.old_repeats < 0 or args.check_chunks < 1:
        print("error: --density in (0, 1], --repeats >= 1, --old-repeats >= 0, --check-chunks >= 1", file=sys.stderr)
        return 2
    for length in lengths:
        for batch in batches:
            old = args.old_repeats if batch * length ** 2 <= args.old_max_cells else 0
            row = case(length, batch, args.density, args.repeats, old, args.check_chunks)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
