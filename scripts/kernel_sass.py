"""Compile kernels for sm_90 without a GPU and write each specialization's SASS, so that a refactor of a kernel can
be shown not to change its code: run this before and after, then `diff -r BEFORE AFTER` (no output: the same SASS).

  PYTHONPATH=. python scripts/kernel_sass.py --out /tmp/sass_before   # at the old commit
  PYTHONPATH=. python scripts/kernel_sass.py --out /tmp/sass_after && diff -r /tmp/sass_before /tmp/sass_after

The launchers run on CPU tensors with a stand-in driver (an H200's target, device 0, stream 0); every launch
only compiles (Triton's warm-up path) and nothing runs. Covered: MInference's two run walks (band_tiles, bands) and
the block-sparse kernels (tile lists; portable and TMA attention, D 64 and 128, aligned, unaligned and no blocks;
the long-prompt tiles). Warp specialization (off in every default) is not covered: forcing it on fails
in Triton's make_ttgir here (3.9).
Debug lines, addresses and comments are left out of the SASS; one file per kernel and constexpr/launch setting.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from attention.kernels.band_tiles import block_tiles  # noqa: E402
from attention.kernels.bands import band_runs  # noqa: E402
from attention.kernels.block_sparse import block_sparse_attention  # noqa: E402
from attention.kernels.config import override  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


class StandInDriver:
    """What JITFunction.run asks of the driver before it compiles: an H200 (sm_90), device 0, stream 0."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


def sass_of(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        dump = subprocess.run([str(CUOBJDUMP), "-sass", f.name], capture_output=True, text=True, check=True).stdout
    lines = [re.sub(r"/\*[0-9a-f]{4,}\*/", "", line).split(";")[0].strip() for line in dump.splitlines()
             if re.match(r"\s+/\*[0-9a-f]{4}\*/", line)]
    return "\n".join(lines) + "\n"


def compile_only(out: Path, written: dict):
    run = JITFunction.run

    def warm_up(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        name = self.fn.__name__ + "".join(f"__{k}{v}" for k, v in sorted(kwargs.items())
                                          if k.isupper() or k.startswith("num_"))
        (out / f"{name}.sass").write_text(sass_of(kernel.asm["cubin"]))
        written[name] = kernel.metadata.shared
        return kernel

    JITFunction.run = warm_up


def launch_all():
    gen = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 4096, (1, 2, 40), generator=gen)
    band_runs(offsets, 1, 2, 4096, 0)
    block_tiles(offsets, 1, 2, 4096, 0)
    for dim in (64, 128):
        q = torch.randn(1, 4, 2048, dim, dtype=torch.bfloat16)
        k = torch.randn(1, 2, 2048, dim, dtype=torch.bfloat16)
        v = torch.randn(1, 2, 2048, dim, dtype=torch.bfloat16)
        blocks = torch.rand(1, 4, 16, 16, generator=gen) < 0.3
        for path in ("portable", "tma"):
            with override(sparse_path=path):
                block_sparse_attention(q, k, v, 0.1, sink=4, window=64, blocks=blocks, block=128)  # aligned
                block_sparse_attention(q, k, v, 0.1, sink=4, window=64, blocks=blocks, block=96)   # per cell
                block_sparse_attention(q, k, v, 0.1, sink=4, window=256)                           # no blocks
    for dim in (64, 128):  # the long-prompt tiles (config.LONG_TILES)
        q = torch.randn(1, 2, 65536, dim, dtype=torch.bfloat16)
        k = torch.randn(1, 1, 65536, dim, dtype=torch.bfloat16)
        blocks = torch.rand(1, 2, 512, 512, generator=gen) < 0.05
        for path in ("portable", "tma"):
            with override(sparse_path=path):
                block_sparse_attention(q, k, k, 0.1, sink=4, window=64, blocks=blocks, block=128)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the .sass files")
    args = ap.parse_args(argv)
    if not CUOBJDUMP.is_file():
        print(f"error: {CUOBJDUMP} is missing (it comes with the triton wheel for NVIDIA)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    driver.set_active(StandInDriver())
    compile_only(out, written)
    launch_all()
    for name, shared in sorted(written.items()):
        print(f"{name}  shared memory {shared} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
