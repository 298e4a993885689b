"""The one cell driver of `run`, `sweep` and `diagnose`: open (or resume) a run folder, loop over every cell of
the grid, measure each with the command's measure function, and append one JSON line per cell.

The driver takes a Settings (harness/running/settings.py), never argparse flags, and a measure (a `Measure`,
harness/running/measure.py): RunMeasure for run, sweep and reproduce, DiagnoseMeasure for diagnose.
"""
import dataclasses
import datetime
import shlex
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from attention.kernels.config import kernel_settings
from harness.models.loading import load_model
from harness.options import InputError
from harness.running import distributed, worker
from harness.running.estimate import Estimate
from harness.running.measure import Measure
from harness.running.plan import Plan, build_methods, validate
from harness.running.prompt_cache import cached_samples
from harness.running.settings import Settings, SweepSpec
from harness.running.store import CELLS_FILE, RunStore, provenance

DONE = ("ok", "too_long")             # statuses a resume does not redo


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, carrying what to tell the user: where the finished cells are and how to go on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
EXTENDABLE = ("methods", "lengths")   # grid flags that --resume adds to the stored grid
REPLACEABLE = ("batch_size",)         # flags --resume may change: the cells come out the same


def cell_key(model: str, method_spec: str, task: str, sample_id: str) -> str:
    return f"{model}|{method_spec}|{task}|{sample_id}"


def sdpa_backend_flags() -> dict:
    backends = torch.backends.cuda
    return {"flash": backends.flash_sdp_enabled(), "cudnn": backends.cudnn_sdp_enabled(),
            "efficient": backends.mem_efficient_sdp_enabled(), "math": backends.math_sdp_enabled()}


def run_manifest(settings: Settings, plan: Plan, **extra) -> dict:
    """What a run folder records about itself: command, grid (with where it came from), resolved methods,
    options and provenance."""
    return {"command": " ".join(shlex.quote(a) for a in ["sampleattn", *settings.argv]),
            "subcommand": settings.command, "spec": dataclasses.asdict(plan.spec), "settings": settings.record(),
            "methods": [m.spec() for m in plan.methods], "tasks": [t.name for t in plan.tasks],
            # every task's resolved options (LongBench's code_sim backend among them)
            "task_configs": [{"task": t.name, **dataclasses.asdict(t.config)} for t in plan.tasks],
            "options": dataclasses.asdict(plan.options), "sdpa_backends": sdpa_backend_flags(),
            "kernel_settings": kernel_settings(), **extra,
            **provenance(plan.options.device)}


def resume_spec(stored: SweepSpec, given: dict, add_dense: bool) -> tuple[SweepSpec, dict]:
    """The stored grid, extended by new --methods/--lengths; any other grid flag that differs is refused.

    Returns (spec, what was added)."""
    for name, value in given.items():
        if name not in EXTENDABLE + REPLACEABLE and value != getattr(stored, name):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"--resume continues the run's stored grid; {flag} differs from it "
                             f"({getattr(stored, name)!r} stored, {value!r} given): start a new run instead")
    added: dict = {}
    spec = dataclasses.replace(stored, **{k: given[k] for k in REPLACEABLE if k in given})
    if "lengths" in given:
        new = [n for n in given["lengths"] if n not in stored.lengths]
        if new:
            added["lengths"] = new
            spec = dataclasses.replace(spec, lengths=[*stored.lengths, *new])
    if "methods" in given:
        before = {m.spec() for m in build_methods(stored, add_dense, quiet=True)}
        after = build_methods(dataclasses.replace(stored, methods=[*stored.methods, *given["methods"]]), add_dense,
                              quiet=True)
        new = [m.spec() for m in after if m.spec() not in before]
        if new:
            added["methods"] = new
            spec = dataclasses.replace(spec, methods=[*spec.methods, *new])
    return spec, added


