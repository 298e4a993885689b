"""Long-prefill TTFT on one GPU: 256K, 512K, 1M tokens, dense baselines and SampleAttention at fixed densities.

    python scripts/bench_long.py --model random:llama-3.1-8b --lengths 256k,512k,1m --layers 2 --out DIR

Random weights (a timing-only model): only the time and memory of the prefill mean anything. The prefill is
harness/models/long_prefill.py (row-wise parts chunked, each layer's KV cache dropped when the layer is done), so
memory grows linearly in length; attention runs through the harness bridge exactly as in a sweep.

--layers N keeps the first N decoder layers (every layer of Llama-3.1-8B costs the same, so speedups of N
layers equal the whole model's up to the embedding and the last-token head; TTFT does not): dense attention
over 32 layers at 1M takes minutes. Every row and the table state the layer count.

Writes DIR/long.jsonl (one row per length x method, with provenance) and DIR/long.md (the table beside the
paper's MLSys TTFT speedups, marked unconfirmed). Speedups are against the dense rows of the same run only.
"""
import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import hf  # noqa: E402
from harness.models import long_prefill  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = "dense:backend=flash,dense:backend=cudnn,sample:density=0.05,sample:density=0.1"
BASELINES = ("dense:backend=flash", "dense:backend=cudnn")

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


def parse_lengths(text: str) -> list[int]:
    from harness.cli import parse_lengths as parse

    return parse(text)


def mean_density(stats: list[dict]) -> float | None:
    from harness.running.runner import summarize_stats

    return summarize_stats(stats).get("density")


