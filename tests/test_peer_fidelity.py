"""Each peer's selected pattern equals a plain re-implementation of its published algorithm, written here
independently of attention/methods/ (per head, loop by loop, float64 where it sums), on random q/k and on q/k
captured from SmolLM2-135M (tests/fixtures/qk_smollm2_256.pt: layer 4 of a 256-token prompt of this repository's
text, bf16, written by scripts/capture_qk.py; a layer where FlexPrefill finds both kinds of head).

Ties: both sides rank by score and then by the lower index (column, offset, tile), so an exact tie resolves the
same way; the published code leaves tie order to torch.topk / torch.sort. Apart from structural zeros (tiles
above the diagonal) the inputs here have no exact ties; a near-tie that fp32 and fp64 rank differently could flip
one entry, which is why the sums below are taken in float64 only where the methods also sum many terms.
"""
import math
from pathlib import Path

import pytest
import torch

from attention.registry import build_method

FIXTURE = Path(__file__).parent / "fixtures" / "qk_smollm2_256.pt"


def random_qk(length, heads=4, kv_heads=2, dim=16, seed=0, spread=2.0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, length, dim, generator=gen) * spread
    k = torch.randn(1, kv_heads, length, dim, generator=gen)
    return q, k


def captured(layer):
    data = torch.load(FIXTURE)
    entry = data["layers"][layer]
    return entry["q"].float(), entry["k"].float(), entry["scale"]


