"""The finished cells of run folders as one pandas frame, one row per cell: what every report table starts from."""
from pathlib import Path

import pandas as pd

from harness.options import InputError
from harness.running.store import RunStore


def model_label(name: str) -> str:
    """A model's name for titles and tables: a file or folder path becomes its stem; names and hub ids stay."""
    path = Path(str(name))
    if str(name).endswith(".gguf") or str(name).startswith(("/", ".", "~")) or path.is_dir():
        return path.stem
    return str(name)


def load_cells(run_dirs: list[Path]) -> pd.DataFrame:
    """Every finished cell of the given runs, one row each, with meta fields flattened (meta.depth, ...)."""
    rows, others = [], {}
    for folder in map(Path, run_dirs):
        for cell in RunStore.open(folder).unique_cells(what="report"):
            if cell.get("status") != "ok":
                others[cell.get("status")] = others.get(cell.get("status"), 0) + 1
                continue
            row = {k: v for k, v in cell.items() if k not in ("meta", "layers", "scores")}
            row.update({f"meta.{k}": v for k, v in (cell.get("meta") or {}).items() if not isinstance(v, (list, dict))})
            row["layers"] = cell.get("layers")
            row["run"] = folder.name
            rows.append(row)
    if not rows:
        where = ", ".join(str(d) for d in run_dirs)
        if not others:
            raise InputError(f"no finished cells in {where}; run a sweep first")
        held = ", ".join(f"{n} {status}" for status, n in others.items())
        hint = (" (too_long: every length was beyond the model's context; rerun with shorter --lengths, or "
                "--beyond-context to time them)" if "too_long" in others else "")
        raise InputError(f"nothing to report in {where}: no cell finished ok, it holds {held}{hint}")
    frame = pd.DataFrame(rows)
    for column, default in (("device", "unknown"), ("density", float("nan")), ("ttft_ms", float("nan"))):
        if column not in frame:
            frame[column] = default
    frame["device"] = frame["device"].fillna("unknown").astype(str)
    frame["model"] = frame["model"].map(model_label)
    return frame
