"""LongBench aggregation on a synthetic run with unequal dataset sizes, checked against numbers worked by hand."""
import math

import pandas as pd
import pytest

from harness.reports import report, tables_longbench as tables
from harness.running.store import RunStore
from tasks.longbench_metrics import bucket

# (dataset, per-sample scores) for dense and sample; lcc has 5 rows, multifieldqa_zh 1
DENSE = {"lcc": [1, 1, 1, 1, 1], "trec": [0, 0], "hotpotqa": [1 / 3, 0, 0], "multifieldqa_zh": [0.5]}
SAMPLE = {"lcc": [1, 1, 1, 1, 0], "trec": [1, 0], "hotpotqa": [0, 0, 0], "multifieldqa_zh": [0.25]}


def cells(per_method: dict, length=4096, e=False, words=None) -> list[dict]:
    out = []
    for spec, datasets in per_method.items():
        for dataset, scores in datasets.items():
            for k, score in enumerate(scores):
                meta = {"dataset": dataset, "longbench_e": e, "row": k}
                if words is not None:
                    meta["length_words"] = words[k]
                out.append({"key": f"m|{spec}|longbench|{dataset}-{length}-{k}", "status": "ok", "model": "m",
                            "method": spec.split(":")[0], "method_spec": spec, "task": "longbench",
                            "sample_id": f"{dataset}-{length}-{k}", "length": length, "score": score, "meta": meta})
    return out


@pytest.fixture
def frame(tmp_path):
    store = RunStore.create(tmp_path, "synthetic", {})
    for cell in cells({"dense": DENSE, "sample:alpha=0.95": SAMPLE}) + [
            {"key": "m|dense|needle|n-4096-0", "status": "ok", "model": "m", "method": "dense",
             "method_spec": "dense", "task": "needle", "sample_id": "n", "length": 4096, "score": 1.0,
             "meta": {"depth": 0.5}}]:
        store.append(cell)
    return report.load_cells([store.folder])  # the frame the report builds its tables from


def test_per_dataset_scores_are_eval_py_rounded_percentages(frame):
    table = tables.dataset_table(frame)
    assert list(table.columns) == ["multifieldqa_zh", "hotpotqa", "trec", "lcc"]  # official dataset order
    dense = table.loc[("m", "dense", "LongBench", 4096)]
    assert dense.to_dict() == {"multifieldqa_zh": 50.0, "hotpotqa": 11.11, "trec": 0.0, "lcc": 100.0}
    sample = table.loc[("m", "sample:alpha=0.95", "LongBench", 4096)]
    assert sample.to_dict() == {"multifieldqa_zh": 25.0, "hotpotqa": 0.0, "trec": 50.0, "lcc": 80.0}
    counts = tables.dataset_counts(frame).loc[("m", "dense", "LongBench", 4096)]
    assert counts.to_dict() == {"multifieldqa_zh": 1, "hotpotqa": 3, "trec": 2, "lcc": 5}


def test_average_is_over_datasets_not_pooled_samples(frame):
    summary = tables.summary_table(frame).loc[("m", "dense", "LongBench", 4096)]
    # pooled over the 11 samples the mean would be (5 + 0 + 1/3 + 0.5) / 11 = 53.03
    assert summary["avg"] == pytest.approx((50 + 11.11 + 0 + 100) / 4)  # 40.2775
    assert summary["total"] == pytest.approx(161.11) and summary["datasets"] == 4
    pooled = report.accuracy_stats(frame).loc[("m", "longbench", "dense", 4096), "mean"]
    assert pooled == pytest.approx(5.8333333 / 11)


def test_leaderboard_categories_per_language(frame):
    table = tables.category_table(frame)
    en = table.loc[("m", "dense", "LongBench", 4096, "en")]
    assert en["multi-doc QA"] == pytest.approx(11.11) and en["few-shot learning"] == 0 and en["code"] == 100
    assert math.isnan(en["single-doc QA"]) and math.isnan(en["summarization"])
    assert en["avg"] == pytest.approx((11.11 + 0 + 100) / 3) and en["datasets"] == 3
    zh = table.loc[("m", "dense", "LongBench", 4096, "zh")]
    # code counts for Chinese too, as in LongBench's leaderboard
    assert zh["single-doc QA"] == 50 and zh["code"] == 100 and zh["avg"] == 75 and zh["datasets"] == 2


