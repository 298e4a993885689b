"""Whole-model time to first token: dense cuDNN, dense flash and every sparse method (fixed densities and
defaults), on one GPU, in one process, with peak memory, executed density, GPU launches per layer, host syncs
per prefill and the ideal bound (linear-layer time + executed density x dense attention time, both measured).

  PYTHONPATH=. python scripts/bench_ttft.py --model random:llama-3.1-8b --lengths 8k,16k,32k,64k,128k \
      --model random:smollm2-135m --lengths 2k,4k,8k
  PYTHONPATH=. python scripts/bench_ttft.py --model qwen2.5-coder-0.5b --lengths 8k,16k,32k \
      --methods defaults        # issue 23: every registered method at its defaults beside dense

Writes results/bench/ttft_<gpu>.csv (appends rows for new (model, length, method) keys, replaces re-measured
ones) and ttft_<gpu>.png. Linear time = the same prefill with attention replaced by a no-op (`none` rows);
dense attention time = cuDNN TTFT - linear time. Each cell's repeats run in --rounds rounds that interleave the
methods (the first with the warm-up, stats, peak memory and profile); the median of all repeats is the cell's TTFT
and ttft_iqr_pct its spread. Targets are printed, never asserted.

A failing cell is a row with its status and error, and the rest goes on; a CUDA error poisons the process, so
after one the rows so far are written and the command restarts itself with --resume (cells of this commit
already in the csv are skipped; harness/running/worker.py). Rows measured after such a restart lack the ratios
to the baselines the earlier process measured at the same length.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attention import hf  # noqa: E402
from attention.method import AttentionMethod  # noqa: E402
from attention.registry import available_methods  # noqa: E402
from harness.models.loading import load_model  # noqa: E402
from harness.running import worker  # noqa: E402
from harness.options import parse_lengths  # noqa: E402
from harness.running.plan import expand_alternatives  # noqa: E402
from harness.running.runner import prefill  # noqa: E402
from scripts.bench_attention import kernels_and_syncs  # noqa: E402
from tasks.base import build_task  # noqa: E402

# fixed densities with the window at a quarter of the budget (as in bench_attention) and with the default window
METHODS = ("dense:backend=cudnn,dense:backend=flash,sample,sample:density=0.1,sample:density=0.05,r_w=0.0125,"
           "sample:density=0.1,r_w=0.025,sample:density=0.2,r_w=0.05,sample:density=0.5,r_w=0.125,"
           "sample:dense_above=1,streaming:density=0.1")
# --peers: the peers at their published defaults and at equal density (issue 24)
PEER_METHODS = ("minference,flexprefill,xattention,bigbird,minference:density=0.1,flexprefill:density=0.1,"
                "xattention:density=0.1,bigbird:density=0.1")
FIELDS = ["gpu", "model", "length", "method", "status", "error", "ttft_ms", "vs_cudnn", "ideal_ms", "vs_ideal",
          "density", "selected_density", "dense_layers", "dense_heads", "limits", "layers", "launches_per_layer",
          "syncs_per_prefill", "gpu_busy_ms", "profile_layers", "peak_mem_gib",
          "repeats", "rounds", "ttft_iqr_pct", "torch", "triton", "commit"]


class NoAttention(AttentionMethod):
    """Attention replaced by a no-op: what is left of the prefill is the linear layers, norms and embeddings."""

    name = "none"

    def prefill(self, q, k, v, scale, layer_idx=0):
        return torch.zeros_like(q)


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return times


def rotated(items: list, shift: int) -> list:
    """items started `shift` places later (wrapping): the order of an interleaved round."""
    if not items:
        return items
    shift %= len(items)
    return items[shift:] + items[:shift]


def prefill_call(model, ids, method):
    def call():
        method.stats.clear()
        with torch.inference_mode():
            return prefill(model, ids)
    return call


def failed_row(model: str, length: int, spec: str, err: Exception, meta: dict) -> dict:
    """A cell that raised: out of memory, or an error with its one-line message."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        print(f"{model} {length} {spec}: out of memory", flush=True)
        return {"model": model, "length": length, "method": spec, "status": "oom",
                "error": str(err).splitlines()[0], **meta}
    if not isinstance(err, (RuntimeError, ValueError)):
        raise err
    message = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    print(f"{model} {length} {spec}: {message}", flush=True)
    return {"model": model, "length": length, "method": spec, "status": "error", "error": message, **meta}


