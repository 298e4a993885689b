"""Data-parallel sweeps on torch.distributed: which cells a rank runs, where it writes them, how it starts.

`torchrun --nproc-per-node N -m harness.cli sweep ...` (or `sampleattn sweep --gpus N ...`, which starts that
same launcher) runs N ranks. Every rank loads the model once, builds the same grid, and takes every N-th cell
of those still to do (CellShare), so no cell is run twice or lost. Rank R appends to its own shard
cells.rank<R>.jsonl beside cells.jsonl; readers (report, --resume) take the union of all shards, so a sweep
killed on any rank resumes with --resume on any number of ranks.

Ranks talk only through a gloo process group (the run folder and the done set from rank 0, a final barrier):
no tensor ever crosses ranks, so the path is the same on CPU (CI) and on GPUs. On GPUs each rank owns one
device, cuda:<LOCAL_RANK>, and refuses to start if two ranks would share a GPU, so a TTFT is never timed
beside another process on the same card. On the CPU, ranks share the host's cores: timings are not evidence.
"""
import dataclasses
import datetime
import os
import socket
import subprocess
import sys
from pathlib import Path

from harness.options import InputError

BASE_SHARD = "cells.jsonl"
CPU_NOTE = "CPU ranks share the host's cores: timings are not evidence"


@dataclasses.dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def current() -> Rank:
    """This process's place in the job, from the variables torchrun sets (one rank when none are set)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", 1))
    return Rank(rank=int(env.get("RANK", 0)), world=world, local_rank=int(env.get("LOCAL_RANK", 0)),
                local_world=int(env.get("LOCAL_WORLD_SIZE", world)))


def init(info: Rank | None = None) -> Rank:
    """Join the gloo group when there are several ranks. The timeout is long: the final barrier waits for the
    slowest rank's last cell."""
    info = info or current()
    if info.active:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
    return info


def broadcast(value, info: Rank):
    """Rank 0's value on every rank (identity with one rank)."""
    if not info.active:
        return value
    import torch.distributed as dist

    box = [value if info.leader else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, info: Rank) -> list:
    """Every rank's value, in rank order, on every rank."""
    if not info.active:
        return [value]
    import torch.distributed as dist

    out = [None] * info.world
    dist.all_gather_object(out, value)
    return out


def barrier(info: Rank) -> None:
    if info.active:
        import torch.distributed as dist

        dist.barrier()


def finish(info: Rank) -> None:
    if info.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shard_name(info: Rank, base: str = BASE_SHARD) -> str:
    """The lines file this rank appends to: cells.jsonl alone, cells.rank<R>.jsonl among several ranks (the same
    for any other lines file of a run folder, e.g. diagnostics.rank<R>.jsonl)."""
    if not info.active:
        return base
    stem, dot, suffix = base.rpartition(".")
    return f"{stem}.rank{info.rank}.{suffix}" if dot else f"{base}.rank{info.rank}"


def shard_files(folder: Path, base: str = BASE_SHARD) -> list[Path]:
    """`base` and every rank's shard of it (base.rank<R>.suffix) that exist in a run folder, in rank order."""
    folder = Path(folder)
    stem, dot, suffix = base.rpartition(".")
    prefix, tail = (f"{stem}.rank", f".{suffix}") if dot else (f"{base}.rank", "")

    def rank_of(path: Path) -> int | None:
        middle = path.name[len(prefix):len(path.name) - len(tail)]
        return int(middle) if middle.isdigit() else None

    ranked = [p for p in folder.glob(f"{prefix}*{tail}") if rank_of(p) is not None]
    return [p for p in [folder / base, *sorted(ranked, key=rank_of)] if p.is_file()]


class CellShare:
    """Which of the cells still to do this rank runs: the i-th such cell (in grid order) goes to rank i % world.

    Every rank builds the same grid and the same done set, so each sees the same sequence of cells still to do
    and the shares are disjoint and cover it. Call `mine` once per cell not already done, in grid order.
    """

    def __init__(self, info: Rank):
        self.rank, self.world = info.rank, info.world
        self.seen = 0

    def mine(self, key: str) -> bool:
        index, self.seen = self.seen, self.seen + 1
        return index % self.world == self.rank

    def tags(self) -> dict:
        return {"rank": self.rank, "world_size": self.world}


def rank_device(device: str, info: Rank | None = None) -> str:
    """The device a rank runs on: cuda:<LOCAL_RANK> (made current, for Triton launches) when ranks are on GPUs.

    Refuses two ranks on one GPU: a TTFT timed beside another process on the same card is not a measurement.
    """
    info = info or current()
    if not info.active or not device.startswith("cuda"):
        return device
    import torch

    count = torch.cuda.device_count()
    if info.local_world > count:
        raise InputError(f"{info.local_world} ranks on this host but {count} visible GPU(s): ranks would share a "
                         f"GPU and time each other; use --nproc-per-node {count} (or --gpus {count}) or --device cpu")
    if device not in ("cuda", f"cuda:{info.local_rank}"):
        raise InputError(f"--device {device} with {info.world} ranks: each rank takes cuda:<LOCAL_RANK>; "
                         "pass --device cuda or auto")
    torch.cuda.set_device(info.local_rank)
    return f"cuda:{info.local_rank}"


def describe_rank(info: Rank, device: str) -> dict:
    """What the manifest records about one rank."""
    entry = {"rank": info.rank, "local_rank": info.local_rank, "host": socket.gethostname(), "device": device}
    if device.startswith("cuda"):
        import torch

        entry["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return entry


def layout(info: Rank, device: str) -> dict:
    """The manifest entry of one start of a run (world size, each rank's host and device); collective."""
    ranks = gather(describe_rank(info, device), info)
    entry = {"world_size": info.world, "backend": "gloo" if info.active else None, "ranks": ranks,
             "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if info.active and not device.startswith("cuda"):
        entry["note"] = CPU_NOTE
    return entry


def strip_gpus(argv: list[str]) -> list[str]:
    """argv without --gpus N / --gpus=N (the launched ranks must not launch again)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--gpus":
            skip = True
            continue
        if item.startswith("--gpus="):
            continue
        out.append(item)
    return out


def launch_command(n: int, argv: list[str]) -> list[str]:
    """The torchrun command line `--gpus N` runs (single host; see README for several hosts)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
            "-m", "harness.cli", *strip_gpus(argv)]


def check_gpus(n: int, device: str) -> None:
    if n < 1:
        raise InputError("--gpus must be at least 1")
    if device == "cpu":
        return  # n CPU ranks (testing the launcher); timings are not evidence
    import torch

    count = torch.cuda.device_count()
    if count < n:
        raise InputError(f"--gpus {n} asked for, but {count} CUDA GPU(s) are visible; use --gpus {count} "
                         "or --device cpu")


def launch(n: int, argv: list[str], device: str) -> int:
    """Start n ranks of the same command through torchrun and wait; its exit code is ours."""
    check_gpus(n, device)
    if device == "cpu" and n > 1:
        print(f"note: {n} ranks on the CPU; {CPU_NOTE}", file=sys.stderr)
    # one host: gloo talks over loopback (a container's hostname may not resolve to a reachable interface)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    return subprocess.call(launch_command(n, argv), env=env)
