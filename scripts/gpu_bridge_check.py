"""SampleAttention inside a SmolLM2-shaped model through the transformers bridge on the GPU.

The real weights (98 MB GGUF) cannot travel to the device machine, so this builds the same architecture from its
saved config with random weights: it checks the path (bridge -> method -> Triton kernels), alpha=1 == dense, and
that a sparse setting runs and reports density. Accuracy with real weights is measured on the CPU or in the harness.
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import hf  # noqa: E402
from attention.registry import build_method  # noqa: E402


def main(config_path="build/smollm2_config.json", tokens=8192, device="cuda"):
    cfg = LlamaConfig(**json.loads(Path(config_path).read_text()))
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), device=device)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").to(device).to(torch.bfloat16 if device == "cuda" else torch.float32).eval()
    with torch.no_grad():
        dense = model(ids).logits.float()
    for opts in ({"alpha": "1"}, {}, {"pattern": "column_slash"}):
        method = build_method("sample", opts)
        hf.install(model, method)
        with torch.no_grad():
            got = model(ids).logits.float()
        err = ((got - dense).norm() / dense.norm()).item()
        dens = torch.stack([s["density"].float().mean() for s in method.stats]).mean().item()
        print(f"smollm2-shaped bf16 S={tokens} sample {opts}: rel logits diff vs dense {err:.2e}, "
              f"mean density {dens:.3f}, layers {len(method.stats)}, nan {bool(got.isnan().any())}")


if __name__ == "__main__":
    main()
