"""Render the long-prefill table (long_<gpu>.md) and the README's copy of it from scripts/bench_long.py's jsonl.

    python scripts/long_table.py results/bench/long_H200.jsonl [--readme README.md]

The md holds, per model and layer count: time per layer, executed density, speedups against the dense rows of
the same file, peak memory against the stated bound (weights + one layer's activations + kept KV + the method's
known workspace), the paper's MLSys TTFT speedups beside (A100, marked unconfirmed), the failed cells with their
messages, and what the whole model's KV cache would need at the longest length. The last row of a cell wins.
--readme replaces the block between <!-- long-table:begin --> and <!-- long-table:end --> in that file.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("dense:backend=flash", "dense:backend=cudnn")
TARGET_METHOD, TARGET_SPEEDUP = ("sample", "0.05"), 5.0  # issue 25: sample:density=0.05 >= 5x dense flash at 1M
BEGIN, END = "<!-- long-table:begin -->", "<!-- long-table:end -->"
GIB = 2**30


def read(path: Path, commit: str | None = None) -> tuple[list[dict], list[dict]]:
    """(meta lines, cell rows with the last row of each cell kept) of one commit: the last worker's unless given.
    Baselines first within a length."""
    metas, cells = [], {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "meta" in row:
            metas.append(row["meta"])
        elif "method" in row:
            key = (row.get("model"), row.get("layers"), row.get("chunk"), row["length"], row["method"],
                   row.get("check"))
            cells.pop(key, None)
            cells[key] = row
    commit = commit or (metas[-1]["commit"] if metas else None)
    metas = [m for m in metas if m["commit"] == commit]
    rank = {b: i for i, b in enumerate(BASELINES)}
    order = sorted((r for r in cells.values() if r.get("commit") == commit),
                   key=lambda r: (r.get("model") or "", r.get("layers") or 0, r["length"], rank.get(r["method"], 9)))
    return metas, order


def paper_speedups() -> dict[int, float]:
    """The MLSys version's TTFT speedups vs FlashAttention-2 (A100), from harness/reports/paper_tables/
    (unconfirmed)."""
    path = REPO / "harness" / "reports" / "paper_tables" / "ttft_speedup.csv"
    if not path.is_file():
        return {}
    with open(path) as handle:
        return {int(r["seq_len"]): float(r["ttft_speedup_vs_fa2"]) for r in csv.DictReader(handle)
                if r["version"] == "mlsys" and r["ttft_speedup_vs_fa2"]}


def spec_options(spec: str) -> tuple[str, dict]:
    """'sample:r_w=0.1,density=0.05' -> ('sample', {'r_w': '0.1', 'density': '0.05'})."""
    name, _, rest = spec.partition(":")
    return name, dict(item.split("=", 1) for item in rest.split(",") if "=" in item)


def is_target(spec: str) -> bool:
    name, options = spec_options(spec)
    return name == TARGET_METHOD[0] and options.get("density") == TARGET_METHOD[1]


def length_label(tokens: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if tokens >= size and tokens % size == 0:
            return f"{tokens // size}{unit}"
    return str(tokens)


def speedup(cells: list[dict], row: dict, baseline: str) -> float | None:
    base = next((r for r in cells if r["method"] == baseline and r["length"] == row["length"]
                 and r.get("layers") == row.get("layers") and r.get("status") == "ok"), None)
    if base is None or row.get("status") != "ok":
        return None
    return round(base["ms_per_layer"] / row["ms_per_layer"], 2)


def show(value, suffix: str = "") -> str:
    return "" if value is None or value == "" else f"{value}{suffix}"


def main_table(cells: list[dict], paper: dict) -> list[str]:
    lines = ["| length | method | status | ms/layer | executed density | vs flash | vs cuDNN | peak GiB | "
             "bound GiB | peak / bound | paper (MLSys, A100) vs FA2 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in cells:
        paper_value = paper.get(row["length"]) if row["method"].startswith("sample") else None
        lines.append("| " + " | ".join([
            length_label(row["length"]), row["method"], row.get("status", ""), show(row.get("ms_per_layer")),
            show(row.get("density")),
            *(show(speedup(cells, row, b), "x") if row["method"] != b else "" for b in BASELINES),
            show(row.get("peak_mem_gib")), show(row.get("bound_gib")),
            show(row.get("peak_over_bound")),
            f"{paper_value}x ({'abstract' if row['length'] == 1 << 20 else 'unconfirmed'})"
            if paper_value else ""]) + " |")
    return lines


def memory_section(cells: list[dict], meta: dict) -> list[str]:
    longest = max(r["length"] for r in cells)
    ok = [r for r in cells if r["length"] == longest and r.get("status") == "ok" and r.get("bound_gib")]
    lines = [f"## Memory at {length_label(longest)}", ""]
    if ok:
        parts = ok[0]["bound_parts_gib"]
        lines += [f"Bound = weights ({parts['weights']} GiB, the {meta['layers']} layer(s) kept + embeddings + head) "
                  f"+ one layer's activations (residual {parts['hidden']}, q/k/v {parts['qkv']}, attention output "
                  f"{parts['attention_out']} GiB) + kept KV ({parts['kept_kv']} GiB: timing cells drop each layer's "
                  "cache) + the method's workspace where known in closed form (dense cuDNN/flash: k/v expanded to "
                  "the query heads; SampleAttention: column scores, list and prefix counts); peak = "
                  "torch.cuda.max_memory_allocated over the prefill.", "",
                  "| method | peak GiB | bound GiB | workspace in bound GiB | peak / bound |", "|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['peak_mem_gib']} | {r['bound_gib']} | "
                  f"{show(r['bound_parts_gib'].get('workspace')) or 'not modelled'} | {r['peak_over_bound']} |"
                  for r in ok]
        lines.append("")
    lines += kv_fit(meta, longest)
    return lines


def kv_fit(meta: dict, length: int) -> list[str]:
    """Whether the whole model's KV cache fits next to its weights at this length, from the recorded sizes."""
    per_token = meta.get("kv_bytes_per_token")
    if not per_token:
        return []
    kv = per_token * length / GIB
    weights = meta["full_model_weights_gib"]
    layer = meta["layer_activation_bytes_per_token"] * length / GIB
    capacity = meta.get("gpu_memory_gib")
    cap_text = f"{capacity} GiB ({meta['gpu']})" if capacity else "141 GB = 131.3 GiB (an H200)"
    capacity = capacity or 141e9 / GIB
    fp8 = kv / 2
    return [f"Whole model ({meta['model_layers']} layers) at {length_label(length)}: bf16 KV cache {kv:.1f} GiB "
            f"+ weights {weights} GiB = {kv + weights:.1f} GiB before any activation (one layer's at this length: "
            f"{layer:.1f} GiB), against {cap_text}. "
            + ("So the bf16 cache cannot stay on this GPU with the model, whatever the prefill does. "
               if kv + weights > capacity else "The bf16 cache fits next to the weights. ")
            + ("What would make room" if kv + weights <= capacity else "What would let it fit")
            + f": an 8-bit (fp8) KV cache, {fp8:.1f} GiB, gives {fp8 + weights + layer:.1f} GiB "
            "with one layer's activations"
            + (" (fits)" if fp8 + weights + layer <= capacity else " (still too much)")
            + "; or keeping on the GPU only the layer being prefilled and moving each finished layer's K/V to host "
            f"memory ({per_token / meta['model_layers'] * length / GIB:.1f} GiB per layer); or splitting heads over "
            "two GPUs (half the cache each). Decoding after the prefill reads the whole cache every token, so the "
            "offloaded variant only serves the first token.", ""]


