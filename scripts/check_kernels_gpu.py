"""GPU correctness check of the Triton kernels in bf16 against the fp32 reference, beside a plain PyTorch bf16
implementation's error (the bar the CPU tests also use). Every sparse kernel path (portable gather kernel, Hopper
TMA kernel where the card has TMA) runs on --shapes random shapes (every other one in the [B, S, H, D] memory a
model hands over): lengths off the block sizes, GQA ratios 1-8,
head dims 64/128/256, sinks, windows from 0 to past the length, columns and slashes overlapping the window and
the sinks (repeats and unused slots included), queries shorter than keys. Prints failures and a summary per path;
exits 1 on any failure (error above 2x the bf16 bar, a NaN, an unwritten output, a density mismatch).

--long adds one case at 2^20 tokens with 24 query heads over 8 kv heads (head dim 128) in the [B, S, H, D]
layout a model hands over: q and the output hold 3 x 2^30 elements, so the later heads and rows are only
reached with 64-bit offsets. Every path (portable, TMA, stage 1 with and without diagonals, stage 2's fused
selection with the column kernel SampleAttention runs) is checked on 64-row windows in the middle and at the
end against the fp32 reference computed per head over all 2^20 keys.

The block-sparse kernel (BigBird, FlexPrefill, XAttention patterns) runs on BLOCK_CASES (Qwen2.5's 14/2 heads at
16K, unaligned pattern blocks, Sq < Sk, a batch of 2, a diagonal-only head) and at 256K tokens with 2 heads.

  PYTHONPATH=. python scripts/check_kernels_gpu.py --shapes 200 [--long]
"""
import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.density import pattern_density  # noqa: E402
from attention.executor import torch_pattern_attention  # noqa: E402
from attention.kernels.config import override, tma_supported  # noqa: E402
from attention.kernels.hopper import sparse_attention_tma  # noqa: E402
from attention.kernels.prefill import sparse_attention_portable  # noqa: E402
from attention.kernels.stage1 import launch_sampled_scores as sampled_scores  # noqa: E402
from attention.kernels.block_sparse import block_sparse_attention  # noqa: E402
from attention.kernels.column_select import select_columns  # noqa: E402
from attention.kernels.config import block_config  # noqa: E402
from attention.kernels.prefill import column_attention  # noqa: E402
from attention.density import base_cells  # noqa: E402
from attention.methods.sample import chunk_rows, strided_rows  # noqa: E402
from attention.density import mask_density as density  # noqa: E402
from attention.pattern import SparsePattern  # noqa: E402
from attention.reference import expand_kv, reference_attention  # noqa: E402
from attention.registry import build_method  # noqa: E402
from attention.scores import torch_sampled_scores  # noqa: E402


def bf16_torch(q, k, v, keep, scale):
    """Plain PyTorch attention computed in bf16 (scores, softmax input and output in bf16)."""
    kx, vx = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
    s = (q @ kx.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, -1)).to(q.dtype) @ vx


