"""CLI subcommand `diagnose`: per layer and head, density and true recall of each method's mask on a real model."""
import sys
from pathlib import Path


def add_subcommands(sub, add_common) -> dict:
    parser = sub.add_parser("diagnose", help="per layer and head: density and recall (kept share of the dense "
                            "attention mass, exact on sampled query rows) of each method; writes diagnostics.jsonl")
    add_common(parser)
    parser.add_argument("--rows", type=int, default=64,
                        help="query rows sampled per layer, one per equal stratum, plus the last row (default 64)")
    return {"diagnose": cmd_diagnose}


def cmd_diagnose(args) -> int:
    from attention.diagnostics import FRONTIER
    from harness import diagnose
    from harness.commands import InputError, run_manifest, spec_from_flags
    from harness.store import RunStore
    from harness.sweep import SweepSpec

    store, done = None, set()
    if args.resume:
        try:
            store = RunStore.open(Path(args.resume))
        except FileNotFoundError as err:
            raise InputError(str(err)) from None
        manifest = store.manifest()
        if manifest.get("subcommand") != "diagnose":
            raise InputError(f"{args.resume} is not a diagnose run folder; resume it with run or sweep")
        spec, rows = SweepSpec(**manifest["spec"]), manifest["diagnostics"]["rows"]
    else:
        spec, rows = spec_from_flags(args, [args.model], [args.task]), args.rows
    if rows < 1:
        raise ValueError("--rows must be at least 1")
    methods, tasks, options = diagnose.validate(spec)  # all input checked before anything is written
    if store is None:
        manifest = run_manifest("diagnose", spec, methods, tasks, options, diagnostics={
            "rows": rows, "frontier": list(FRONTIER), "file": diagnose.DIAGNOSTICS_FILE})
        store = RunStore.create(Path(args.out), args.name or f"diagnose-{Path(args.model).stem}", manifest)
    else:
        store.repair_torn_tail(diagnose.DIAGNOSTICS_FILE)
        done = {c["key"] for c in store.cells(diagnose.DIAGNOSTICS_FILE) if c.get("status") in ("ok", "too_long")}
    print(f"run folder: {store.folder}", file=sys.stderr)
    counts = diagnose.run(spec, store, rows, done, progress=not args.no_progress)
    print_summary(store.cells(diagnose.DIAGNOSTICS_FILE))
    print(f"diagnostics: {store.folder / diagnose.DIAGNOSTICS_FILE} "
          f"({', '.join(f'{k}={v}' for k, v in counts.items()) or 'nothing to do'})")
    return 0


def print_summary(lines: list[dict]) -> None:
    import pandas as pd

    ok = [line for line in lines if line.get("status") == "ok" and "density" in line]
    if not ok:
        return
    frame = pd.DataFrame(ok)
    table = frame.groupby(["model", "method_spec", "length"]).agg(
        density=("density", "mean"), recall=("recall_mean", "mean"), worst=("recall_min", "min"),
        oracle_same_budget=("oracle_recall_mean", "mean"), heads_below_alpha=("heads_below_alpha", "mean"))
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
