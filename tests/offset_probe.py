"""Run chosen programs of a Triton kernel in the CPU interpreter on tensors that are never allocated, and check
every address it loads or stores against the extent of the argument it belongs to.

The interpreter computes integer index math in the kernel's own widths (numpy int32 wraps as the GPU does), so a
stride product that overflows 32 bits shows up as an address outside its tensor. Loads return values from each
fake tensor's `fill` (index tensors) or zeros; stores and atomics only record. TMA descriptor tiles are
materialised with 64-bit address math (as the hardware does); their 32-bit coordinates are checked instead.
Depends on triton.runtime.interpreter internals (triton 3.x); needs TRITON_INTERPRET=1 before triton is imported.
"""
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from triton.runtime import interpreter as interp
from triton.tools.tensor_descriptor import TensorDescriptor

SPACING = 1 << 44  # fake tensors sit this far apart: a wrapped offset cannot land inside another one


@dataclass
class Fake:
    """A kernel tensor argument with a shape but no storage: data_ptr() is a made-up, aligned address."""
    name: str
    shape: tuple
    dtype: torch.dtype = torch.bfloat16
    strides: tuple | None = None   # element strides (default contiguous)
    fill: object = None            # offsets (int64 numpy) -> values, for loads of index tensors
    base: int = 0
    touched: list = field(default_factory=list)  # largest element offset seen per access

    def __post_init__(self):
        if self.strides is None:
            s, acc = [], 1
            for n in reversed(self.shape):
                s.append(acc)
                acc *= n
            self.strides = tuple(reversed(s))

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    @property
    def extent(self) -> int:
        """Elements from the base to one past the last element the strides reach."""
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))

    def stride(self, dim: int) -> int:
        return self.strides[dim]

    def data_ptr(self) -> int:
        return self.base


