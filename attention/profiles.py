"""Per-layer density profiles: what each layer of a model selects with a method at a length, measured offline.

The dense fallback (attention/fallback.py) can skip a layer's estimation only when the host knows, before looking at
q and k, that the layer would execute at or above the `before` limit. For a window or a fixed budget the method
knows it; for an adaptive selection (SampleAttention's alpha, MInference's and FlexPrefill's searches) only the
estimate tells, and on a model where most layers select far above the limit (Qwen2.5-Coder-0.5B selects 0.6-0.9
of the causal area at 16K) paying the estimate just to run dense costs more than any sparse layer saves. A profile
is the offline answer, as MInference's per-head configs are: `sampleattn calibrate --model NAME` runs the model
once per length on a fixed calibration prompt with the fallback off and stores each layer's mean selected density.
A layer whose profiled density reaches `before` runs dense without estimating (recorded as dense_fallback=profile);
every other layer estimates and decides as before, so a profile that reads too high for a prompt costs that prompt
only speed, never accuracy, and one that reads too low costs what no profile costs.

On a GPU the calibration also times the whole prefill with the method (fallback off) against dense cuDNN on the
same prompt: `ratio` per length. Where it is >= 1 the method's sparse path (estimate + kernel, every layer) is no
faster than dense on this model and card at that length, so every layer runs dense there (dense_fallback=profile):
this is what the limits cannot see, a peer's estimator cost. `method:dense_above=1` still runs the sparse path.
Ratios hold for the GPU kind they were timed on (`ratio_gpu`); on another device a profile gives densities only.

Profiles are keyed by model name and method spec (the method's name plus its non-default options) and held in
CACHE (written by calibrate) and DEFAULTS_FILE (shipped; densities do not depend on the card). Between profiled
lengths the density is interpolated in log2(length); outside them there is no prediction.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

CACHE = Path.home() / ".cache" / "sampleattn" / "density_profiles.json"
DEFAULTS_FILE = Path(__file__).with_name("density_profiles.json")


@dataclass(frozen=True)
class Profile:
    """One model's per-layer densities for one method spec: lengths ascending, densities[i][layer]."""
    lengths: tuple[int, ...]
    densities: tuple[tuple[float | None, ...], ...]  # None: a layer the method does not run
    source: str  # where it came from, recorded in every layer it decides
    ratios: tuple[float | None, ...] = ()  # per length: whole prefill, fallback off, / dense (GPU calibrations)

    def sparse_slower(self, length: int) -> bool:
        """Whether the sparse path was timed no faster than dense at this length (log2-interpolated; False where
        untimed or outside the profiled lengths)."""
        ratio = log2_interpolate([(n, r) for n, r in zip(self.lengths, self.ratios) if r is not None], length)
        return ratio is not None and ratio >= 1.0

    def density(self, layer: int, length: int) -> float | None:
        """The profiled density of `layer` at `length` (log2-linear between profiled lengths), None outside."""
        if not self.lengths or layer >= min(len(row) for row in self.densities):
            return None
        return log2_interpolate([(n, row[layer]) for n, row in zip(self.lengths, self.densities)], length)


def log2_interpolate(points: list[tuple[int, float | None]], length: int) -> float | None:
    """points (length, value) ascending: the value at `length`, linear in log2(length) between the two points
    around it; None outside the points or where either of those two values is None (e.g. a layer the method never
    ran). attention/fallback.py interpolates its limits through this too, held flat outside."""
    if not points or length < points[0][0] or length > points[-1][0]:
        return None
    for (l0, v0), (l1, v1) in zip(points, points[1:]):
        if l0 <= length <= l1:
            if v0 is None or v1 is None:
                return None
            t = (math.log2(length) - math.log2(l0)) / (math.log2(l1) - math.log2(l0))
            return v0 + t * (v1 - v0)
    return points[0][1]  # a single point, asked for exactly its length


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as f:
        return json.load(f).get("profiles", {})


def lookup(model: str | None, spec: str, paths: tuple[Path, ...] | None = None, gpu: str | None = None) -> Profile | None:
    """The profile of (model, method spec): the cache first, then the shipped defaults; None if neither has it.
    Its timed ratios only where `gpu` (the device kind, fallback.gpu_kind) is the one they were timed on."""
    if not model:
        return None
    for path in paths or (CACHE, DEFAULTS_FILE):
        entry = _read(path).get(model, {}).get(spec)
        if entry:
            lengths = sorted(entry["lengths"], key=int)
            label = "cache" if path == CACHE else "default" if path == DEFAULTS_FILE else str(path)
            ratios = entry.get("ratio", {}) if entry.get("ratio_gpu") == gpu else {}
            return Profile(tuple(int(x) for x in lengths), tuple(tuple(entry["lengths"][x]) for x in lengths),
                           f"profile:{label}:{entry.get('from', '?')}", tuple(ratios.get(x) for x in lengths))
    return None


def save(model: str, spec: str, lengths: dict[int, list[float | None]], provenance: str, path: Path = CACHE,
         ratios: dict[int, float] | None = None, gpu: str | None = None) -> Path:
    """Merge one (model, spec) profile into the file at `path`: lengths (and timed ratios) given replace those
    stored; a length given without a ratio drops the stored one (it was timed on another profile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = data.setdefault("profiles", {}).setdefault(model, {}).setdefault(spec, {"lengths": {}})
    entry["lengths"].update({str(n): [None if d is None else round(float(d), 4) for d in row]
                             for n, row in lengths.items()})
    entry["lengths"] = dict(sorted(entry["lengths"].items(), key=lambda kv: int(kv[0])))
    stored = {n: r for n, r in entry.get("ratio", {}).items() if int(n) not in lengths}
    stored.update({str(n): round(float(r), 4) for n, r in (ratios or {}).items()})
    if ratios and entry.get("ratio_gpu") not in (None, gpu):
        stored = {str(n): round(float(r), 4) for n, r in ratios.items()}  # timed on another card: start over
    entry["ratio"] = dict(sorted(stored.items(), key=lambda kv: int(kv[0])))
    if ratios:
        entry["ratio_gpu"] = gpu
    entry["from"] = provenance
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
