"""A run's settings in one typed, frozen form, built once at the CLI edge (harness/cli/common.py) from flags, or
from a YAML sweep file with the flags given beside it over its fields. Every default lives here.

`SweepSpec` is the grid: the manifest stores it as `spec`, and `--resume` continues it. `Settings` adds what the
run folder and the process need (where, under which name, resume, progress, ranks). The driver reads Settings
only; it never sees argparse. Imports stay light (the CLI builds Settings before torch is loaded).
"""
import dataclasses
from pathlib import Path

import yaml

from harness.options import PREFILL_CHUNK, InputError, parse_lengths

PREFILL_MODES = ("plain", "chunked", "chunked-nocache")
DEVICE_MAPS = ("auto", "balanced")  # --device-map: accelerate's placements (harness/models/device_map.py)
OUT = "runs"           # git ignores it; committed evidence lives in results/runs/


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """The grid of models x methods (x method settings) x tasks x lengths x samples, and how each cell runs."""
    models: list[str] = dataclasses.field(default_factory=lambda: ["smollm2-135m"])
    methods: list[str] = dataclasses.field(default_factory=lambda: ["dense"])  # 'name:key=a|b' runs each value
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["passkey"])
    lengths: list[int] = dataclasses.field(default_factory=lambda: [1024, 2048])
    samples: int = 1
    seed: int = 0
    device: str = "auto"
    repeats: int | None = None         # timed prefills per cell (None: 3 on a GPU, 1 on the CPU)
    warmup: int | None = None          # untimed prefills first (None: 1 on a GPU, 0 on the CPU)
    max_new_tokens: int | None = None  # None: the task's own budget
    beyond_context: bool = False  # run lengths above the model's context (timing only; accuracy is meaningless)
    device_map: str | None = None  # auto | balanced: one model split over the visible GPUs
    prefill: str = "plain"         # plain | chunked | chunked-nocache (harness/models/long_prefill.py)
    prefill_chunk: int = PREFILL_CHUNK
    batch_size: int = 1            # samples of one cell group per prefill and decode (harness/running/batch.py)

    @classmethod
    def from_dict(cls, data: dict, source: str = "sweep file") -> "SweepSpec":
        """A grid from a mapping (a YAML file, a manifest's `spec`); models, methods and tasks must be named."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
        data = dict(data)
        for key in ("models", "methods", "tasks"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        data["lengths"] = parse_lengths(data.get("lengths", []))
        missing = [k for k in ("models", "methods", "tasks") if not data.get(k)]
        if missing:
            raise InputError(f"{source}: missing {', '.join(missing)}")
        return cls(**data)


DEFAULT = SweepSpec()  # the defaults, for help texts


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run, sweep, diagnose or reproduce takes from its command line, resolved once."""
    command: str                       # run | sweep | diagnose | reproduce: the manifest's subcommand
    grid: SweepSpec
    name: str                          # the run folder's suffix
    given: tuple[str, ...] = ()        # grid fields given as flags: a resume extends or checks exactly these
    overridden: tuple[str, ...] = ()   # fields of the sweep file that flags beside it replaced
    sweep_file: str | None = None
    out: str = OUT
    resume: str | None = None
    progress: bool = True
    gpus: int | None = None            # --gpus N: torchrun starts N ranks of `argv`
    argv: tuple[str, ...] = ()         # the command line as given

    def given_values(self) -> dict:
        return {name: getattr(self.grid, name) for name in self.given}

    def record(self) -> dict:
        """What the manifest keeps about where the grid came from (beside the grid itself, `spec`)."""
        return {"sweep_file": self.sweep_file, "overridden": list(self.overridden), "given": list(self.given)}


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The grid's settings as every cell runs them: the device resolved, the per-device defaults filled in
    (built once per run by harness.running.plan.validate, from the SweepSpec)."""
    device: str = "cpu"
    repeats: int = 1           # timed prefills per cell (median reported)
    warmup: int = 0            # untimed prefills before timing (compilation, caches)
    max_new_tokens: int | None = None  # None: the task's own per-sample budget
    beyond_context: bool = False       # run lengths above the model's context (timing only)
    seed: int = 0                      # the grid's seed (diagnose samples its query rows with it)
    prefill: str = "plain"             # plain | chunked | chunked-nocache (harness/models/long_prefill.py)
    prefill_chunk: int = PREFILL_CHUNK

    @classmethod
    def resolve(cls, spec: SweepSpec, device: str) -> "RunOptions":
        gpu = device.startswith("cuda")
        return cls(device=device, repeats=spec.repeats or (3 if gpu else 1),
                   warmup=spec.warmup if spec.warmup is not None else (1 if gpu else 0),
                   max_new_tokens=spec.max_new_tokens, beyond_context=spec.beyond_context, seed=spec.seed,
                   prefill=spec.prefill, prefill_chunk=spec.prefill_chunk)


def with_overrides(base: SweepSpec, given: dict) -> tuple[SweepSpec, tuple[str, ...]]:
    """`base` with the given fields replaced; returns it and the fields whose value changed."""
    changed = tuple(name for name, value in given.items() if getattr(base, name) != value)
    return dataclasses.replace(base, **given), changed


def load_spec_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"sweep file {path} does not exist; pass a YAML file (see scripts/sweeps/)")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"sweep file {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise InputError(f"sweep file {path} must hold a mapping of models, methods, tasks, lengths, ...")
    data.pop("name", None)
    return data
