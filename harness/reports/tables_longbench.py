"""LongBench tables as LongBench defines them, from a run's cells (the frame of report.load_cells).

Official eval.py scores each dataset on 0-100 as round(100 * mean, 2). LongBench's leaderboard then averages
dataset scores, never pooled samples, so lcc's 500 rows weigh as much as hotpotqa's 200: its "Avg" is the mean
over the six task categories of each category's mean dataset score, per language (code counts for both).
LongBench-E splits each dataset by the official `length` field (words, or characters for Chinese; not our
token length) into 0-4k, 4-8k and 8k+ (eval.py scorer_e). The SampleAttention paper's "LongBench total" is
the sum of the dataset scores (21 datasets in LongBench v1), so a total is comparable only over the same
datasets: compare totals as a ratio to the dense total of the same run (total_vs_baseline).

eval.py --e reports only the per-bucket scores of each dataset: the per-dataset, summary, category and total
tables here hold LongBench v1 cells only, and the bucket table's "average" row (mean over datasets per bucket)
is ours, labelled so. Every other LongBench number (the report's first tables, `reproduce accuracy`) is the
per-dataset score averaged over datasets (group_means), never a mean over pooled samples.

Pure functions: cells DataFrame -> DataFrames, one row per (model, method_spec, suite, length).
"""
import numpy as np
import pandas as pd

from tasks import longbench
from tasks.longbench_metrics import bucket

INDEX = ["model", "method_spec", "suite", "length"]
BUCKETS = ["0-4k", "4-8k", "8k+"]
CATEGORIES = {"single-doc QA": "single", "multi-doc QA": "multi", "summarization": "summ",
              "few-shot learning": "fewshot", "synthetic": "synthetic", "code": "code"}
OURS_AVERAGE = "average (ours)"  # eval.py --e has no mean over datasets
TOTAL_NOTE = ("total = sum of the per-dataset scores (0-100 each), as the SampleAttention paper's LongBench total "
              "(over all 21 LongBench v1 datasets there); comparable only over the same datasets")


def longbench_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The LongBench cells, with dataset, suite (LongBench or LongBench-E) and LongBench-E bucket columns."""
    if frame.empty or "task" not in frame or "meta.dataset" not in frame:
        return pd.DataFrame(columns=[*INDEX, "dataset", "bucket", "score"])
    cells = frame[frame["task"] == "longbench"].copy()
    cells["dataset"] = cells["meta.dataset"]
    e = cells["meta.longbench_e"] if "meta.longbench_e" in cells else pd.Series(False, index=cells.index)
    cells["suite"] = np.where(e.fillna(False).astype(bool), "LongBench-E", "LongBench")
    words = cells["meta.length_words"] if "meta.length_words" in cells else pd.Series(None, index=cells.index)
    cells["bucket"] = words.map(lambda n: bucket(int(n)) if pd.notna(n) else None)
    return cells


def v1_cells(frame: pd.DataFrame) -> pd.DataFrame:
    cells = longbench_cells(frame)
    return cells[cells["suite"] == "LongBench"]


def task_mean(cells: pd.DataFrame) -> float:
    """One group's mean score (0-1) on one task: for LongBench the mean over datasets (LongBench v1 and
    LongBench-E kept apart) of each dataset's eval.py score, as LongBench averages; any other task the mean over
    its samples."""
    scores = cells["score"].dropna()
    if cells.empty or (cells["task"] != "longbench").any() or "meta.dataset" not in cells:
        return float(scores.mean()) if len(scores) else float("nan")
    lb = longbench_cells(cells.dropna(subset=["score"]))
    return float(lb.groupby(["suite", "dataset"])["score"].agg(dataset_score).mean()) / 100


def group_means(frame: pd.DataFrame, by: list[str]) -> pd.Series:
    """Mean score per group of `by`: each task's task_mean, and where `by` pools tasks, those weighted by their
    sample counts (so a LongBench share counts as its per-dataset average, never as its pooled samples)."""
    keys = list(dict.fromkeys([*by, "task"]))
    rows = [{**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "mean": task_mean(group),
             "n": int(group["score"].notna().sum())} for key, group in frame.groupby(keys)]
    per_task = pd.DataFrame(rows, columns=[*keys, "mean", "n"])
    per_task["weighted"] = per_task["mean"] * per_task["n"]
    sums = per_task.groupby(list(by))[["weighted", "n"]].sum()
    return (sums["weighted"] / sums["n"]).rename("mean")


def dataset_score(scores) -> float:
    """eval.py scorer(): 100 x the mean of the samples' scores, rounded to 2 decimals."""
    total = 0.0
    for value in scores:
        total += float(value)
    return round(100 * total / len(scores), 2)


def bucket_score(scores) -> float:
    """eval.py scorer_e(): round(100 * np.mean(scores), 2) for one bucket."""
    return float(round(100 * np.mean([float(v) for v in scores]), 2))


def _ordered(columns) -> list[str]:
    official = list(longbench.config()["datasets"])
    return sorted(columns, key=lambda name: official.index(name) if name in official else len(official))


