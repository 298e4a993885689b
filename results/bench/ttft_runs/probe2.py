"""GPU call 2: stage-1 correctness after the unmasked-tile change, stage timings, the dense-limit table measured,
then bench_ttft on random llama-8b 8K-64K and random smollm2 2K-8K with that table."""
import math
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, ".")
sys.path.insert(0, "scripts")
from attention import executor  # noqa
from attention.density import base_cells  # noqa
from attention.kernels.scores import row_plan, sampled_scores  # noqa
from attention.kernels.select import block_m_for, select_columns  # noqa
from attention.methods.sample import strided_rows  # noqa
from attention.methods.dense import DenseAttention, DenseConfig  # noqa
from attention.registry import build_method  # noqa
from attention.scores import torch_sampled_scores  # noqa
from tests.kernel_helpers import rel_err  # noqa

OUT = os.environ["OUT"]
log = open(f"{OUT}/probe2.log", "w")


def say(*a):
    t = " ".join(str(x) for x in a)
    print(t, flush=True)
    log.write(t + "\n")
    log.flush()


def planted(seq, heads, kv, dim, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(1, heads, seq, dim, device="cuda", generator=g)
    k = torch.randn(1, kv, seq, dim, device="cuda", generator=g)
    v = torch.randn(1, kv, seq, dim, device="cuda", generator=g)
    u = torch.nn.functional.normalize(torch.randn(dim, device="cuda", generator=g), dim=0)
    q += 2.0 * u
    k += (torch.rand(1, kv, seq, 1, device="cuda", generator=g) < 0.01) * 30.0 * u
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


say(torch.cuda.get_device_name())
# stage 1 vs the fp32 PyTorch path (unmasked tiles, folded normaliser)
for seq, dim in ((4096, 128), (3000, 64)):
    q, k, v = planted(seq, 8, 2, dim)
    rows = strided_rows(seq, 0.05, "cuda")
    got = sampled_scores(q, k, dim ** -0.5, row_plan(rows, seq, seq, dim))[0]
    want = torch_sampled_scores(q, k, dim ** -0.5, rows)[0]
    say(f"stage1 {seq} D={dim}: rel err vs fp32 torch {rel_err(got, want):.2e}, sums {got.sum(-1).mean():.2f} "
        f"(rows {rows.numel()})")

# the dense-limit table: sparse/dense ~= stages + ratio * density
table = []
for seq in (16384, 32768, 65536, 131072):
    q, k, v = planted(seq, 32, 8, 128)
    scale = 128 ** -0.5
    dense = DenseAttention(DenseConfig(backend="cudnn"))
    t_d = do_bench(lambda: dense.prefill(q, k, v, scale), warmup=30, rep=200)
    plan = executor.row_plan(("rows", 0.05), lambda: strided_rows(seq, 0.05, "cuda"), seq, seq, 128, q.device)
    window = math.ceil(0.025 * seq)
    base, causal = base_cells(seq, seq, window, 4)
    t_s1 = do_bench(lambda: sampled_scores(q, k, scale, plan), warmup=30, rep=200)
    kern = {}
    for d in (0.1, 0.5):
        sel = executor.select_fused(q, k, scale, plan, sink=4, window=math.ceil(d / 4 * seq),
                                    base=base_cells(seq, seq, math.ceil(d / 4 * seq), 4)[0], causal=causal,
                                    budget=max(0.0, d * causal - base_cells(seq, seq, math.ceil(d / 4 * seq), 4)[0]))
        kern[d] = do_bench(lambda: executor.run_fused(q, k, v, scale, math.ceil(d / 4 * seq), sel), warmup=30, rep=200)
    col = sampled_scores(q, k, scale, plan)[0]
    t_s2 = do_bench(lambda: select_columns(col, sink=4, window=window, q_len=seq, block_m=block_m_for(128, seq),
                                           base_cells=base, causal_cells=causal, alpha=0.95), warmup=30, rep=200)
    probe = executor.row_plan(("probe",), lambda: torch.arange(seq - 64, seq, device="cuda"), seq, seq, 128, q.device)
    t_probe = do_bench(lambda: executor.select_fused(q, k, scale, probe, sink=4, window=window, base=base,
                                                     causal=causal, alpha=0.95)[3].mean().item(), warmup=30, rep=200)
    ratio = (kern[0.5] - kern[0.1]) / (0.4 * t_d)
    fixed = (kern[0.1] - ratio * 0.1 * t_d + t_s1 + t_s2) / t_d
    limit = max(0.0, (1 - fixed) / ratio)
    table.append((seq, round(limit, 2)))
    say(f"{seq}: cuDNN {t_d:.2f} ms | stage1 {t_s1:.2f} ({100 * t_s1 / t_d:.1f}%) stage2 {t_s2:.3f} "
        f"({100 * t_s2 / t_d:.2f}%) probe {t_probe:.3f} | kernel d=0.1 {kern[0.1]:.2f} d=0.5 {kern[0.5]:.2f} | "
        f"ratio {ratio:.2f} fixed {fixed:.3f} -> dense above {limit:.2f}")
    del q, k, v, col
    torch.cuda.empty_cache()
table = [(8192, 0.0)] + table
say("measured DENSE_LIMITS", table)
executor.DENSE_LIMITS = tuple(table)

import bench_ttft  # noqa
bench_ttft.main(["--model", "random:smollm2-135m", "--lengths", "2k,4k,8k", "--model", "random:llama-3.1-8b",
                 "--lengths", "8k,16k,32k,64k", "--out", OUT, "--profile-at", "8k,32k"])
