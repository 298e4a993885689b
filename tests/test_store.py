import json

import pytest

from harness.store import RunStore, provenance


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