def dataset_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-dataset score (0-100, eval.py's rounding) per (model, method_spec, suite, length), official order.
    LongBench v1 only: eval.py --e scores LongBench-E per length bucket (bucket_table), never over all lengths."""
    cells = v1_cells(frame)
    if cells.empty:
        return pd.DataFrame()
    table = cells.groupby([*INDEX, "dataset"])["score"].agg(dataset_score).unstack("dataset")
    return table[_ordered(table.columns)]


def dataset_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many samples each dataset score above averages (LongBench v1)."""
    cells = v1_cells(frame)
    if cells.empty:
        return pd.DataFrame()
    table = cells.groupby([*INDEX, "dataset"])["score"].size().unstack("dataset")
    return table[_ordered(table.columns)]


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """datasets (how many), avg (mean of the dataset scores) and total (their sum, the paper's total)."""
    scores = dataset_table(frame)
    if scores.empty:
        return scores
    return pd.DataFrame({"datasets": scores.notna().sum(axis=1), "avg": scores.mean(axis=1),
                         "total": scores.sum(axis=1, min_count=1)})


def category_table(frame: pd.DataFrame) -> pd.DataFrame:
    """LongBench's leaderboard: per language, each category's mean dataset score and their mean (avg).

    A category without any of its datasets in the run is left out of avg (shown as NaN), so check `datasets`.
    """
    scores = dataset_table(frame)
    if scores.empty:
        return scores
    parts = []
    for language in ("en", "zh"):
        table = pd.DataFrame(index=scores.index)
        for title, group in CATEGORIES.items():
            names = [d for d in longbench.GROUPS[group] if d in scores.columns
                     and (group == "code" or (d in longbench.ZH) == (language == "zh"))]
            table[title] = scores[names].mean(axis=1) if names else np.nan
        table["avg"] = table[list(CATEGORIES)].mean(axis=1)
        table["datasets"] = sum(scores[d].notna() for d in scores.columns
                                if d in longbench.GROUPS["code"] or (d in longbench.ZH) == (language == "zh"))
        parts.append(table.assign(language=language).set_index("language", append=True))
    return pd.concat(parts).sort_index()


def bucket_table(frame: pd.DataFrame) -> pd.DataFrame:
    """LongBench-E (eval.py --e): score (0-100) per dataset and length bucket, plus each bucket's mean over the
    datasets (dataset OURS_AVERAGE: eval.py has none). LongBench v1 cells and cells without the official length
    field are left out."""
    cells = longbench_cells(frame)
    cells = cells[(cells["suite"] == "LongBench-E") & cells["bucket"].notna()]
    if cells.empty:
        return pd.DataFrame()
    table = cells.groupby([*INDEX, "dataset", "bucket"])["score"].agg(bucket_score).unstack("bucket")
    table = table.reindex(columns=BUCKETS)
    average = table.groupby(level=INDEX).mean()
    average["dataset"] = OURS_AVERAGE
    table = pd.concat([table, average.set_index("dataset", append=True)])
    order = {name: i for i, name in enumerate([*longbench.config()["datasets"], OURS_AVERAGE])}
    return table.sort_index(key=lambda level: level.map(order) if level.name == "dataset" else level)


def total_vs_baseline(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each method's total over the baseline's (dense) total at the same (model, suite, length): the quantity
    the paper's totals give as method total / full-attention total. Only datasets the baseline has count."""
    scores = dataset_table(frame)
    if scores.empty:
        return scores
    rows = []
    for key, row in scores.iterrows():
        fields = dict(zip(INDEX, key))
        base_key = tuple(baseline if name == "method_spec" else fields[name] for name in INDEX)
        if base_key not in scores.index:
            continue
        base = scores.loc[base_key]
        shared = [d for d in scores.columns if pd.notna(row[d]) and pd.notna(base[d])]
        if not shared:
            continue
        total, base_total = row[shared].sum(), base[shared].sum()
        rows.append({**fields, "datasets": len(shared), "total": total, "baseline_total": base_total,
                     "vs_baseline": total / base_total if base_total else np.nan})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(INDEX)


def code_sim_backends(frame: pd.DataFrame) -> list[str]:
    """The code_sim backends that scored the frame's lcc/repobench-p cells (each cell records its own; cells
    from before the option existed were scored with python-Levenshtein)."""
    cells = longbench_cells(frame)
    cells = cells[cells["dataset"].isin(longbench.GROUPS["code"])]
    if cells.empty:
        return []
    recorded = cells["meta.code_sim"] if "meta.code_sim" in cells else pd.Series(None, index=cells.index)
    unrecorded = "levenshtein (not recorded: scored before the option)"
    return sorted({value if isinstance(value, str) else unrecorded for value in recorded})


def report_tables(frame: pd.DataFrame, baseline: str | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """(file stem, title, table) for every LongBench table this frame fills, in reading order."""
    backends = code_sim_backends(frame)
    code_sim = f"; code_sim backend: {', '.join(backends)}" if backends else ""
    tables = [("longbench_datasets", f"LongBench per dataset (0-100, official eval.py{code_sim})",
               dataset_table(frame)),
              ("longbench_samples", "LongBench samples per dataset", dataset_counts(frame)),
              ("longbench_summary", "LongBench average and total (sum) over datasets", summary_table(frame)),
              ("longbench_categories", "LongBench leaderboard view: category means and their average, per language",
               category_table(frame)),
              ("longbench_e_buckets", "LongBench-E per length bucket of the official length field (0-100, "
               f"eval.py --e{code_sim}; the '{OURS_AVERAGE}' row is our mean over datasets)", bucket_table(frame))]
    if baseline:
        tables.append(("longbench_total_vs_baseline", f"LongBench total relative to {baseline} (same datasets)",
                       total_vs_baseline(frame, baseline)))
    return [(stem, title, table) for stem, title, table in tables if not table.empty]
