"""Data-parallel sweeps: cells split over ranks (gloo on the CPU, as in CI), one shard per rank, resume on any
number of ranks without a cell run twice or lost."""
import itertools
import json
import os
from pathlib import Path

import pytest

from harness.running import distributed
from harness.cli import main
from harness.running.distributed import CellShare, Rank
from harness.running.store import RunStore
from tiny_checkpoint import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_of_the_cells_still_to_do_are_disjoint_and_complete(world):
    keys = [f"cell{i}" for i in range(23)]
    done = set(keys[3:9]) | {keys[15]}  # a killed earlier run finished some cells, in no particular order
    todo = [k for k in keys if k not in done]
    taken = []
    for rank in range(world):
        share = CellShare(Rank(rank=rank, world=world))
        taken.append([k for k in keys if k not in done and share.mine(k)])
    assert sorted(itertools.chain(*taken)) == sorted(todo)
    assert len(set(itertools.chain(*taken))) == len(todo)
    assert max(map(len, taken)) - min(map(len, taken)) <= 1  # balanced


def test_store_reads_every_shard_and_each_rank_appends_to_its_own(tmp_path):
    store = RunStore.create(tmp_path, "run", {"spec": {}})
    store.append({"key": "a"})
    for rank in (1, 0):
        ranked = RunStore.open(store.folder)
        ranked.shard = distributed.shard_name(Rank(rank=rank, world=2))
        ranked.append({"key": f"r{rank}"})
    with open(store.folder / "cells.rank1.jsonl", "a") as handle:
        handle.write('{"key": "torn')  # rank 1 killed mid-write
    assert distributed.shard_name(Rank(rank=3, world=4), "diagnostics.jsonl") == "diagnostics.rank3.jsonl"
    assert distributed.shard_name(Rank(rank=0, world=1), "diagnostics.jsonl") == "diagnostics.jsonl"
    (store.folder / "cells.rankX.jsonl").write_text('{"key": "not a shard"}\n')
    names = [p.name for p in distributed.shard_files(store.folder)]
    assert names == ["cells.jsonl", "cells.rank0.jsonl", "cells.rank1.jsonl"]
    assert [c["key"] for c in RunStore.open(store.folder).cells()] == ["a", "r0", "r1"]
    again = RunStore.open(store.folder)
    again.shard = "cells.rank1.jsonl"
    again.repair_torn_tail()
    again.append({"key": "r1b"})
    assert [c["key"] for c in RunStore.open(store.folder).cells()] == ["a", "r0", "r1", "r1b"]


def test_ranks_never_share_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="ranks would share a GPU") as err:
        distributed.rank_device("cuda", Rank(rank=1, world=2, local_rank=1, local_world=2))
    assert "\n" not in str(err.value)
    assert distributed.rank_device("cpu", Rank(rank=1, world=2, local_rank=1, local_world=2)) == "cpu"


def test_gpus_flag_relaunches_the_same_command_without_itself(capsys):
    command = distributed.launch_command(2, ["sweep", "--gpus", "2", "--lengths", "1k", "--gpus=2"])
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[6:] == ["harness.cli", "sweep", "--lengths", "1k"]
    assert main(["sweep", "--gpus", "64", "--device", "cuda"]) == 2  # more GPUs than visible: one line, exit 2
    assert "--gpus 64 asked for" in capsys.readouterr().err


def read_cells(folder: Path) -> list[dict]:
    return RunStore.open(folder).cells()


def test_two_gloo_ranks_split_a_sweep_and_any_number_of_ranks_resumes(tmp_path, monkeypatch):
    model = save_tiny_checkpoint(tmp_path / "tiny")
    grid = ["sweep", "--models", str(model), "--methods", "dense,streaming:window=32", "--lengths", "200,256",
            "--samples", "2", "--device", "cpu", "--max-new-tokens", "2", "--no-progress"]
    assert main([*grid, "--out", str(tmp_path / "one")]) == 0
    (single,) = (tmp_path / "one").iterdir()
    expected = {c["key"]: c for c in read_cells(single)}
    assert len(expected) == 8

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    assert main([*grid, "--gpus", "2", "--out", str(tmp_path / "two")]) == 0  # torchrun, 2 gloo ranks
    (folder,) = (tmp_path / "two").iterdir()
    shards = {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in folder.glob("cells*.jsonl")}
    assert set(shards) == {"cells.rank0.jsonl", "cells.rank1.jsonl"}
    assert [len(cells) for cells in shards.values()] == [4, 4]
    cells = read_cells(folder)
    assert sorted(c["key"] for c in cells) == sorted(expected)  # every cell once
    for cell in cells:
        rank = int(cell["rank"])
        assert cell in shards[f"cells.rank{rank}.jsonl"] and cell["world_size"] == 2 and cell["device"] == "cpu"
        reference = expected[cell["key"]]
        assert (cell["status"], cell["prediction"], cell["score"]) == \
            (reference["status"], reference["prediction"], reference["score"])
    manifest = json.loads((folder / "manifest.json").read_text())
    layout = manifest["distributed"]
    assert layout["world_size"] == 2 and [r["rank"] for r in layout["ranks"]] == [0, 1]
    assert "not evidence" in layout["note"]

    # rank 1 killed after its first two cells (one torn line): resume on one process
    rank1 = folder / "cells.rank1.jsonl"
    lines = rank1.read_text().splitlines()
    rank1.write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])
    assert main(["sweep", "--resume", str(folder), "--no-progress"]) == 0
    resumed = read_cells(folder)
    assert sorted(c["key"] for c in resumed) == sorted(expected)
    assert len((folder / "cells.jsonl").read_text().splitlines()) == 2  # only the two lost cells ran again
    assert json.loads((folder / "manifest.json").read_text())["resumes"][0]["world_size"] == 1
