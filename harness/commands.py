"""What each CLI subcommand does; every input is validated before anything is loaded or written."""
import dataclasses
import shlex
import sys
from pathlib import Path

from attention.registry import ConfigError, available_methods
from harness.models import ModelError
from tasks.base import TaskError, available_tasks


class InputError(Exception):
    """Bad input found before any work: one line, exit 2."""


def dispatch(args) -> int:
    handlers = {"run": cmd_run, "sweep": cmd_sweep, "methods": cmd_methods, "tasks": cmd_tasks, **EXTRA_HANDLERS}
    try:
        if getattr(args, "gpus", None):  # hook(scale): --gpus N starts torchrun, whose ranks run the command
            from harness import distributed

            if not distributed.current().active:
                return distributed.launch(args.gpus, args.argv, args.device)
        return handlers[args.command](args)
    except (ConfigError, TaskError, ModelError, ValueError) as err:
        raise InputError(str(err).splitlines()[0]) from None


def spec_from_flags(args, models: list[str], tasks: list[str]):
    from harness.sweep import SweepSpec

    return SweepSpec(models=models, methods=[args.methods], tasks=tasks, lengths=args.lengths,
                     samples=args.samples, seed=args.seed, device=args.device, repeats=args.repeats,
                     warmup=args.warmup, max_new_tokens=args.max_new_tokens, beyond_context=args.beyond_context,
                     device_map=getattr(args, "device_map", None), prefill=getattr(args, "prefill", "plain"),
                     prefill_chunk=getattr(args, "prefill_chunk", 16384))  # hook(scale)


def cmd_run(args) -> int:
    spec = None if args.resume else spec_from_flags(args, [args.model], [args.task])
    execute_sweep(args, spec, default_name=f"run-{Path(args.model).stem}")
    return 0


def cmd_sweep(args) -> int:
    from harness.sweep import SweepSpec, load_spec_file

    spec = None
    if not args.resume:
        if args.spec:
            spec = SweepSpec.from_dict(load_spec_file(args.spec))
        else:
            spec = spec_from_flags(args, [m for m in args.models.split(",") if m], args.task or ["passkey"])
    name = Path(args.spec).stem if getattr(args, "spec", None) else "sweep"
    execute_sweep(args, spec, default_name=name)
    return 0


def execute_sweep(args, spec, default_name: str) -> int:
    """Validate, create (or reopen with --resume) the run folder, run every missing cell, summarise.

    Under torchrun every rank runs this; rank 0 creates the folder and reads the done set, each rank runs its
    share of the missing cells into its own shard (harness/distributed.py). Returns the run folder."""
    from harness import distributed, sweep
    from harness.store import RunStore

    info = distributed.init()  # hook(scale): one process, or one rank of torchrun's
    store, done = None, set()
    if args.resume:
        try:
            store = RunStore.open(Path(args.resume))
        except FileNotFoundError as err:
            raise InputError(str(err)) from None
        spec = sweep.SweepSpec(**store.manifest()["spec"])
    methods, tasks, options = sweep.validate(spec)
    layout = distributed.layout(info, options.device)  # hook(scale): world size, each rank's device
    if store is None:
        if info.leader:
            manifest = run_manifest(args.command, spec, methods, tasks, options, distributed=layout)
            store = RunStore.create(Path(args.out), args.name or default_name, manifest)
        folder = distributed.broadcast(str(store.folder) if info.leader else None, info)
        store = store or RunStore.open(Path(folder))
    else:
        if info.leader:
            done = {c["key"] for c in store.cells() if c.get("status") in ("ok", "too_long")}
            manifest = store.manifest()
            manifest.setdefault("resumes", []).append(layout)
            store.write_manifest(manifest)
        done = distributed.broadcast(done, info)  # read before any rank appends: every rank sees the same set
    store.shard = distributed.shard_name(info)
    store.repair_torn_tail()
    if info.leader:
        print(f"run folder: {store.folder} ({sweep.total_cells(spec, methods, tasks)} cells, "
              f"{len(done)} already done, {info.world} rank(s))", file=sys.stderr)
    counts = sweep.execute(spec, store, done, progress=not args.no_progress and info.leader,
                           share=distributed.CellShare(info))
    totals: dict[str, int] = {}
    for rank, rank_counts in enumerate(distributed.gather(counts, info)):  # also waits for the slowest rank
        for key, value in rank_counts.items():
            if key != "resumed" or rank == 0:  # every rank skips the same done cells
                totals[key] = totals.get(key, 0) + value
    if info.leader:
        print_summary(store)
        print(f"results: {store.folder} ({', '.join(f'{k}={v}' for k, v in totals.items()) or 'nothing to do'})")
    distributed.finish(info)
    return store.folder


def run_manifest(subcommand: str, spec, methods, tasks, options, **extra) -> dict:
    """What a run folder records about itself: command, grid, resolved methods, options and provenance."""
    from harness.store import provenance

    return {"command": " ".join(shlex.quote(a) for a in ["sampleattn", *sys.argv[1:]]),
            "subcommand": subcommand, "spec": dataclasses.asdict(spec),
            "methods": [m.spec() for m in methods], "tasks": [t.name for t in tasks],
            "options": dataclasses.asdict(options), "sdpa_backends": sdpa_backend_flags(), **extra,
            **provenance(options.device)}


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
    if "score" not in frame:  # hook(scale): timing-only cells have no score
        frame["score"] = float("nan")
    table = frame.groupby(["model", "task", "method_spec", "length"]).agg(
        ttft_ms=("ttft_ms", "median"), score=("score", "mean"), cells=("key", "count"))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))


def cmd_methods(args) -> int:
    for name, cls in sorted(available_methods().items()):
        print(f"{name}: {cls.description}")
        for field in dataclasses.fields(cls.Config):
            default = field.default if field.default is not dataclasses.MISSING else "(required)"
            kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
            print(f"    {field.name} ({kind}) = {default}")
    return 0


def cmd_tasks(args) -> int:
    for name, cls in sorted(available_tasks().items()):
        print(f"{name}: {cls.description}")
    return 0


EXTRA_HANDLERS: dict = {}


def add_extra_subcommands(sub, add_common) -> None:
    """Subcommands that live in their own modules (report, reproduce, diagnose) register here."""
    import importlib

    for module in ("harness.report_cli", "harness.diagnose_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        EXTRA_HANDLERS.update(mod.add_subcommands(sub, add_common))
