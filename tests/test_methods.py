"""One set of checks over every registered method: output vs the reference under the method's own mask,
the transformers bridge on tiny models, density reported and steerable, bad configs rejected; and H2O's
decode after eviction equal to dense attention restricted to the kept keys."""
import dataclasses
import inspect
import math

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from attention import hf
from attention.backend import use_backend
from attention.scores import torch_sampled_scores
from attention.density import mask_density as density
from attention.reference import attention_probs, reference_attention
from attention.registry import AttentionMethod, ConfigError, available_methods, build_method
from tests.tiny_models import CONFIGS, tiny_model

# sizes that make each method genuinely sparse on short test sequences
SMALL = {
    "sample": {"alpha": "0.5", "r_w": "0.05"},
    "bigbird": {"block": "8", "global_blocks": "1", "window_blocks": "2", "random_blocks": "1"},
    "streaming": {"n_sink": "2", "window": "12"},
    "h2o": {"density": "0.3"},
    "oracle-topk": {"density": "0.2"},
    # exact diagonals: at these lengths MInference's 64-key bands cover everything (tests/test_peer_fidelity.py
    # covers the bands)
    "minference": {"vertical_size": "12", "slash_size": "20", "last_q": "16", "init_columns": "2",
                   "local_diagonals": "6", "exact_diagonals": "1"},
    "flexprefill": {"block": "8", "min_budget": "8", "gamma": "0.5"},
    "xattention": {"block": "8", "stride": "4", "threshold": "0.6"},
}
BAD = {
    "dense": [{"backend": "fastest"}],
    "bigbird": [{"block": "0"}, {"window_blocks": "0"}, {"random_blocks": "-1"}, {"density": "1.5"}],
    "streaming": [{"window": "0"}, {"n_sink": "-1"}, {"density": "-0.1"}],
    "h2o": [{"density": "0"}, {"recent_share": "1.2"}],
    "oracle-topk": [{"density": "0"}, {"density": "1.01"}],
    "minference": [{"vertical_size": "0"}, {"slash_size": "-1"}, {"last_q": "0"}, {"init_columns": "-1"},
                   {"local_diagonals": "0"}],
    "flexprefill": [{"block": "0"}, {"gamma": "0"}, {"gamma": "1.1"}, {"tau": "-0.1"}, {"min_budget": "-1"},
                    {"max_budget": "-1"}, {"min_budget": "512", "max_budget": "256"}],
    "xattention": [{"stride": "0"}, {"block": "12", "stride": "8"}, {"block": "0"}, {"threshold": "0"},
                   {"threshold": "1.5"}],
}


def _usable(name):
    try:
        build_method(name)
        return True
    except ConfigError:  # e.g. flash-attn without its package
        return False


METHODS = sorted(name for name in available_methods() if _usable(name))
DENSITY_METHODS = [n for n in METHODS
                   if "density" in {f.name for f in dataclasses.fields(available_methods()[n].Config)}]


def small(name, **extra):
    return build_method(name, {**SMALL.get(name, {}), **extra})


def qkv(length=100, heads=4, kv_heads=2, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, length, dim, generator=gen) for h in (heads, kv_heads, kv_heads)]


def keep_mask_of(method, q, k, scale, layer_idx=0):
    takes_layer = "layer_idx" in inspect.signature(method.keep_mask).parameters
    return method.keep_mask(q, k, scale, layer_idx=layer_idx) if takes_layer else method.keep_mask(q, k, scale)


def recorded_densities(method):
    values = [s["density"] for s in method.stats if "density" in s]
    return [float(x) for v in values for x in torch.as_tensor(v).flatten().tolist()]


