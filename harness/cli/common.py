"""What run, sweep, diagnose and reproduce share: the grid given by flags, the --gpus launcher and the closing
summary. Every input is validated before anything is loaded or written (see harness.running.driver)."""
import sys

from harness.running.plan import DEFAULTS

GRID_FLAGS = ("methods", "lengths", "samples", "seed", "device", "repeats", "warmup", "max_new_tokens",
              "beyond_context", "batch_size")


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
    from harness.running.plan import SweepSpec

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
                     prefill_chunk=getattr(args, "prefill_chunk", 16384),  # hook(scale)
                     batch_size=getattr(args, "batch_size", None) or 1)


def launch_ranks(args) -> int | None:
    """hook(scale): --gpus N starts torchrun, whose N ranks each run this same command; None inside a rank."""
    from harness.running import distributed

    if not getattr(args, "gpus", None) or distributed.current().active:
        return None
    return distributed.launch(args.gpus, args.argv, args.device)


def finish(store, counts: dict) -> None:
    from harness.running import distributed
    from harness.running.driver import count_text

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
    from harness.reports import report

    frame = report.load_cells([store.folder])
    if "score" not in frame:  # hook(scale): timing-only cells have no score
        frame["score"] = float("nan")
    by = ["model", "task", "method_spec", "length"]
    table = frame.groupby(by).agg(ttft_ms=("ttft_ms", "median"), cells=("key", "count"))
    table.insert(1, "score", report.accuracy_stats(frame)["mean"].reindex(table.index))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    if any(c.get("device") == "cpu" for c in cells):
        print("note: CPU timings run the exact fp32 PyTorch path: not performance evidence", file=sys.stderr)
