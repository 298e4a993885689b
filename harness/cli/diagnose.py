"""`sampleattn diagnose`: per layer and head, density and true recall of each method's mask on a real model."""
from pathlib import Path

from harness.cli.common import count_text, model_stem, settings_from
from harness.cli.flags import add_common
from harness.options import InputError
from harness.running.store import DIAGNOSTICS_FILE, RunStore

NAME = "diagnose"
DEFAULT_ROWS = 64


def add_parser(sub) -> None:
    parser = sub.add_parser(NAME, help="per layer and head: density and recall (kept share of the dense "
                            "attention mass, exact on sampled query rows) of each method; writes diagnostics.jsonl")
    add_common(parser, timing=False)
    parser.add_argument("--rows", type=int, default=None,
                        help="query rows sampled per layer, one per equal stratum, plus the last row "
                        f"(default {DEFAULT_ROWS})")


def main(args, argv: list[str]) -> int:
    from attention.diagnostics import FRONTIER  # the work: imported once the flags are known good
    from harness.running import driver
    from harness.running.diagnose import DiagnoseMeasure

    rows = args.rows
    if args.resume and RunStore.is_run(Path(args.resume)):
        stored = RunStore.open(Path(args.resume)).manifest().get("diagnostics", {}).get("rows")
        if rows is not None and stored is not None and rows != stored:
            raise InputError(f"--resume continues the run's stored grid; --rows differs from it ({stored} stored, "
                             f"{rows} given): start a new run instead")
        rows = stored if stored is not None else rows
    rows = DEFAULT_ROWS if rows is None else rows
    if rows < 1:
        raise InputError("--rows must be at least 1")
    # a diagnose prefill is measured, not timed: its parser has no --repeats, --warmup or --max-new-tokens
    settings = settings_from(args, argv, NAME, name=f"diagnose-{model_stem(args)}")
    store, counts = driver.execute(settings, DiagnoseMeasure(rows), add_dense=False,
                                   extra_manifest={"diagnostics": {"rows": rows, "frontier": list(FRONTIER),
                                                                   "file": DIAGNOSTICS_FILE}})
    print_summary(store.cells(DIAGNOSTICS_FILE))
    print(f"diagnostics: {store.folder / DIAGNOSTICS_FILE} ({count_text(counts)})")
    return 0


def print_summary(lines: list[dict]) -> None:
    ok = [line for line in lines if line.get("status") == "ok" and "density" in line]
    if not ok:
        return
    import pandas as pd  # here, not at the top: the CLI answers --help before pandas (and torch) load

    frame = pd.DataFrame(ok)
    table = frame.groupby(["model", "method_spec", "length"]).agg(
        density=("density", "mean"), recall=("recall_mean", "mean"), worst=("recall_min", "min"),
        oracle_same_budget=("oracle_recall_mean", "mean"), share_of_heads_below_alpha=("heads_below_alpha", "mean"))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