def kv_of(k, head, heads):
    return k[0, head // (heads // k.shape[1])]


def causal_softmax_row(qi, keys, pos, scale):
    """fp32 softmax of one query at absolute position pos over keys 0..pos (zeros beyond)."""
    scores = (keys[:pos + 1] @ qi) * scale
    out = torch.zeros(keys.shape[0])
    out[:pos + 1] = torch.softmax(scores, dim=0)
    return out


def best(scores, count):
    """Indices of the `count` best scores, ties to the lower index."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return set(order[:count])


# ---------------------------------------------------------------- MInference

def minference_reference(q, k, scale, vertical_size, slash_size, last_q=64, init=30, local=100):
    """Per head: (kept columns, kept diagonal offsets) of the vertical-slash pattern from the last last_q queries."""
    _, heads, length, _ = q.shape
    result = []
    for h in range(heads):
        keys = kv_of(k, h, heads)
        vertical = torch.zeros(length, dtype=torch.float64)
        slash = torch.zeros(length, dtype=torch.float64)
        for i in range(max(0, length - last_q), length):
            p = causal_softmax_row(q[0, h, i], keys, i, scale).double()
            vertical += p
            slash[:i + 1] += p[:i + 1].flip(0)  # offset i - j of key j
        vertical[:init] = math.inf
        slash[:local] = math.inf
        v = min(length, max(vertical_size, init))
        s = min(length, max(slash_size, local))
        result.append((best(vertical, v), best(slash, s)))
    return result


def minference_selected(pattern, heads, length):
    out = []
    for h in range(heads):
        cols = set(range(pattern.sink))
        if pattern.columns is not None:
            cols |= {int(c) for c in pattern.columns[0, h] if c >= 0}
        diags = set(range(pattern.window))
        if pattern.slashes is not None:
            diags |= {int(d) for d in pattern.slashes[0, h] if d >= 0}
        if getattr(pattern, "band_offsets", None) is not None:  # the default: offsets run as MInference's bands
            diags |= {int(d) for d in pattern.band_offsets[0, h] if d >= 0}
        out.append((cols, diags))
    return out


# ---------------------------------------------------------------- FlexPrefill

def js_dist(p, r):
    m = [(a + b) / 2 for a, b in zip(p, r)]
    kl = lambda a: sum(float(x) * math.log(float(x) / float(y)) for x, y in zip(a, m) if x > 0)  # noqa: E731
    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(r)))


def flexprefill_reference(q, k, scale, block, gamma, tau, min_budget, max_budget=0):
    """Per head: (kept tiles as a set of (query tile, key tile), query-aware?)."""
    _, heads, length, dim = q.shape
    n = -(-length // block)
    low = -(-min_budget // block)
    high = min(-(-max_budget // block), n) if max_budget else n
    rows = range(max(0, length - block), length)
    out = []
    for h in range(heads):
        keys = kv_of(k, h, heads)
        vertical = torch.zeros(length, dtype=torch.float64)
        slash = torch.zeros(length, dtype=torch.float64)
        for i in rows:
            p = causal_softmax_row(q[0, h, i], keys, i, scale).double()
            vertical += p / len(rows)
            slash[:i + 1] += p[:i + 1].flip(0) / len(rows)

        def tiles_for(dist):
            ranked_mass = sorted(dist.tolist(), reverse=True)
            running, count = 0.0, 0
            for x in ranked_mass:
                running += x
                if running <= gamma:
                    count += 1
            return min(max((count + 1) // block + 1, low), high)

        n_v, n_s = tiles_for(vertical), tiles_for(slash)
        v_tiles = [float(vertical[t * block:(t + 1) * block].sum()) for t in range(n)]
        near = length - (n - 1) * block  # their diagonal tiles are cut from the far end: tile 0 holds `near` offsets
        s_tiles = [float(slash[max(0, t * block + near - block):t * block + near].sum()) for t in range(n)]
        key_means = torch.stack([keys[t * block:(t + 1) * block].mean(0) for t in range(n)])
        mean_q = q[0, h, list(rows)].mean(0) * scale
        pooled = torch.softmax(key_means @ mean_q, dim=0).double()
        aware = js_dist(pooled.tolist(), v_tiles) < tau
        if aware:
            n_v = n_s = min(low, n)
        v_tiles[0] = s_tiles[0] = math.inf
        cols, diags = best(v_tiles, n_v), best(s_tiles, n_s)
        kept = {(r, c) for r in range(n) for c in range(r + 1) if c in cols or (r - c) in diags}
        if aware:
            grid = []
            for r in range(n):
                qm = q[0, h, r * block:(r + 1) * block].mean(0) * scale
                probs = torch.softmax(key_means[:r + 1] @ qm, dim=0)
                grid += [(float(probs[c]) if c <= r else 0.0, r * n + c) for c in range(n)]
            grid.sort(key=lambda e: (-e[0], e[1]))
            running = 0.0
            kept.add((0, 0))
            for value, index in grid:
                running += value
                if running <= gamma * n and index // n >= index % n:
                    kept.add((index // n, index % n))
        out.append((kept, aware))
    return out


# ---------------------------------------------------------------- XAttention

def xattention_reference(q, k, scale, block, stride, threshold, first_rows=0):
    """Per head: kept tiles as a set of (query tile, key tile). Rows below first_rows follow XAttention's first
    chunk: only the diagonal tile's mass counts as held, the best other tile is taken unconditionally, each later
    one while the diagonal plus all but the last taken stays below the threshold, and key tile 0 is kept anyway."""
    _, heads, length, dim = q.shape
    n = -(-length // block)
    groups = n * block // stride
    per_tile = block // stride
    out = []
    for h in range(heads):
        keys = kv_of(k, h, heads)
        qp = torch.zeros(n * block, dim)
        kp = torch.zeros(n * block, dim)
        qp[:length], kp[:length] = q[0, h], keys
        tile_scores = torch.zeros(n, n, dtype=torch.float64)
        for m in range(groups):
            if m * stride >= length:
                continue  # a query group made only of padding
            allowed = [g for g in range(m + 1) if g * stride < length]
            anti = torch.tensor([sum(float(qp[m * stride + stride - 1 - t] @ kp[g * stride + t])
                                     for t in range(stride)) for g in allowed])
            probs = torch.softmax(anti * scale / stride, dim=0).double()
            for g, p in zip(allowed, probs):
                tile_scores[m // per_tile, g // per_tile] += p
        kept = set()
        for r in range(n):
            forced = {0, r}
            total = float(tile_scores[r].sum())
            kept |= {(r, c) for c in forced}
            if r < first_rows:
                others = sorted((c for c in range(n) if c != r), key=lambda c: (-float(tile_scores[r, c]), c))
                taken = []
                for j, c in enumerate(others):
                    if j and float(tile_scores[r, r]) + sum(float(tile_scores[r, x]) for x in taken[:-1]) \
                            >= threshold * total:
                        break
                    taken.append(c)
                kept |= {(r, c) for c in taken if c <= r}
                continue
            held = sum(float(tile_scores[r, c]) for c in forced)
            others = sorted((c for c in range(n) if c not in forced), key=lambda c: (-float(tile_scores[r, c]), c))
            for c in others:
                if held >= threshold * total:
                    break
                held += float(tile_scores[r, c])
                if c <= r:
                    kept.add((r, c))
        out.append(kept)
    return out


def tiles_of(pattern, head):
    blocks = pattern.blocks[0, head]
    return {(int(r), int(c)) for r, c in blocks.nonzero().tolist()}


# ---------------------------------------------------------------- the comparisons

def check_minference(q, k, scale, options, density=None):
    opts = dict(options, **({"density": str(density)} if density else {}))
    method = build_method("minference", {key: str(v) for key, v in opts.items()})
    pattern = method.build_pattern(q, k, scale)
    ratio = method.knobs["ratio"]
    vertical, slash = round(options["vertical_size"] * ratio), round(options["slash_size"] * ratio)
    expected = minference_reference(q, k, scale, vertical, slash, options["last_q"], options["init_columns"],
                                    options["local_diagonals"])
    got = minference_selected(pattern, q.shape[1], q.shape[2])
    assert got == expected
    return got


def check_flexprefill(q, k, scale, options, density=None):
    opts = dict(options, **({"density": str(density)} if density else {}))
    method = build_method("flexprefill", {key: str(v) for key, v in opts.items()})
    pattern = method.build_pattern(q, k, scale)
    gamma = method.knobs["gamma"]
    expected = flexprefill_reference(q, k, scale, options["block"], gamma, options["tau"], options["min_budget"])
    for h, (tiles, aware) in enumerate(expected):
        assert bool(method.knobs["query_aware"][h]) == aware, h
        assert tiles_of(pattern, h) == tiles, h
    return expected


def check_xattention(q, k, scale, options, density=None):
    opts = dict(options, **({"density": str(density)} if density else {}))
    method = build_method("xattention", {key: str(v) for key, v in opts.items()})
    pattern = method.build_pattern(q, k, scale)
    expected = xattention_reference(q, k, scale, options["block"], options["stride"], method.knobs["threshold"],
                                    options.get("chunk", 2048) // options["block"])
    for h, tiles in enumerate(expected):
        assert tiles_of(pattern, h) == tiles, h
    return expected


MINF = {"vertical_size": 24, "slash_size": 40, "last_q": 16, "init_columns": 3, "local_diagonals": 8}
FLEX = {"block": 16, "gamma": 0.6, "tau": 0.1, "min_budget": 16}
XATT = {"block": 16, "stride": 4, "threshold": 0.7, "chunk": 32}  # rows 0-1 follow their first-chunk rule


@pytest.mark.parametrize("length", [96, 131])
def test_minference_matches_reference_on_random_qk(length):
    got = check_minference(*random_qk(length), 0.25, MINF)
    assert all(len(cols) == 24 and len(diags) == 40 for cols, diags in got)
    assert len({frozenset(c) for c, _ in got}) > 1  # heads choose their own columns


@pytest.mark.parametrize("length", [96, 131])
def test_flexprefill_matches_reference_on_random_qk(length):
    check_flexprefill(*random_qk(length), 0.25, FLEX)


def test_flexprefill_takes_both_head_kinds():
    # tau = 1 makes every head query-aware, tau = 0 none: both branches are compared with the reference
    q, k = random_qk(112, seed=3)
    assert all(aware for _, aware in check_flexprefill(q, k, 0.25, {**FLEX, "tau": 1.0}))
    assert not any(aware for _, aware in check_flexprefill(q, k, 0.25, {**FLEX, "tau": 0.0}))


@pytest.mark.parametrize("length", [96, 131])
def test_xattention_matches_reference_on_random_qk(length):
    expected = check_xattention(*random_qk(length), 0.25, XATT)
    n = -(-length // 16)
    assert any(len(tiles) < n * (n + 1) // 2 for tiles in expected)  # the threshold dropped tiles


def test_peers_match_reference_on_captured_smollm2_qk():
    q, k, scale = captured(4)
    check_minference(q, k, scale, {**MINF, "vertical_size": 48, "slash_size": 64, "last_q": 64})
    flex = check_flexprefill(q, k, scale, {**FLEX, "block": 32, "min_budget": 32, "gamma": 0.9})
    xatt = check_xattention(q, k, scale, {**XATT, "block": 32, "stride": 8, "threshold": 0.9, "chunk": 64})
    assert {aware for _, aware in flex} == {True, False}  # both head kinds occur on this layer
    assert any(len(tiles) < 36 for tiles in xatt)  # 8 x 8 tiles, 36 causal: the threshold dropped some


@pytest.mark.parametrize("name,check,options", [("minference", check_minference, MINF),
                                                ("flexprefill", check_flexprefill, FLEX),
                                                ("xattention", check_xattention, XATT)])
def test_density_budget_is_the_published_pattern_at_the_solved_knob(name, check, options):
    q, k = random_qk(128, seed=5)
    check(q, k, 0.25, options, density=0.3)


# ---------------------------------------------------------------- helpers and the CUDA paths, checked on the CPU

def test_block_cells_count_what_a_loop_counts():
    from attention.peer_estimation import block_cells

    for q_len, k_len, size in [(100, 100, 16), (70, 100, 16), (128, 128, 32), (5, 37, 8)]:
        n = -(-k_len // size)
        expected = torch.zeros(n, n, dtype=torch.float64)
        for i in range(k_len - q_len, k_len):  # row i holds keys 0..i
            expected[i // size] += torch.bincount(torch.arange(i + 1) // size, minlength=n).double()
        assert torch.equal(block_cells(q_len, k_len, size), expected)


def test_minference_exact_diagonals_run_on_the_column_slash_kernel():
    """exact_diagonals=1 (the deviation) goes to the column + slash kernel: the same launch, interpreted."""
    from attention.backend import use_backend
    from attention.reference import reference_attention

    q, k = random_qk(80, dim=16, seed=7)
    v = torch.randn_like(k)
    method = build_method("minference", {**{key: str(val) for key, val in MINF.items()}, "exact_diagonals": "1"})
    with use_backend("triton"):
        out = method.prefill(q, k, v, 0.25)
    keep = method.keep_mask(q, k, 0.25)
    torch.testing.assert_close(out, reference_attention(q, k, v, keep, 0.25), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name,options", [("flexprefill", FLEX), ("xattention", XATT)])
def test_block_peers_run_on_flex_attention(name, options):
    """On CUDA the block peers go to FlexAttention through the executor: its eager path on the CPU."""
    import warnings

    from attention.flex_blocks import flex_block_attention, supports
    from attention.reference import reference_attention

    q, k = random_qk(112, dim=16, seed=8)
    v = torch.randn_like(k)
    method = build_method(name, {key: str(val) for key, val in options.items()})
    pattern = method.build_pattern(q, k, 0.25)
    assert supports(pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex_attention warns that it is not compiled
        out = flex_block_attention(q, k, v, pattern, 0.25, compiled=False)
    keep = pattern.keep_mask(1, q.shape[1], 112, 112)
    torch.testing.assert_close(out, reference_attention(q, k, v, keep, 0.25), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,options", [("minference", MINF), ("flexprefill", FLEX), ("xattention", XATT)])
def test_transposed_inputs_give_the_same_pattern(name, options):
    """Inside a model q and k arrive as transposed views ([B, S, H, D] storage): the pattern must not care."""
    q, k = random_qk(128, seed=9)
    method = build_method(name, {key: str(val) for key, val in options.items()})
    strided_q, strided_k = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k))
    assert not strided_q.is_contiguous()
    expected = method.keep_mask(q, k, 0.25)
    assert torch.equal(method.keep_mask(strided_q, strided_k, 0.25), expected)


# ---------------------------------------------------------------- against the official code's own output
# tests/fixtures/peer_official_masks.pt: masks that each peer's official repository produced on q/k captured from
# SmolLM2-135M (layer 12, q heads 0-5 / kv heads 0-1 of a 4096-token prompt of this repository's text, stored
# bf16 up to 3000 tokens), with the repository URL, commit and the code path that ran (fixture["<peer>"]); lengths
# include ones that are not a multiple of the block. Written outside this repository by running their selection
# code (CPU, fp32 q/k); nothing of their code is here. These are the only tests that can catch a misreading of
# the published code; the references above re-implement the same reading as the methods.

OFFICIAL = Path(__file__).parent / "fixtures" / "peer_official_masks.pt"


def official(peer):
    data = torch.load(OFFICIAL)
    assert data[peer]["source"].startswith("https://github.com/") and len(data[peer]["commit"]) == 40
    return data["q"].float(), data["k"].float(), data["scale"], data[peer]["cases"]


@pytest.mark.parametrize("case", ["default_3000", "default_2048", "default_2100"])
def test_flexprefill_defaults_equal_the_official_masks(case):
    q, k, scale, cases = official("flexprefill")
    c = cases[case]
    n = c["length"]
    method = build_method("flexprefill", {})  # defaults: the fixture ran theirs at gamma 0.9, tau 0.1, 1024
    assert {key: getattr(method.config, key) for key in c["options"]} == c["options"]
    blocks = method.build_pattern(q[:, :, :n], k[:, :, :n], scale).blocks[0]
    assert blocks.shape == c["blocks"].shape
    assert torch.equal(blocks, c["blocks"]), (blocks != c["blocks"]).nonzero()[:8].tolist()
    assert 0 < int(blocks.sum()) < blocks.shape[0] * blocks.shape[1] * (blocks.shape[1] + 1) // 2  # sparse
    if case == "default_2100":  # the fused column / diagonal sums (Triton, interpreted here) give the same masks
        from attention.backend import use_backend

        with use_backend("triton"):
            fused = build_method("flexprefill", {}).build_pattern(q[:, :, :n], k[:, :, :n], scale).blocks[0]
        assert torch.equal(fused, c["blocks"])


@pytest.mark.parametrize("case", ["default_3000", "default_2048", "stride8_t09_3000", "chunk1024_3000",
                                  "per_head_3000"])
def test_xattention_defaults_equal_the_official_masks(case, tmp_path):
    q, k, scale, cases = official("xattention")
    c = cases[case]
    n = c["length"]
    options = {key: str(v) for key, v in c["options"].items() if key in ("stride", "threshold", "chunk")}
    if "head_thresholds" in c:  # their per-head format: per-layer lists of per-head thresholds in a .py file
        path = tmp_path / "thresholds.py"
        path.write_text(f"llama_fuse_16 = [{c['head_thresholds']!r}]\nllama_fuse_8 = [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]\n")
        options["thresholds"] = str(path)
    if case.startswith("default"):
        method = build_method("xattention", {})
        assert {key: getattr(method.config, key) for key in c["options"]} == c["options"]
    else:
        method = build_method("xattention", options)
    blocks = method.build_pattern(q[:, :, :n], k[:, :, :n], scale).blocks[0]
    assert torch.equal(blocks, c["blocks"]), (blocks != c["blocks"]).nonzero()[:8].tolist()
    if case == "default_2048":  # the fused estimate kernel (interpreted here) gives the same masks
        from attention.backend import use_backend

        with use_backend("triton"):
            fused = build_method("xattention", {}).build_pattern(q[:, :, :n], k[:, :, :n], scale).blocks[0]
        assert torch.equal(fused, c["blocks"])
    if case == "default_3000":  # the first-chunk rule is what makes these equal: the uniform rule keeps fewer
        uniform = build_method("xattention", {"uniform_rows": "1"}).build_pattern(q[:, :, :n], k[:, :, :n], scale)
        assert int(uniform.blocks.sum()) < int(blocks.sum())


def official_minference_mask(case, n):
    """bool [H, n, n] that MInference's kernel computes from its index lists: per 64-row block the 64-key tiles
    at the listed starts (causal), plus the selected columns (causal)."""
    heads = case["heads"]
    keep = torch.zeros(len(heads), n, n, dtype=torch.bool)
    for h, head in enumerate(heads):
        for block, starts in enumerate(head["bands"]):
            rows = slice(block * 64, min(block * 64 + 64, n))
            for start in starts.tolist():
                keep[h, rows, start:min(start + 64, n)] = True
        keep[h, :, head["vertical"].long()] = True
    return keep & torch.ones(n, n, dtype=torch.bool).tril()


@pytest.mark.parametrize("case", ["config_sparse_3000", "config_2000", "default_1000"])
def test_minference_equals_the_official_selection_and_execution(case, tmp_path):
    import json

    from attention.bands import band_runs_torch

    q, k, scale, cases = official("minference")
    c = cases[case]
    n = c["length"]
    options = {}
    if c["config"]:  # their per-head file format: a list of per-layer {head: [type, vertical, slash, score]}
        path = tmp_path / "best_pattern.json"
        path.write_text(json.dumps(c["config"]["best_pattern"]))
        options["config"] = str(path)
    method = build_method("minference", options)
    qn, kn = q[:, :, :n], k[:, :, :n]
    pattern = method.build_pattern(qn, kn, scale)
    lo, hi, count = band_runs_torch(pattern.band_offsets, 1, qn.shape[1], n)
    for h, head in enumerate(c["heads"]):
        columns, offsets = pattern.columns[0, h], pattern.band_offsets[0, h]
        assert set(columns[columns >= 0].tolist()) == set(head["vertical"].tolist()), h
        assert set(offsets[offsets >= 0].tolist()) == set(head["slash"].tolist()), h
        for block, starts in enumerate(head["bands"]):  # the 64-key tiles their index kernel lists, in order
            ours = [t for r in range(int(count[h, block])) for t in range(int(lo[h, block, r]), int(hi[h, block, r]), 64)]
            assert ours == starts.tolist(), (h, block)
    keep = pattern.keep_mask(1, qn.shape[1], n, n)[0]
    assert torch.equal(keep, official_minference_mask(c, n))
    if case == "config_sparse_3000":  # the fused sums and the run builder (Triton, interpreted) select the same
        from attention.backend import use_backend

        with use_backend("triton"):
            fused = method.build_pattern(qn, kn, scale)
            assert torch.equal(fused.band_offsets, pattern.band_offsets) and torch.equal(fused.columns, pattern.columns)
            torch.testing.assert_close(method.density(fused, qn, kn), keep.sum((-2, -1)).float() / (n * (n + 1) / 2))
    causal = n * (n + 1) / 2
    torch.testing.assert_close(method.density(pattern, qn, kn), keep.sum((-2, -1)).float() / causal)
    assert method.knobs["sizes"] == ("per-head file" if c["config"] else "uniform")
    if case == "config_sparse_3000":  # the runs are what MInference computes: more than the exact diagonals
        exact = build_method("minference", {**options, "exact_diagonals": "1"}).build_pattern(qn, kn, scale)
        exact_keep = exact.keep_mask(1, qn.shape[1], n, n)[0]
        assert bool((exact_keep <= keep).all()) and int(keep.sum()) > 1.5 * int(exact_keep.sum())


def test_minference_config_file_errors_name_the_fix(tmp_path):
    from attention.method import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        build_method("minference", {"config": str(tmp_path / "missing.json")})
    bad = tmp_path / "block.json"
    bad.write_text('[{"0": ["block_sparse", 100, 100, 1.0]}]')
    q, k = random_qk(96)
    with pytest.raises(ConfigError, match="only vertical_and_slash"):
        build_method("minference", {"config": str(bad)}).build_pattern(q, k, 0.25)
    short = tmp_path / "short.json"
    short.write_text('[{"0": ["vertical_and_slash", 30, 100, 1.0]}]')
    with pytest.raises(ConfigError, match="layers"):
        build_method("minference", {"config": str(short)}).build_pattern(q, k, 0.25, layer_idx=3)


@pytest.mark.parametrize("q_len,k_len", [(200, 200), (131, 200), (37, 165)])
def test_band_runs_kernel_and_density_match_the_plain_versions(q_len, k_len, monkeypatch):
    """The Triton run builder (interpreted) equals the PyTorch one; the closed-form share equals the mask's."""
    from attention.backend import use_backend
    from attention.bands import BandPattern, band_runs_torch
    from attention.kernels.bands import band_runs

    gen = torch.Generator().manual_seed(q_len)
    offsets = torch.randint(0, k_len, (1, 3, 23), generator=gen)
    offsets[..., :4] = torch.arange(4)       # the nearest diagonals, as MInference forces them
    offsets[0, 1, 10:] = -1                  # unused slots
    columns = torch.randint(0, k_len, (1, 3, 9), generator=gen)
    columns[0, 2, :3] = -1
    m0 = (k_len - q_len) // 64
    with use_backend("triton"):
        got = band_runs(offsets, 1, 3, k_len, m0)
    want = band_runs_torch(offsets, 1, 3, k_len, m0)
    assert torch.equal(got[2], want[2])
    used = torch.arange(got[0].shape[-1]) < got[2][..., None]
    assert torch.equal(got[0][used], want[0][used]) and torch.equal(got[1][used], want[1][used])
    pattern = BandPattern(columns=columns, band_offsets=offsets)
    keep = pattern.keep_mask(1, 3, q_len, k_len)
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len).sum()
    share = pattern.kept_share(1, 3, q_len, k_len, torch.device("cpu"))
    torch.testing.assert_close(share, keep.sum((-2, -1)).float() / causal)
    import attention.bands

    monkeypatch.setattr(attention.bands, "SHARE_ELEMENTS", 8)  # one query block per step: the chunked sum
    torch.testing.assert_close(pattern.kept_share(1, 3, q_len, k_len, torch.device("cpu")), share)


