"""RULER tables from cells (pure functions): the usual layout (methods x lengths, the subtask average, 0-100) and
the per-subtask breakdown. Cells are rows as harness.reports.cells.load_cells gives them (task, model, method_spec,
length, score in 0..1, meta.subtask).

    python -m harness.reports.tables_ruler RUN_DIR [RUN_DIR ...] [--out DIR]   # writes ruler.md (+ CSVs) into DIR
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.reports.cells import load_cells
from tasks.ruler import SUBTASKS

INDEX = ["model", "method_spec"]


def length_label(length: int) -> str:
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def ruler_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The RULER cells, with 'subtask' and 'score100' (RULER reports 0-100)."""
    cells = frame[frame["task"] == "ruler"].copy()
    if cells.empty:
        raise ValueError("no RULER cells in these runs; run with --task ruler")
    cells["subtask"] = cells["meta.subtask"]
    cells["score100"] = 100.0 * cells["score"].astype(float)
    return cells


def subtask_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean score (0-100) per (model, method, length) x subtask, subtasks in RULER's order."""
    cells = ruler_cells(frame)
    table = cells.pivot_table(index=INDEX + ["length"], columns="subtask", values="score100", aggfunc="mean")
    return table[[t for t in SUBTASKS if t in table.columns]]


def average_table(frame: pd.DataFrame) -> pd.DataFrame:
    """RULER's usual layout: rows methods, columns lengths, cells the mean of the subtask scores (0-100), plus
    'Avg.' over lengths. A subtask counts once however many samples it has."""
    average = subtask_scores(frame).mean(axis=1, skipna=False).unstack("length")  # a missing subtask: no average
    average = average[sorted(average.columns)]
    average.columns = [length_label(c) for c in average.columns]
    average["Avg."] = average.mean(axis=1)
    return average


def per_task_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-subtask breakdown: rows (model, method, length), columns the subtasks (0-100) and their average."""
    table = subtask_scores(frame).copy()
    table["average"] = table.mean(axis=1, skipna=False)
    return table.rename(index=length_label, level="length")


def coverage(frame: pd.DataFrame) -> pd.DataFrame:
    """Samples per (model, method, length) x subtask, to say how many samples each cell averages."""
    cells = ruler_cells(frame)
    return cells.pivot_table(index=INDEX + ["length"], columns="subtask", values="score100", aggfunc="count")


def markdown(frame: pd.DataFrame, digits: int = 1) -> str:
    counts = coverage(frame)
    subtasks = counts.shape[1]
    samples = sorted({int(v) for v in counts.fillna(0).to_numpy().ravel() if v})
    note = (f"{subtasks} subtasks; samples per subtask and length: {', '.join(map(str, samples))}. "
            "Scores are RULER's metrics (string_match_all; string_match_part for qa_1/qa_2), 0-100; "
            "an average is blank (nan) where a subtask is missing.")
    average, per_task = (flat(t.round(digits)) for t in (average_table(frame), per_task_table(frame)))
    return (f"## RULER average (0-100)\n\n{average}\n\n{note}\n\n## RULER per subtask (0-100)\n\n{per_task}\n")


def flat(table: pd.DataFrame) -> str:
    """Markdown with the index as plain columns (model | method | ...)."""
    return table.rename_axis(index={"method_spec": "method"}).reset_index().to_markdown(index=False)


def write(frame: pd.DataFrame, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    average_table(frame).to_csv(out / "ruler_average.csv")
    per_task_table(frame).to_csv(out / "ruler_per_task.csv")
    path = out / "ruler.md"
    path.write_text(markdown(frame))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reports.tables_ruler", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder for ruler.md and CSVs (default: first run)")
    args = parser.parse_args(argv)
    try:
        frame = load_cells(args.runs)
        path = write(frame, args.out or args.runs[0])
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
