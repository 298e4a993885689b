"""LongBench aggregation on a synthetic run with unequal dataset sizes, checked against numbers worked by hand."""
import math
from pathlib import Path

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
                            "sample_id": f"{dataset}-{length}-{k}", "length": length, "score": score, "meta": meta,
                        "ttft_ms": 10.0})
    return out


@pytest.fixture
def frame(tmp_path):
    store = RunStore.create(tmp_path, "synthetic", {})
    for cell in cells({"dense": DENSE, "sample:alpha=0.95": SAMPLE}) + [
            {"key": "m|dense|needle|n-4096-0", "status": "ok", "model": "m", "method": "dense",
             "method_spec": "dense", "task": "needle", "sample_id": "n", "length": 4096, "score": 1.0, "ttft_ms": 10.0,
             "meta": {"depth": 0.5}}]:
        store.append(cell)
    loaded = report.load_cells([store.folder])  # the frame the report builds its tables from
    loaded.attrs["folder"] = store.folder
    return loaded


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



def test_the_reports_first_tables_average_datasets_not_pooled_samples(frame, tmp_path, monkeypatch):
    """Pooled over samples dense is 5.8333 / 11 = 0.530 and sample 4.25 / 11 = 0.386 (ratio 0.729); LongBench's
    average over datasets is 0.402775 and 0.3875 (ratio 0.962)."""
    dense_avg, sample_avg = (50 + 11.11 + 0 + 100) / 400, (25 + 0 + 50 + 80) / 400
    accuracy = report.accuracy_stats(frame)["mean"].unstack("length")
    assert accuracy.loc[("m", "longbench", "dense"), 4096] == pytest.approx(dense_avg)
    assert accuracy.loc[("m", "longbench", "sample:alpha=0.95"), 4096] == pytest.approx(sample_avg)
    assert accuracy.loc[("m", "needle", "dense"), 4096] == 1.0  # other tasks: the mean over samples
    stats = report.accuracy_stats(frame)
    assert stats.loc[("m", "longbench", "dense", 4096), "n"] == 11  # n still counts the scored samples
    monkeypatch.setattr(report, "CLEARLY_ABOVE_ZERO", 0.1)  # 11 samples at 0.40: Wilson lower bound 0.17
    relative = report.relative_accuracy_table(frame, "dense")
    assert relative.loc[("m", "longbench", "sample:alpha=0.95"), 4096] == pytest.approx(sample_avg / dense_avg)
    # pooled over tasks (the pareto plot): each task weighs by its samples, LongBench as its dataset average
    pooled = report.accuracy_stats(frame, by=("model", "method_spec", "length")).loc[("m", "dense", 4096), "mean"]
    assert pooled == pytest.approx((11 * dense_avg + 1.0) / 12)
    # the written report's first table shows the same number
    report.build_report([frame.attrs["folder"]], tmp_path / "report")
    written = (tmp_path / "report" / "accuracy.md").read_text()
    dense_row = next(line for line in written.splitlines() if "longbench" in line and "| dense" in line)
    assert f"{dense_avg:.2f} [" in dense_row and "n=11" in dense_row


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
    # eval.py --e has no mean over datasets: the row is ours, and says so
    assert table.loc[(*key, "average (ours)")].to_dict() == {"0-4k": 65.0, "4-8k": 57.5, "8k+": 62.5}
    assert [k[-1] for k in table.index] == ["qasper", "lcc", "average (ours)"]
    # nor an all-lengths score per dataset: the per-dataset, summary and total tables hold LongBench v1 only
    for build in (tables.dataset_table, tables.summary_table, tables.category_table, tables.dataset_counts):
        assert set(build(frame).index.get_level_values("suite")) == {"LongBench"}
    titles = dict((stem, title) for stem, title, _ in tables.report_tables(frame))
    assert "'average (ours)' row is our mean over datasets" in titles["longbench_e_buckets"]


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


def test_the_code_sim_backend_is_named_in_the_report(frame):
    titles = dict((stem, title) for stem, title, _ in tables.report_tables(frame))
    # these cells carry no backend: they were scored before the option, with python-Levenshtein
    assert "code_sim backend: levenshtein (not recorded" in titles["longbench_datasets"]
    frame = frame.assign(**{"meta.code_sim": "difflib"})
    titles = dict((stem, title) for stem, title, _ in tables.report_tables(frame))
    assert titles["longbench_datasets"].endswith("; code_sim backend: difflib)")
    no_code = frame[frame["meta.dataset"] != "lcc"]
    assert "code_sim" not in dict((s, t) for s, t, _ in tables.report_tables(no_code))["longbench_datasets"]


def test_the_manifest_records_the_code_sim_backend():
    from harness.running.driver import run_manifest
    from harness.running.plan import validate
    from harness.running.settings import Settings, SweepSpec

    fixtures = Path(__file__).parent / "fixtures" / "longbench"
    for option, backend in (("", "difflib"), (",code_sim=levenshtein", "levenshtein")):
        grid = SweepSpec(models=["smollm2-135m"], methods=["dense"], lengths=[512], device="cpu",
                         tasks=[f"longbench:datasets=lcc,path={fixtures}{option}"])
        plan = validate(grid, quiet=True)
        (config,) = run_manifest(Settings(command="sweep", grid=grid, name="sweep"), plan)["task_configs"]
        assert config["task"] == "longbench" and config["code_sim"] == backend


def test_the_end_of_run_summary_averages_datasets(frame, capsys):
    from harness.cli.common import print_summary

    print_summary(RunStore.open(frame.attrs["folder"]))
    row = next(line for line in capsys.readouterr().out.splitlines() if "longbench" in line and "dense" in line)
    assert f"{(50 + 11.11 + 0 + 100) / 400:.3f}" in row.split()  # not the pooled 0.530
