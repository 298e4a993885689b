"""bench_attention.write: a run replaces the (gpu, shape, length) groups it measured and keeps the others."""
import csv

from scripts.bench_attention import write


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def row(dim, length, method, ms):
    return {"gpu": "H200", "head_dim": dim, "heads": 32, "kv_heads": 8, "seq_len": length, "method": method, "ms": ms}


def test_a_later_run_replaces_only_the_groups_it_measured(tmp_path):
    path = tmp_path / "attention_H200.csv"
    write(path, [row(128, 131072, "sample", 50.0), row(128, 131072, "cudnn", 260.0), row(64, 32768, "sample", 1.0)])
    write(path, [row(128, 131072, "sample", 40.0)])  # e.g. a run cut short after one length
    got = {(r["head_dim"], r["seq_len"], r["method"]): float(r["ms"]) for r in rows_of(path)}
    assert got == {("128", "131072", "sample"): 40.0, ("64", "32768", "sample"): 1.0}


def test_captured_qk_rows_are_a_group_of_their_own(tmp_path):
    """Rows timed on a real model's captured q/k (bench_attention --qk) share a shape and length with a synthetic run
    of the same model shape; neither run wipes the other's rows."""
    path = tmp_path / "attention_H200.csv"
    real = "sample_real:qwen:L12:H14/2:D64"
    write(path, [row(64, 16384, real, 1.6)])
    write(path, [row(64, 16384, "sample", 0.9)])
    write(path, [row(64, 16384, real, 1.5)])
    got = {r["method"]: float(r["ms"]) for r in rows_of(path)}
    assert got == {real: 1.5, "sample": 0.9}
