"""Timing-only models: an architecture from a preset or a local config.json, random bf16 weights built on the
device, nothing downloaded. `--model random:llama-3.1-8b` or `--model random:path/to/config.json`.

Weights are random, so answers mean nothing: every cell is timing_only (no decode, no score) and only tasks that
declare `timing_only = True` (the `tokens` task) may run on such a model.
"""
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from harness.models.loaded import LoadedModel, ModelError, default_dtype

PREFIX = "random:"

# architecture fields of the public config.json files (no weights, no tokenizer)
PRESETS: dict[str, dict] = {
    "llama-3.1-8b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "tie_word_embeddings": False, "hidden_act": "silu",
    },
    "qwen2.5-7b": {
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "use_sliding_window": False, "tie_word_embeddings": False, "hidden_act": "silu",
    },
    "smollm2-135m": {  # SmolLM2-135M's architecture (the embedded default model), for timing at any length
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": True, "hidden_act": "silu",
    },
    "mistral-7b": {
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32768,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "hidden_act": "silu",
    },
}


def is_random(name: str) -> bool:
    return name.startswith(PREFIX)


def config_dict(name: str) -> dict:
    """The config fields of random:<preset or config.json>; a one-line ModelError when neither."""
    target = name[len(PREFIX):]
    if target in PRESETS:
        return dict(PRESETS[target])
    path = Path(target).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"{name}: not a preset ({', '.join(PRESETS)}) nor an existing config.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{name}: cannot read {path} as JSON ({err})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelError(f"{name}: {path} has no model_type; pass a transformers config.json")
    return data


def build_config(name: str):
    data = config_dict(name)
    model_type = data.pop("model_type")
    for key in ("architectures", "transformers_version", "torch_dtype", "dtype", "quantization_config"):
        data.pop(key, None)
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError) as err:
        raise ModelError(f"{name}: transformers cannot build model_type {model_type!r} ({err})") from None


class RandomTokenizer:
    """Stands in for a tokenizer: a vocabulary size and no text. Timing tasks draw random token ids."""

    chat_template = None
    bos_token_id = None
    eos_token_id = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def decode(self, ids, **kwargs) -> str:
        return ""


def load_random(name: str, device: str = "cpu", dtype=None):
    """Build the architecture with random weights directly on `device` (no host copy of 16 GB)."""
    config = build_config(name)
    dtype = dtype or default_dtype(device)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    return LoadedModel(name=name, model=model, tokenizer=RandomTokenizer(config.vocab_size), source=name,
                       dtype=str(dtype).removeprefix("torch."),
                       max_context=getattr(config, "max_position_embeddings", None), timing_only=True)


def check_tasks(model: str, tasks) -> None:
    """Random weights time prefills only: refuse a task that scores answers, in one line."""
    if not is_random(model):
        return
    for task in tasks:
        if not task.timing_only:
            raise ModelError(f"{model} has random weights and cannot be scored; task {task.name!r} measures "
                             "accuracy: use --task tokens (timing only)")
