"""Long-prefill TTFT on one GPU: 128K to 1M tokens, dense baselines, SampleAttention at fixed densities, the peers.

    python scripts/bench_long.py --layers 1 --lengths 128k,256k,512k,1m --repeats 3,512k=1,1m=1 --out results/bench

Random weights (a timing-only model): only the time and memory of the prefill mean anything. The prefill is
harness/models/long_prefill.py (row-wise parts chunked, each layer's KV cache dropped when the layer is done), so
memory grows linearly in length; attention runs through the harness bridge exactly as in a sweep.

--layers N keeps the first N decoder layers (every layer of Llama-3.1-8B costs the same, so ms per layer is the
figure to compare; TTFT of the whole model is not measured): dense attention at 1M takes tens of seconds per
layer. Every row states the layer count.

A failed cell never takes the run down. The cells run in a worker process the command starts (--worker); a
CUDA error poisons that process, so the worker records the cell's error and exits, and this command starts a
fresh worker that resumes; a worker that dies outright (or a cell past --cell-timeout, killed) is recorded as
that cell's error the same way. Out-of-memory is recorded and the worker goes on.

Results append to OUT/long_<gpu>.jsonl: a meta line (provenance) per worker, then one row per cell; a cell
already recorded there by the same commit (same model, layers, chunk, length, method) is skipped, so the command
resumes across calls (--retry-errors runs failed cells again; --budget-s stops starting cells after that many seconds).
OUT/long_<gpu>.md is rendered from the jsonl at the end (scripts/long_table.py; it can also render it alone).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import long_table  # noqa: E402  (scripts/long_table.py)

from attention import hf  # noqa: E402
from harness.models import long_prefill  # noqa: E402
from harness.options import InputError, parse_lengths  # noqa: E402
from harness.running import worker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the issue-25 table: dense baselines, SampleAttention with the window a quarter of its budget (r_w = density / 8:
# a window of r_w * S keys covers about 2 r_w of the causal area), StreamingLLM and the peers at their defaults
DEFAULT_METHODS = ("dense:backend=cudnn,dense:backend=flash,"
                   "sample:density=0.05,r_w=0.00625,sample:density=0.1,r_w=0.0125,sample:density=0.2,r_w=0.025,"
                   "streaming,bigbird,h2o,minference,flexprefill,xattention")
BASELINES = long_table.BASELINES
PENDING = ".long_pending.json"  # the cell a worker is running: what a dead worker is charged with

# Llama-3.1-8B's architecture, used only when harness.models.random_weights (random:<preset>) is not in this tree
LLAMA_31_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
               "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}


def model_config(name: str, layers: int | None):
    """The architecture of `random:<preset>`: from harness.models.random_weights when present (the swappable part)."""
    try:
        from harness.models.random_weights import build_config
    except ImportError:
        build_config = None
    if build_config is not None:
        config = build_config(name)
    elif name == "random:llama-3.1-8b":
        from transformers import LlamaConfig

        config = LlamaConfig(**LLAMA_31_8B)
    else:
        raise SystemExit(f"error: {name}: only random:llama-3.1-8b is known without harness/models/random_weights.py")
    if layers:
        config.num_hidden_layers = min(layers, config.num_hidden_layers)
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:config.num_hidden_layers]
    return config


def load_timing_model(name: str, layers: int | None, device: str):
    """Random bf16 weights built directly on the GPU (nothing downloaded, no host copy)."""
    from transformers import AutoModelForCausalLM

    config = model_config(name, layers)
    torch.manual_seed(0)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def build(spec: str):
    from harness.running.plan import expand_alternatives

    return expand_alternatives(spec)


def parse_repeats(text: str) -> tuple[int, dict[int, int]]:
    """'3,1m=1' -> (3, {1048576: 1}): timed prefills per cell, and per-length exceptions."""
    default, per_length = None, {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        key, eq, value = item.partition("=")
        try:
            count = int(value if eq else key)
        except ValueError:
            raise InputError(f"--repeats: {item!r} is not N or LENGTH=N (e.g. 3,1m=1)") from None
        if count < 1:
            raise InputError(f"--repeats: {item!r} must be at least 1")
        if eq:
            per_length[parse_lengths(key)[0]] = count
        else:
            default = count
    return default or 1, per_length


def mean_density(stats: list[dict]) -> float | None:
    from harness.running.runner import summarize_stats

    return summarize_stats(stats).get("density")


def time_prefill(model, ids, chunk: int, repeats: int) -> list[float]:
    from harness.running.timing import time_call

    def once():
        return long_prefill.prefill(model, ids, chunk=chunk, keep_cache=False)

    return time_call(once, str(ids.device), repeats=repeats, warmup=0)[1]


def attention_workspace(spec: str, config, length: int) -> int | None:
    """Bytes a method's attention allocates beyond q, k, v and its output, where known in closed form: dense
    cuDNN / flash expand the kv heads to the query heads (k and v copies); SampleAttention's fused column path
    holds fp32 column scores, the int32 column list and its prefix counts per query head. None: not modelled."""
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if spec.startswith("dense"):
        backend = dict(p.split("=", 1) for p in spec.partition(":")[2].split(",") if "=" in p).get("backend", "auto")
        return 2 * length * heads * head_dim * 2 if backend in ("cudnn", "flash") and heads != kv_heads else 0
    if spec.startswith("sample") and "pattern=" not in spec and "granularity=" not in spec:
        return length * heads * (4 + 4 + 4)
    return None


def memory_bound(model, spec: str, length: int) -> dict:
    """The prefill's stated bound: weights + one layer's activations + kept KV (+ the method's known workspace)."""
    parts = long_prefill.held_bytes(model.config, length, kept_kv_layers=0)  # timing cells drop the cache
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    workspace = attention_workspace(spec, model.config, length)
    total = weights + sum(parts.values()) + (workspace or 0)
    gib = {k: round(v / 2**30, 2) for k, v in parts.items()}
    return {"bound_gib": round(total / 2**30, 2), "bound_parts_gib": {"weights": round(weights / 2**30, 2), **gib,
            "workspace": None if workspace is None else round(workspace / 2**30, 2)}}


def cell_key(meta: dict, method: str, length: int) -> str:
    return f"{meta['model']}|{meta['layers']}|{meta['chunk']}|{length}|{method}"


def run_cell(model, method, length: int, chunk: int, repeats: int) -> dict:
    row = {"method": method.spec(), "length": length, "layers": model.config.num_hidden_layers,
           "chunk": chunk, "kv_cache": "dropped", "repeats": repeats}
    device = model.device
    ids = torch.randint(0, model.config.vocab_size, (1, length), device=device,
                        generator=torch.Generator(device).manual_seed(length))
    hf.install(model, method)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        times = time_prefill(model, ids, chunk, repeats)
    except torch.cuda.OutOfMemoryError as err:
        method.stats.clear()
        torch.cuda.empty_cache()
        return {**row, "status": "oom", "error": str(err).splitlines()[0]}
    except (RuntimeError, ValueError) as err:  # a CUDA error among them: the caller checks worker.is_sticky
        method.stats.clear()
        return {**row, "status": "error", "error": f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"}
    finally:
        del ids
    ttft = sorted(times)[len(times) // 2]
    density = mean_density(list(method.stats))
    method.stats.clear()
    peak = torch.cuda.max_memory_allocated() if cuda else None
    bound = memory_bound(model, row["method"], length)
    return {**row, "status": "ok", "ttft_ms": round(ttft, 2), "ttft_ms_all": [round(t, 2) for t in times],
            "ms_per_layer": round(ttft / row["layers"], 2),
            "peak_mem_gib": round(peak / 2**30, 2) if cuda else None, **bound,
            "peak_over_bound": round(peak / 2**30 / bound["bound_gib"], 3) if cuda else None,
            "density": None if density is None else round(density, 4)}


def weights_gib(model, full_layers: int) -> dict:
    """Weights held (the layers kept) and what the whole model's weights would take."""
    def size(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    held, per_layer = size(model), size(model.model.layers[0])
    full = held + (full_layers - model.config.num_hidden_layers) * per_layer
    return {"weights_gib": round(held / 2**30, 2), "full_model_weights_gib": round(full / 2**30, 2)}


def check_first_token(model, method, length: int, chunk: int) -> dict:
    """Plain transformers forward vs the chunked prefill at a length where both fit: same first token?"""
    ids = torch.randint(0, model.config.vocab_size, (1, length), device=model.device,
                        generator=torch.Generator(model.device).manual_seed(1))
    hf.install(model, method)
    row = {"check": "first_token", "method": method.spec(), "length": length,
           "layers": model.config.num_hidden_layers, "chunk": chunk}
    try:
        with torch.inference_mode():
            plain = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            chunked = long_prefill.forward(model, ids, chunk=chunk, keep_cache=False)[0][:, -1].float()
    except (RuntimeError, ValueError) as err:
        return {**row, "status": "error", "error": f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"}
    finally:
        method.stats.clear()
    top2 = plain.topk(2, dim=-1).values[0]
    return {**row, "status": "ok", "same_first_token": bool(plain.argmax(-1).item() == chunked.argmax(-1).item()),
            "max_abs_logit_diff": round(float((plain - chunked).abs().max()), 5),
            "top1_margin": round(float(top2[0] - top2[1]), 5)}


def provenance(args) -> dict:
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    if args.device == "cpu":
        card = {"gpu": "CPU (timings are not evidence)"}
    else:
        props = torch.cuda.get_device_properties(0)
        card = {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)}
    return {**card, "cuda": torch.version.cuda,
            "torch": torch.__version__, "triton": version("triton"), "transformers": version("transformers"),
            "python": platform.python_version(), "commit": os.environ.get("SAMPLEATTN_GIT_COMMIT") or git_commit(),
            "command": " ".join(["python", "scripts/bench_long.py",
                                 *[a for a in sys.argv[1:] if a != "--worker"]]),
            "restarts": worker.restarts(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def git_commit() -> str:
    from harness.running.store import git_commit as commit

    return commit()


def gpu_slug(device: str) -> str:
    """'NVIDIA H200' -> 'H200' (the results files' suffix); 'cpu' on the CPU."""
    if device == "cpu":
        return "cpu"
    return torch.cuda.get_device_properties(0).name.replace("NVIDIA ", "").replace(" ", "_")


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed worker
            continue
    return rows


def append(path: Path, row: dict) -> None:
    text = path.read_text() if path.is_file() else ""
    with open(path, "a") as handle:
        if text and not text.endswith("\n"):
            handle.write("\n")  # after a torn line
        handle.write(json.dumps(row) + "\n")


def run_worker(args) -> int:
    """Load the model once, then every cell not yet in the jsonl; exit RESTART_EXIT after a poisoning error."""
    lengths, methods = parse_lengths(args.lengths), build(args.methods)
    repeats, per_length = parse_repeats(args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"long_{gpu_slug(args.device)}.jsonl"
    model = load_timing_model(args.model, args.layers or None, args.device)
    full = model_config(args.model, None)
    full_layers = full.num_hidden_layers
    meta = {"model": args.model, "layers": model.config.num_hidden_layers, "model_layers": full_layers,
            "chunk": args.chunk, **weights_gib(model, full_layers),
            "kv_bytes_per_token": long_prefill.held_bytes(full, 1, kept_kv_layers=full_layers)["kept_kv"],
            "layer_activation_bytes_per_token": sum(long_prefill.held_bytes(full, 1).values()),
            **provenance(args)}
    rows = read_rows(path)  # this commit's cells are done; other commits' rows stay as history, not reused
    recorded = {cell_key(r, r["method"], r["length"]) + ("|check" if "check" in r else "")
                for r in rows if "method" in r and r.get("commit") == meta["commit"]
                and (not args.retry_errors or r.get("status") in ("ok", None))}
    rows_meta = {"model": args.model, "layers": meta["layers"], "chunk": args.chunk}
    check = parse_lengths(args.check_length)[0] if args.check_length not in ("0", "") else 0
    todo = [(length, m) for length in lengths for m in methods
            if cell_key(rows_meta, m.spec(), length) not in recorded]
    checks = [m for m in methods if check and cell_key(rows_meta, m.spec(), check) + "|check" not in recorded]
    print(json.dumps(meta), flush=True)
    append(path, {"meta": meta})
    deadline = float(os.environ.get("BENCH_LONG_DEADLINE", "inf"))
    stamp = {"gpu": meta["gpu"], "commit": meta["commit"], "meta_created": meta["created"], "model": args.model}

    def record(row):
        append(path, {**row, **stamp, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        print(json.dumps(row), flush=True)
        (out / PENDING).unlink(missing_ok=True)
        if row.get("status") == "error" and worker.is_sticky(row.get("error")):
            print(f"note: {row['method']} at {row['length']} poisoned the worker; a fresh one resumes",
                  file=sys.stderr, flush=True)
            sys.exit(worker.RESTART_EXIT)

    def start(method, length, what="cell"):
        (out / PENDING).write_text(json.dumps({"file": str(path), "commit": meta["commit"], "row": {
            "model": args.model, "method": method.spec(), "length": length, "layers": meta["layers"],
            "chunk": args.chunk,
            **({"check": "first_token"} if what == "check" else {})}, "started": time.time()}))

    for method in checks:
        start(method, check, "check")
        record(check_first_token(model, method, check, args.chunk))
    warm = parse_lengths(args.warmup_length)[0]
    for method in {m.spec(): m for _, m in todo}.values():  # one untimed prefill per method first (compiles)
        first = next(length for length, m in todo if m is method)
        start(method, first)  # a warm-up that kills the worker is charged to the method's first cell
        row = run_cell(model, method, warm, args.chunk, repeats=1)
        if row["status"] == "error" and worker.is_sticky(row["error"]):
            record({**row, "length": first, "error": f"warm-up at {warm} tokens: {row['error']}"})
        (out / PENDING).unlink(missing_ok=True)
    for done, (length, method) in enumerate(todo):
        if time.time() > deadline:
            print(f"note: --budget-s reached; {len(todo) - done} cells left for the next call", file=sys.stderr)
            break
        start(method, length)
        record(run_cell(model, method, length, args.chunk, per_length.get(length, repeats)))
    long_table.write(path)
    return 0


def supervise(args, argv: list[str]) -> int:
    """Start workers until one finishes; charge a dead or stuck worker's cell with the error, then resume."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    if args.budget_s:
        env["BENCH_LONG_DEADLINE"] = str(time.time() + args.budget_s)
    # the same way this command was started (python -c bootstraps included), unless main() was called directly
    prefix = worker.command_prefix() if argv == sys.argv[1:] else [sys.executable, str(Path(__file__).resolve())]
    command = [*prefix, *argv, "--worker"]
    for attempt in range(args.max_restarts + 1):
        (out / PENDING).unlink(missing_ok=True)
        proc = subprocess.Popen(command, env=env)
        timed_out = False
        while proc.poll() is None:
            time.sleep(1.0)
            pending = read_pending(out)
            if pending and args.cell_timeout and time.time() - pending["started"] > args.cell_timeout:
                proc.kill()
                proc.wait()
                timed_out = True
        code = proc.returncode
        pending = read_pending(out)
        if code == 0 and not timed_out:
            return 0
        if code == worker.RESTART_EXIT and not pending:
            continue  # the worker recorded the poisoning cell itself
        if pending is None:
            print(f"error: the bench_long worker exited with status {code} before or after its cells",
                  file=sys.stderr)
            return code or 1
        why = (f"cell exceeded --cell-timeout {args.cell_timeout} s; worker killed" if timed_out
               else f"worker died with status {code} during this cell")
        row = {**pending["row"], "commit": pending["commit"], "status": "timeout" if timed_out else "error",
               "error": why,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        append(Path(pending["file"]), row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"error: {args.max_restarts} worker restarts; stopping (run the command again to resume)", file=sys.stderr)
    return 1


def read_pending(out: Path) -> dict | None:
    try:
        return json.loads((out / PENDING).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:llama-3.1-8b")
    parser.add_argument("--lengths", default="128k,256k,512k,1m")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="method specs; the dense:backend=flash / cudnn rows are the speedup baselines")
    parser.add_argument("--layers", type=int, default=1, help="decoder layers kept (0 = all)")
    parser.add_argument("--chunk", type=int, default=long_prefill.DEFAULT_CHUNK)
    parser.add_argument("--repeats", default="3,512k=1,1m=1", help="timed prefills per cell, LENGTH=N per length")
    parser.add_argument("--warmup-length", default="16k", help="one untimed prefill per method first (compiles)")
    parser.add_argument("--check-length", default="32k", help="plain vs chunked first token here (0: skip)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (not evidence)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    parser.add_argument("--retry-errors", action="store_true", help="run cells recorded as failed again")
    parser.add_argument("--budget-s", type=float, default=0, help="start no cell after this many seconds (0: none)")
    parser.add_argument("--cell-timeout", type=float, default=300, help="kill a cell running longer (0: none)")
    parser.add_argument("--max-restarts", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        parse_lengths(args.lengths), parse_lengths(args.warmup_length), parse_repeats(args.repeats), build(args.methods)
        if args.check_length not in ("0", ""):
            parse_lengths(args.check_length)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.device != "cpu" and not torch.cuda.is_available():
        print("error: bench_long times GPU prefills; no CUDA GPU is visible (--device cpu: smoke run)",
              file=sys.stderr)
        return 2
    if args.worker:
        return run_worker(args)
    return supervise(args, argv)


if __name__ == "__main__":
    sys.exit(main())
