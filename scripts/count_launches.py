"""Count, on the CPU, the GPU launches and host syncs of one peer's estimate (build_pattern), as the CUDA path
would issue them: Triton forced on (ATTENTION_BACKEND=triton semantics), run under TRITON_INTERPRET=1.

  TRITON_INTERPRET=1 PYTHONPATH=. python scripts/count_launches.py --length 16384 --skip-kernels
  TRITON_INTERPRET=1 PYTHONPATH=. python scripts/count_launches.py --length 2048 --methods flexprefill

What counts as a launch: every aten op that computes (views, reshapes, empty allocations and metadata reads are
free; on CUDA a sort is several kernels: sorts are listed apart) plus every Triton kernel launch. What counts as a
host sync: reading a tensor's value on the host (.item(), int()/float()/bool() of a tensor, .tolist()), and ops
whose output shape depends on the data (nonzero, masked_select, boolean indexing, unique). CPU counts, not GPU
timings: the GPU profile (scripts/profile_peers.py) is the evidence for time.

--skip-kernels runs no Triton kernel (their outputs keep whatever their buffers held): the counts of the rest stay
exact as long as no op depends on the data, which is what the defaults promise; use it at long lengths, where the
interpreter would take minutes.
"""
import argparse
import collections
import math
import os
import sys
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRITON_INTERPRET", "1")

import triton.runtime.interpreter as interpreter  # noqa: E402

import attention.peer_estimation as peer_estimation  # noqa: E402
from attention.backend import use_backend  # noqa: E402
from attention.registry import build_method  # noqa: E402

FREE = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "sym_size", "sym_stride",
        "sym_numel", "sym_storage_offset", "detach", "alias", "lift_fresh", "_local_scalar_dense", "set_",
        "resize_", "is_same_size", "_has_compatible_shallow_copy_type", "result_type", "is_nonzero"}
SYNC = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive",
        "unique_dim", "nonzero_static"}


class LaunchCounter(TorchDispatchMode):
    def __init__(self, trace: str = ""):
        super().__init__()
        self.trace = trace  # print the project lines that issue this op
        self.ops = collections.Counter()
        self.syncs = collections.Counter()
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            name = func._schema.name.split("::")[-1]
            if name in SYNC:
                self.syncs[name] += 1
            elif name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
                self.syncs["boolean index"] += 1
            elif name == "repeat_interleave" and kwargs.get("output_size") is None and len(args) > 0:
                self.syncs["repeat_interleave"] += 1
            if name not in FREE and not func.is_view:
                self.ops[name] += 1
                if self.trace in (name, "all"):
                    print(f"  {name} <- " + " <- ".join(
                        f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_stack()[::-1]
                        if "/attention/" in f.filename)[:300])
        return func(*args, **kwargs)


@contextmanager
def counting_triton(counter: LaunchCounter, skip: bool):
    """Count every interpreted Triton launch by kernel name; run it (unless skip) with the op counter paused."""
    original = interpreter.InterpretedFunction.run
    original_tolist = torch.Tensor.tolist

    def run(self, *args, grid, warmup, **kwargs):
        if not counter.paused:
            counter.ops[f"triton:{self.fn.__name__}"] += 1
        if skip:
            return None
        counter.paused += 1
        try:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            counter.paused -= 1

    def tolist(self):
        if not counter.paused:
            counter.syncs["tolist"] += 1
        return original_tolist(self)

    interpreter.InterpretedFunction.run = run
    torch.Tensor.tolist = tolist
    try:
        yield
    finally:
        interpreter.InterpretedFunction.run = original
        torch.Tensor.tolist = original_tolist


@contextmanager
def graphed(counter: LaunchCounter):
    """Stand in for the CUDA-graph capture of peer_estimation.estimate: a replay counts as one launch (its kernels
    run inside the graph, issued by the GPU), the work itself runs uncounted."""
    original = peer_estimation.capture, peer_estimation.graphs_enabled

    def capture(fn, statics):
        counter.paused += 1
        try:
            fn(*statics)
            outputs = fn(*statics)
        finally:
            counter.paused -= 1

        def replay():
            counter.ops["cuda graph replay"] += 1
            counter.paused += 1
            try:
                with torch.inference_mode():  # a graph writes its outputs whatever the caller's autograd mode
                    for out, new in zip(outputs, fn(*statics)):
                        if out is not None:
                            out.copy_(new)
            finally:
                counter.paused -= 1
        return outputs, replay

    peer_estimation.capture, peer_estimation.graphs_enabled = capture, lambda device: True
    try:
        yield
    finally:
        peer_estimation.capture, peer_estimation.graphs_enabled = original


def count(name: str, options: dict, length: int, heads: int, kv_heads: int, dim: int, skip: bool, seed: int = 0,
          trace: str = "", graphs: bool = False):
    torch.manual_seed(seed)
    q = torch.randn(1, heads, length, dim).to(torch.bfloat16)
    k = torch.randn(1, kv_heads, length, dim).to(torch.bfloat16)
    method = build_method(name, options)
    scale = 1 / math.sqrt(dim)
    counter = LaunchCounter()
    with use_backend("triton"), counting_triton(counter, skip), (graphed(counter) if graphs else nullcontext()):
        method.build_pattern(q, k, scale, 0)  # warm: per-shape caches fill here, as on the first layer
        counter.ops.clear()
        counter.syncs.clear()
        counter.trace = trace
        with counter:
            method.build_pattern(q, k, scale, 1)
    return counter


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--methods", default="flexprefill,xattention,minference")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--graphs", action="store_true", help="count as on CUDA with the estimate graphs (host launches)")
    ap.add_argument("--trace", default="", help="print where each op of this aten name comes from")
    args = ap.parse_args()
    print(f"S={args.length} Hq={args.heads} Hkv={args.kv_heads} D={args.dim} torch {torch.__version__}"
          f"{' (Triton kernels counted, not run)' if args.skip_kernels else ''}"
          f"{' host launches with the estimate graphs' if args.graphs else ''}")
    for spec in args.methods.split(","):
        name, _, opts = spec.partition(":")
        options = dict(kv.split("=", 1) for kv in opts.split(",") if kv) if opts else {}
        c = count(name, options, args.length, args.heads, args.kv_heads, args.dim, args.skip_kernels,
                  trace=args.trace, graphs=args.graphs)
        sorts = sum(v for k, v in c.ops.items() if k.startswith("sort"))
        triton_launches = sum(v for k, v in c.ops.items() if k.startswith("triton:"))
        print(f"{spec}: {sum(c.ops.values())} launches ({triton_launches} Triton, {sorts} sorts), "
              f"{sum(c.syncs.values())} host syncs {dict(c.syncs) or ''}")
        if args.verbose:
            for op, n in c.ops.most_common():
                print(f"    {n:4d} {op}")


if __name__ == "__main__":
    main()
