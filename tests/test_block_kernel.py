"""The block-sparse Triton kernel (attention/kernels/block_sparse.py) under the CPU interpreter: its tile lists
against the pattern's dense keep mask, its output against attention/reference.py (fp32) within 2x of a plain
bf16 PyTorch implementation, the executor's routing, and its offsets at 1M tokens (tests/offset_probe.py)."""
import pytest
import torch

import attention.executor as executor
import attention.kernels.block_sparse as block_sparse
from attention.backend import use_backend
from attention.kernels.block_sparse import block_sparse_attention, block_sparse_kernel, tile_lists, tile_lists_kernel
from attention.kernels.block_sparse_tma import block_sparse_tma_kernel
from attention.kernels.config import block_sparse_config, block_sparse_tma_config, coordinates_fit, override
from attention.pattern import SparsePattern
from attention.registry import build_method
from attention.reference import reference_attention
from tests.kernel_helpers import bf16_torch_attention, random_qkv, rel_err
from tests.offset_probe import Fake, Probe, run_programs


def block_pattern(batch, heads, k_len, block, sink, window, seed, share=0.3):
    """Random kept blocks per (sample, head); head 0 of every sample keeps only the diagonal blocks."""
    g = torch.Generator().manual_seed(seed)
    n = -(-k_len // block)
    blocks = torch.rand(batch, heads, n, n, generator=g) < share
    blocks[:, 0] = torch.eye(n, dtype=torch.bool)
    return SparsePattern(sink=sink, window=window, blocks=blocks, block=block)


def batch_qkv(batch, k_len, heads, kv_heads, dim, seed):
    parts = [random_qkv(k_len, heads, kv_heads, dim, seed=seed + i) for i in range(batch)]
    return [torch.cat(x) for x in zip(*parts)]


# (batch, q_len, k_len, q heads, kv heads, head dim, pattern block, sink, window): lengths off the tiles, GQA
# groups 1/2/7, blocks 64, 128 and ones that match no tile, queries shorter than keys (starting on and off a
# tile border), a batch of 2 with blocks of its own per sample, BigBird-like (no sink, no window)
CASES = [
    (1, 150, 150, 4, 2, 64, 64, 3, 20),
    (1, 130, 300, 7, 1, 64, 128, 0, 0),
    (1, 200, 200, 2, 2, 128, 48, 2, 70),
    (2, 190, 190, 4, 2, 64, 128, 0, 0),
    (1, 44, 300, 2, 1, 64, 64, 5, 0),
    (1, 172, 300, 4, 2, 128, 128, 0, 33),
    (1, 97, 97, 2, 1, 32, 16, 1, 9),
]


@pytest.mark.parametrize("path", ["portable", "tma"])
@pytest.mark.parametrize("batch,q_len,k_len,heads,kv,dim,block,sink,window", CASES)
def test_block_kernel_matches_reference(batch, q_len, k_len, heads, kv, dim, block, sink, window, path,
                                        model_layout=False):
    q, k, v = batch_qkv(batch, k_len, heads, kv, dim, seed=q_len + dim)
    q = q[:, :, -q_len:]
    if model_layout:  # transformers' [B, S, H, D] memory seen as [B, H, S, D]
        q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    pattern = block_pattern(batch, heads, k_len, block, sink, window, seed=k_len + block)
    keep = pattern.keep_mask(batch, heads, q_len, k_len)
    scale = dim ** -0.5
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    with override(sparse_path=path):  # the Hopper path's TMA descriptors are emulated by the interpreter
        block_sparse_attention(q, k, v, scale, sink=sink, window=window, blocks=pattern.blocks, block=block, out=out)
    assert not out.isnan().any()
    ref = reference_attention(q, k, v, keep, scale)
    bar = rel_err(bf16_torch_attention(q, k, v, keep, scale), ref)
    assert rel_err(out, ref) <= 2 * bar, (rel_err(out, ref), bar)
    assert rel_err(reference_attention(q, k, v, None, scale), ref) > 0.05  # the pattern matters
    # head 0 keeps only its diagonal blocks (plus sink and window): checked on its own too
    bar0 = rel_err(bf16_torch_attention(q[:, :1], k[:, :1], v[:, :1], keep[:, :1], scale), ref[:, :1])
    assert rel_err(out[:, :1], ref[:, :1]) <= 2 * bar0


@pytest.mark.parametrize("path", ["portable", "tma"])
def test_transformers_layout(path):
    test_block_kernel_matches_reference(2, 130, 200, 4, 2, 64, 64, 2, 30, path, model_layout=True)


def test_sink_and_window_without_blocks():
    q, k, v = random_qkv(170, 4, 2, 64, seed=3)
    pattern = SparsePattern(sink=4, window=37)
    out = block_sparse_attention(q, k, v, 0.125, sink=4, window=37)
    keep = pattern.keep_mask(1, 4, 170, 170)
    ref = reference_attention(q, k, v, keep, 0.125)
    assert rel_err(out, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, 0.125), ref)


