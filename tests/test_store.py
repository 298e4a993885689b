import json

import pytest

from harness.running.store import RunStore, provenance


def test_append_keeps_every_line_and_survives_a_torn_tail(tmp_path):
    store = RunStore.create(tmp_path, "unit test", {"hello": 1})
    assert store.folder.name.endswith("unit-test")
    store.append({"key": "a", "value": 1})
    store.append({"key": "b", "value": 2})
    with open(store.cells_path, "a") as handle:  # a process killed mid-write leaves half a line
        handle.write('{"key": "c", "val')
    reopened = RunStore.open(store.folder)
    assert [c["key"] for c in reopened.cells()] == ["a", "b"]
    reopened.repair_torn_tail()
    reopened.append({"key": "d"})
    assert [c["key"] for c in reopened.cells()] == ["a", "b", "d"]
    lines = store.cells_path.read_text().splitlines()
    assert json.loads(lines[0]) == {"key": "a", "value": 1}  # earlier lines never rewritten


def test_two_runs_in_the_same_second_get_different_folders(tmp_path):
    first = RunStore.create(tmp_path, "same", {})
    second = RunStore.create(tmp_path, "same", {})
    assert first.folder != second.folder


def test_open_rejects_a_folder_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        RunStore.open(tmp_path)


def test_provenance_names_commit_versions_and_device():
    info = provenance("cpu")
    assert info["git_commit"] and info["packages"]["torch"] and info["device"] == "cpu"


def test_lines_that_are_not_json_objects_are_skipped_with_one_counted_warning(tmp_path, capsys):
    store = RunStore.create(tmp_path, "bad lines", {})
    store.append({"key": "a", "status": "ok"})
    with open(store.cells_path, "a") as handle:  # a scalar, a string, a list, then a torn last line
        handle.write('3\n"text"\n[1, 2]\n{"key": "b", "sta')
    assert [c["key"] for c in store.cells()] == ["a"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 4 unreadable line(s)" in err
    store.cells()
    assert capsys.readouterr().err == ""  # said once per file and count, however often a command reads it


def test_a_folder_with_only_its_manifest_is_removed_and_one_with_cells_kept(tmp_path):
    empty = RunStore.create(tmp_path, "empty", {})
    assert empty.remove_if_empty() and not empty.folder.exists()
    full = RunStore.create(tmp_path, "full", {})
    full.append({"key": "a"})
    assert not full.remove_if_empty() and full.folder.exists()


def test_provenance_records_the_environment_settings_that_change_timings(monkeypatch):
    monkeypatch.setenv("ATTN_SPARSE_PATH", "tma")
    monkeypatch.setenv("ATTN_TMA_BLOCKS", "128,128,8,2,0")
    monkeypatch.setenv("ATTENTION_BACKEND", "torch")
    monkeypatch.setenv("UNRELATED_SETTING", "1")
    environment = provenance("cpu")["environment"]
    assert environment["ATTN_SPARSE_PATH"] == "tma" and environment["ATTN_TMA_BLOCKS"] == "128,128,8,2,0"
    assert environment["ATTENTION_BACKEND"] == "torch" and "UNRELATED_SETTING" not in environment


def test_every_environment_setting_the_attention_code_reads_is_recorded():
    import re
    from pathlib import Path

    from harness.running.store import TIMING_ENV, TIMING_ENV_PREFIX

    root = Path(__file__).resolve().parents[1] / "attention"
    read = {name for path in root.rglob("*.py")
            for name in re.findall(r"environ(?:\.get)?[\[(]\s*\"([A-Z0-9_]+)\"", path.read_text())}
    assert read, "no environment reads found: the pattern is stale"
    assert not {n for n in read if not n.startswith(TIMING_ENV_PREFIX) and n not in TIMING_ENV}
HOLD_LOCK = """
import sys, time
from harness.running.store import RunStore
store = RunStore.open(sys.argv[1])
store.lock()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_run_folder_in_use_refuses_a_second_writer_and_a_dead_holder_leaves_no_lock(tmp_path, capsys):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from harness.cli import main

    store = RunStore.create(tmp_path, "busy", {})
    assert (store.folder / ".lock").read_text().startswith(f"pid {os.getpid()}")  # held from creation
    store.release()
    root = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.folder)], cwd=root, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", "--resume", str(store.folder), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"is in use by pid {holder.pid}" in err and "\n" not in err
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        holder.wait()
    again = RunStore.open(store.folder)
    again.lock()
    assert f"taking over a stale lock (pid {holder.pid}" in capsys.readouterr().err
    again.release()


def test_duplicate_lines_of_a_finished_cell_are_dropped_and_counted(tmp_path, capsys):
    store = RunStore.create(tmp_path, "dup", {})
    for cell in ({"key": "a", "status": "error"}, {"key": "a", "status": "ok", "score": 1},
                 {"key": "b", "status": "ok", "score": 0}, {"key": "a", "status": "ok", "score": 0.5},
                 {"key": "b", "status": "ok", "score": 0.25}):
        store.append(cell)
    cells = store.unique_cells(what="report")
    assert [(c["key"], c["status"], c["score"]) for c in cells] == [("a", "ok", 1), ("b", "ok", 0)]
    assert "report: dropped 2 duplicate line(s)" in capsys.readouterr().err
    assert len(store.cells()) == 5  # nothing rewritten