def random_case(rng: random.Random, device):
    """One random shape and pattern; columns/slashes deliberately overlap sinks and window."""
    kv = rng.choice([1, 1, 2, 4])
    group = rng.choice([1, 2, 3, 4, 8])
    heads, dim = kv * group, rng.choice([64, 128, 128, 256])
    k_len = rng.randrange(65, 1500 if dim == 256 else 2600)
    q_len = k_len if rng.random() < 0.8 else rng.randrange(1, k_len + 1)
    window = rng.choice([0, rng.randrange(1, 64), rng.randrange(1, k_len + 1), k_len + 5])
    sink = rng.choice([0, 0, rng.randrange(1, 9)])
    g = torch.Generator(device=device).manual_seed(rng.randrange(1 << 30))
    cols = slashes = None
    if rng.random() < 0.85:
        n = rng.randrange(1, max(2, k_len // 8))
        cols = torch.randint(-1, k_len, (1, heads, n), device=device, generator=g)
        cols[..., : min(n, 3)] = torch.randint(0, min(sink + 2, k_len), (1, heads, min(n, 3)), device=device,
                                               generator=g)  # on or next to the sinks, repeats likely
        if n > 6:
            cols[..., 3:6] = (k_len - 1 - torch.randint(0, max(1, window), (1, heads, 3), device=device, generator=g))
    if rng.random() < 0.35:
        slashes = torch.randint(-1, k_len, (1, heads, rng.randrange(1, 12)), device=device, generator=g)
        slashes[..., 0] = rng.randrange(0, max(1, window + 3))  # inside / at the edge of the window
    return q_len, k_len, heads, kv, dim, SparsePattern(sink=sink, window=window, columns=cols, slashes=slashes)


def with_tiles(fn, blocks):
    """fn run with the TMA tiles `blocks`: the ones the launcher picks only for long sequences."""
    def run(*args, **kwargs):
        with override(tma_blocks=blocks):
            return fn(*args, **kwargs)
    return run


def check_fused(paths, device="cuda"):
    """SampleAttention's fused column path (attention/sample_fused.py) on each kernel path, D=64 and D=128,
    adaptive and fixed budget, against the fp32 exact attention under the pattern its build_pattern gives."""
    failed = 0
    for path in paths:
        for dim, heads, kv, seq, opts in ((64, 14, 2, 3000, {}), (64, 14, 2, 2500, {"density": "0.2"}),
                                          (128, 8, 2, 2200, {}), (128, 4, 4, 1900, {"density": "0.3"})):
            q = torch.randn(1, heads, seq, dim, device=device, dtype=torch.bfloat16)
            k = torch.randn(1, kv, seq, dim, device=device, dtype=torch.bfloat16)
            v = torch.randn(1, kv, seq, dim, device=device, dtype=torch.bfloat16)
            k[:, :, torch.randperm(seq, device=device)[:seq // 50]] *= 4  # stripes to select
            scale = dim ** -0.5
            method = build_method("sample", {"dense_above": "1", **opts})
            with override(sparse_path=path):
                out = method.prefill(q, k, v, scale)
            pattern = method.build_pattern(q, k, scale)
            ref = torch_pattern_attention(q.float(), k.float(), v.float(), pattern, scale)
            low = bf16_torch(q, k, v, pattern.keep_mask(1, heads, seq, seq, device), scale)
            err, bar = rel(out, ref), rel(low, ref)
            ok = not out.isnan().any() and err <= 2 * bar + 1e-3
            failed += not ok
            print(f"fused {path:8s} S={seq} H={heads}/{kv} D={dim} {opts}: rel err {err:.2e} (bf16 bar {bar:.2e})"
                  f" {'ok' if ok else 'FAIL'}")
    return failed


def rel(x, ref):
    return float((x.float() - ref).norm() / ref.norm())


def check_sparse(paths, n_shapes, seed, device="cuda"):
    rng = random.Random(seed)
    failed = {name: 0 for name in paths}
    worst = {name: 0.0 for name in paths}
    for i in range(n_shapes):
        if i % 25 == 0:
            print(f"shape {i}/{n_shapes}, failures so far {failed}", flush=True)
        q_len, k_len, heads, kv, dim, p = random_case(rng, device)
        q = torch.randn(1, heads, q_len, dim, device=device, dtype=torch.bfloat16)
        k, v = (torch.randn(1, kv, k_len, dim, device=device, dtype=torch.bfloat16) for _ in range(2))
        k[:, :, torch.rand(k_len, device=device) < 0.02] *= 4  # some peaked rows
        if i % 2:  # every other shape in the [B, S, H, D] memory a model hands over (read in place by TMA)
            q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
        keep = p.keep_mask(1, heads, q_len, k_len, device)
        scale = dim ** -0.5
        ref = reference_attention(q, k, v, keep, scale)
        norm = ref.norm().clamp(min=1e-6)
        base = ((bf16_torch(q, k, v, keep, scale).float() - ref).norm() / norm).item()
        dens = (pattern_density(p, 1, heads, q_len, k_len, device) - density(keep)).abs().max().item()
        for name, fn in paths.items():
            out = torch.full_like(q, float("nan"))
            fn(q, k, v, scale, sink=p.sink, window=p.window, columns=p.columns, slashes=p.slashes, out=out)
            nan = bool(out.isnan().any())
            err = ((out.float() - ref).norm() / norm).item()
            ok = not nan and err <= 2 * base + 1e-6 and dens < 1e-5
            worst[name] = max(worst[name], err / max(base, 1e-9))
            if not ok:
                failed[name] += 1
                print(f"FAIL {name} #{i} Sq={q_len} Sk={k_len} H={heads}/{kv} D={dim} sink={p.sink} window={p.window}"
                      f" cols={None if p.columns is None else p.columns.shape[-1]}"
                      f" slashes={None if p.slashes is None else p.slashes.shape[-1]}: err {err:.2e} bar {base:.2e}"
                      f" nan={nan} density diff {dens:.1e}", flush=True)
    for name in paths:
        print(f"sparse[{name}]: {n_shapes - failed[name]}/{n_shapes} ok, worst error / bf16 bar {worst[name]:.2f}")
    return sum(failed.values())


def check_scores():
    failed = 0
    for seq, heads, kv, dim in [(1000, 4, 1, 64), (777, 6, 2, 128), (1100, 8, 8, 256), (4096, 8, 2, 128)]:
        q, k = (torch.randn(1, h, seq, dim, device="cuda", dtype=torch.bfloat16) for h in (heads, kv))
        for slash in (False, True):
            rows = chunk_rows(seq, 4, "cuda") if slash else strided_rows(seq, 0.05, "cuda")
            col, dg = sampled_scores(q, k, dim ** -0.5, rows, slash)
            col2, dg2 = torch_sampled_scores(q, k, dim ** -0.5, rows, slash)
            e = ((col - col2).norm() / col2.norm()).item()
            e2 = ((dg - dg2).norm() / dg2.norm()).item() if slash else 0.0
            ok = e < 2e-2 and e2 < 2e-2
            failed += not ok
            print(f"scores S={seq} H={heads}/{kv} D={dim} slash={slash}: col rel err {e:.2e} diag rel err {e2:.2e}"
                  f" {'ok' if ok else 'FAIL'}")
    return failed


LONG = 1 << 20
DEVICE = "cuda"  # the long case's device (a CPU dry run of the script's logic sets both smaller)


def long_inputs(heads=24, kv_heads=8, dim=128, seed=0):
    """q/k/v [1, H, S, D] views of [1, S, H, D] storage (as a model's projections), a few peaked key columns."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(1, LONG, heads, dim, device=DEVICE, dtype=torch.bfloat16, generator=g).transpose(1, 2)
    k, v = (torch.randn(1, LONG, kv_heads, dim, device=DEVICE, dtype=torch.bfloat16, generator=g).transpose(1, 2)
            for _ in range(2))
    hot = torch.randint(0, LONG, (256,), device=DEVICE, generator=g)
    k[:, :, hot] *= 4
    return q, k, v


def compare_rows(name, out, q, k, v, pattern, scale, rows=64):
    """Rows [start, start + rows) of out (queries = keys) against the fp32 reference, per head, in the middle and
    at the end of the keys; failures counted."""
    heads, group, length = q.shape[1], q.shape[1] // k.shape[1], k.shape[2]
    failed, worst = 0, 0.0
    for start in (length // 2 - rows // 2, length - rows):
        keep = pattern.keep_mask(1, heads, rows, length, DEVICE, q_start=start)
        for h in range(heads):
            kv = slice(h // group, h // group + 1)
            qs, ks, vs = q[:, h:h + 1, start:start + rows], k[:, kv], v[:, kv]
            ref = reference_attention(qs, ks, vs, keep[:, h:h + 1], scale, causal=False)
            bar = ((bf16_torch(qs, ks, vs, keep[:, h:h + 1], scale).float() - ref).norm() / ref.norm()).item()
            got = out[:, h:h + 1, start:start + rows].float()
            err = ((got - ref).norm() / ref.norm()).item()
            nan = bool(got.isnan().any())
            worst = max(worst, err / max(bar, 1e-9))
            if nan or err > 2 * bar + 1e-6:
                failed += 1
                print(f"FAIL long[{name}] head {h} rows {start}+{rows}: err {err:.2e} bar {bar:.2e} nan={nan}",
                      flush=True)
        del keep
    print(f"long[{name}]: {'ok' if not failed else f'{failed} head-row windows FAILED'}, worst error / bf16 bar "
          f"{worst:.2f}", flush=True)
    return failed


def check_long(paths, seed=0):
    """The 1M-token case of every kernel path (see the module docstring); a CUDA error is a failure, printed."""
    q, k, v = long_inputs(seed=seed)
    heads, dim = q.shape[1], q.shape[3]
    scale = dim ** -0.5
    g = torch.Generator(device=DEVICE).manual_seed(seed + 1)
    columns = torch.randint(-1, LONG, (1, heads, 2048), device=DEVICE, generator=g)
    columns[..., :4] = LONG - 1 - torch.randint(1000, 4000, (1, heads, 4), device=DEVICE, generator=g)
    slashes = torch.randint(1000, LONG, (1, heads, 6), device=DEVICE, generator=g)
    failed = 0
    for name, fn in paths.items():
        for with_slash in (False, True):
            p = SparsePattern(sink=4, window=1000, columns=columns, slashes=slashes if with_slash else None)
            label = f"{name}{'+slash' if with_slash else ''}"
            try:
                out = torch.full_like(q, float("nan"))  # the transposed layout too
                fn(q, k, v, scale, sink=p.sink, window=p.window, columns=p.columns, slashes=p.slashes, out=out)
                failed += compare_rows(label, out, q, k, v, p, scale)
                del out
            except RuntimeError as err:
                failed += 1
                print(f"FAIL long[{label}]: {type(err).__name__}: {' '.join(str(err).split())[:300]}", flush=True)
    try:  # stage 1 at 1M against the fp32 PyTorch scores; then stage 2 + the column kernel, as `sample` runs
        for slash in (False, True):
            rows = chunk_rows(LONG, 2, DEVICE) if slash else torch.cat(
                [torch.arange(LONG // 2, LONG // 2 + 64), torch.arange(LONG - 64, LONG)]).to(DEVICE)
            col, dg = sampled_scores(q, k, scale, rows, slash)
            col2, dg2 = torch_sampled_scores(q, k, scale, rows, slash)
            e = ((col - col2).norm() / col2.norm()).item()
            e2 = ((dg - dg2).norm() / dg2.norm()).item() if slash else 0.0
            ok = e < 2e-2 and e2 < 2e-2 and not col.isnan().any()
            failed += not ok
            print(f"long[stage 1, diagonals={slash}]: col rel err {e:.2e} diag rel err {e2:.2e} "
                  f"{'ok' if ok else 'FAIL'}", flush=True)
        window, sink, block_m = 1000, 4, block_config(dim, LONG)[0]
        base, causal = base_cells(LONG, LONG, window, sink)
        cols, col_full, col_hi, dens = select_columns(col, sink=sink, window=window, q_len=LONG, block_m=block_m,
                                                      base_cells=base, causal_cells=causal,
                                                      budget=0.05 * causal - base)
        out = torch.full_like(q, float("nan"))
        column_attention(q, k, v, scale, window=window, cols=cols, col_full=col_full, col_hi=col_hi,
                         block_m=block_m, out=out)
        p = SparsePattern(sink=0, window=window, columns=cols)  # the list holds the sinks first
        print(f"long[fused]: selected density {dens.mean().item():.4f} (budget 0.05)", flush=True)
        failed += compare_rows("fused select + column kernel", out, q, k, v, p, scale)
        ok = abs(dens.mean().item() - 0.05) < 0.01
        failed += not ok
        print(f"long[fused density]: {'ok' if ok else 'FAIL'}", flush=True)
    except RuntimeError as err:
        failed += 1
        print(f"FAIL long[stages]: {type(err).__name__}: {' '.join(str(err).split())[:300]}", flush=True)
    return failed


def random_blocks(batch, heads, q_len, k_len, block, share, device, seed):
    """Kept pattern blocks per (sample, head): random causal ones at about `share`, the diagonal always; the last
    head keeps only the diagonal."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = -(-k_len // block)
    blocks = torch.rand(batch, heads, n, n, device=device, generator=g) < share
    blocks |= torch.eye(n, dtype=torch.bool, device=device)
    blocks[:, -1] = torch.eye(n, dtype=torch.bool, device=device)
    return blocks


# (batch, q_len, k_len, q heads, kv heads, head dim, pattern block, sink, window, share): Qwen2.5's shape at 16K
# (aligned tiles), unaligned pattern blocks, queries shorter than keys off a tile border, a batch of 2
BLOCK_CASES = [(1, 16384, 16384, 14, 2, 64, 128, 0, 0, 0.1), (1, 8000, 8000, 14, 2, 64, 64, 4, 300, 0.25),
               (1, 3001, 9000, 8, 2, 128, 96, 2, 0, 0.2), (2, 5000, 5000, 4, 4, 128, 128, 0, 700, 0.3),
               (1, 4097, 4097, 16, 2, 256, 128, 1, 64, 0.2), (1, 2500, 6100, 7, 1, 64, 48, 0, 129, 0.15)]


def check_blocks(paths=("portable",), device="cuda"):
    """The block-sparse kernel (attention/kernels/block_sparse.py) on BLOCK_CASES on each path (portable, Hopper
    TMA), per head against the fp32 reference beside the bf16 bar; the output poisoned with NaN so every element
    must be written. Every other case in transformers' [B, S, H, D] memory."""
    failed = 0
    for n, case in enumerate(BLOCK_CASES):
        for path in paths:
            failed += check_block_case(path, *case, model_layout=n % 2 == 1, device=device)
    return failed


def check_block_case(path, batch, q_len, k_len, heads, kv, dim, block, sink, window, share, model_layout, device):
    """One BLOCK_CASES shape on one path; heads that fail counted."""
    q = torch.randn(batch, heads, q_len, dim, device=device, dtype=torch.bfloat16)
    k, v = (torch.randn(batch, kv, k_len, dim, device=device, dtype=torch.bfloat16) for _ in range(2))
    k[:, :, torch.rand(k_len, device=device) < 0.02] *= 4  # some peaked rows
    if model_layout:
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    blocks = random_blocks(batch, heads, q_len, k_len, block, share, device, seed=q_len)
    scale = dim ** -0.5
    out = torch.full_like(q, float("nan"))
    with override(sparse_path=path):
        block_sparse_attention(q, k, v, scale, sink=sink, window=window, blocks=blocks, block=block, out=out)
    worst, bad = 0.0, 0
    for h in range(heads):
        kv_h = slice(h // (heads // kv), h // (heads // kv) + 1)
        p = SparsePattern(sink=sink, window=window, blocks=blocks[:, h:h + 1], block=block)
        keep = p.keep_mask(batch, 1, q_len, k_len, device)
        qs, ks, vs = q[:, h:h + 1], k[:, kv_h], v[:, kv_h]
        ref = reference_attention(qs, ks, vs, keep, scale)
        bar = rel(bf16_torch(qs, ks, vs, keep, scale), ref)
        err = rel(out[:, h:h + 1], ref)
        worst = max(worst, err / max(bar, 1e-9))
        bad += bool(out[:, h:h + 1].isnan().any()) or err > 2 * bar + 1e-6
        del keep, ref
    print(f"block[{path}] B={batch} Sq={q_len} Sk={k_len} H={heads}/{kv} D={dim} block={block} sink={sink} "
          f"window={window} {'bshd' if model_layout else 'bhsd'}: worst error / bf16 bar {worst:.2f} "
          f"{'ok' if not bad else f'{bad} heads FAIL'}", flush=True)
    return bad


def check_blocks_long(length=1 << 18, heads=2, dim=128, device="cuda"):
    """256K tokens, 2 query heads over 1 kv head in the [B, S, H, D] layout, random 128-token blocks at ~5%, on the
    path the launcher picks (TMA on Hopper): rows in the middle and at the end against the fp32 reference."""
    q = torch.randn(1, length, heads, dim, device=device, dtype=torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(1, length, 1, dim, device=device, dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
    blocks = random_blocks(1, heads, length, length, 128, 0.05, device, seed=1)
    p = SparsePattern(sink=4, window=1000, blocks=blocks, block=128)
    try:
        out = torch.full_like(q, float("nan"))
        block_sparse_attention(q, k, v, dim ** -0.5, sink=p.sink, window=p.window, blocks=blocks, block=128, out=out)
        return compare_rows("block-sparse 256K", out, q, k, v, p, dim ** -0.5)
    except RuntimeError as err:
        print(f"FAIL long[block-sparse 256K]: {type(err).__name__}: {' '.join(str(err).split())[:300]}", flush=True)
        return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long", action="store_true", help="add the 1M-token case (about 40 GiB of GPU memory)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    paths = {"portable": sparse_attention_portable}
    if tma_supported(torch.empty(1, device="cuda")):
        paths["tma"] = sparse_attention_tma
        paths["tma-128x128"] = with_tiles(sparse_attention_tma, {128: (128, 128, 8, 3, 0)})  # the >= 48K config
    failed = check_sparse(paths, args.shapes, args.seed) + check_scores()
    failed += check_fused(["portable", "tma"] if "tma" in paths else ["portable"])
    failed += check_blocks(("portable", "tma") if "tma" in paths else ("portable",)) + check_blocks_long()
    if args.long:
        failed += check_long({k: v for k, v in paths.items() if k != "tma-128x128"}, args.seed)
    print("GPU CHECK", "FAILED" if failed else "PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
