import pytest
import torch

from attention import hf
from attention.registry import build_method
from tests.tiny_models import CONFIGS, tiny_model


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("method_name", ["dense", "eager"])
def test_bridge_matches_stock_sdpa(family, method_name):
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(1))
    stock = tiny_model(family)
    with torch.no_grad():
        expected = stock(ids).logits
    model = tiny_model(family)
    hf.install(model, build_method(method_name))
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_decode_after_prefill_matches_stock(family):
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(2))
    stock = tiny_model(family)
    model = tiny_model(family)
    method = build_method("dense")
    hf.install(model, method)
    with torch.no_grad():
        a = stock.generate(ids, max_new_tokens=5, do_sample=False)
        b = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(a, b)


def test_method_sees_prefill_only_on_global_layers():
    calls = []
    method = build_method("dense")
    original = method.prefill
    method.prefill = lambda q, k, v, scale, layer_idx=0: calls.append(layer_idx) or original(q, k, v, scale, layer_idx)
    model = tiny_model("gemma3")
    hf.install(model, method)
    with torch.no_grad():
        model(torch.randint(0, 128, (1, 40)))
    assert calls == [2]  # layers 0 and 1 are sliding-window layers (window 16 < 40): dense with their mask


def test_install_as_a_context_restores_the_models_attention():
    model = tiny_model("llama")
    before = model.config._attn_implementation
    calls = []
    method = build_method("dense")
    original = method.prefill
    method.prefill = lambda q, k, v, scale, layer_idx=0: calls.append(layer_idx) or original(q, k, v, scale, layer_idx)
    ids = torch.randint(0, 128, (1, 20), generator=torch.Generator().manual_seed(3))
    with hf.install(model, method) as name, torch.no_grad():
        assert model.config._attn_implementation == name != before
        model(ids)
    assert calls and model.config._attn_implementation == before
    with torch.no_grad():
        model(ids)
    assert len(calls) == len(set(calls))  # the second forward did not reach the method
