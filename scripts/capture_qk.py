"""Capture real q/k/v of a few layers from a model's prefill (through the bridge) for bench_attention --qk.

  PYTHONPATH=. python scripts/capture_qk.py --model smollm2-135m --tokens 4096 --layers 4,12,20 --out qk.pt
The prompt is this repository's own text (code and docs), tokenized and cut to --tokens.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import hf  # noqa: E402
from attention.methods.dense import DenseAttention  # noqa: E402
from harness.models.loading import load_model  # noqa: E402


class Capture(DenseAttention):
    name = "capture"

    def __init__(self, layers):
        super().__init__()
        self.layers, self.saved = layers, {}

    def prefill(self, q, k, v, scale, layer_idx=0):
        if layer_idx in self.layers:
            self.saved[layer_idx] = {"q": q.bfloat16().cpu(), "k": k.bfloat16().cpu(), "v": v.bfloat16().cpu(),
                                     "scale": scale}
        return super().prefill(q, k, v, scale, layer_idx)


def repo_text(root: Path) -> str:
    files = sorted(root.glob("**/*.py")) + sorted(root.glob("**/*.md"))
    return "\n\n".join(f.read_text(errors="ignore") for f in files if ".venv" not in f.parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--layers", default="4,12,20")
    ap.add_argument("--out", default="qk.pt")
    args = ap.parse_args()
    loaded = load_model(args.model, "cpu")
    ids = loaded.tokenizer(repo_text(Path(__file__).resolve().parents[1]), return_tensors="pt").input_ids
    ids = ids[:, :args.tokens]
    method = Capture({int(x) for x in args.layers.split(",")})
    hf.install(loaded.model, method)
    with torch.no_grad():
        loaded.model(ids)
    torch.save({"model": args.model, "tokens": ids.shape[1], "layers": method.saved}, args.out)
    print(f"saved layers {sorted(method.saved)} at {ids.shape[1]} tokens to {args.out}")


if __name__ == "__main__":
    main()
