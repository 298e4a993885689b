"""What each CLI subcommand does; validation happens before anything is loaded or written."""
import dataclasses
import os
import shlex
import sys
from pathlib import Path

from attention.registry import ConfigError, available_methods, parse_methods
from harness.models import ModelError, resolve
from tasks.base import TaskError, available_tasks, build_task


class InputError(Exception):
    """Bad input found before any work: one line, exit 2."""


def dispatch(args) -> int:
    handlers = {"run": cmd_run, "methods": cmd_methods, "tasks": cmd_tasks, **EXTRA_HANDLERS}
    try:
        return handlers[args.command](args)
    except (ConfigError, TaskError, ModelError) as err:
        raise InputError(str(err)) from None


def with_dense_baseline(methods):
    """Relative numbers need the dense baseline measured in the same process: put it first if missing."""
    from attention.registry import build_method

    if not any(m.name == "dense" for m in methods):
        print("note: adding the dense baseline (dense) so speedups and relative accuracy exist", file=sys.stderr)
        methods = [build_method("dense"), *methods]
    return sorted(methods, key=lambda m: m.name != "dense")


RESUMABLE = ("model", "methods", "lengths", "task", "device", "samples", "seed", "max_new_tokens", "repeats",
             "warmup")


def adopt_resumed_arguments(args) -> None:
    """--resume RUN_DIR: the run's own stored arguments define the grid, so no cell is added or lost."""
    from harness.store import RunStore

    try:
        stored = RunStore.open(Path(args.resume)).manifest().get("arguments", {})
    except FileNotFoundError as err:
        raise InputError(str(err)) from None
    for name in RESUMABLE:
        if name in stored:
            setattr(args, name, stored[name])


def prepare(args):
    """Validate every input (methods, task, model, device) without loading anything heavy."""
    from harness.runner import RunOptions, resolve_device

    if getattr(args, "resume", None):
        adopt_resumed_arguments(args)
    methods = with_dense_baseline(parse_methods(args.methods))
    task = build_task(args.task)
    resolve(args.model)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise InputError(str(err)) from None
    for flag in ("samples", "repeats", "max_new_tokens"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        raise InputError("--warmup must be 0 or more")
    gpu = device.startswith("cuda")
    options = RunOptions(device=device, repeats=args.repeats or (3 if gpu else 1),
                         warmup=args.warmup if args.warmup is not None else (1 if gpu else 0),
                         max_new_tokens=args.max_new_tokens)
    return methods, task, options


def open_or_create_store(args, manifest: dict):
    from harness.store import RunStore

    if getattr(args, "resume", None):
        store = RunStore.open(Path(args.resume))
        store.repair_torn_tail()
        done = {c["key"] for c in store.cells() if c.get("status") == "ok" or c.get("status") == "too_long"}
        return store, done
    return RunStore.create(Path(args.out), args.name or f"{args.command}-{Path(args.model).stem}", manifest), set()


def cmd_run(args) -> int:
    from harness.models import load_model
    from harness.runner import run_grid
    from harness.store import provenance

    methods, task, options = prepare(args)
    loaded = load_model(args.model, options.device)
    manifest = {"command": " ".join(shlex.quote(a) for a in sys.argv), "subcommand": "run",
                "arguments": {name: getattr(args, name) for name in RESUMABLE},
                "model": {"name": loaded.name, "source": loaded.source, "dtype": loaded.dtype,
                          "max_context": loaded.max_context},
                "methods": [m.spec() for m in methods], "task": args.task, "lengths": args.lengths,
                "samples": args.samples, "seed": args.seed, "options": dataclasses.asdict(options),
                "sdpa_backends": sdpa_backend_flags(), **provenance(options.device)}
    store, done = open_or_create_store(args, manifest)
    print(f"run folder: {store.folder}", file=sys.stderr)
    counts = run_grid(loaded, methods, task, args.lengths, options, store, args.samples, args.seed, done,
                      progress=not args.no_progress)
    print_summary(store)
    print(f"results: {store.folder} ({', '.join(f'{k}={v}' for k, v in counts.items())})")
    return 0


def sdpa_backend_flags() -> dict:
    import torch

    backends = torch.backends.cuda
    return {"flash": backends.flash_sdp_enabled(), "cudnn": backends.cudnn_sdp_enabled(),
            "efficient": backends.mem_efficient_sdp_enabled(), "math": backends.math_sdp_enabled()}


def print_summary(store) -> None:
    import pandas as pd

    cells = [c for c in store.cells() if c.get("status") == "ok"]
    if not cells:
        return
    frame = pd.DataFrame(cells)
    table = frame.groupby(["method_spec", "length"]).agg(ttft_ms=("ttft_ms", "median"), score=("score", "mean"),
                                                         cells=("key", "count"))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))


def cmd_methods(args) -> int:
    for name, cls in sorted(available_methods().items()):
        print(f"{name}: {cls.description}")
        for field in dataclasses.fields(cls.Config):
            default = field.default if field.default is not dataclasses.MISSING else "(required)"
            kind = field.type if isinstance(field.type, str) else field.type.__name__
            print(f"    {field.name} ({kind}) = {default}")
    return 0


def cmd_tasks(args) -> int:
    for name, cls in sorted(available_tasks().items()):
        print(f"{name}: {cls.description}")
    return 0


EXTRA_HANDLERS: dict = {}


def add_extra_subcommands(sub, add_common) -> None:
    """Subcommands defined in their own modules (sweep, report, reproduce, diagnose) register here."""
    import importlib
    for module in ("harness.sweep_cli",):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        EXTRA_HANDLERS.update(mod.add_subcommands(sub, add_common))