def open_run(settings: Settings, measure: Measure, add_dense: bool = True, extra_manifest: dict | None = None):
    """Validate once, then create the run folder, or reopen it with --resume (extending its grid with new
    --methods/--lengths, and saying so). Returns (store, plan, done keys, created)."""
    subcommand, resume = settings.command, settings.resume
    if not resume:
        plan = validate(settings.grid, add_dense)
        manifest = run_manifest(settings, plan, **(extra_manifest or {}))
        return RunStore.create(Path(settings.out), settings.name, manifest), plan, set(), True
    try:
        store = RunStore.open(Path(resume))
    except FileNotFoundError as err:
        raise InputError(str(err)) from None
    store.lock()  # before reading what is done: a second writer stops here
    try:
        manifest = store.manifest()
        if (manifest.get("subcommand") == "diagnose") != (subcommand == "diagnose"):
            other = "diagnose" if manifest.get("subcommand") == "diagnose" else "run or sweep"
            raise InputError(f"{resume} is a {manifest.get('subcommand')} run folder; resume it with {other}")
        if "spec" not in manifest:
            raise InputError(f"{resume}: its manifest holds no grid (spec), so it cannot be resumed")
        spec, added = resume_spec(SweepSpec(**manifest["spec"]), settings.given_values(), add_dense)
        plan = validate(spec, add_dense, quiet=True)
        if added:
            what = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in added.items())
            print(f"note: extending the run's grid with {what}", file=sys.stderr)
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            manifest.update(spec=dataclasses.asdict(spec), methods=[m.spec() for m in plan.methods],
                            extended=[*manifest.get("extended", []), {"at": stamp, **added}])
            store.write_manifest(manifest)
        elif dataclasses.asdict(spec) != manifest["spec"]:  # a REPLACEABLE flag changed (--batch-size)
            manifest["spec"] = dataclasses.asdict(spec)
            store.write_manifest(manifest)
        store.repair_torn_tail(measure.file)
        done = {c.get("key") for c in store.unique_cells(measure.file, "--resume") if c.get("status") in DONE}
    except BaseException:
        store.release()
        raise
    return store, plan, done, False


def samples_for(loaded, task, length: int, plan: Plan) -> list:
    """The task's samples at this length; where none can be built, a dict per sample with the cell's status and
    error instead: too_long beyond the model's context, error when the prompt does not fit in memory."""
    spec, options = plan.spec, plan.options
    if loaded.max_context is not None and length > loaded.max_context and not options.beyond_context:
        print(f"note: length {length} is beyond {loaded.name}'s context ({loaded.max_context}): its cells are "
              "recorded as too_long and not run; --beyond-context times them", file=sys.stderr)
        return [{"status": "too_long", "error": f"length {length} > model context {loaded.max_context}"}
                ] * task.count(spec.samples)
    try:
        return cached_samples(task, loaded.tokenizer, length, spec.samples, spec.seed,
                              lambda: list(task.samples(loaded.tokenizer, [length], spec.samples, spec.seed)))
    except MemoryError:
        print(f"note: the prompts of length {length} do not fit in memory: their cells are recorded as errors",
              file=sys.stderr)
        return [{"status": "error", "error": f"a prompt of {length} tokens does not fit in memory"}
                ] * max(1, task.count(spec.samples))


def cell_line(position: int, total: int, cell: dict) -> str:
    """One plain line per finished cell (--no-progress, or output that is not a terminal)."""
    what = [f"[{position}/{total}] {cell['model']}/{cell['task']} {cell['method_spec']} length={cell['length']} "
            f"{cell['sample_id']}: {cell['status']}"]
    if isinstance(cell.get("ttft_ms"), (int, float)):
        what.append(f"ttft {cell['ttft_ms']:.1f} ms")
    if isinstance(cell.get("score"), (int, float)):
        what.append(f"score {cell['score']:.3f}")
    return ", ".join(what)


def drive(plan: Plan, store: RunStore, measure: Measure, done=frozenset(), progress: bool = True, share=None,
          lines: bool = False) -> dict:
    """Every (model x task x length x sample x method) cell not in `done`, dense first in every sample; the
    model is loaded once per model. Returns counts by status (and `resumed`). With `share` (a distributed sweep,
    harness/running/distributed.py) this rank runs only its share of the cells still to do. The bar counts
    finished cells; `lines` prints one plain line per finished cell instead (logs, --no-progress). A time
    estimate follows the first measured cell, refined as more finish."""
    spec, options = plan.spec, plan.options
    counts: dict[str, int] = {}
    done = set(done) | worker.poisoned_keys(store.cells(measure.file))  # after a restart: not retried
    total, finished = plan.total(), 0
    estimate = Estimate(total, plan.total_tokens(), share.world if share is not None else 1)
    with tqdm(total=total, unit=measure.unit, disable=not progress, smoothing=0.1) as bar:
        def finish(cell: dict, length: int, started) -> None:
            nonlocal finished
            store.append(cell, measure.file)
            if cell["status"] == "error" and share is None and worker.is_sticky(cell.get("error")):
                worker.restart(store, cell["error"])  # the process is poisoned
            counts[cell["status"]] = counts.get(cell["status"], 0) + 1
            bar.set_postfix(counts, refresh=False)
            finished += 1
            bar.update(1)  # counted once finished, with its status in the postfix
            if lines:
                print(cell_line(finished, total, cell), file=sys.stderr, flush=True)
            note = estimate.cell_done(length, started)
            if note and (share is None or share.rank == 0):
                tqdm.write(note, file=sys.stderr)

        for model_name in spec.models:
            loaded = load_model(model_name, options.device, progress=progress, device_map=spec.device_map)
            for task in plan.tasks:
                bar.set_description(f"{model_name}/{task.name}")
                for length in spec.lengths:
                    samples = list(enumerate(samples_for(loaded, task, length, plan)))
                    size = spec.batch_size if hasattr(measure, "group") else 1  # batch.BatchMeasure
                    for start in range(0, len(samples), size):
                        for method in plan.methods:  # dense first in every group of samples
                            pending = []  # (sample, cell) measured together
                            for index, sample in samples[start:start + size]:
                                built = not isinstance(sample, dict)  # else: why it could not be built
                                sample_id = sample.id if built else f"{task.name}-{length}-{index}"
                                key = cell_key(loaded.name, method.spec(), task.name, sample_id)
                                if key in done or (share is not None and not share.mine(key)):
                                    if key in done:
                                        counts["resumed"] = counts.get("resumed", 0) + 1
                                    finished += 1  # resumed, or another rank's cell
                                    bar.update(1)
                                    estimate.cell_done(length, None)
                                    continue
                                cell = {"key": key, "model": loaded.name, "method": method.name,
                                        "method_spec": method.spec(),
                                        "method_config": dataclasses.asdict(method.config),
                                        **measure.fields(method, options), "task": task.name,
                                        "sample_id": sample_id, "length": length, "device": options.device,
                                        **(share.tags() if share is not None else {})}
                                if not built:
                                    cell.update(sample)
                                    finish(cell, length, None)
                                    continue
                                if loaded.max_context and length > loaded.max_context:
                                    cell["beyond_context"] = True
                                pending.append((sample, cell))
                            if not pending:
                                continue
                            started = estimate.start()
                            if size > 1:
                                results = measure.group(loaded, method, task, [s for s, _ in pending], options)
                            else:
                                results = [measure(loaded, method, task, pending[0][0], options)]
                            each = (estimate.start() - started) / len(pending)  # a group's time, shared
                            for (_, cell), result in zip(pending, results):
                                cell.update(result)
                                cell["cell_seconds"] = each  # wall time, TTFT timing and decode included
                                finish(cell, length, estimate.start() - each)
            del loaded
    return counts


