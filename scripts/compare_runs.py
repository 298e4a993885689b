"""Two run folders of the same grid (e.g. 1 GPU and 2 ranks): same cells, same answers and scores?

    python scripts/compare_runs.py RUN_A RUN_B [--wall-a S --wall-b S] [--out FILE.md]

Reads every shard of each folder (cells.jsonl, cells.rank<R>.jsonl). Prints a short markdown summary: cells in
each, keys only in one, cells whose status, prediction or score differ, mean score per method, wall times, and
the cells' own time (`cell_seconds`: a cell's share of its batch's wall time, model load excluded) with the
cells per second each run reached on the cells both hold (how `--batch-size` is judged: a batch 1 slice against
the same cells of a batched sweep).
Exit code 1 when the cells or scores differ.
"""
import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.running.store import RunStore  # noqa: E402


def last_by_key(folder: str) -> dict[str, dict]:
    cells = {}
    for cell in RunStore.open(Path(folder)).cells():
        cells[cell["key"]] = cell  # a re-run cell (after --resume) supersedes its earlier line
    return cells


def mean_scores(cells: dict[str, dict]) -> dict[str, float]:
    by_method: dict[str, list[float]] = {}
    for cell in cells.values():
        if cell.get("score") is not None:
            by_method.setdefault(cell["method_spec"], []).append(float(cell["score"]))
    return {m: round(statistics.fmean(v), 4) for m, v in sorted(by_method.items())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--wall-a", type=float)
    parser.add_argument("--wall-b", type=float)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    a, b = last_by_key(args.a), last_by_key(args.b)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    fields = ("status", "prediction", "score")
    differ = [k for k in sorted(set(a) & set(b)) if any(a[k].get(f) != b[k].get(f) for f in fields)]
    ranks = sorted({c.get("rank") for c in b.values() if c.get("rank") is not None})
    lines = [f"# {Path(args.a).name} vs {Path(args.b).name}", "",
             f"- cells: {len(a)} vs {len(b)}; only in the first: {len(only_a)}; only in the second: {len(only_b)}",
             f"- cells whose status, prediction or score differ: {len(differ)}"
             + (f" ({', '.join(differ[:5])}{' ...' if len(differ) > 5 else ''})" if differ else ""),
             f"- ranks that wrote the second run's cells: {ranks}",
             f"- mean score per method: {mean_scores(a)} vs {mean_scores(b)}"]
    if args.wall_a and args.wall_b:
        lines.append(f"- wall time: {args.wall_a:.1f} s vs {args.wall_b:.1f} s "
                     f"(x{args.wall_a / args.wall_b:.2f}; each includes process start and model load)")
    common = [k for k in sorted(set(a) & set(b))  # the same cells in both: a slice against a whole sweep, say
              if all(isinstance(run[k].get("cell_seconds"), (int, float)) for run in (a, b))]
    seconds_a = sum(a[k]["cell_seconds"] for k in common)
    seconds_b = sum(b[k]["cell_seconds"] for k in common)
    if common and seconds_a and seconds_b:
        rate_a, rate_b = len(common) / seconds_a, len(common) / seconds_b
        lines.append(f"- cell time of the {len(common)} cells both hold (model load excluded): {seconds_a:.1f} s vs "
                     f"{seconds_b:.1f} s; {rate_a:.2f} vs {rate_b:.2f} cells/s (x{rate_b / rate_a:.2f})")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if only_a or only_b or differ else 0


if __name__ == "__main__":
    sys.exit(main())