@pytest.mark.parametrize("q_len,k_len,dim", [(150, 150, 16), (97, 170, 64)])
def test_band_attention_kernel_matches_the_reference(q_len, k_len, dim):
    """MInference's execution on our band kernel (interpreted) against fp32 masked attention."""
    from attention.backend import use_backend
    from attention.reference import reference_attention

    gen = torch.Generator().manual_seed(dim)
    q = torch.randn(1, 4, q_len, dim, generator=gen)
    k = torch.randn(1, 2, k_len, dim, generator=gen)
    v = torch.randn(1, 2, k_len, dim, generator=gen)
    method = build_method("minference", {"vertical_size": "12", "slash_size": "20", "last_q": "16",
                                         "init_columns": "3", "local_diagonals": "8"})
    keep = method.keep_mask(q, k, 0.25)
    assert 0.1 < float(keep.float().mean()) and not bool(keep.all())
    with use_backend("triton"):
        out = method.prefill(q, k, v, 0.25)
    expected = reference_attention(q, k, v, keep, 0.25)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("q_len,k_len,stride,block,dim", [(200, 200, 4, 16, 16), (131, 200, 8, 32, 32),
                                                          (96, 96, 2, 16, 64), (45, 173, 4, 32, 16)])
def test_xattention_estimate_kernel_matches_the_plain_version(q_len, k_len, stride, block, dim):
    """The fused estimate (interpreted) equals the plain PyTorch tile scores on awkward shapes."""
    from attention.kernels.estimate_xattention import xattention_tile_scores
    from attention.methods.xattention import antidiagonal_tile_scores

    gen = torch.Generator().manual_seed(k_len + dim)
    q = torch.randn(1, 4, q_len, dim, generator=gen) * 2
    k = torch.randn(1, 2, k_len, dim, generator=gen)
    want = antidiagonal_tile_scores(q, k, 0.3, stride, block)
    got = xattention_tile_scores(q, k, 0.3, stride, block)
    assert not got.isnan().any() and float(want.abs().sum()) > 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_ranked_sorts_long_rows_as_a_stable_descending_sort():
    """Long rows take the flat two-sort path: same values and order (ties: lower index) as torch.sort per row."""
    from attention.peer_estimation import LONG_ROWS, ranked

    gen = torch.Generator().manual_seed(3)
    for shape in [(2, 3, LONG_ROWS + 5), (5, LONG_ROWS + 1), (3, 40)]:
        x = torch.randint(0, 30, shape, generator=gen).float()  # many ties
        x[..., 3] = float("-inf")
        values, order = ranked(x)
        expected = torch.sort(x, dim=-1, descending=True, stable=True)
        assert torch.equal(values, expected.values) and torch.equal(order, expected.indices)