def test_fp32_inputs_are_near_exact():
    q, k, v = random_qkv(140, 4, 2, 64, dtype=torch.float32, seed=4)
    pattern = block_pattern(1, 4, 140, 32, 2, 10, seed=5)
    out = block_sparse_attention(q, k, v, 0.125, sink=2, window=10, blocks=pattern.blocks, block=32)
    assert rel_err(out, reference_attention(q, k, v, pattern.keep_mask(1, 4, 140, 140), 0.125)) < 1e-5
    as_int = block_sparse_attention(q, k, v, 0.125, sink=2, window=10, blocks=pattern.blocks.int() * 3, block=32)
    assert torch.equal(as_int, out)  # a non-bool table means nonzero = kept


def test_rows_with_nothing_to_attend_are_zero():
    q, k, v = random_qkv(150, 2, 1, 64, seed=6)
    blocks = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    blocks[:, :, 2, 1] = True  # only queries 128.. see keys 64..127
    out = torch.full_like(q, float("nan"))
    block_sparse_attention(q, k, v, 0.125, blocks=blocks, block=64, out=out)
    ref = reference_attention(q, k, v, SparsePattern(blocks=blocks, block=64).keep_mask(1, 2, 150, 150), 0.125)
    assert not out.isnan().any() and out[:, :, :128].abs().max() == 0
    assert rel_err(out, ref) < 1e-2


def test_long_sequence_tiles():
    # 128x64 tiles with 8 warps: what the launcher picks for D=128 from 48K queries on
    with override(block_sparse_blocks={128: (128, 64, 8, 3)}):
        assert block_sparse_config(128, 10) == (128, 64, 8, 3)
        test_block_kernel_matches_reference(1, 172, 300, 4, 2, 128, 128, 0, 33, "portable")
    with override(tma_blocks={128: (128, 128, 8, 3, 0)}):  # the TMA path's tiles from 48K queries on
        test_block_kernel_matches_reference(1, 300, 300, 4, 2, 128, 128, 0, 33, "tma")


def tables_from_lists(counts, lists):
    """(full, partial) bool [B', H', n_qt, n_kt] read back from the kernel's compacted lists."""
    slot = torch.arange(lists.shape[-1])
    tables = []
    for used in (slot < counts[..., :1], slot >= lists.shape[-1] - counts[..., 1:]):
        hits = torch.zeros(*lists.shape, dtype=torch.int32).scatter_add_(-1, torch.where(used, lists.long(), 0),
                                                                           used.int())
        assert hits.max() <= 1  # no key tile listed twice
        tables.append(hits > 0)
    return tables


