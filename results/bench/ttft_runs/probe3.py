"""GPU call 3: stage-2 timing with 1024-wide tiles, then bench_ttft: smollm2 2K-8K (all methods), llama 16K/32K
(cudnn + sample re-run), llama 128K (reduced list)."""
import math
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, ".")
sys.path.insert(0, "scripts")
from attention import executor  # noqa
from attention.density import base_cells  # noqa
from attention.kernels.select import block_m_for, select_columns  # noqa

OUT = os.environ["OUT"]
print(torch.cuda.get_device_name(), flush=True)
for seq in (32768, 131072):
    col = torch.rand(1, 32, seq, device="cuda") ** 8
    window = math.ceil(0.08 * seq)
    base, causal = base_cells(seq, seq, window, 4)
    t = do_bench(lambda: select_columns(col, sink=4, window=window, q_len=seq, block_m=block_m_for(128, seq),
                                        base_cells=base, causal_cells=causal, alpha=0.95), warmup=30, rep=200)
    print(f"stage2 {seq}: {t:.3f} ms", flush=True)

import bench_ttft  # noqa
bench_ttft.main(["--model", "random:smollm2-135m", "--lengths", "2k,4k,8k", "--out", OUT, "--profile-at", "8k"])
bench_ttft.main(["--model", "random:llama-3.1-8b", "--lengths", "16k,32k", "--out", OUT, "--profile-at", "32k",
                 "--methods", "dense:backend=cudnn,sample"])
bench_ttft.main(["--model", "random:llama-3.1-8b", "--lengths", "128k", "--out", OUT, "--profile-at", "1",
                 "--long", "70000", "--methods",
                 "dense:backend=cudnn,dense:backend=flash,sample,sample:density=0.1,sample:density=0.1,r_w=0.025,"
                 "sample:density=0.2,r_w=0.05,sample:density=0.5,r_w=0.125,streaming:density=0.1"])
