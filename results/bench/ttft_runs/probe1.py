"""GPU call 1: stage-2 kernel correctness on the GPU, stage timings old vs fused, stage-1 config sweep,
model-level profile (old sample vs fused path) on random llama-8b / smollm2 architectures."""
import math
import os
import statistics
import sys
import time

import torch

TINY = "--tiny" in sys.argv
dev = "cpu" if TINY else "cuda"
OUT = os.environ.get("OUT", "/tmp/perf")
os.makedirs(OUT, exist_ok=True)
log = open(f"{OUT}/probe1.log", "w")


def say(*a):
    text = " ".join(str(x) for x in a)
    print(text, flush=True)
    log.write(text + "\n")
    log.flush()


from attention import sample as S, sample_fused as F  # noqa
from attention.kernels.select import select_top, select_columns, column_attention, block_m_for  # noqa
from attention.kernels.density import base_cells, pattern_density  # noqa
from attention.kernels.scores import row_plan, sampled_scores  # noqa
from attention.pattern import SparsePattern  # noqa
from attention.registry import build_method  # noqa
from attention.dense import DenseAttention, DenseConfig  # noqa

if not TINY:
    import triton
    say(torch.cuda.get_device_name(), torch.__version__, triton.__version__)


def bench(fn):
    if TINY:
        fn()
        return 0.0
    from triton.testing import do_bench
    return do_bench(fn, warmup=50, rep=300)


def ref_mass(scores, alpha):
    values, order = scores.double().sort(dim=-1, descending=True, stable=True)
    csum = values.cumsum(-1)
    count = (csum < alpha * csum[..., -1:]).sum(-1, keepdim=True) + 1
    ranked = (torch.arange(scores.shape[-1], device=scores.device) < count) & (values > 0)
    return torch.zeros_like(ranked).scatter(-1, order, ranked)


def as_mask(idx, n):
    keep = torch.zeros(*idx.shape[:-1], n + 1, dtype=torch.bool, device=idx.device)
    keep.scatter_(-1, torch.where(idx >= 0, idx.long(), n), True)
    return keep[..., :n]


# 1. stage-2 kernel on the GPU vs the fp64 stable PyTorch rule
for shape, alpha in [((1, 32, 4096 if TINY else 131072), 0.95), ((2, 3, 1500), 0.5), ((1, 4, 777), 1e-4)]:
    s = torch.rand(shape, device=dev) ** 8
    s[..., ::7] = s[..., 3:4]  # ties
    got = as_mask(select_top(s, alpha=alpha), shape[-1])
    want = ref_mass(s, alpha)
    say("select_top", shape, alpha, "equal" if torch.equal(got, want) else f"DIFF {(got != want).sum().item()}")

# 2. fused sample prefill vs the shipped one on planted inputs
sys.path.insert(0, ".")
from tests.kernel_helpers import random_qkv, rel_err  # noqa
from attention.reference import reference_attention  # noqa


def planted(seq, heads, kv, dim, seed=0):
    g = torch.Generator(device=dev).manual_seed(seed)
    q = torch.randn(1, heads, seq, dim, device=dev, generator=g)
    k = torch.randn(1, kv, seq, dim, device=dev, generator=g)
    v = torch.randn(1, kv, seq, dim, device=dev, generator=g)
    u = torch.nn.functional.normalize(torch.randn(dim, device=dev, generator=g), dim=0)
    q += 2.0 * u
    hot = torch.rand(1, kv, seq, 1, device=dev, generator=g) < 0.01
    k += hot * 30.0 * u
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


seq = 2048 if TINY else 16384
q, k, v = planted(seq, 8, 2, 128 if not TINY else 64)
for opts in ({"density": "0.1"}, {}):
    m_old = build_method("sample", opts)
    m_new = build_method("sample", opts)
    m_new.config.dense_above = 1.0  # force the sparse path
    if TINY:
        from attention.executor import use_backend
        ctx = use_backend("triton")
        ctx.__enter__()
    o_old = m_old.prefill(q, k, v, 0.088)
    pattern = m_old.build_pattern(q, k, 0.088)
    o_new = F.prefill(m_new, q, k, v, 0.088) if not TINY else None
    if o_new is not None:
        d_old = float(m_old.stats[-1]["density"].mean())
        d_new = float(m_new.stats[-1]["density"].mean())
        say("fused vs shipped", opts, "rel err", rel_err(o_new, o_old), "density", d_old, d_new)

if TINY:
    sys.exit(0)

