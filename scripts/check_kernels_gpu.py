"""GPU correctness check of the Triton kernels in bf16 against the fp32 reference, beside a plain PyTorch bf16
implementation's error (the bar the CPU tests also use). Prints one line per case; exits 1 on a failure."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention.density import pattern_density  # noqa: E402
from attention.kernels.prefill import sparse_attention  # noqa: E402
from attention.kernels.scores import sampled_scores  # noqa: E402
from attention.scores import torch_sampled_scores  # noqa: E402
from attention.pattern import SparsePattern, density  # noqa: E402
from attention.reference import expand_kv, reference_attention  # noqa: E402
from attention.methods.sample import chunk_rows, strided_rows  # noqa: E402


def bf16_torch(q, k, v, keep, scale):
    """Plain PyTorch attention computed in bf16 (scores, softmax input and output in bf16)."""
    kx, vx = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
    s = (q @ kx.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, -1).to(q.dtype) @ vx


def main():
    torch.manual_seed(0)
    failed = 0
    for seq, heads, kv, dim in [(1000, 4, 1, 64), (777, 6, 2, 128), (1100, 8, 8, 256), (4096, 8, 2, 128)]:
        q, k, v = (torch.randn(1, h, seq, dim, device="cuda", dtype=torch.bfloat16) for h in (heads, kv, kv))
        cols = torch.randint(0, seq, (1, heads, seq // 20), device="cuda")
        sl = torch.randint(0, seq, (1, heads, 12), device="cuda")
        p = SparsePattern(sink=4, window=seq // 16, columns=cols, slashes=sl)
        keep = p.keep_mask(1, heads, seq, seq, "cuda")
        scale = dim ** -0.5
        ref = reference_attention(q, k, v, keep, scale)
        out = torch.full_like(q, float("nan"))
        sparse_attention(q, k, v, scale, sink=p.sink, window=p.window, columns=p.columns, slashes=p.slashes,
                         out=out)
        err = ((out.float() - ref).norm() / ref.norm()).item()
        base = ((bf16_torch(q, k, v, keep, scale).float() - ref).norm() / ref.norm()).item()
        dens = (pattern_density(p, 1, heads, seq, seq, "cuda") - density(keep)).abs().max().item()
        ok = err <= 2 * base and not out.isnan().any() and dens < 1e-5
        failed += not ok
        print(f"sparse S={seq} H={heads}/{kv} D={dim}: rel err {err:.2e} (torch bf16 {base:.2e}) density diff {dens:.1e}"
              f" {'ok' if ok else 'FAIL'}")
        for slash in (False, True):
            rows = chunk_rows(seq, 4, "cuda") if slash else strided_rows(seq, 0.05, "cuda")
            col, dg = sampled_scores(q, k, scale, rows, slash)
            col2, dg2 = torch_sampled_scores(q, k, scale, rows, slash)
            e = ((col - col2).norm() / col2.norm()).item()
            e2 = ((dg - dg2).norm() / dg2.norm()).item() if slash else 0.0
            ok = e < 2e-2 and e2 < 2e-2
            failed += not ok
            print(f"  scores slash={slash}: col rel err {e:.2e} diag rel err {e2:.2e} {'ok' if ok else 'FAIL'}")
    print("GPU CHECK", "FAILED" if failed else "PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
