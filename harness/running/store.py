"""Results store: one folder per run with manifest.json and an append-only cells.jsonl."""
import datetime
import errno
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness.options import InputError
from harness.running.distributed import shard_files

REPO = Path(__file__).resolve().parents[2]
CELLS_FILE = "cells.jsonl"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"  # flock'ed for a writing run's life; the kernel drops it when the process ends, however it ends
DIAGNOSTICS_FILE = "diagnostics.jsonl"
_warned: set[tuple[str, int]] = set()  # one warning per file and count, however often a command reads it
PACKAGES = ["torch", "triton", "transformers", "gguf", "pandas", "lm_eval", "datasets", "flash_attn",
            "rouge", "jieba", "fuzzywuzzy", "Levenshtein", "rapidfuzz"]  # LongBench scores depend on these scorers
TIMING_ENV_PREFIX = "ATTN_"  # attention/ reads none since kernels/config.py; any set is still recorded, as are the next
TIMING_ENV = ("ATTENTION_BACKEND", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")


def git_commit() -> str:
    """HEAD (with -dirty), or SAMPLEATTN_GIT_COMMIT when set: a copied tree (the GPU machine) may carry a stale
    .git, so the caller's word wins."""
    if os.environ.get("SAMPLEATTN_GIT_COMMIT"):
        return os.environ["SAMPLEATTN_GIT_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        # a copy without .git (the GPU machine gets only the working tree): the caller names the commit
        return os.environ.get("SAMPLEATTN_GIT_COMMIT", "unknown")


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: str) -> dict:
    info = {"device": device, "python": sys.version.split()[0], "platform": platform.platform()}
    if device.startswith("cuda"):
        import torch  # only here: the CLI reads run folders through this module before torch is loaded

        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        info.update(cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    return info


def timing_environment() -> dict[str, str]:
    """The environment settings that change which kernel runs or how fast (the kernels' ATTN_* switches, the
    backend choice, the interpreter, the visible GPUs), as set for this run."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(TIMING_ENV_PREFIX) or k in TIMING_ENV}


def provenance(device: str) -> dict:
    return {"git_commit": git_commit(), "packages": package_versions(), **device_description(device),
            "environment": timing_environment(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


class RunStore:
    """A run folder. Cells are appended one JSON line at a time, flushed and fsynced; never rewritten."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.cells_path = self.folder / CELLS_FILE
        self.manifest_path = self.folder / MANIFEST_FILE
        self.shard: str | None = None  # a rank's cells file (cells.rank<R>.jsonl) in a distributed sweep
        self._lock = None  # the open lock file while this process writes the run

    @staticmethod
    def is_run(folder: Path) -> bool:
        return (Path(folder) / MANIFEST_FILE).is_file()

    def has(self, file: str | None = None) -> bool:
        """Whether the run holds this JSON-lines file (cells.jsonl by default)."""
        return self.lines_path(file).is_file()

    @classmethod
    def create(cls, root: Path, name: str, manifest: dict) -> "RunStore":
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        folder = Path(root) / f"{stamp}-{safe}"
        suffix = 1
        while folder.exists():
            folder = Path(root) / f"{stamp}-{safe}-{suffix}"
            suffix += 1
        try:
            folder.mkdir(parents=True)
        except OSError as err:
            raise InputError(f"--out {root}: cannot create a run folder there ({err.strerror or err}); pass a "
                             "writable folder") from None
        store = cls(folder)
        store.lock()
        store.write_manifest(manifest)
        return store

    def lock(self) -> None:
        """Hold the run folder's advisory lock until release() or the end of this process (however it ends): a
        second writer (another --resume of the same folder) gets a one-line error instead of duplicating cells.
        A lock file left behind by a process that has ended holds no lock: it is taken over, and said so."""
        path = self.folder / LOCK_FILE
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as err:
            raise InputError(f"{self.folder}: cannot write in the run folder ({err.strerror or err}); pass a "
                             "writable folder") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"{self.folder}: cannot lock the run folder ({err.strerror or err})") from None
            raise InputError(f"{self.folder} is in use by {holder}; wait for it to finish (or stop it), then "
                             "--resume again") from None
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            print(f"note: {self.folder}: taking over a stale lock ({stale} has ended)", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        """Drop the lock (an empty lock file means: nobody holds it)."""
        if self._lock is None:
            return
        handle, self._lock = self._lock, None
        handle.seek(0)
        handle.truncate()
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    @classmethod
    def open(cls, folder: Path) -> "RunStore":
        store = cls(folder)
        if not store.manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not a run folder (no {MANIFEST_FILE}); pass a folder under runs/")
        return store

    def write_manifest(self, manifest: dict) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        os.replace(tmp, self.manifest_path)  # atomic: a reader never sees half a manifest

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    def lines_path(self, file: str | None = None) -> Path:
        """cells.jsonl, or another JSON-lines file of the run folder (e.g. diagnostics.jsonl)."""
        return self.folder / (file or self.shard or CELLS_FILE)

    def append(self, cell: dict, file: str | None = None) -> None:
        line = json.dumps(cell, default=str)
        with open(self.lines_path(file), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def cells(self, file: str | None = None) -> list[dict]:
        """Every line that holds a JSON object. Anything else (a torn last line from a killed process, a scalar,
        a hand-edited line) is skipped with one warning that counts them: a bad line never blocks a run.
        A distributed sweep's rank shards (cells.rank<R>.jsonl) are read with the file they shard."""
        cells, bad = [], 0
        paths = shard_files(self.folder, file or CELLS_FILE)
        lines = [line for path in paths for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        path = self.folder / (file or CELLS_FILE)
        for line in lines:
            if not line.strip():
                continue
            try:
                cell = json.loads(line)
            except ValueError:
                cell = None
            if isinstance(cell, dict):
                cells.append(cell)
            else:
                bad += 1
        if bad and (str(path), bad) not in _warned:
            _warned.add((str(path), bad))
            print(f"warning: {path}: skipped {bad} unreadable line(s) (not a JSON object; a torn last line is "
                  "what a killed run leaves)", file=sys.stderr)
        return cells

    def unique_cells(self, file: str | None = None, what: str = "") -> list[dict]:
        """cells(), one line per cell key: the first finished line (ok or too_long) of a key, else its last
        line. Two processes that once wrote the same folder leave a key finished twice; the extra lines are
        dropped and counted in one note (`what` names the reader)."""
        chosen: dict = {}
        order, dropped = [], 0
        for cell in self.cells(file):
            key = cell.get("key")
            if key is None:
                order.append(cell)
                continue
            if key not in chosen:
                chosen[key] = cell
                order.append(key)
                continue
            first_done = chosen[key].get("status") in ("ok", "too_long")
            if first_done and cell.get("status") in ("ok", "too_long"):
                dropped += 1
            elif not first_done:
                chosen[key] = cell
        if dropped:
            print(f"note: {self.folder}: {what + ': ' if what else ''}dropped {dropped} duplicate line(s) of cells "
                  "already finished (two writers once ran this folder); one line per cell is kept", file=sys.stderr)
        return [chosen[item] if isinstance(item, str) else item for item in order]

    def remove_if_empty(self) -> bool:
        """Delete a run folder that holds nothing but its manifest (a run that failed before its first cell)."""
        if any(p.name not in (MANIFEST_FILE, LOCK_FILE) for p in self.folder.iterdir()):
            return False
        self.release()
        (self.folder / LOCK_FILE).unlink(missing_ok=True)
        self.manifest_path.unlink()
        self.folder.rmdir()
        return True

    def repair_torn_tail(self, file: str | None = None) -> None:
        """Before appending to an existing run: end a torn last line so the next cell starts on its own line."""
        path = self.lines_path(file)
        if path.is_file() and path.stat().st_size:
            with open(path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
