"""One model split over two GPUs (accelerate dispatch, harness/models/device_map.py): same results, and its TTFT.

    python scripts/check_split.py --out DIR            (needs 2 visible GPUs)

1. Correctness: a small random Llama (head_dim 128, bf16) runs every method on one GPU, then split over both;
   the first token and the last-position logits must match, and H2O's evicted cache must decode the same
   tokens. The split run is repeated without the current-device guards, to show what they prevent (Triton
   launches on the current device; accelerate never changes it).
2. Timing: random Llama-3.1-8B at --length (default 128K), plain transformers prefill, on one GPU and split
   over two, dense and SampleAttention, peak memory per GPU. Same process, same cards.
Writes DIR/split.jsonl and prints each row.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import hf  # noqa: E402
from harness.models import device_map  # noqa: E402
from harness.running.runner import greedy_decode  # noqa: E402
from harness.running.plan import expand_alternatives  # noqa: E402

METHODS = "dense,sample,sample:pattern=column_slash,bigbird,streaming:window=1024,h2o"
SMALL = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 6, "num_attention_heads": 8,
         "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 32000, "max_position_embeddings": 65536}


def small_model():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device("cuda:0"):
        return AutoModelForCausalLM.from_config(LlamaConfig(**SMALL), dtype=torch.bfloat16,
                                                attn_implementation="sdpa").eval()


def unsplit(model):
    from accelerate.hooks import remove_hook_from_submodules

    device_map.remove_guards(model)
    remove_hook_from_submodules(model)
    model.hf_device_map = None
    return model.to("cuda:0")


@torch.inference_mode()
def outputs(model, method, ids, decode: int = 4):
    hf.install(model, method)
    method.stats.clear()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1].float().cpu()
    hf.compress_cache(out.past_key_values, method)
    first = logits.argmax(-1).to(ids.device)
    tokens = greedy_decode(model, first, out.past_key_values, ids.shape[1], decode, set())
    return logits, tokens


def correctness(length: int, guards: bool = True) -> list[dict]:
    """Single GPU vs split, every method. guards=False leaves out the current-device hooks (run it last, in its
    own process: an illegal memory access ends the CUDA context)."""
    rows = []
    model = small_model()
    ids = torch.randint(0, SMALL["vocab_size"], (1, length), device="cuda:0",
                        generator=torch.Generator("cuda:0").manual_seed(0))
    methods = expand_alternatives(METHODS)
    single = {m.spec(): outputs(model, m, ids) for m in methods}
    model = device_map.dispatch(model, "balanced") if guards else _dispatch_without_guards(model)
    spread = device_map.layers_per_device(model)
    for method in expand_alternatives(METHODS):  # fresh methods: per-layer state starts empty
        row = {"check": "split", "guards": guards, "method": method.spec(), "length": length,
               "layers_per_device": spread}
        try:
            logits, tokens = outputs(model, method, ids)
            ref_logits, ref_tokens = single[method.spec()]
            row.update(status="ok", same_first_token=bool(logits.argmax(-1) == ref_logits.argmax(-1)),
                       max_abs_logit_diff=round(float((logits - ref_logits).abs().max()), 5),
                       same_decode=tokens == ref_tokens)
        except Exception as err:  # recorded, not raised: the unguarded run may fail on Triton paths
            row.update(status="error", error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
            if not guards:
                rows.append(row)
                print(json.dumps(row), flush=True)
                break  # the CUDA context may be gone after an illegal access
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _dispatch_without_guards(model):
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = model._no_split_modules or []
    placement = infer_auto_device_map(model, max_memory=get_balanced_memory(model, no_split_module_classes=no_split),
                                      no_split_module_classes=no_split)
    return dispatch_model(model, device_map=placement)


def timing(length: int, methods: str, repeats: int) -> list[dict]:
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_long import model_config

    config = model_config("random:llama-3.1-8b", None)
    torch.manual_seed(0)
    with torch.device("cuda:0"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    ids = torch.randint(0, config.vocab_size, (1, length), device="cuda:0",
                        generator=torch.Generator("cuda:0").manual_seed(0))
    rows = []
    for split in (False, True):
        if split:
            model = device_map.dispatch(model, "balanced")
        for method in expand_alternatives(methods):
            hf.install(model, method)
            with torch.inference_mode():
                model(input_ids=ids[:, :16384], use_cache=False, logits_to_keep=1)  # warm-up (Triton compiles)
                for d in range(torch.cuda.device_count()):
                    torch.cuda.reset_peak_memory_stats(d)
                times = []
                for _ in range(repeats):
                    for d in range(torch.cuda.device_count()):
                        torch.cuda.synchronize(d)
                    begin = time.perf_counter()
                    model(input_ids=ids, use_cache=True, logits_to_keep=1)
                    for d in range(torch.cuda.device_count()):
                        torch.cuda.synchronize(d)
                    times.append((time.perf_counter() - begin) * 1000)
            row = {"check": "ttft", "model": "random:llama-3.1-8b", "layers": config.num_hidden_layers,
                   "length": length, "method": method.spec(), "gpus": 2 if split else 1,
                   "ttft_ms": round(sorted(times)[len(times) // 2], 1), "ttft_ms_all": [round(t, 1) for t in times],
                   "peak_mem_gib": {f"cuda:{d}": round(torch.cuda.max_memory_allocated(d) / 2**30, 2)
                                    for d in range(torch.cuda.device_count())},
                   "layers_per_device": device_map.layers_per_device(model) if split else {"cuda:0": config.num_hidden_layers}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            method.stats.clear()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--check-length", type=int, default=8192)
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--methods", default="dense,sample:density=0.1")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--unguarded", action="store_true",
                        help="only the split check without the current-device hooks (its own process)")
    args = parser.parse_args(argv)
    if torch.cuda.device_count() < 2:
        print("error: check_split needs 2 visible GPUs", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"gpus": [torch.cuda.get_device_name(d) for d in range(torch.cuda.device_count())],
            "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["python", "scripts/check_split.py", *sys.argv[1:]])}
    rows = [{"meta": meta}] + correctness(args.check_length, guards=not args.unguarded)
    name = "split_unguarded.jsonl" if args.unguarded else "split.jsonl"
    with open(out / name, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    if args.unguarded:
        return 0
    torch.cuda.empty_cache()
    if not args.skip_timing:
        timed = timing(args.length, args.methods, args.repeats)
        with open(out / "split.jsonl", "a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in timed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
