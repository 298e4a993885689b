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
