"""band_runs_torch (per-head y-tables and pointer doubling) against the serial walk it replaced, kept here as the
reference: MInference's run builder step by step, one offset at a time (csrc/vertical_slash_index.cu, re-derived);
and BandPattern's keep mask on sampled rows and its closed-form share, both built on it, against that walk's mask."""
import pytest
import torch

from attention.bands import BAND, BandPattern, band_runs_of_blocks, band_runs_torch, run_cover
from attention.density import causal_area


def walk_runs(offsets, batch, heads, k_len, m0=0):
    """The old band_runs_torch: (lo, hi, count) by walking the offsets largest first, one step per slot."""
    n_rb = -(-k_len // BAND) - m0
    d = offsets.expand(batch, heads, offsets.shape[-1]).reshape(batch * heads, -1).long()
    d = torch.where(d >= 0, d, -1).sort(-1, descending=True).values
    slots = max(1, min(n_rb + m0, d.shape[-1] + 1))
    end = ((m0 + torch.arange(n_rb) + 1) * BAND)[None, :]
    rows = batch * heads
    lo = torch.zeros(rows, n_rb, slots + 1, dtype=torch.long)
    hi = torch.zeros_like(lo)
    rs, re, cnt = (torch.zeros(rows, n_rb, dtype=torch.long) for _ in range(3))
    started = torch.zeros(rows, n_rb, dtype=torch.bool)
    for i in range(d.shape[-1]):
        di = d[:, i:i + 1]
        valid = (di >= 0) & (di < end)
        s = torch.clamp(end - di, min=BAND)
        cont = valid & started
        gap = cont & (s > re + BAND)
        grow = cont & ~gap & (s > re)
        at = torch.where(gap, cnt, slots)[..., None]
        lo.scatter_(2, at, rs[..., None])
        hi.scatter_(2, at, re[..., None])
        cnt += gap.long()
        fresh = valid & ~started
        rs = torch.where(fresh | gap, s - BAND, rs)
        re = torch.where(fresh | gap, s, torch.where(grow, re + BAND, re))
        started |= valid
    at = torch.where(started, cnt, slots)[..., None]
    lo.scatter_(2, at, rs[..., None])
    hi.scatter_(2, at, re[..., None])
    return lo[..., :slots].int(), hi[..., :slots].int(), (cnt + started.long()).int()


def random_offsets(gen, k_len, heads, slots, kind):
    if kind == "uniform":  # -1 slots, repeats and offsets past the keys included
        return torch.randint(-1, k_len + 70, (1, heads, slots), generator=gen)
    if kind == "clustered":  # a few dense groups: long runs that grow tile by tile
        base = torch.randint(0, k_len, (1, heads, 1), generator=gen)
        return (base + torch.randint(-50, 50, (1, heads, slots), generator=gen)).clamp(min=-1)
    if kind == "strided":  # ranges that touch, overlap or leave gaps depending on the stride: many runs
        stride = int(torch.randint(40, 140, (1,), generator=gen))
        return torch.arange(slots).expand(1, heads, slots) * stride + torch.randint(0, 3, (1, heads, 1), generator=gen)
    forced = torch.arange(min(slots, 5)).expand(1, heads, -1)  # MInference's: the nearest diagonals, then others
    return torch.cat([forced, torch.randint(0, k_len, (1, heads, max(0, slots - 5)), generator=gen)], -1)


KINDS = ("uniform", "clustered", "strided", "minference")


@pytest.mark.parametrize("k_len", [1, 63, 64, 65, 203, 517, 1000])
def test_runs_equal_the_serial_walk(k_len):
    gen = torch.Generator().manual_seed(k_len)
    most_runs = 0
    for trial in range(24):
        slots = int(torch.randint(1, 60, (1,), generator=gen))
        offsets = random_offsets(gen, k_len, 3, slots, KINDS[trial % 4])
        m0 = int(torch.randint(0, -(-k_len // BAND), (1,), generator=gen))
        want = walk_runs(offsets, 1, 3, k_len, m0)
        got = band_runs_torch(offsets, 1, 3, k_len, m0)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (trial, slots, m0)
        most_runs = max(most_runs, int(want[2].max()))
    if k_len >= 517:  # the chains were followed past their first run
        assert most_runs >= 3


def test_runs_of_any_blocks_equal_the_walks_rows():
    gen = torch.Generator().manual_seed(7)
    k_len = 777
    offsets = torch.cat([random_offsets(gen, k_len, 2, 30, kind) for kind in KINDS], -1).view(2, 2, -1)  # B=2
    want = walk_runs(offsets, 2, 2, k_len)
    blocks = torch.tensor([12, 0, 5, 5, 9])  # any order, repeats
    got = band_runs_of_blocks(offsets, 2, 2, k_len, blocks, want[0].shape[-1])
    for a, b in zip(got, want):
        assert torch.equal(a, b[:, blocks])


def walk_keep(pattern: BandPattern, batch, heads, k_len, q_pos):
    """The old BandPattern.keep_mask: runs of every block from the walk, their cover, the rows at q_pos."""
    keep = super(BandPattern, pattern).keep_mask(batch, heads, 0, k_len, q_positions=q_pos)
    cover = run_cover(*walk_runs(pattern.band_offsets, batch, heads, k_len), k_len).view(batch, heads, -1, k_len)
    return keep | (cover[:, :, q_pos // BAND] & (torch.arange(k_len)[None, :] <= q_pos[:, None]))


@pytest.mark.parametrize("q_len,k_len", [(517, 517), (300, 611)])
def test_keep_mask_on_sampled_rows_and_share_equal_the_walks(q_len, k_len):
    gen = torch.Generator().manual_seed(q_len)
    far = torch.randint(150, k_len, (1, 3, 3), generator=gen)  # with the nearest diagonals: some blocks, 2-3 runs
    offsets = torch.cat([torch.arange(3).expand(1, 3, 3), far, far + 1, torch.full((1, 3, 2), -1)], -1)
    columns = torch.randint(-1, k_len, (1, 3, 6), generator=gen)
    pattern = BandPattern(columns=columns, band_offsets=offsets)
    q_pos = torch.cat([torch.randint(k_len - q_len, k_len, (20,), generator=gen), torch.tensor([k_len - 1])])
    got = pattern.keep_mask(1, 3, 0, k_len, q_positions=q_pos)
    assert torch.equal(got, walk_keep(pattern, 1, 3, k_len, q_pos))
    rows = torch.arange(k_len - q_len, k_len)
    full = walk_keep(pattern, 1, 3, k_len, rows)
    assert torch.equal(pattern.keep_mask(1, 3, q_len, k_len), full)
    share = full.sum((-2, -1)).double() / causal_area(q_len, k_len)
    assert 0.05 < float(share.min()) and float(share.max()) < 0.95  # neither empty nor everything
    assert torch.equal(pattern.kept_share(1, 3, q_len, k_len, torch.device("cpu")), share.float())