def time_prefill(model, ids, chunk: int, repeats: int) -> list[float]:
    from harness.running.timing import time_call

    def once():
        return long_prefill.prefill(model, ids, chunk=chunk, keep_cache=False)

    return time_call(once, str(ids.device), repeats=repeats, warmup=0)[1]


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
        return {**row, "status": "oom", "error": str(err).splitlines()[0]}
    except (RuntimeError, ValueError) as err:
        return {**row, "status": "error", "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    finally:
        del ids
    ttft = sorted(times)[len(times) // 2]
    density = mean_density(list(method.stats))
    method.stats.clear()
    return {**row, "status": "ok", "ttft_ms": round(ttft, 2), "ttft_ms_all": [round(t, 2) for t in times],
            "ms_per_layer": round(ttft / row["layers"], 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "density": None if density is None else round(density, 4)}


def weights_gib(model, full_layers: int) -> dict:
    """Weights held (the layers kept) and what the whole model's weights would take."""
    def size(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    held, per_layer = size(model), size(model.model.layers[0])
    full = held + (full_layers - model.config.num_hidden_layers) * per_layer
    return {"weights_gib": round(held / 2**30, 2), "full_model_weights_gib": round(full / 2**30, 2)}


def check_first_token(model, methods, length: int, chunk: int) -> list[dict]:
    """Plain transformers forward vs the chunked prefill at a length where both fit: same first token?"""
    rows = []
    ids = torch.randint(0, model.config.vocab_size, (1, length), device=model.device,
                        generator=torch.Generator(model.device).manual_seed(1))
    for method in methods:
        hf.install(model, method)
        row = {"check": "first_token", "method": method.spec(), "length": length,
               "layers": model.config.num_hidden_layers}
        try:
            with torch.inference_mode():
                plain = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
                chunked = long_prefill.forward(model, ids, chunk=chunk, keep_cache=False)[0][:, -1].float()
        except (RuntimeError, ValueError) as err:
            rows.append({**row, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            continue
        finally:
            method.stats.clear()
        top2 = plain.topk(2, dim=-1).values[0]
        rows.append({**row, "same_first_token": bool(plain.argmax(-1).item() == chunked.argmax(-1).item()),
                     "max_abs_logit_diff": round(float((plain - chunked).abs().max()), 5),
                     "top1_margin": round(float(top2[0] - top2[1]), 5)})
    return rows


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
            "command": " ".join(["python", "scripts/bench_long.py", *sys.argv[1:]]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def git_commit() -> str:
    from harness.running.store import git_commit as commit

    return commit()


def paper_speedups() -> dict[int, float]:
    """The MLSys version's TTFT speedups vs FlashAttention-2 (A100), from results/paper/ (unconfirmed)."""
    path = REPO / "results" / "paper" / "ttft_speedup.csv"
    if not path.is_file():
        return {}
    with open(path) as handle:
        return {int(r["seq_len"]): float(r["ttft_speedup_vs_fa2"]) for r in csv.DictReader(handle)
                if r["version"] == "mlsys" and r["ttft_speedup_vs_fa2"]}


def speedup(rows: list[dict], row: dict, baseline: str) -> float | None:
    base = next((r for r in rows if r["method"] == baseline and r["length"] == row["length"]
                 and r.get("status") == "ok"), None)
    if base is None or row.get("status") != "ok":
        return None
    return round(base["ttft_ms"] / row["ttft_ms"], 2)


def length_label(tokens: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if tokens >= size and tokens % size == 0:
            return f"{tokens // size}{unit}"
    return str(tokens)


def table(rows: list[dict], meta: dict) -> str:
    paper = paper_speedups()
    cells = [r for r in rows if "check" not in r]
    layers = sorted({r["layers"] for r in cells})
    lines = [f"# Long-prefill TTFT, {meta['model']}, {'/'.join(map(str, layers))} of "
             f"{meta['model_layers']} layers, one {meta['gpu']}",
             "",
             f"Random weights (timing only); chunked prefill (chunk {meta['chunk']}), KV cache dropped per layer; "
             f"median of {meta['repeats']}. TTFT is for the layers run, not the whole model. Peak memory holds "
             f"{meta['weights_gib']} GiB of weights and one layer's activations (the cache is dropped, so activations "
             f"do not grow with layers); the whole model's weights would take {meta['full_model_weights_gib']} GiB. "
             "Speedups are "
             "against the dense rows of this run. Paper: SampleAttention MLSys version, TTFT vs FlashAttention-2 "
             "on an A100 (unconfirmed except 5.29x at 1M; results/paper/).",
             "",
             "| length | method | status | TTFT ms | ms/layer | density | vs flash | vs cuDNN | peak GiB | paper vs FA2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in cells:
        sparse = row["method"].startswith("sample")
        paper_value = paper.get(row["length"]) if sparse else None
        values = [length_label(row["length"]), row["method"], row.get("status"), row.get("ttft_ms", ""),
                  row.get("ms_per_layer", ""), row.get("density") if row.get("density") is not None else "",
                  speedup(cells, row, BASELINES[0]) or "", speedup(cells, row, BASELINES[1]) or "",
                  row.get("peak_mem_gib") or "", f"{paper_value}x (unconfirmed)" if paper_value else ""]
        lines.append("| " + " | ".join(str(v) for v in values) + " |")
    checks = [r for r in rows if "check" in r]
    if checks:
        lines += ["", "First token, plain transformers forward vs chunked prefill "
                  f"({checks[0]['length']} tokens, {checks[0]['layers']} layers):", ""]
        lines += [f"- {c['method']}: " + (f"error {c['error']}" if "error" in c else
                  f"same={c['same_first_token']}, max |logit diff| {c['max_abs_logit_diff']}, "
                  f"top-1 margin {c['top1_margin']}") for c in checks]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:llama-3.1-8b")
    parser.add_argument("--lengths", default="256k,512k,1m")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="method specs; the dense:backend=flash / cudnn rows are the speedup baselines")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers kept (0 = all)")
    parser.add_argument("--chunk", type=int, default=long_prefill.DEFAULT_CHUNK)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup-length", default="16k", help="one untimed prefill per method first (compiles)")
    parser.add_argument("--check-length", default="32k", help="plain vs chunked first token here (0: skip)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (not evidence)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print("error: bench_long times GPU prefills; no CUDA GPU is visible (--device cpu: smoke run)",
              file=sys.stderr)
        return 2
    lengths, methods = parse_lengths(args.lengths), build(args.methods)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_timing_model(args.model, args.layers or None, args.device)
    full_layers = model_config(args.model, None).num_hidden_layers
    meta = {"model": args.model, "layers": model.config.num_hidden_layers, "model_layers": full_layers,
            "chunk": args.chunk, "repeats": args.repeats, **weights_gib(model, full_layers), **provenance(args)}
    print(json.dumps(meta), flush=True)
    rows: list[dict] = []
    check = parse_lengths(args.check_length)[0] if args.check_length not in ("0", "") else 0
    if check:
        rows += check_first_token(model, methods, check, args.chunk)
        print(json.dumps(rows[-len(methods):]), flush=True)
    warm = parse_lengths(args.warmup_length)[0]
    for method in methods:
        run_cell(model, method, warm, args.chunk, repeats=1)
        method.stats.clear()
    with open(out / "long.jsonl", "w") as handle:
        handle.write(json.dumps({"meta": meta}) + "\n")
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for length in lengths:
            for method in methods:
                row = run_cell(model, method, length, args.chunk, args.repeats)
                rows.append(row)
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                print(json.dumps(row), flush=True)
    (out / "long.md").write_text(table(rows, meta))
    print(table(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