def render(path: Path) -> str:
    metas, rows = read(path)
    if not metas:
        raise SystemExit(f"error: {path} has no meta line; it is not a bench_long result")
    meta = metas[-1]
    paper = paper_speedups()
    cells = [r for r in rows if "check" not in r]
    checks = [r for r in rows if "check" in r]
    commits = sorted({m["commit"] for m in metas})
    layers = sorted({r.get("layers") for r in cells if r.get("layers")})
    lines = [f"# Long-prefill time per layer, {meta['model']}, {'/'.join(map(str, layers))} of {meta['model_layers']} "
             f"layers, one {meta['gpu']}", "",
             f"Rendered by scripts/long_table.py from {path.name}. Random weights (timing only); chunked prefill "
             f"(chunk {meta['chunk']}), KV cache dropped per layer; median of the repeats in each row. ms/layer = "
             "prefill time / layers run (embedding and the last-token head included, small). Speedups are against "
             "the dense rows of this file at the same length. Paper: SampleAttention MLSys version, whole-model "
             "TTFT vs FlashAttention-2 on an A100 (harness/reports/paper_tables/; unconfirmed except the 5.29x at 1M).", "",
             f"Provenance: {meta['gpu']}, torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, "
             f"commit {', '.join(commits)} (rows of other commits in the file are not shown), {len(metas)} worker "
             f"start(s), last {meta['created']}; command(s): "
             + "; ".join(f"`{c}`" for c in dict.fromkeys(m["command"] for m in metas)) + ".", ""]
    lines += main_table(cells, paper)
    lines += ["", *targets(cells)]
    failed = [r for r in cells if r.get("status") not in ("ok",)]
    if failed:
        lines += ["", "## Failed cells (recorded; the rest of the run went on)", ""]
        lines += [f"- {length_label(r['length'])} {r['method']}: {r.get('status')}: {r.get('error')}" for r in failed]
    if checks:
        lines += ["", f"## First token, plain transformers forward vs chunked prefill ({checks[0]['length']} tokens, "
                  f"{checks[0]['layers']} layers)", ""]
        lines += [f"- {c['method']}: " + (f"error {c['error']}" if c.get("error") else
                  f"same={c['same_first_token']}, max |logit diff| {c['max_abs_logit_diff']}, "
                  f"top-1 margin {c['top1_margin']}") for c in checks]
    if cells:
        lines += ["", *memory_section(cells, meta)]
    return "\n".join(lines).rstrip() + "\n"


