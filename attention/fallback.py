"""The dense fallback every sparse method shares: a layer, or a head, runs dense attention when the density it
would execute reaches the limit above which the sparse path is no faster than dense on this card for this shape.

Two limits per shape (head dim, GQA group, length), both measured by `calibrate.calibrate` on the card:
  before  the host knows the density before any estimation runs (fixed patterns, window + sinks, a fixed budget):
          dense wins when stages + kernel(density) >= dense, i.e. density >= (dense - stages - a) / b
  after   the selection has run (its cost is spent) and its per-head density is read in the layer's one sync:
          dense wins for a head when kernel(density) >= dense, i.e. density >= (dense - a) / b
with the sparse kernel's time fitted as a + b x density. Between table lengths the limits are interpolated in
log2(length); below the first length the first row holds, above the last the last.

A layer split by head (some heads dense, the rest sparse: executor.split_heads) pays copies and two launches on
partial grids. Rows that carry the calibrated timings (dense_ms, kernel a + b x d, split_ms: what a half-and-half
split cost beyond its two halves) price it: the layer runs wholly dense when
    dense_ms x dense_share + a + b x (sparse heads' density summed / heads) + split_ms >= dense_ms.

Where the limits come from, in order (every layer records it as `limits`, with the shape of the rows used):
  option    the method's `dense_above` (>= 0): both limits that value (0 = always dense, 1 = never)
  table     a table given with `use_table` or found at CACHE (written by `sampleattn calibrate` for this GPU)
  default   DEFAULTS_FILE (shipped, per GPU kind, from calibrations on those cards)
  none      no table for this device (CPU runs are for accuracy): never dense
The first table holding rows of this very (head dim, GQA group) for this GPU is used; where none does, the first
with any rows for this GPU, at its nearest shape.
"""
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from attention.profiles import log2_interpolate

CACHE = Path.home() / ".cache" / "sampleattn" / "dense_limits.json"
DEFAULTS_FILE = Path(__file__).with_name("dense_limits.json")
NEVER = 1.0 + 1e-9  # a limit no density reaches
COST_KEYS = ("dense_ms", "kernel_ms_at", "kernel_ms_per_density", "split_ms")  # a row's timings that price a split

_active: list[dict] = []  # tables given with use_table (innermost last)
_off: list[bool] = []     # inside switched_off(): no limits at all
_files: dict = {}         # path -> (mtime, table): a layer's decision never re-reads an unchanged file


@dataclass(frozen=True)
class Limits:
    before: float  # predicted density at or above this: dense without estimating
    after: float   # selected density of a head at or above this: that head runs dense
    source: str    # which limits applied (option / table:<path> / default:<gpu> / none)
    costs: tuple[float, float, float, float] | None = None  # (dense_ms, a, b, split_ms) where the rows have them

    def split_costs_more(self, selected: list[float], dense: list[bool]) -> bool:
        """Whether running these heads split (the dense ones dense) is predicted no faster than all dense."""
        if self.costs is None:
            return False
        dense_ms, a, b, split_ms = self.costs
        heads = len(selected)
        mixed = dense_ms * sum(dense) / heads + a + b * sum(x for x, d in zip(selected, dense) if not d) / heads
        return mixed + split_ms >= dense_ms

    def dense_before(self, density: float | None) -> bool:
        return density is not None and density >= self.before

    @property
    def active(self) -> bool:
        """Whether a selected density can send anything dense (else no host sync is needed to decide)."""
        return self.after <= 1.0

    def record(self) -> dict:
        return {"limits": self.source, "dense_limit": round(self.after, 4), "dense_limit_before": round(self.before, 4)}


def gpu_kind(device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def use_table(table: dict | None) -> None:
    """Apply a calibration table (calibrate.calibrate's result) to every later decision in this process."""
    _active.clear()
    _files.clear()
    if table is not None:
        _active.append(table)


@contextmanager
def switched_off():
    """No layer or head runs dense inside (methods built inside: their limits are cached per method): what each
    layer selects, for density profiles (attention/profiles.py)."""
    _off.append(True)
    try:
        yield
    finally:
        _off.pop()


def load_table(path: Path) -> dict:
    mtime = path.stat().st_mtime_ns
    if path not in _files or _files[path][0] != mtime:
        with open(path) as f:
            _files[path] = (mtime, json.load(f))
    return _files[path][1]


def save_table(table: dict, path: Path = CACHE) -> Path:
    """Merge a table into the cached one: rows of the same GPU and shape are replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(json.dumps(load_table(path))) if path.exists() else {"gpus": {}}
    for gpu, rows in table["gpus"].items():
        keep = [r for r in old["gpus"].get(gpu, []) if (r["head_dim"], r["group"], r["length"]) not in
                {(x["head_dim"], x["group"], x["length"]) for x in rows}]
        old["gpus"][gpu] = sorted(keep + rows, key=lambda r: (r["head_dim"], r["group"], r["length"]))
    old = {k: v for k, v in old.items() if k != "source"}
    with open(path, "w") as f:
        json.dump(old, f, indent=1)
    return path


def _tables():
    """(table, source) candidates in order: given, cached, shipped defaults."""
    found = [(t, t.get("source", "table:given")) for t in _active]
    if CACHE.exists():
        found.append((load_table(CACHE), f"table:{CACHE}"))
    if DEFAULTS_FILE.exists():
        found.append((load_table(DEFAULTS_FILE), "default"))
    return found


def _nearest(rows: list[dict], head_dim: int, group: int) -> list[dict]:
    """The rows of the shape closest to (head_dim, group): same head dim first, then the nearest group."""
    best = min(((abs(math.log2(r["head_dim"] / head_dim)), abs(r["group"] - group)) for r in rows))
    return sorted((r for r in rows if (abs(math.log2(r["head_dim"] / head_dim)), abs(r["group"] - group)) == best),
                  key=lambda r: r["length"])


def interpolate(rows: list[dict], key: str, length: int) -> float:
    """rows sorted by length: the value of `key` at `length`, linear in log2(length), held flat outside."""
    held = min(max(length, rows[0]["length"]), rows[-1]["length"])
    return log2_interpolate([(r["length"], r[key]) for r in rows], held)


def limits_for(device, head_dim: int, group: int, length: int, dense_above: float = -1.0) -> Limits:
    """The limits that apply to a layer of this shape on this device (see the module docstring for the order)."""
    if _off:
        return Limits(NEVER, NEVER, "off:profiling")
    if dense_above >= 0:
        value = dense_above if dense_above < 1 else NEVER
        return Limits(value, value, f"option:dense_above={dense_above:g}")
    kind = gpu_kind(device)
    found = [(rows, source) for table, source in _tables() if (rows := table.get("gpus", {}).get(kind))]
    exact = [(rows, source) for rows, source in found
             if any((r["head_dim"], r["group"]) == (head_dim, group) for r in rows)]
    for rows, source in (exact or found)[:1]:  # a table with this very shape first, in the order above
        near = _nearest(rows, head_dim, group)
        label = source if source != "default" else f"default:{kind}"
        shape = f"D{near[0]['head_dim']}/g{near[0]['group']}"
        priced = all(key in r for r in near for key in COST_KEYS)
        costs = tuple(interpolate(near, key, length) for key in COST_KEYS) if priced else None
        return Limits(interpolate(near, "before", length), interpolate(near, "after", length), f"{label}:{shape}",
                      costs)
    return Limits(NEVER, NEVER, f"none:{kind}")


def dense_heads(density: list[float], limits: Limits) -> list[bool]:
    """Per head: True where that head runs dense."""
    return [d >= limits.after for d in density]