@pytest.mark.parametrize("name", METHODS)
def test_output_matches_reference_under_own_mask(name):
    q, k, v = qkv()
    method = small(name)
    out = method.prefill(q, k, v, 0.3)
    keep = keep_mask_of(method, q, k, 0.3)
    torch.testing.assert_close(out, reference_attention(q, k, v, keep, 0.3), atol=2e-5, rtol=1e-4)
    if method.sparse and keep is not None:  # the mask must matter, or this test could not fail
        assert density(keep).max() < 0.9
        assert (out - reference_attention(q, k, v, None, 0.3)).abs().max() > 1e-2


@pytest.mark.parametrize("name", METHODS)
def test_density_reported(name):
    q, k, v = qkv()
    method = small(name)
    method.prefill(q, k, v, 0.3)
    reported = recorded_densities(method)
    if not method.sparse:
        assert all(d == 1 for d in reported)
        return
    assert reported and all(0 < d <= 1 for d in reported)
    keep = keep_mask_of(method, q, k, 0.3)
    if keep is not None:
        assert statistics_mean(reported) == pytest.approx(density(keep).mean().item(), abs=1e-5)


def statistics_mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize("target", [0.2, 0.45])
@pytest.mark.parametrize("name", DENSITY_METHODS)
def test_density_option_sets_the_budget(name, target):
    q, k, v = qkv(length=256, heads=2, kv_heads=1)
    method = small(name, density=str(target))
    method.prefill(q, k, v, 0.3)
    assert statistics_mean(recorded_densities(method)) == pytest.approx(target, abs=0.04)


@pytest.mark.parametrize("name", METHODS)
def test_bad_configs_rejected_with_one_line(name):
    cases = [{"no_such_option": "1"}] + BAD.get(name, [])
    if name in DENSITY_METHODS:
        cases += [{"density": "1.5"}, {"density": "half"}]
    for options in cases:
        with pytest.raises(ConfigError) as err:
            build_method(name, options)
        message = str(err.value)
        assert "\n" not in message and message.startswith(name), message


class MaskedReference(AttentionMethod):
    """fp32 reference attention under another method's keep_mask: the expected side of the bridge test."""

    name = "masked-reference"

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def prefill(self, q, k, v, scale, layer_idx=0):
        keep = keep_mask_of(self.inner, q, k, scale, layer_idx)
        return reference_attention(q, k, v, keep, scale).to(q.dtype)


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("name", METHODS)
def test_bridge_on_tiny_models(name, family):
    ids = torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(3))
    method = small(name)
    model, expected_model, stock = tiny_model(family), tiny_model(family), tiny_model(family)
    hf.install(model, method)
    hf.install(expected_model, MaskedReference(small(name)))
    with torch.no_grad():
        got, expected, dense = (m(ids).logits for m in (model, expected_model, stock))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    if method.sparse:
        assert recorded_densities(method)
        q, k, _ = qkv(48)
        if method.keep_mask(q, k, 0.3) is not None:
            assert (got - dense).abs().max() > 1e-3


def kept_key_mask(h2o, layer_idx: int, heads: int, k_len: int) -> torch.Tensor:
    """Bool [B, Hq, 1, k_len] of the keys a decode step sees after H2O's eviction (later tokens all kept)."""
    kept = h2o.kept[layer_idx]
    mask = torch.zeros(*kept.shape[:2], k_len, dtype=torch.bool, device=kept.device)
    mask.scatter_(-1, kept, True)
    mask[..., h2o.prompt_len[layer_idx]:] = True
    return mask.repeat_interleave(heads // kept.shape[1], dim=1)[:, :, None]


def install_kept_key_decode(model, h2o):
    """Full-cache model whose decode steps use fp32 attention masked to the keys H2O kept."""
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        layer = getattr(module, "layer_idx", 0)
        if query.shape[2] == 1 and layer in h2o.kept:
            keep = kept_key_mask(h2o, layer, query.shape[1], key.shape[2])
            out = reference_attention(query, key, value, keep, scaling).to(query.dtype)
            return out.transpose(1, 2).contiguous(), None
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)

    AttentionInterface.register("h2o_kept_key_reference", attention)
    AttentionMaskInterface.register("h2o_kept_key_reference", sdpa_mask)
    model.set_attn_implementation("h2o_kept_key_reference")


