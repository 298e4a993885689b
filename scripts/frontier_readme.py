"""Render the README's accuracy-vs-TTFT frontier block from committed run folders.

    python scripts/frontier_readme.py RUN [RUN ...] [--readme README.md] [--out DIR] [--baseline SPEC]
                                      [--pool-baselines] [--cpu-timings]

RUN: sweep run folders (their cells give density, accuracy and TTFT) and, for the recall column, diagnose run
folders (diagnostics.jsonl). The figures, frontier.md and frontier.csv go to --out (default: the report/ folder of
the first RUN that holds cells, where `sampleattn report` writes them too); the block (tables and links to those figures, relative to the README)
replaces what lies between <!-- frontier:start --> and <!-- frontier:end --> in the README, and nothing else in
the file changes. Without the markers the block is printed (exit 0) with a hint where to put them. Bad input (no
such folder, no finished cells, broken markers): one line, exit 2, nothing written.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.options import InputError  # noqa: E402
from harness.reports import frontier  # noqa: E402
from harness.reports.cells import load_cells  # noqa: E402
from harness.running.store import RunStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- frontier:start -->", "<!-- frontier:end -->"


def check_runs(runs: list[str]) -> list[Path]:
    folders = [Path(r) for r in runs]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise InputError(f"no such folder: {', '.join(missing)}; pass run folders under results/runs/")
    not_runs = [str(f) for f in folders if not RunStore.is_run(f)]
    if not_runs:
        raise InputError(f"not a run folder (no manifest.json): {', '.join(not_runs)}; pass folders written by "
                         "sampleattn sweep, run or diagnose")
    return folders


def block_span(text: str, readme: Path) -> tuple[int, int] | None:
    """(end of the start marker, start of the end marker), or None when the file has neither marker."""
    starts, ends = text.count(START), text.count(END)
    if starts == 0 and ends == 0:
        return None
    if starts != 1 or ends != 1 or text.index(START) > text.index(END):
        raise InputError(f"{readme}: expected one {START} followed by one {END} (found {starts} and {ends}); fix the "
                         "markers by hand")
    return text.index(START) + len(START), text.index(END)


def replace_block(text: str, span: tuple[int, int], block: str) -> str:
    """The text with only what lies between the markers replaced by the block (on lines of its own)."""
    return text[:span[0]] + "\n" + block.rstrip("\n") + "\n" + text[span[1]:]


def relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def render_block(built: dict, runs: list[Path], out: Path, readme: Path) -> str:
    prefix = relative(out, readme.parent) + "/"
    command = "python scripts/frontier_readme.py " + " ".join(relative(r, REPO) for r in runs)
    body = frontier.render(**built, image_prefix=prefix, heading="###")
    return f"<!-- rendered by `{command}`; edit the run folders, not this block -->\n" + body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--out", default=None, help="folder for the figures and tables (default: <first sweep RUN>/report)")
    parser.add_argument("--baseline", default=None, help="dense method spec to divide by (default: dense)")
    parser.add_argument("--pool-baselines", action="store_true", help="pool the baseline's timings over runs")
    parser.add_argument("--cpu-timings", action="store_true", help="draw CPU-timed rows too")
    args = parser.parse_args(argv)
    try:
        runs = check_runs(args.runs)
        readme = Path(args.readme)
        if not readme.is_file():
            raise InputError(f"no README at {readme}; pass --readme PATH")
        text = readme.read_bytes().decode("utf-8")
        span = block_span(text, readme)
        frame = load_cells(runs)  # no finished cells: one line, before anything is written
        with_cells = [r for r in runs if r.name in set(frame["run"])]  # not a diagnose folder
        out = Path(args.out) if args.out else with_cells[0] / "report"
        built = frontier.build(runs, out, args.baseline, args.pool_baselines, args.cpu_timings, frame)
    except InputError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    frontier.write(built, out)
    block = render_block(built, runs, out, readme)
    if span is None:
        print(block)
        print(f"hint: {readme} has no {START} / {END} markers; put them where the block belongs and run this again "
              "to fill it", file=sys.stderr)
        return 0
    readme.write_bytes(replace_block(text, span, block).encode("utf-8"))
    print(f"frontier: replaced the block in {readme} ({len(built['table'])} rows, {len(built['figures'])} figures "
          f"in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
