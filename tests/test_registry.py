import pytest
import torch

from attention.reference import reference_attention
from attention.registry import available_methods, build_method
from harness.options import InputError, parse_specs


def parse_methods(text):
    return [build_method(name, options) for name, options in parse_specs(text)]


def test_dense_and_eager_registered():
    assert {"dense", "eager", "flash-attn"} <= set(available_methods())


def test_parse_methods_attaches_options_to_the_method_before_them():
    methods = parse_methods("dense:backend=math,eager")
    assert [m.name for m in methods] == ["dense", "eager"]
    assert methods[0].config.backend == "math"


@pytest.mark.parametrize("spec,message", [
    ("nosuch", "unknown method 'nosuch'; choose from"),
    ("dense:backend=warp", "backend='warp' is not one of"),
    ("dense:speed=3", "unknown option 'speed'"),
    ("backend=math", "comes before any method"),
    ("", "no method given"),
])
def test_bad_specs_give_one_line_errors(spec, message):
    with pytest.raises(InputError, match=message) as info:
        parse_methods(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["auto", "math", "efficient"])
def test_dense_backends_match_reference_on_cpu(backend):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 6, 37, 32, generator=g)
    k, v = (torch.randn(1, 2, 37, 32, generator=g) for _ in range(2))
    method = build_method("dense", {"backend": backend})
    try:
        got = method.prefill(q, k, v, scale=32 ** -0.5)
    except RuntimeError as err:  # a backend not available on this CPU build is an honest skip
        pytest.skip(f"{backend} unavailable here: {err}")
    torch.testing.assert_close(got, reference_attention(q, k, v), atol=2e-5, rtol=2e-5)