def test_total_against_the_dense_total(frame):
    table = tables.total_vs_baseline(frame, "dense")
    row = table.loc[("m", "sample:alpha=0.95", "LongBench", 4096)]
    assert row["total"] == pytest.approx(155.0) and row["baseline_total"] == pytest.approx(161.11)
    assert row["vs_baseline"] == pytest.approx(155.0 / 161.11)
    assert table.loc[("m", "dense", "LongBench", 4096), "vs_baseline"] == 1.0


def test_bucket_edges_follow_eval_py():
    assert [bucket(n) for n in (0, 3999, 4000, 7999, 8000, 20000)] == ["0-4k", "0-4k", "4-8k", "4-8k", "8k+",
                                                                          "8k+"]


def test_longbench_e_bucket_table():
    words = [3999, 4000, 7999, 8000, 120]
    rows = cells({"dense": {"qasper": [1, 0.5, 0, 0.25, 0], "lcc": [0.6, 0.8, 1, 1, 1]}}, e=True, words=words)
    rows += cells({"dense": {"trec": [1, 1]}}, e=True)  # no length field: left out of the buckets
    rows += cells({"dense": {"hotpotqa": [1]}}, words=[100])  # LongBench v1: no buckets (eval.py --e only)
    frame = pd.DataFrame([{**{k: v for k, v in c.items() if k != "meta"},
                           **{f"meta.{k}": v for k, v in c["meta"].items()}} for c in rows])
    table = tables.bucket_table(frame)
    assert list(table.columns) == ["0-4k", "4-8k", "8k+"]
    key = ("m", "dense", "LongBench-E", 4096)
    # qasper: 0-4k = {3999: 1, 120: 0} -> 50; 4-8k = {4000: 0.5, 7999: 0} -> 25; 8k+ = {8000: 0.25} -> 25
    assert table.loc[(*key, "qasper")].to_dict() == {"0-4k": 50.0, "4-8k": 25.0, "8k+": 25.0}
    # lcc: 0-4k = {0.6, 1} -> 80; 4-8k = {0.8, 1} -> 90; 8k+ = {1} -> 100
    assert table.loc[(*key, "lcc")].to_dict() == {"0-4k": 80.0, "4-8k": 90.0, "8k+": 100.0}
    assert table.loc[(*key, "average")].to_dict() == {"0-4k": 65.0, "4-8k": 57.5, "8k+": 62.5}
    assert [k[-1] for k in table.index] == ["qasper", "lcc", "average"]
    assert tables.summary_table(frame).loc[key, "datasets"] == 3  # trec still has its per-dataset score


def test_no_longbench_cells_give_empty_tables(frame):
    needle_only = frame[frame["task"] == "needle"]
    for build in (tables.dataset_table, tables.summary_table, tables.category_table, tables.bucket_table):
        assert build(needle_only).empty
    assert tables.total_vs_baseline(needle_only, "dense").empty


def test_report_tables_lists_only_filled_tables(frame):
    stems = [stem for stem, _, _ in tables.report_tables(frame, "dense")]
    assert stems == ["longbench_datasets", "longbench_samples", "longbench_summary", "longbench_categories",
                     "longbench_total_vs_baseline"]  # no length field in these cells: no bucket table
    assert tables.report_tables(frame[frame["task"] == "needle"], "dense") == []


def test_the_report_shows_longbench_in_its_own_layout(frame):
    """The report's task tables: the per-dataset table, the average over datasets and the totals, in that order."""
    tables = {stem: data for stem, _, _, data in report.task_tables(frame, "dense")}
    assert list(tables)[:3] == ["longbench_datasets", "longbench_samples", "longbench_summary"]
    summary = tables["longbench_summary"]
    dense = summary[summary["method"] == "dense"].iloc[0]
    # the average of the four dataset scores (x100), not the pooled mean of the 11 samples
    want = (100 * 1 + 0 + 100 * (1 / 9) + 50) / 4
    assert math.isclose(float(dense["avg"]), want, abs_tol=0.02) and dense["datasets"] == 4