def prefill_then_decode(model, ids, tokens, evict=None):
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache = out.past_key_values
        if evict is not None:
            hf.compress_cache(cache, evict)
        logits = []
        for step, token in enumerate(tokens):
            position = torch.tensor([[ids.shape[1] + step]])
            out = model(input_ids=token.view(1, 1), past_key_values=cache, position_ids=position, use_cache=True)
            logits.append(out.logits[:, -1])
    return torch.stack(logits), cache


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_h2o_decode_equals_dense_attention_over_kept_keys(family):
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(4))
    tokens = torch.tensor([7, 91, 30])
    h2o = build_method("h2o", {"density": "0.25"})
    model, expected_model, stock = tiny_model(family), tiny_model(family), tiny_model(family)
    hf.install(model, h2o)
    got, cache = prefill_then_decode(model, ids, tokens, evict=h2o)
    install_kept_key_decode(expected_model, h2o)
    expected, _ = prefill_then_decode(expected_model, ids, tokens)
    full_cache, _ = prefill_then_decode(stock, ids, tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - full_cache).abs().max() > 1e-3  # eviction changed what decoding sees
    budget = math.ceil(0.25 * ids.shape[1])
    for layer in h2o.kept:
        assert cache.layers[layer].keys.shape[2] == budget + len(tokens)


def accumulated_attention(q, k, scale):
    """H2O's accumulated attention on the plain PyTorch path: column sums over every query row."""
    return torch_sampled_scores(q, k, scale, torch.arange(q.shape[2]))[0]


def test_h2o_scores_are_the_reference_column_sums_and_pick_heavy_hitters(monkeypatch):
    import attention.scores as scores_module

    monkeypatch.setattr(scores_module, "SCORE_ELEMENTS", 4 * 100 * 7)  # force several row chunks
    q, k, _ = qkv()
    mass = accumulated_attention(q, k, 0.3)
    expected = attention_probs(q, k, None, 0.3).sum(dim=2)
    torch.testing.assert_close(mass, expected, atol=1e-5, rtol=1e-5)
    method = build_method("h2o", {"density": "0.2", "recent_share": "0.5"})
    kept = method.select(expected, kv_heads=2)
    per_kv = expected.view(1, 2, 2, 100).sum(2)
    for head in range(2):
        positions = set(kept[0, head].tolist())
        assert set(range(90, 100)) <= positions  # the recent half of a 20-key budget
        assert positions - set(range(90, 100)) == set(per_kv[0, head, :90].topk(10).indices.tolist())


def test_pattern_structures_are_what_the_docstrings_say():
    q, k, _ = qkv(length=96, heads=2, kv_heads=1)
    # streaming: exactly the first n_sink keys plus the last `window` ones, causal
    keep = small("streaming").keep_mask(q, k, 0.3)[0, 0]
    i, j = torch.arange(96)[:, None], torch.arange(96)[None, :]
    assert torch.equal(keep, ((j < 2) | (i - j < 12)) & (j <= i))
    # oracle: each query keeps ceil(density * (i + 1)) keys, and no dropped key outscores a kept one
    keep = small("oracle-topk").keep_mask(q, k, 0.3)
    assert torch.equal(keep.sum(-1)[0, 0], torch.ceil(0.2 * (torch.arange(96) + 1)).long())
    scores = (q @ k.transpose(-1, -2)).masked_fill(j > i, float("-inf"))
    dropped = scores.masked_fill(keep | (j > i), float("-inf")).amax(-1)
    assert (scores.masked_fill(~keep, float("inf")).amin(-1) >= dropped).all()
    # bigbird: window + global blocks, plus exactly random_blocks others wherever enough are eligible
    bigbird = small("bigbird", random_blocks="2")
    blocks = bigbird.draw(2, 96, layer_idx=0)[0]
    fixed = bigbird.fixed_blocks(12)
    assert (blocks >= fixed).all() and not (blocks & ~torch.ones(12, 12).tril().bool()).any()
    extra = (blocks & ~fixed).sum(-1)
    eligible = (torch.ones(12, 12).tril().bool() & ~fixed).sum(-1)
    assert torch.equal(extra, torch.minimum(eligible, torch.tensor(2)).expand(2, -1))
    assert not torch.equal(blocks[0], blocks[1])  # heads draw their own blocks
    assert torch.equal(blocks, small("bigbird", random_blocks="2").draw(2, 96, 0)[0])  # seeded
    assert not torch.equal(blocks, small("bigbird", random_blocks="2", seed="1").draw(2, 96, 0)[0])
    assert not torch.equal(blocks, bigbird.draw(2, 96, layer_idx=1)[0])


