"""What the `run`, `sweep`, `methods` and `tasks` subcommands do; every input is validated before anything is
loaded or written (see harness.driver)."""
import dataclasses
import inspect
import re
import sys
from pathlib import Path

from harness.options import InputError
from harness.sweep import DEFAULTS

GRID_FLAGS = ("methods", "lengths", "samples", "seed", "device", "repeats", "warmup", "max_new_tokens",
              "beyond_context")


def given_flags(args, models=None, tasks=None) -> dict:
    """The grid flags given on the command line (not left to their defaults), as SweepSpec fields."""
    given = {name: getattr(args, name) for name in GRID_FLAGS if getattr(args, name, None) is not None}
    if "methods" in given:
        given["methods"] = [given["methods"]]
    if models is not None:
        given["models"] = models
    if tasks is not None:
        given["tasks"] = tasks
    return given


def spec_from_flags(args, models: list[str] | None = None, tasks: list[str] | None = None):
    """The grid of the flags, defaults filled in."""
    from harness.options import parse_lengths
    from harness.sweep import SweepSpec

    def flag(name):
        value = getattr(args, name, None)
        return DEFAULTS.get(name) if value is None else value

    lengths = flag("lengths")
    return SweepSpec(models=models or [flag("model")], methods=[flag("methods")], tasks=tasks or [flag("task")],
                     lengths=parse_lengths(lengths) if isinstance(lengths, str) else lengths,
                     samples=flag("samples"), seed=flag("seed"), device=flag("device"), repeats=args.repeats,
                     warmup=args.warmup, max_new_tokens=args.max_new_tokens,
                     beyond_context=bool(args.beyond_context),
                     device_map=getattr(args, "device_map", None), prefill=getattr(args, "prefill", "plain"),
                     prefill_chunk=getattr(args, "prefill_chunk", 16384))  # hook(scale)


def launch_ranks(args) -> int | None:
    """hook(scale): --gpus N starts torchrun, whose N ranks each run this same command; None inside a rank."""
    from harness import distributed

    if not getattr(args, "gpus", None) or distributed.current().active:
        return None
    return distributed.launch(args.gpus, args.argv, args.device)


def cmd_run(args) -> int:
    from harness import driver
    from harness.runner import RunMeasure

    launched = launch_ranks(args)
    if launched is not None:
        return launched

    given = given_flags(args, [args.model] if args.model else None, [args.task] if args.task else None)
    store, counts = driver.execute(args, "run", lambda: spec_from_flags(args), RunMeasure(),
                                   default_name=f"run-{Path(args.model or DEFAULTS['model']).stem}", given=given)
    finish(store, counts)
    return 0


def cmd_sweep(args) -> int:
    from harness import driver
    from harness.runner import RunMeasure
    from harness.sweep import SweepSpec, load_spec_file

    launched = launch_ranks(args)
    if launched is not None:
        return launched

    models = [m for m in args.models.split(",") if m] if args.models else None
    if args.resume and args.spec:
        raise InputError("--resume continues the run's stored grid; drop the sweep file")

    def fresh():
        if args.spec:
            return SweepSpec.from_dict(load_spec_file(args.spec))
        return spec_from_flags(args, models or [DEFAULTS["models"]], args.task or [DEFAULTS["task"]])

    name = Path(args.spec).stem if args.spec else "sweep"
    store, counts = driver.execute(args, "sweep", fresh, RunMeasure(), default_name=name,
                                   given=given_flags(args, models, args.task))
    finish(store, counts)
    return 0


def finish(store, counts: dict) -> None:
    from harness import distributed
    from harness.driver import count_text

    if not distributed.current().leader:  # hook(scale): rank 0 speaks for the sweep
        return
    print_summary(store)
    print(f"results: {store.folder} ({count_text(counts)})")


def print_summary(store) -> None:
    """Per (model, task, method, length): median TTFT, mean score (LongBench: its per-dataset scores averaged over
    datasets, as the report) and the cell count."""
    cells = [c for c in store.cells() if c.get("status") == "ok"]
    if not cells:
        return
    from harness import report

    frame = report.load_cells([store.folder])
    if "score" not in frame:  # hook(scale): timing-only cells have no score
        frame["score"] = float("nan")
    by = ["model", "task", "method_spec", "length"]
    table = frame.groupby(by).agg(ttft_ms=("ttft_ms", "median"), cells=("key", "count"))
    table.insert(1, "score", report.accuracy_stats(frame)["mean"].reindex(table.index))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    if any(c.get("device") == "cpu" for c in cells):
        print("note: CPU timings run the exact fp32 PyTorch path: not performance evidence", file=sys.stderr)


def option_comments(config_cls) -> dict[str, str]:
    """The comment after each field in the config's source (`alpha: float = 0.95  # CRA threshold`), with the
    comment-only lines that continue it."""
    try:
        lines = inspect.getsource(config_cls).splitlines()
    except (OSError, TypeError):
        return {}
    comments, current = {}, None
    for line in lines:
        field = re.match(r"^\s+(\w+)\s*:[^=]*=[^#]*#\s*(.+)$", line)
        more = re.match(r"^\s+#\s*(.+)$", line)
        if field:
            current = field.group(1)
            comments[current] = field.group(2).strip()
        elif more and current:
            comments[current] += " " + more.group(1).strip()
        else:
            current = None
    return comments


def cmd_methods(args) -> int:
    from attention.registry import available_methods

    for name, cls in sorted(available_methods().items()):
        print(f"{name}: {cls.description}")
        comments = option_comments(cls.Config)
        for field in dataclasses.fields(cls.Config):
            default = field.default if field.default is not dataclasses.MISSING else "(required)"
            kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
            note = f"  -- {comments[field.name]}" if field.name in comments else ""
            print(f"    {field.name} ({kind}) = {default}{note}")
    return 0


def cmd_tasks(args) -> int:
    from tasks.base import available_tasks

    for name, cls in sorted(available_tasks().items()):
        print(f"{name}: {cls.description}")
    return 0
