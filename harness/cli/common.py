"""What run, sweep, diagnose and reproduce share: their flags made into Settings (the one place where flags
become settings), the --gpus launcher and the closing summary."""
import sys
from pathlib import Path

from harness.options import parse_lengths
from harness.running import distributed
from harness.running.checks import check_lengths_fit
from harness.running.settings import Settings, SweepSpec, with_overrides

SCALAR_FLAGS = ("samples", "seed", "device", "repeats", "warmup", "max_new_tokens", "beyond_context", "device_map",
                "prefill", "prefill_chunk", "batch_size")


def grid_flags(args) -> dict:
    """The grid fields given as flags, as SweepSpec values (argparse leaves every grid flag None unless given)."""
    given = {}
    if getattr(args, "models", None):
        given["models"] = [m for m in args.models.split(",") if m]
    if getattr(args, "model", None):
        given["models"] = [args.model]
    task = getattr(args, "task", None)
    if task:
        given["tasks"] = list(task) if isinstance(task, list) else [task]
    if getattr(args, "methods", None) is not None:
        given["methods"] = [args.methods]
    if getattr(args, "lengths", None) is not None:
        given["lengths"] = parse_lengths(args.lengths)
    for name in SCALAR_FLAGS:
        if getattr(args, name, None) is not None:
            given[name] = getattr(args, name)
    return given


def settings_from(args, argv: list[str], command: str, name: str, base: SweepSpec | None = None,
                  sweep_file: str | None = None, named: tuple[str, ...] = ()) -> Settings:
    """`base` (the defaults, a sweep file's grid or a paper table's) with the flags given over it. Beside a
    sweep file, says which of its fields the flags replaced (the manifest records them too). `named`: the fields
    the sweep file names, given as much as the flags are (a resume checks both against the stored grid)."""
    given = grid_flags(args)
    base = base or SweepSpec()
    grid, overridden = with_overrides(base, given)
    check_lengths_fit(grid.lengths)  # before the work imports torch (validate checks again)
    if sweep_file and overridden:
        changes = "; ".join(f"{field} {getattr(base, field)} -> {getattr(grid, field)}" for field in overridden)
        print(f"note: flags override {sweep_file}: {changes}", file=sys.stderr)
    return Settings(command=command, grid=grid, name=args.name or name, given=tuple(dict.fromkeys([*named, *given])),
                    overridden=overridden if sweep_file else (), sweep_file=sweep_file, out=args.out,
                    resume=getattr(args, "resume", None), progress=not args.no_progress,
                    gpus=getattr(args, "gpus", None), argv=tuple(argv))


def model_stem(args) -> str:
    return Path(getattr(args, "model", None) or SweepSpec().models[0]).stem


def launch_ranks(settings: Settings) -> int | None:
    """--gpus N starts torchrun, whose N ranks each run this same command; None inside a rank."""
    if not settings.gpus or distributed.current().active:
        return None
    return distributed.launch(settings.gpus, list(settings.argv), settings.grid.device)


def measure_grid(settings: Settings) -> int:
    """Run or sweep: every cell of the grid measured by BatchMeasure (--batch-size; at 1 it is RunMeasure), on this
    rank or on the ranks it launches."""
    launched = launch_ranks(settings)
    if launched is not None:
        return launched
    from harness.running import driver  # the work: imported once the flags are known good
    from harness.running.batch import BatchMeasure

    store, counts = driver.execute(settings, BatchMeasure())
    finish(store, counts)
    return 0


def count_text(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "nothing to do"


def finish(store, counts: dict) -> None:
    if not distributed.current().leader:  # rank 0 speaks for the sweep
        return
    print_summary(store)
    print(f"results: {store.folder} ({count_text(counts)})")


def print_summary(store) -> None:
    """Per (model, task, method, length): median TTFT, mean score (LongBench: its per-dataset scores averaged over
    datasets, as the report) and the cell count."""
    cells = [c for c in store.cells() if c.get("status") == "ok"]
    if not cells:
        return
    from harness.reports import report  # here, not at the top: the CLI answers --help before pandas and torch load

    frame = report.load_cells([store.folder])
    if "score" not in frame:  # timing-only cells have no score
        frame["score"] = float("nan")
    by = ["model", "task", "method_spec", "length"]
    table = frame.groupby(by).agg(ttft_ms=("ttft_ms", "median"), cells=("key", "count"))
    table.insert(1, "score", report.accuracy_stats(frame)["mean"].reindex(table.index))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    if any(c.get("device") == "cpu" for c in cells):
        print("note: CPU timings run the exact fp32 PyTorch path: not performance evidence", file=sys.stderr)