def poisons(row: dict, args) -> bool:
    """Whether a failed cell's error is a sticky CUDA error: this process can launch nothing more, so it is kept in
    args.poisoned and the caller returns its rows (main writes them and restarts)."""
    if row["status"] == "error" and worker.is_sticky(row["error"]):
        args.poisoned = row["error"]
        return True
    return False


def launches_and_syncs(fn, layers: int) -> tuple[float, int, dict]:
    """(GPU kernel launches per layer, host syncs, device ms per kernel name) of one call of fn."""
    events, syncs = kernels_and_syncs(fn)
    kernels = sum(1 for e in events if "memcpy" not in e.name.lower() and "memset" not in e.name.lower())
    busy = {}  # kernel name -> summed device ms: where the GPU time of one prefill goes
    for e in events:
        busy[e.name] = busy.get(e.name, 0.0) + e.device_time_total / 1e3
    return kernels / layers, syncs, busy


def busy_lines(label: str, wall_ms: float, busy: dict, top: int = 8) -> list[str]:
    """The profile of one prefill as text: GPU busy time against the wall time, then the top kernels."""
    total = sum(busy.values())
    lines = [f"{label}: wall {wall_ms:.1f} ms, GPU busy {total:.1f} ms ({100 * total / wall_ms:.0f}% of wall)"]
    for name, ms in sorted(busy.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {ms:8.2f} ms {100 * ms / max(total, 1e-9):5.1f}%  {name[:110]}")
    return lines


def layer_stats(method) -> dict:
    stats = list(method.stats)
    if not stats:
        return {"density": 1.0, "selected_density": "", "dense_layers": ""}

    def mean(x):
        if x is None:
            return None
        x = x.tolist() if isinstance(x, torch.Tensor) else x
        return statistics.fmean(x) if isinstance(x, list) else float(x)

    executed = [mean(s.get("density", 1.0)) for s in stats]
    selected = [mean(s.get("selected_density")) for s in stats]
    selected = [s for s in selected if s is not None]
    dense = sum(1 for s in stats if s.get("path") == "dense")
    profiled = sum(1 for s in stats if s.get("dense_fallback") == "profile")
    heads = sum(s.get("dense_heads", 0) for s in stats if s.get("path") == "mixed")
    limits = sorted({str(s["limits"]) for s in stats if "limits" in s})
    return {"density": statistics.fmean(executed), "selected_density": statistics.fmean(selected) if selected else "",
            "dense_layers": dense, "profile_layers": profiled, "dense_heads": heads, "limits": " ".join(limits)}


def raw_variants(methods: list) -> list:
    """Each sparse method with a dense_above option, at dense_above=1 (never dense), unless given so already."""
    specs = [m.spec() + (",dense_above=1" if ":" in m.spec() else ":dense_above=1") for m in methods
             if getattr(m.config, "dense_above", None) == -1.0]
    return expand_alternatives(",".join(specs)) if specs else []


def default_methods() -> str:
    """Dense (cuDNN, flash) and every registered method at its defaults (reference-only ones left out)."""
    names = [n for n, cls in sorted(available_methods().items()) if getattr(cls, "sparse", False)
             and n != "oracle-topk"]
    return ",".join(["dense:backend=cudnn", "dense:backend=flash", *names])


def bench_model(name: str, lengths: list[int], methods: list, args, meta: dict) -> list[dict]:
    loaded = load_model(name, "cuda")
    layers = loaded.model.config.num_hidden_layers
    task = build_task("tokens")
    rows = []
    for length in lengths:
        ids = torch.tensor([next(iter(task.samples(loaded.tokenizer, [length]))).input_ids], device="cuda")
        repeats = max(args.repeats, 15) if length < 16384 else (args.repeats if length < args.long
                                                               else max(1, args.repeats - 1))
        warmup = 1 if length < 2 * args.long else 0  # kernels compiled at the shorter lengths already
        rounds = max(1, min(args.rounds, repeats))
        per_round = -(-repeats // rounds)
        results, timings = {}, {}
        for method in [NoAttention(), *methods]:  # round 1: warm-up, stats, peak memory, profile
            spec = method.spec()
            if (name, str(length), spec) in args.done:
                continue
            hf.install(loaded.model, method)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            call = prefill_call(loaded.model, ids, method)
            try:
                times = timed(call, per_round, warmup)
            except Exception as err:  # noqa: BLE001 -- recorded as the cell's row
                rows.append(failed_row(name, length, spec, err, meta))
                torch.cuda.empty_cache()
                if poisons(rows[-1], args):
                    return rows + list(results.values())
                continue
            peak = torch.cuda.max_memory_allocated() / 2**30
            row = {"model": name, "length": length, "method": spec, "status": "ok",
                   "peak_mem_gib": peak, "layers": layers, "repeats": per_round * rounds, "rounds": rounds,
                   **layer_stats(method), **meta}
            if length in args.profile_at:
                row["launches_per_layer"], row["syncs_per_prefill"], busy = launches_and_syncs(call, layers)
                row["gpu_busy_ms"] = sum(busy.values())
                args.profiles += busy_lines(f"{name} {length} {spec}", statistics.median(times), busy)
            results[spec], timings[spec] = row, (method, times)
        # the other rounds interleave the methods, so that a drift of the card or the host (clocks, allocator,
        # another tenant) spreads over all of them instead of landing on whichever ran during it; each round starts
        # one method later, so that no method always follows the same one (v12, Qwen at 8K, a CPU-bound prefill:
        # every method run after dense cuDNN in a fixed order measured 1.04-1.08x it, flash and all-dense ones too)
        for round_index in range(1, rounds):
            for spec, (method, times) in rotated(list(timings.items()), round_index):
                hf.install(loaded.model, method)
                try:
                    times += timed(prefill_call(loaded.model, ids, method), per_round, 0)
                except Exception as err:  # noqa: BLE001 -- the cell fails as a whole
                    rows.append(failed_row(name, length, spec, err, meta))
                    del results[spec], timings[spec]
                    if poisons(rows[-1], args):
                        return rows + list(results.values())
        for spec, (method, times) in timings.items():
            row = results[spec]
            row["ttft_ms"] = statistics.median(times)
            if len(times) >= 4:
                quartiles = statistics.quantiles(times, n=4)
                row["ttft_iqr_pct"] = 100 * (quartiles[2] - quartiles[0]) / row["ttft_ms"]
            print(f"{name:>24} {length:>7} {spec:<28} {row['ttft_ms']:10.1f} ms  density {row['density']:.3f}"
                  f"  dense layers {row['dense_layers']}  launches/layer {row.get('launches_per_layer', '')}"
                  f"  syncs {row.get('syncs_per_prefill', '')}", flush=True)
        linear = results.get("none", {}).get("ttft_ms")
        cudnn = results.get("dense:backend=cudnn", {}).get("ttft_ms")
        for spec, row in results.items():
            if cudnn:
                row["vs_cudnn"] = row["ttft_ms"] / cudnn
            if cudnn and linear and spec != "none":
                row["ideal_ms"] = linear + row["density"] * (cudnn - linear)
                row["vs_ideal"] = row["ttft_ms"] / row["ideal_ms"]
            rows.append(row)
        hf.install(loaded.model, NoAttention())
    del loaded
    torch.cuda.empty_cache()
    return rows


def done_cells(path: Path, commit: str) -> set:
    """(model, length, method) of the rows this commit already wrote to the csv (--resume)."""
    if not path.is_file():
        return set()
    with open(path) as f:
        return {(r["model"], r["length"], r["method"]) for r in csv.DictReader(f) if r.get("commit") == commit}


def write_csv(path: Path, rows: list[dict]) -> None:
    old = []
    if path.is_file():
        with open(path) as f:
            old = list(csv.DictReader(f))
    fresh = {(r["model"], str(r["length"]), r["method"]) for r in rows}
    keep = [r for r in old if (r["model"], r["length"], r["method"]) not in fresh]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in keep + rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})