# 3. kernel-level timings, 32 q / 8 kv heads, D=128
rows = []
for seq in (32768, 131072):
    q, k, v = planted(seq, 32, 8, 128)
    scale = 128 ** -0.5
    dense = DenseAttention(DenseConfig(backend="cudnn"))
    t_dense = bench(lambda: dense.prefill(q, k, v, scale))
    say(f"\n== {seq}: cuDNN dense {t_dense:.2f} ms")
    for opts in ({"density": "0.1", "r_w": "0.025"}, {"density": "0.1"}, {}):
        old = build_method("sample", opts)
        new = build_method("sample", opts)
        new.config.dense_above = 1.0
        t_old_stages = bench(lambda: old.build_pattern(q, k, scale))
        t_old_total = bench(lambda: (old.stats.clear(), old.prefill(q, k, v, scale)))
        plan = F._plan("rows", seq, seq, 128, new.config.r_row, q.device)
        t_s1 = bench(lambda: sampled_scores(q, k, scale, plan))
        col, _ = sampled_scores(q, k, scale, plan)
        window = math.ceil(new.config.r_w * seq)
        base, causal = base_cells(seq, seq, window, 4)
        budget = max(0.0, new.config.density * causal - base) if new.config.density > 0 else None
        bm = block_m_for(128, seq)
        sel = lambda: select_columns(col, sink=4, window=window, q_len=seq, block_m=bm, base_cells=base,  # noqa
                                     causal_cells=causal, alpha=None if budget is not None else 0.95, budget=budget)
        t_s2 = bench(sel)
        t_new_total = bench(lambda: (new.stats.clear(), F.prefill(new, q, k, v, scale)))
        new.stats.clear()
        F.prefill(new, q, k, v, scale)
        dens = float(new.stats[-1]["density"].mean())
        say(f"{opts}: density {dens:.3f} | shipped stages {t_old_stages:.2f} total {t_old_total:.2f} | "
            f"fused stage1 {t_s1:.2f} ({100 * t_s1 / t_dense:.1f}% of cuDNN) stage2 {t_s2:.3f} total {t_new_total:.2f}"
            f" ({t_dense / t_new_total:.2f}x vs cuDNN)")
    # stage-1 config sweep (ATTN_SCORES_CFG = kb1,kb2,warps,stages; ATTN_SCORES_EXP16)
    for half in ("0", "1"):
        os.environ["ATTN_SCORES_EXP16"] = half
        for cfg in ("128,128,4,3", "128,128,8,3", "128,128,4,2", "64,128,4,3", "128,64,4,3", "64,64,4,3",
                    "128,128,8,2", "256,128,8,2"):
            os.environ["ATTN_SCORES_CFG"] = cfg
            try:
                plan = F._plan("rows", seq, seq, 128, 0.05, q.device)
                t = bench(lambda: sampled_scores(q, k, scale, plan))
                ref = sampled_scores(q, k, scale, plan)[0] if (half, cfg) != ("0", "128,128,4,3") else None
                os.environ["ATTN_SCORES_EXP16"], os.environ["ATTN_SCORES_CFG"] = "0", "128,128,4,3"
                base_col = sampled_scores(q, k, scale, plan)[0]
                err = rel_err(ref, base_col) if ref is not None else 0.0
                os.environ["ATTN_SCORES_EXP16"], os.environ["ATTN_SCORES_CFG"] = half, cfg
                say(f"  stage1 cfg {cfg} half={half}: {t:.2f} ms ({100 * t / t_dense:.1f}%), col rel err {err:.1e}")
            except Exception as err:  # a config that does not compile is skipped
                say(f"  stage1 cfg {cfg} half={half}: failed {type(err).__name__}: {str(err).splitlines()[0][:100]}")
    os.environ.pop("ATTN_SCORES_CFG")
    os.environ["ATTN_SCORES_EXP16"] = "0"
    del q, k, v
    torch.cuda.empty_cache()

# 4. model level: old vs fused sample, launches and syncs
sys.path.insert(0, "scripts")
import bench_ttft as B  # noqa
from attention import hf  # noqa
from harness.models import load_model  # noqa
from harness.runner import prefill  # noqa
from tasks.base import build_task  # noqa

shipped = S.SampleAttention.prefill


def fused(self, q, k, v, scale, layer_idx=0):
    if F.supported(self.config, q, k):
        return F.prefill(self, q, k, v, scale, layer_idx)
    return shipped(self, q, k, v, scale, layer_idx)


for name, lengths in (("random:smollm2-135m", (8192,)), ("random:llama-3.1-8b", (8192, 32768))):
    t0 = time.time()
    loaded = load_model(name, "cuda")
    say(f"\n== {name} built in {time.time() - t0:.1f} s")
    layers = loaded.model.config.num_hidden_layers
    for length in lengths:
        ids = torch.tensor([next(iter(build_task("tokens").samples(loaded.tokenizer, [length]))).input_ids],
                           device="cuda")
        for label, spec, patch, above in (("none", None, False, None), ("cudnn", "dense:backend=cudnn", False, None),
                                          ("flash", "dense:backend=flash", False, None),
                                          ("shipped sample", "sample", False, None),
                                          ("shipped sample d=0.1", "sample:density=0.1", False, None),
                                          ("fused sample", "sample", True, None),
                                          ("fused sample forced sparse", "sample", True, 1.0),
                                          ("fused sample d=0.1", "sample:density=0.1", True, None),
                                          ("fused sample d=0.1 forced", "sample:density=0.1", True, 1.0)):
            method = B.NoAttention() if spec is None else B.parse_methods(spec)[0]
            if above is not None:
                method.config.dense_above = above
            S.SampleAttention.prefill = fused if patch else shipped
            hf.install(loaded.model, method)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

            def call():
                method.stats.clear()
                with torch.inference_mode():
                    return prefill(loaded.model, ids)
            times = B.timed(call, 2, 1)
            peak = torch.cuda.max_memory_allocated() / 2**30
            launches, syncs = B.launches_and_syncs(call, layers)
            st = B.layer_stats(method)
            say(f"{length:>6} {label:<28} {statistics.median(times):9.1f} ms  peak {peak:5.1f} GiB  "
                f"launches/layer {launches:6.1f}  syncs {syncs:3d}  density {st['density']:.3f} "
                f"selected {st['selected_density']} dense layers {st['dense_layers']}")
    S.SampleAttention.prefill = shipped
    del loaded
    torch.cuda.empty_cache()
say("done")