def tile_view(x, tile_q, tile_k):
    rows, cols = -(-x.shape[-2] // tile_q) * tile_q, -(-x.shape[-1] // tile_k) * tile_k
    padded = torch.nn.functional.pad(x, (0, cols - x.shape[-1], 0, rows - x.shape[-2]))
    return padded.view(*x.shape[:2], rows // tile_q, tile_q, cols // tile_k, tile_k)


# (q_len, k_len, block, tile_q, tile_k, sink, window)
LIST_CASES = [(300, 300, 64, 64, 32, 3, 40), (130, 290, 48, 64, 64, 0, 0), (256, 256, 128, 128, 64, 5, 100),
              (100, 100, 16, 32, 16, 0, 23), (200, 600, 64, 32, 64, 2, 0)]


@pytest.mark.parametrize("q_len,k_len,block,tile_q,tile_k,sink,window", LIST_CASES)
def test_tile_lists_cover_the_keep_mask(q_len, k_len, block, tile_q, tile_k, sink, window):
    pattern = block_pattern(2, 3, k_len, block, sink, window, seed=q_len)
    counts, lists = tile_lists(pattern.blocks, block, sink, window, q_len, k_len, tile_q, tile_k, "cpu")
    full, partial = tables_from_lists(counts, lists)
    for table, kind in ((full, 0), (partial, 1)):  # each list ascending, no repeats
        n = counts[..., kind]
        assert torch.equal(table.sum(-1), n)
    keep = pattern.keep_mask(2, 3, q_len, k_len)
    any_kept = tile_view(keep, tile_q, tile_k).any(-1).any(-2)
    in_range = tile_view(torch.ones_like(keep), tile_q, tile_k).all(-1).any(-2)  # key tile wholly inside Sk
    causal = torch.arange(q_len)[:, None] + k_len - q_len >= torch.arange(k_len)
    all_kept = ~tile_view(~keep & causal, tile_q, tile_k).any(-1).any(-2)
    all_causal = ~tile_view(~causal[None, None], tile_q, tile_k).any(-1).any(-2)
    assert not (full & partial).any()
    assert torch.equal((full | partial) & any_kept, any_kept)  # no kept cell is skipped
    assert not (full & ~(all_kept & in_range & any_kept)).any()  # unmasked tiles hold only kept, in-range keys
    if block % tile_q == 0 and block % tile_k == 0 and (k_len - q_len) % tile_q == 0:  # aligned: exact lists
        assert torch.equal(full | partial, any_kept)
        assert torch.equal(full, any_kept & all_kept & all_causal & in_range)  # no wholly kept tile masked
    assert full.any() and partial.any()
    # lists are ascending: full ones from the first slot on, partial ones from the last slot backwards
    first = lists[..., :2].long()
    two_full = counts[..., 0] >= 2
    assert (first[..., 0] < first[..., 1])[two_full].all()
    last = lists[..., -2:].long()
    two_part = counts[..., 1] >= 2
    assert (last[..., 1] < last[..., 0])[two_part].all()


def test_run_pattern_routes_block_patterns_to_the_kernel(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return block_sparse_attention(*args, **kwargs)

    monkeypatch.setattr(block_sparse, "block_sparse_attention", spy)
    q, k, v = random_qkv(120, 4, 2, 64, dtype=torch.float32, seed=9)
    pattern = block_pattern(1, 4, 120, 32, 1, 8, seed=10)
    with use_backend("triton"):
        got = executor.run_pattern(q, k, v, pattern, 0.125)
    assert len(calls) == 1 and calls[0]["block"] == 32 and calls[0]["blocks"] is pattern.blocks
    with use_backend("torch"):
        exact = executor.run_pattern(q, k, v, pattern, 0.125)
    assert len(calls) == 1 and rel_err(got, exact) < 1e-5
    with use_backend("triton"):  # blocks with scattered columns are not the kernel's: the exact path on the CPU
        mixed = SparsePattern(window=8, blocks=pattern.blocks, block=32, columns=torch.tensor([[[3, 50]]]))
        executor.run_pattern(q, k, v, mixed, 0.125)
        executor.run_pattern(q[..., :48], k[..., :48], v[..., :48], pattern, 0.125)  # head dim 48: not compiled
    assert len(calls) == 1


# the block peers at small sizes (64-token blocks so 512 tokens hold eight)
PEERS = [("bigbird", {"block": "64", "random_blocks": "1", "global_blocks": "1", "window_blocks": "1"}),
         ("flexprefill", {"block": "64", "min_budget": "64", "gamma": "0.5"}),
         ("xattention", {"block": "64", "stride": "8", "density": "0.4"})]


@pytest.mark.parametrize("name,options", PEERS)
def test_block_peers_prefill_on_the_kernel(name, options, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["block"])
        return block_sparse_attention(*args, **kwargs)

    monkeypatch.setattr(block_sparse, "block_sparse_attention", spy)
    q, k, v = random_qkv(512, 4, 2, 64, seed=11, stripes=0.03)
    method = build_method(name, options)  # no fallback on the CPU: the sparse path always
    with use_backend("triton"):
        out = method.prefill(q, k, v, 0.125)
    keep = method.keep_mask(q, k, 0.125)
    assert calls == [64] and keep.sum() < 0.7 * 4 * 512 * 513 / 2  # sparse, on the kernel
    ref = reference_attention(q, k, v, keep, 0.125)
    assert rel_err(out, ref) <= 2 * rel_err(bf16_torch_attention(q, k, v, keep, 0.125), ref)


# one million tokens, Llama-3.1-8B heads: list rows and q/o rows pass 2^31 elements
S, H, HK, D = 1 << 20, 32, 8, 128


@pytest.mark.parametrize("lined_up", [False, True])
def test_offsets_at_one_million_tokens(lined_up):
    bm, bn, warps, _ = block_sparse_config(D, S, 128)
    n_qt, n_kt, n = S // bm, S // bn, S // 128
    # the summed-area table (int32), or the block table itself (int8) where tiles line up with the blocks
    area = Fake("area", (1, H, n, n), torch.int8 if lined_up else torch.int32, fill=lambda off: off % 7)
    counts = Fake("counts", (1, H, n_qt, 2), torch.int32)
    lists = Fake("lists", (1, H, n_qt, n_kt), torch.int16)
    with Probe(area, counts, lists) as probe:
        run_programs(tile_lists_kernel, (n_qt, H), [(n_qt - 1, H - 1)], area, counts, lists, 0, n * n, n, 1,
                     H, S, 0, 4, 1000, 128, n, n, n_qt, n_kt, 0, TILE_Q=bm, TILE_K=bn, CHUNK=8192, HAS_BLOCKS=True,
                     ALIGNED=lined_up)
    assert not probe.errors, probe.errors[:5]
    assert max(lists.touched) >= 2**31 and max(area.touched) >= (H - 1) * n * n  # the last head's table read

    q, o = Fake("q", (1, H, S, D), strides=(S * H * D, D, H * D, 1)), Fake("o", (1, H, S, D))
    k, v = (Fake(name, (1, HK, S, D), strides=(S * HK * D, D, HK * D, 1)) for name in "kv")
    counts = Fake("counts", (1, H, n_qt, 2), torch.int32, fill=lambda off: off * 0 + 2)
    lists = Fake("lists", (1, H, n_qt, n_kt), torch.int16, fill=lambda off: n_kt - 1 - off % 3)
    blocks = Fake("blocks", (1, H, n, n), torch.int8, fill=lambda off: off % 2)
    with Probe(q, k, v, o, counts, lists, blocks) as probe:
        run_programs(block_sparse_kernel, (n_qt, H), [(0, H - 1)], q, k, v, o, counts, lists, blocks,
                     *[t.stride(d) for t in (q, k, v, o) for d in range(3)], H, 1, n * n, n * n, n,
                     H, H // HK, S, S, 0, 4, 1000, 128, n, n, n_qt, n_kt, 0, 0.1, HEAD_D=D, BLOCK_M=bm, BLOCK_N=bn,
                     HAS_BLOCKS=True, ALIGNED=lined_up, F32=False, num_warps=warps)
    assert not probe.errors, probe.errors[:5]
    assert max(o.touched) >= 2**31 and max(lists.touched) >= 2**31 and max(blocks.touched) >= (H - 1) * n * n


def test_tma_offsets_at_one_million_tokens():
    """The Hopper path on transformers' [B, S, H, D] memory: 32-bit descriptor coordinates, 64-bit output rows."""
    bm, bn, warps, stages, ws = block_sparse_tma_config(D, S, 128)
    n_qt, n_kt, n = S // bm, S // bn, S // 128
    assert coordinates_fit(1, H, HK, S, S, 0)
    q, o = Fake("q", (S, H * D)), Fake("o", (1, H, S, D))
    k, v = Fake("k", (S, HK * D)), Fake("v", (S, HK * D))
    counts = Fake("counts", (1, H, n_qt, 2), torch.int32, fill=lambda off: off * 0 + 2)
    lists = Fake("lists", (1, H, n_qt, n_kt), torch.int16, fill=lambda off: n_kt - 1 - off % 3)
    blocks = Fake("blocks", (1, H, n, n), torch.int8, fill=lambda off: off % 2)
    with Probe(q, k, v, o, counts, lists, blocks) as probe:
        run_programs(block_sparse_tma_kernel, (n_qt, H), [(0, H - 1)], probe.desc(q, S, H * D, [bm, D]),
                     probe.desc(k, S, HK * D, [bn, D]), probe.desc(v, S, HK * D, [bn, D]), o, counts, lists, blocks,
                     o.stride(0), o.stride(1), o.stride(2), H, 1, n * n, n * n, n, S, 0, D, S, 0, D,
                     H, H // HK, S, S, 0, 4, 1000, 128, n, n, n_qt, n_kt, 0, 0.1, HEAD_D=D, BLOCK_M=bm, BLOCK_N=bn,
                     HAS_BLOCKS=True, ALIGNED=False, WARP_SPEC=ws, F32=False, num_warps=warps, num_stages=stages)
    assert not probe.errors, probe.errors[:5]
    assert max(o.touched) >= 2**31 and max(lists.touched) >= (H - 1) * n_qt * n_kt  # the last head's list read


def test_tiles_line_up_with_smaller_pattern_blocks():
    assert block_sparse_config(64, 1000, 128) == (128, 64, 4, 3)  # the portable kernel's D=64 tiles
    assert block_sparse_config(64, 1000, 64)[:2] == (64, 64)  # 64-token blocks: 64-row query tiles
    assert block_sparse_config(64, 1000, 96)[:2] == (128, 64)  # not a power of two: cell-level lookups instead
    assert block_sparse_config(64, 1000, 32)[:2] == (128, 64)  # smaller than a key tile: the same


@pytest.mark.parametrize("path", ["portable", "tma"])
def test_spans_of_query_tiles_give_the_same_output(path, monkeypatch):
    """Long inputs build and run their tile lists per span of query tiles (LIST_BYTES, so the lists stay small at
    1M tokens): with a limit of two list rows per span the output and each span's lists equal the whole run's."""
    q, k, v = batch_qkv(2, 300, 4, 2, 64, seed=11)
    q = q[:, :, -260:]
    pattern = block_pattern(2, 4, 300, 64, 3, 20, seed=12)
    whole = block_sparse_attention(q, k, v, 0.125, sink=3, window=20, blocks=pattern.blocks, block=64)
    counts, lists = tile_lists(pattern.blocks, 64, 3, 20, 260, 300, 64, 32, "cpu")
    per_row = 2 * 4 * lists.shape[-1] * 2
    monkeypatch.setattr(block_sparse, "LIST_BYTES", 2 * per_row)
    spans = block_sparse.list_spans((2, 4), lists.shape[2], lists.shape[3])
    assert len(spans) == 3 and spans[-1] == (4, 1)  # 5 query tiles of 64: rows 0-1, 2-3, 4
    full_n, part_n = counts[..., 0].long(), counts[..., 1].long()
    for first, rows in spans:
        c, li = tile_lists(pattern.blocks, 64, 3, 20, 260, 300, 64, 32, "cpu", (first, rows))
        assert torch.equal(c, counts[:, :, first:first + rows])
        slots = torch.arange(li.shape[-1])
        used = (slots < full_n[:, :, first:first + rows, None]) | (slots >= li.shape[-1] - part_n[:, :, first:first + rows, None])
        assert torch.equal(li[used], lists[:, :, first:first + rows][used])  # unused slots are not written
    out = torch.full_like(q, float("nan"))
    with override(sparse_path=path):
        block_sparse_attention(q, k, v, 0.125, sink=3, window=20, blocks=pattern.blocks, block=64, out=out)
    assert torch.equal(out, whole)
