"""One model split over several GPUs with accelerate's device_map (`--device-map auto|balanced`).

transformers places the decoder layers on the visible GPUs (accelerate moves activations between them). The
attention bridge needs nothing more: q, k and v arrive on the layer's device and every method computes there.
Two things are added here:
  - a forward pre-hook on each placed module that makes its GPU the *current* CUDA device. accelerate moves
    tensors but never calls cudaSetDevice, and Triton launches on the current device: without the hook a
    Triton kernel of a layer on cuda:1 would run on cuda:0 with pointers into cuda:1's memory.
  - timing and peak memory over every GPU the model spans (a TTFT ends when the last GPU is done).
"""
import torch
from accelerate import dispatch_model, infer_auto_device_map
from accelerate.utils import get_balanced_memory

from harness.options import InputError
from harness.running.settings import DEVICE_MAPS


def check(mode: str | None, device: str, world: int) -> None:
    """Bad combinations, before anything loads (one line each)."""
    if mode is None:
        return
    if mode not in DEVICE_MAPS:
        raise InputError(f"--device-map {mode!r} is not one of: {', '.join(DEVICE_MAPS)}")
    if world > 1:
        raise InputError("--device-map with several ranks: a rank would split its model over GPUs other ranks "
                         "use; run one process (no --gpus / torchrun) or drop --device-map")
    if device.startswith("cuda:"):
        raise InputError(f"--device-map spreads over all visible GPUs; pass --device cuda (not {device}) and pick "
                         "GPUs with CUDA_VISIBLE_DEVICES")


def dispatch(model, mode: str):
    """Split an already built model (e.g. random weights built on one GPU) over the visible GPUs."""
    no_split = getattr(model, "_no_split_modules", None) or []
    memory = get_balanced_memory(model, no_split_module_classes=no_split) if mode == "balanced" else None
    placement = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    model = dispatch_model(model, device_map=placement)
    install_guards(model)
    return model


def placed_devices(model) -> list[torch.device]:
    """The CUDA devices a split model spans ([] for a model on one device)."""
    mapping = getattr(model, "hf_device_map", None) or {}
    found = set()
    for where in mapping.values():
        if isinstance(where, int):
            found.add(torch.device("cuda", where))
        elif isinstance(where, str) and where.startswith("cuda"):
            found.add(torch.device(where))
        elif isinstance(where, torch.device) and where.type == "cuda":
            found.add(where)
    return sorted(found, key=lambda d: d.index or 0)


def install_guards(model) -> int:
    """Make each placed module's GPU current while it runs (Triton launches on the current device).

    Returns how many modules got a guard. The device in force before the model runs is restored after it."""
    mapping = getattr(model, "hf_device_map", None) or {}
    if getattr(model, "_harness_device_guards", False) or len(placed_devices(model)) < 2:
        return 0
    modules = dict(model.named_modules())
    handles = []
    for name, where in mapping.items():
        module = modules.get(name)
        device = torch.device("cuda", where) if isinstance(where, int) else torch.device(str(where))
        if module is None or device.type != "cuda":
            continue
        handles.append(module.register_forward_pre_hook(lambda *_, d=device: torch.cuda.set_device(d)))
    count = len(handles)
    previous: list[int] = []
    handles.append(model.register_forward_pre_hook(lambda *_: previous.append(torch.cuda.current_device())))
    handles.append(model.register_forward_hook(lambda *_: torch.cuda.set_device(previous.pop()) if previous else None))
    model._harness_device_guards = handles
    return count


def remove_guards(model) -> None:
    for handle in getattr(model, "_harness_device_guards", None) or []:
        handle.remove()
    model._harness_device_guards = None


def synchronize(model=None, device: str = "cuda") -> None:
    """Wait for every GPU a split model spans (or the one device)."""
    devices = placed_devices(model) if model is not None else []
    for d in devices or [torch.device(device)]:
        torch.cuda.synchronize(d)


def reset_peaks(model) -> None:
    for d in placed_devices(model):
        torch.cuda.reset_peak_memory_stats(d)


def peaks_gib(model) -> dict[str, float]:
    """Peak allocated memory per GPU the model spans, GiB."""
    return {str(d): round(torch.cuda.max_memory_allocated(d) / 2**30, 3) for d in placed_devices(model)}


def layers_per_device(model) -> dict[str, int]:
    """How many decoder layers each device holds (for the cell record)."""
    counts: dict[str, int] = {}
    for name, where in (getattr(model, "hf_device_map", None) or {}).items():
        if ".layers." in f".{name}.":  # model.layers.<i>
            key = f"cuda:{where}" if isinstance(where, int) else str(where)
            counts[key] = counts.get(key, 0) + 1
    return counts