def targets(cells: list[dict]) -> list[str]:
    lines = []
    longest = max((r["length"] for r in cells), default=0)
    failed = [r for r in cells if r.get("status") != "ok"]
    lines.append(f"Crashes: {len(failed)} of {len(cells)} cells did not finish (listed below)." if failed
                 else f"Crashes: none; all {len(cells)} cells finished.")
    row = next((r for r in cells if is_target(r["method"]) and r["length"] == longest), None)
    if row is not None:
        value = speedup(cells, row, BASELINES[0])
        lines.append(f"Target ({row['method']} >= {TARGET_SPEEDUP}x dense flash per layer at "
                     f"{length_label(longest)}): " + (f"{value}x, {'met' if value >= TARGET_SPEEDUP else 'not met'}."
                                                     if value else "no comparable pair of ok rows."))
    return lines


def readme_block(path: Path) -> str:
    """A compact copy for the README: ms per layer (speedup vs dense flash) per method and length."""
    metas, rows = read(path)
    cells = [r for r in rows if "check" not in r]
    lengths = sorted({r["length"] for r in cells})
    methods = list(dict.fromkeys(r["method"] for r in cells))
    md = path.with_suffix(".md").name
    lines = [BEGIN, f"ms per layer (speedup vs dense flash), {metas[-1]['model']}, one {metas[-1]['gpu']}, from",
             f"[results/bench/{md}](results/bench/{md}) (rendered by scripts/long_table.py; provenance there):", "",
             "| method | " + " | ".join(length_label(n) for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for method in methods:
        values = []
        for n in lengths:
            row = next((r for r in cells if r["method"] == method and r["length"] == n), None)
            if row is None:
                values.append("")
            elif row.get("status") != "ok":
                values.append(row.get("status", "error"))
            else:
                x = speedup(cells, row, BASELINES[0])
                values.append(f"{row['ms_per_layer']:.0f}" + (f" ({x}x)" if x and method != BASELINES[0] else ""))
        lines.append(f"| {method} | " + " | ".join(values) + " |")
    paper = paper_speedups()
    lines.append("| paper, MLSys version: SampleAttention TTFT vs FlashAttention-2, A100 (unconfirmed except 1M) | "
                 + " | ".join(f"{paper[n]}x" if n in paper else "" for n in lengths) + " |")
    return "\n".join([*lines, END])


def write(path: Path, readme: Path | None = None) -> Path:
    path = Path(path)
    md = path.with_suffix(".md")
    md.write_text(render(path))
    if readme is not None:
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"error: {readme} has no {BEGIN} ... {END} block to replace")
        head, rest = text.split(BEGIN, 1)
        readme.write_text(head + readme_block(path) + rest.split(END, 1)[1])
    return md


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", help="scripts/bench_long.py's output, e.g. results/bench/long_H200.jsonl")
    parser.add_argument("--readme", default=None, help="also replace the long-table block of this file")
    args = parser.parse_args(argv)
    path = Path(args.jsonl)
    if not path.is_file():
        print(f"error: {path} does not exist; run scripts/bench_long.py first", file=sys.stderr)
        return 2
    print(write(path, Path(args.readme) if args.readme else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