def test_bigbird_cache_is_bounded_and_redraws_the_same_blocks(monkeypatch):
    import attention.methods.bigbird as bigbird_module

    method = small("bigbird", random_blocks="2")
    first = method.draw(2, 96, layer_idx=0)
    monkeypatch.setattr(bigbird_module, "DRAW_CACHE_BYTES", first.numel())  # room for one layer's table
    second = method.draw(2, 96, layer_idx=1)
    assert list(method._drawn) == [(1, 2, 96, "cpu")]  # the older table made room
    assert torch.equal(method.draw(2, 96, layer_idx=0), first)  # drawn again: the same blocks
    monkeypatch.setattr(bigbird_module, "DRAW_CACHE_BYTES", first.numel() - 1)
    method._drawn.clear()
    assert torch.equal(method.draw(2, 96, layer_idx=1), second) and not method._drawn  # too big: not kept


def test_h2o_fused_scores_match_the_chunked_ones():
    from attention.backend import use_backend

    q, k, v = qkv(length=70)
    method = build_method("h2o")
    with use_backend("triton"):  # the Triton column-score kernel, interpreted on the CPU
        fused = method.scores(q, k, 0.3)
    torch.testing.assert_close(fused, accumulated_attention(q, k, 0.3), atol=1e-4, rtol=1e-4)


def test_bigbird_draws_in_head_chunks(monkeypatch):
    """With DRAW_CHUNK at one head's scores (as at 1M tokens) every head still gets window + global blocks plus
    exactly its random ones, heads differ, and a redraw gives the same blocks."""
    import attention.methods.bigbird as bigbird_module

    monkeypatch.setattr(bigbird_module, "DRAW_CHUNK", 12 * 12)
    method = small("bigbird", random_blocks="2")
    blocks = method.draw(3, 96, layer_idx=0)[0]
    fixed = method.fixed_blocks(12)
    eligible = (torch.ones(12, 12).tril().bool() & ~fixed).sum(-1)
    assert (blocks >= fixed).all()
    assert torch.equal((blocks & ~fixed).sum(-1), torch.minimum(eligible, torch.tensor(2)).expand(3, -1))
    assert not torch.equal(blocks[0], blocks[1]) and not torch.equal(blocks[1], blocks[2])
    method._drawn.clear()
    assert torch.equal(method.draw(3, 96, layer_idx=0)[0], blocks)


@pytest.mark.parametrize("name", DENSITY_METHODS)
def test_density_solve_on_the_triton_path_reaches_the_budget(name):
    """The density= solves bisect on the device (no host sync per step); on the Triton path too (kernels under the
    interpreter here), the layer lands near its budget."""
    q, k, v = qkv(length=320, heads=2, kv_heads=1)
    method = small(name, density="0.3")
    with use_backend("triton"):
        method.prefill(q, k, v, 0.3)
    assert statistics_mean(recorded_densities(method)) == pytest.approx(0.3, abs=0.05)