def raw_base(spec: str) -> str:
    """The spec without the dense_above=1 that --raw adds ('xattention:dense_above=1.0' -> 'xattention')."""
    for tail in (",dense_above=1.0", ":dense_above=1.0"):
        if spec.endswith(tail):
            return spec[:-len(tail)]
    return spec


def plot(path: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(path)
    models = list(dict.fromkeys(frame["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(9.5 * len(models), 5), squeeze=False)
    # one colour per method, the same in every panel; its --raw variant (dense_above=1) dashed in that colour
    bases = list(dict.fromkeys(raw_base(m) for m in frame["method"] if m != "none"))
    colours = dict(zip(bases, plt.get_cmap("tab20" if len(bases) > 10 else "tab10").colors * 2))
    for ax, model in zip(axes[0], models):
        part = frame[(frame["model"] == model) & (frame["method"] != "none")]
        for method, group in part.groupby("method"):
            group = group.sort_values("length")
            raw = raw_base(method) != method
            ax.plot(group["length"], group["vs_cudnn"], marker="o", color=colours[raw_base(method)],
                    linestyle="--" if raw else "-", label=f"{raw_base(method)} (sparse in every layer)" if raw
                    else method)
        ideal = part[part["method"] == "sample:density=0.1"].sort_values("length")
        if len(ideal):
            ax.plot(ideal["length"], ideal["ideal_ms"] / ideal["ttft_ms"] * ideal["vs_cudnn"], "k--",
                    label="ideal bound, sample:density=0.1")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("TTFT / dense cuDNN TTFT (lower is faster)")
        ax.set_title(f"{model} on {frame['gpu'].iloc[0]}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the lines, never over them
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def targets(rows: list[dict]) -> None:
    print("\ntargets (benchmark output, not asserted):")
    for r in rows:
        if "smollm2" in r["model"] and r["length"] in (4096, 8192) and r["method"].startswith("sample"):
            print(f"  {r['model']} {r['length']} {r['method']}: {r.get('vs_cudnn', float('nan')):.3f}x dense (<= 1.05)")
        if "qwen" in r["model"].lower() and r["method"] not in ("none", "dense:backend=cudnn"):
            print(f"  {r['model']} {r['length']} {r['method']}: {r.get('vs_cudnn', float('nan')):.3f}x dense (<= 1.03)")
        if "llama" in r["model"] and r["method"] == "sample":
            print(f"  {r['model']} {r['length']} sample defaults: {r.get('vs_cudnn', float('nan')):.3f}x dense (<= 1.03)")
        if "llama" in r["model"] and r["method"] == "sample:density=0.1" and r["length"] in (32768, 131072):
            need = 2.3 if r["length"] == 131072 else 1.5
            print(f"  {r['model']} {r['length']} sample:density=0.1: {1 / r.get('vs_cudnn', float('nan')):.2f}x "
                  f"faster than cuDNN (>= {need})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model name; repeat with --lengths each")
    parser.add_argument("--lengths", action="append", required=True, help="lengths for the --model before it")
    parser.add_argument("--methods", default=METHODS, help="method specs, or 'defaults': every method at its "
                        "defaults beside dense")
    parser.add_argument("--peers", action="store_true", help="also the peers at defaults and at density 0.1")
    parser.add_argument("--raw", action="store_true", help="also every sparse method given with dense_above=1: its "
                        "sparse path in every layer, no dense fallback (what the fallback saves, and the method's own "
                        "speed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="split each cell's repeats into this many rounds "
                        "that interleave the methods (a drift then spreads over all of them)")
    parser.add_argument("--long", type=int, default=49152, help="from this length on one repeat fewer")
    parser.add_argument("--profile-at", default="8k,32k", help="lengths at which launches and syncs are counted")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    parser.add_argument("--resume", action="store_true", help="skip the cells of this commit already in the csv")
    args = parser.parse_args(argv)
    if len(args.model) != len(args.lengths):
        parser.error("give one --lengths after each --model")
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    args.profile_at = set(parse_lengths(args.profile_at))
    if args.methods == "defaults":
        args.methods = default_methods()
    gpu = torch.cuda.get_device_name().replace("NVIDIA ", "").replace(" ", "_")
    import triton
    commit = os.environ.get("SAMPLEATTN_GIT_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "commit": commit}
    out = Path(args.out)
    path = out / f"ttft_{gpu}.csv"
    args.done, args.poisoned = done_cells(path, commit) if args.resume else set(), None
    args.profiles = []  # per profiled cell: GPU busy time and top kernels (written beside the csv)
    rows = []
    for name, lengths in zip(args.model, args.lengths):
        begin = time.time()
        methods = expand_alternatives(args.methods + ("," + PEER_METHODS if args.peers else ""))
        methods += raw_variants(methods) if args.raw else []
        rows += bench_model(name, parse_lengths(lengths), methods, args, meta)
        print(f"{name}: {time.time() - begin:.0f} s", flush=True)
        if args.poisoned:
            break
    out.mkdir(parents=True, exist_ok=True)
    write_csv(path, rows)
    if args.profiles:
        with open(out / f"ttft_profile_{gpu}.txt", "a") as f:
            f.write(f"# commit {commit}, torch {torch.__version__}, triton {triton.__version__}\n")
            f.write("\n".join(args.profiles) + "\n")
    if args.poisoned:  # a fresh process measures the rest; this cell is in the csv, so it is not retried
        prefix = worker.command_prefix() if argv is None else [sys.executable, str(Path(__file__).resolve())]
        rest = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
        print(f"note: restarting in a fresh process after: {args.poisoned}", file=sys.stderr, flush=True)
        os.execv(sys.executable, [*prefix, *rest, "--resume"])
    plot(path, out / f"ttft_{gpu}.png")
    targets(rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
