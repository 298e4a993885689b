"""Results store: one folder per run with manifest.json and an append-only cells.jsonl."""
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["torch", "triton", "transformers", "gguf", "pandas", "lm_eval", "datasets", "flash_attn",
            "rouge", "jieba", "fuzzywuzzy", "Levenshtein", "rapidfuzz"]  # LongBench scores depend on these scorers


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        # a copy without .git (the GPU machine gets only the working tree): the caller names the commit
        return os.environ.get("SAMPLEATTN_GIT_COMMIT", "unknown")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: str) -> dict:
    info = {"device": device, "python": sys.version.split()[0], "platform": platform.platform()}
    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        info.update(cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    return info


def provenance(device: str) -> dict:
    return {"git_commit": git_commit(), "packages": package_versions(), **device_description(device),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


class RunStore:
    """A run folder. Cells are appended one JSON line at a time, flushed and fsynced; never rewritten."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.cells_path = self.folder / "cells.jsonl"
        self.manifest_path = self.folder / "manifest.json"
        self.shard = "cells.jsonl"  # hook(scale): a rank of a distributed sweep appends to cells.rank<R>.jsonl

    @classmethod
    def create(cls, root: Path, name: str, manifest: dict) -> "RunStore":
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        folder = Path(root) / f"{stamp}-{safe}"
        suffix = 1
        while folder.exists():
            folder = Path(root) / f"{stamp}-{safe}-{suffix}"
            suffix += 1
        folder.mkdir(parents=True)
        store = cls(folder)
        store.write_manifest(manifest)
        return store

    @classmethod
    def open(cls, folder: Path) -> "RunStore":
        store = cls(folder)
        if not store.manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not a run folder (no manifest.json); pass a folder under results/runs/")
        return store

    def write_manifest(self, manifest: dict) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        os.replace(tmp, self.manifest_path)  # atomic: a reader never sees half a manifest

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def lines_path(self, file: str | None = None) -> Path:
        """cells.jsonl, or another JSON-lines file of the run folder (e.g. diagnostics.jsonl)."""
        return self.folder / self.shard if file is None else self.folder / file

    def append(self, cell: dict, file: str | None = None) -> None:
        line = json.dumps(cell, default=str)
        with open(self.lines_path(file), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def cells(self, file: str | None = None) -> list[dict]:
        """Every complete line; a torn last line (process killed mid-write) is ignored."""
        from harness.distributed import shard_files

        # hook(scale): cells.jsonl and every rank's shard cells.rank<R>.jsonl are one set of cells
        paths = shard_files(self.folder, file or "cells.jsonl")
        cells = []
        for path in (p for p in paths if p.is_file()):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    cells.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return cells

    def repair_torn_tail(self, file: str | None = None) -> None:
        """Before appending to an existing run: end a torn last line so the next cell starts on its own line."""
        path = self.lines_path(file)
        if path.is_file() and path.stat().st_size:
            with open(path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