class Probe:
    """Collects out-of-extent accesses of the fakes given; use as a context manager around run_programs."""

    def __init__(self, *fakes: Fake):
        self.fakes = list(fakes)
        for i, f in enumerate(self.fakes):
            f.base = SPACING * (i + 1)
        self.errors: list[str] = []

    def desc(self, fake: Fake, rows: int, cols: int, block: list) -> TensorDescriptor:
        """A [rows, cols] TMA descriptor over a fake (its flat [rows, cols] view)."""
        return TensorDescriptor(fake, [rows, cols], [cols, 1], block)

    def _owner(self, addr: np.ndarray):
        idx = (addr // SPACING).astype(np.int64) - 1
        return idx

    def _check(self, ptrs: np.ndarray, mask: np.ndarray, what: str):
        addr = np.asarray(ptrs, dtype=np.uint64)[np.broadcast_to(np.asarray(mask, dtype=bool), np.shape(ptrs))]
        if addr.size == 0:
            return None, None
        owner = np.unique(self._owner(addr))
        if len(owner) != 1 or not 0 <= owner[0] < len(self.fakes):
            self.errors.append(f"{what}: addresses outside every argument (wrapped offset?)")
            return None, None
        fake = self.fakes[owner[0]]
        off = (addr.astype(np.int64) - fake.base)
        if (off % fake.itemsize).any():
            self.errors.append(f"{what} {fake.name}: misaligned element address")
        off //= fake.itemsize
        lo, hi = int(off.min()), int(off.max())
        fake.touched.append(hi)
        if lo < 0 or hi >= fake.extent:
            self.errors.append(f"{what} {fake.name}: element offsets [{lo}, {hi}] outside [0, {fake.extent})")
            return None, None
        return fake, off

    def _load(self, ptrs, mask, other, cache_policy, is_volatile):
        dtype_tt = ptrs.get_element_ty()
        dtype_np = interp._get_np_dtype(dtype_tt)
        out = np.zeros(np.shape(ptrs.data), dtype=dtype_np) if other is None else np.array(
            np.broadcast_to(other.data, np.shape(ptrs.data)), dtype=dtype_np)
        fake, _ = self._check(ptrs.data, mask.data, "load")
        if fake is not None and fake.fill is not None:
            m = np.broadcast_to(np.asarray(mask.data, dtype=bool), out.shape)
            safe = np.where(m, ptrs.data, fake.base).astype(np.int64)
            vals = np.asarray(fake.fill((safe - fake.base) // fake.itemsize)).astype(dtype_np)
            out = np.where(m, vals, out)
        return interp.TensorHandle(out, dtype_tt)

    def _store(self, ptrs, value, mask, cache_policy):
        self._check(ptrs.data, mask.data, "store")

    def _atomic(self, rmw_op, ptr, val, mask, sem, scope):
        self._check(ptr.data, mask.data, "atomic")
        return interp.TensorHandle(np.zeros(np.shape(val.data), dtype=val.data.dtype), val.dtype.scalar)

    def _materialize(self, desc, offsets):
        # 64-bit address math, as the TMA unit does; a coordinate that wrapped negative is the kernel's fault
        itemsize = desc.base.dtype.element_ty.primitive_bitwidth // 8
        ptrs = np.broadcast_to(desc.base.data, desc.block_shape).astype(np.uint64)
        masks = np.ones(desc.block_shape, dtype=bool)
        for dim in range(len(desc.block_shape)):
            start = int(np.asarray(offsets[dim].data).reshape(-1)[0])
            if start < 0 or start >= 2**31:
                self.errors.append(f"descriptor coordinate {start} in dim {dim} is not a valid 32-bit start")
            shape = [1] * len(desc.block_shape)
            shape[dim] = desc.block_shape[dim]
            off = (start + np.arange(desc.block_shape[dim], dtype=np.int64)).reshape(shape)
            stride = int(np.asarray(desc.strides[dim].data).reshape(-1)[0])
            ptrs = ptrs + (itemsize * off * stride).astype(np.uint64)
            masks = masks & (off >= 0) & (off < int(np.asarray(desc.shape[dim].data).reshape(-1)[0]))
        return interp.TensorHandle(ptrs, desc.base.dtype.scalar), interp.TensorHandle(masks, interp.tl.int1)

    def __enter__(self):
        b = interp.interpreter_builder
        self._saved = (b.create_masked_load, b.create_masked_store, b.create_atomic_rmw,
                       interp.TensorDescHandle.materialize_pointers)
        b.create_masked_load = self._load
        b.create_masked_store = self._store
        b.create_atomic_rmw = self._atomic
        probe = self
        interp.TensorDescHandle.materialize_pointers = lambda desc, offsets: probe._materialize(desc, offsets)
        return self

    def __exit__(self, *exc):
        b = interp.interpreter_builder
        del b.create_masked_load, b.create_masked_store, b.create_atomic_rmw  # the class methods show again
        interp.TensorDescHandle.materialize_pointers = self._saved[3]
        return False


def run_programs(kernel, grid: tuple, programs: list[tuple], *args, **kwargs):
    """Run only `programs` (grid indices) of kernel[grid](*args, **kwargs) in the interpreter; tl.num_programs
    still reports the whole grid."""
    fn = kernel.rewrite()
    grid = tuple(grid) + (1,) * (3 - len(grid))
    executor = interp.GridExecutor(fn, kernel.arg_names, grid)
    spec = inspect.getfullargspec(fn)
    kwargs = {k: v for k, v in kwargs.items() if k in spec.args or k in spec.kwonlyargs}
    scope = interp._patch_lang(fn)
    try:
        call = inspect.getcallargs(fn, *args, **kwargs)
        call = {n: a if n in executor.constexprs else interp._implicit_cvt(a) for n, a in call.items()}
        interp.interpreter_builder.set_grid_dim(*grid)
        for p in programs:
            p = tuple(p) + (0,) * (3 - len(p))
            interp.interpreter_builder.set_grid_idx(*p)
            fn(**call)
    finally:
        scope.restore()