def execute(settings: Settings, measure: Measure, add_dense: bool = True,
            extra_manifest: dict | None = None) -> tuple[RunStore, dict]:
    """open_run + drive; a run folder that never got a cell (its model failed to load, say) is removed.

    Under torchrun every rank runs this: rank 0 opens the run folder and reads the done set, every rank runs its
    share of the cells still to do into its own shard (cells.rank<R>.jsonl), the counts are summed on rank 0."""
    info = distributed.init()
    opened = open_run(settings, measure, add_dense, extra_manifest) if info.leader else None
    folder, done, created = distributed.broadcast(
        (str(opened[0].folder), opened[2], opened[3]) if opened else None, info)
    if opened:
        store, plan = opened[0], opened[1]
    else:  # the leader has written the (possibly extended) grid into the manifest
        store = RunStore.open(Path(folder))
        plan = validate(SweepSpec(**store.manifest()["spec"]), add_dense, quiet=True)
    try:  # the run folder stays locked until every rank is done
        layout = distributed.layout(info, plan.options.device)  # collective: world size, each rank's device
        if info.leader:  # world size and each rank's device, per start of the run
            manifest = store.manifest()
            if created:
                manifest["distributed"] = layout
            else:
                manifest.setdefault("resumes", []).append(layout)
            store.write_manifest(manifest)
        if info.active:
            store.shard = distributed.shard_name(info, measure.file or CELLS_FILE)
            store.repair_torn_tail(measure.file)
        if info.leader:
            print(f"run folder: {store.folder} ({plan.total()} cells, {len(done)} already done, {info.world} "
                  "rank(s); a time estimate follows the first cell)", file=sys.stderr)
        share = distributed.CellShare(info) if info.active else None
        try:
            bar = settings.progress and info.leader and sys.stderr.isatty()  # a log gets plain lines instead
            counts = drive(plan, store, measure, done, progress=bar, share=share, lines=info.leader and not bar)
        except BaseException as err:
            removed = created and info.leader and store.remove_if_empty()
            if removed:
                print(f"note: removed {store.folder}: the run stopped before its first cell", file=sys.stderr)
            if isinstance(err, KeyboardInterrupt) and not isinstance(err, Interrupted):
                command = "sweep" if settings.command == "reproduce" else settings.command  # reproduce: no --resume
                raise Interrupted("interrupted before the first cell finished; nothing was saved" if removed else
                                  f"interrupted: finished cells are saved in {store.folder}; continue with "
                                  f"`sampleattn {command} --resume {store.folder}`") from None
            raise
        totals: dict[str, int] = {}
        for rank, rank_counts in enumerate(distributed.gather(counts, info)):  # also waits for the slowest rank
            for key, value in rank_counts.items():
                if key != "resumed" or rank == 0:  # every rank skips the same done cells
                    totals[key] = totals.get(key, 0) + value
        distributed.finish(info)
    finally:
        store.release()
    return store, totals
