"""HydraLinear against the explicit fp64 sum over heads: init, every mixing mode, dropout, gradients, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from explicit_math import explicit_hydra, make_layer

import hydralora
from hydralora import HydraConfig, HydraLinear

# the router's softmax runs in fp32 even for fp64 inputs, so router modes only match to ~1e-7
ROUTER_TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
EXACT_TOLERANCE = {"rtol": 1e-12, "atol": 1e-12}

MIXINGS = {
    "router-x": {"mixing": "router", "router_input": "x"},
    "router-lora": {"mixing": "router", "router_input": "lora"},
    "router-tempered": {"mixing": "router", "router_input": "x", "router_temperature": 0.5},
    "learned": {"mixing": "learned"},
    "fixed-uniform": {"mixing": "fixed"},
    "fixed-given": {"mixing": "fixed", "fixed_weights": [0.1, -0.2, 0.3, 0.8]},
}


def tolerance(config: dict) -> dict:
    return ROUTER_TOLERANCE if config["mixing"] == "router" else EXACT_TOLERANCE


@pytest.mark.parametrize("mixing", MIXINGS.values(), ids=MIXINGS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_output_at_init_equals_the_base_exactly(mixing, dtype):
    layer = make_layer(dtype=dtype, random_b=False, **mixing)
    x = torch.randn(2, 3, 6).to(dtype)
    assert torch.equal(layer(x), layer.base_layer(x))


@pytest.mark.parametrize("mixing", MIXINGS.values(), ids=MIXINGS.keys())
def test_random_b_matches_the_explicit_fp64_sum_over_heads(mixing):
    layer = make_layer(**mixing)
    if mixing["mixing"] == "learned":
        with torch.no_grad():
            layer.head_weights.copy_(torch.tensor([0.7, -0.1, 0.4, 1.3]))
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y = layer(x)
    assert not torch.allclose(y, layer.base_layer(x), atol=1e-3), "the adapter must change the output"
    torch.testing.assert_close(y, explicit_hydra(layer, x), **tolerance(mixing))


def test_fixed_weights_enter_the_output_with_their_sign_and_size():
    """Scaling every fixed weight by 3 triples the adapter's share: omega is not renormalised."""
    x = torch.randn(4, 6, dtype=torch.float64)
    one = make_layer(mixing="fixed", fixed_weights=[0.1, -0.2, 0.3, 0.8])
    three = make_layer(mixing="fixed", fixed_weights=[0.3, -0.6, 0.9, 2.4])
    base = one.base_layer(x)
    torch.testing.assert_close(three(x) - base, 3 * (one(x) - base), **EXACT_TOLERANCE)


def test_scale_is_alpha_over_r():
    x = torch.randn(4, 6, dtype=torch.float64)
    small = make_layer(mixing="fixed", alpha=3.0)
    large = make_layer(mixing="fixed", alpha=12.0)
    base = small.base_layer(x)
    assert large.scale == 4.0 and small.scale == 1.0
    torch.testing.assert_close(large(x) - base, 4 * (small(x) - base), **EXACT_TOLERANCE)


@pytest.mark.parametrize("lead_shape", [(), (5,), (2, 3), (2, 1, 3)])
def test_any_leading_dims(lead_shape):
    layer = make_layer(mixing="router", router_input="lora")
    x = torch.randn(*lead_shape, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (*lead_shape, 5)
    torch.testing.assert_close(y, explicit_hydra(layer, x), **ROUTER_TOLERANCE)


def test_layer_without_bias():
    layer = make_layer(mixing="fixed", bias=False)
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), explicit_hydra(layer, x), **EXACT_TOLERANCE)


@pytest.mark.parametrize("mixing", MIXINGS.values(), ids=MIXINGS.keys())
def test_dropout_is_identity_in_eval_mode(mixing):
    layer = make_layer(dropout=0.5, **mixing).eval()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), explicit_hydra(layer, x), **tolerance(mixing))


@pytest.mark.parametrize("mixing", MIXINGS.values(), ids=MIXINGS.keys())
def test_dropout_in_train_mode_drops_the_adapter_input_as_f_dropout_does(mixing):
    layer = make_layer(dropout=0.4, **mixing).train()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    torch.manual_seed(123)
    y = layer(x)
    torch.manual_seed(123)
    mask = F.dropout(torch.ones_like(x), p=0.4, training=True)
    assert (mask == 0).any() and (mask != 0).any()
    with torch.no_grad():
        expected = explicit_hydra(layer, x, dropout_mask=mask)
        undropped = explicit_hydra(layer, x)
    torch.testing.assert_close(y, expected, **tolerance(mixing))
    assert not torch.allclose(y, undropped, atol=1e-3)


def test_dropout_never_touches_the_base_path():
    layer = make_layer(dtype=torch.float32, dropout=0.9, random_b=False, mixing="fixed").train()
    x = torch.randn(8, 6)
    assert torch.equal(layer(x), layer.base_layer(x))


@pytest.mark.parametrize("mixing", MIXINGS.values(), ids=MIXINGS.keys())
def test_gradients_match_the_explicit_computation_and_reach_only_the_adapter(mixing):
    layer = make_layer(**mixing)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 5, dtype=torch.float64)
    trainable = [p for p in layer.parameters() if p.requires_grad]
    expected_names = {"lora_A", "lora_B"} | {
        "router": {"router.weight"}, "learned": {"head_weights"}, "fixed": set()
    }[mixing["mixing"]]
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == expected_names
    assert not layer.base_layer.weight.requires_grad and not layer.base_layer.bias.requires_grad

    got = torch.autograd.grad((layer(x) * upstream).sum(), [x, *trainable])
    want = torch.autograd.grad((explicit_hydra(layer, x) * upstream).sum(), [x, *trainable])
    for g, w in zip(got, want):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, w, **tolerance(mixing))


def test_backward_leaves_the_base_without_gradient():
    layer = make_layer(mixing="learned")
    layer(torch.randn(3, 6, dtype=torch.float64)).sum().backward()
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None
    assert layer.lora_A.grad is not None and layer.head_weights.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_base_keeps_its_weight_and_gets_fp32_adapters(dtype):
    base = nn.Linear(6, 5).to(dtype)
    weight = base.weight
    layer = HydraLinear(base, HydraConfig(r=2, num_heads=3, mixing="router"))
    assert layer.base_layer is base and layer.base_layer.weight is weight and weight.dtype == dtype
    assert {p.dtype for n, p in layer.named_parameters() if not n.startswith("base_layer")} == {torch.float32}
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    y.float().sum().backward()
    assert layer.lora_B.grad.dtype == torch.float32 and layer.lora_B.grad.abs().max() > 0


def test_fp32_and_fp64_bases_keep_their_dtype_for_the_adapter():
    assert make_layer(dtype=torch.float64).lora_A.dtype == torch.float64
    assert make_layer(dtype=torch.float32).lora_B.dtype == torch.float32


@pytest.mark.parametrize(
    ("mixing", "router_input", "extra"),
    [("router", "x", "k*N"), ("router", "lora", "r*N"), ("learned", "x", "N"), ("fixed", "x", "0")],
)
def test_parameter_count_per_layer(mixing, router_input, extra):
    k, d, r, n = 10, 7, 3, 4
    model = nn.Sequential(nn.Linear(k, d))
    hydralora.inject(model, HydraConfig(r=r, num_heads=n, mixing=mixing, router_input=router_input))
    expected = r * k + n * d * r + {"k*N": k * n, "r*N": r * n, "N": n, "0": 0}[extra]
    counts = hydralora.count_parameters(model)
    assert counts["adapter"] == expected
    assert counts["trainable"] == expected
    assert counts["total"] == expected + k * d + d
    assert sum(p.numel() for _, p in hydralora.adapter_parameters(model)) == expected


def test_init_follows_lora_and_the_symmetry_breaking_option():
    torch.manual_seed(0)
    k = 400
    zero_b = HydraLinear(nn.Linear(k, 300), HydraConfig(r=16, num_heads=3, mixing="router"))
    bound = 1 / math.sqrt(k)  # kaiming_uniform with a = sqrt(5)
    assert zero_b.lora_A.abs().max() <= bound and zero_b.lora_A.abs().max() > 0.9 * bound
    assert zero_b.router.weight.abs().max() <= bound
    assert torch.count_nonzero(zero_b.lora_B) == 0

    normal_b = HydraLinear(
        nn.Linear(k, 300),
        HydraConfig(r=16, num_heads=3, mixing="router", init_b="normal", init_b_std=0.01,
                    router_init="normal", router_init_std=0.2),
    )
    assert normal_b.lora_B.std().item() == pytest.approx(0.01, rel=0.05)
    assert normal_b.router.weight.std().item() == pytest.approx(0.2, rel=0.1)
    heads = normal_b.lora_B
    assert not torch.allclose(heads[0], heads[1]), "heads must start apart to break the symmetry"


def test_wrapping_anything_but_a_linear_is_a_type_error():
    with pytest.raises(TypeError, match="Conv1d"):
        HydraLinear(nn.Conv1d(2, 2, 1), HydraConfig())


class _DoubledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class _PlainSubclass(nn.Linear):
    """Like nn.MultiheadAttention's NonDynamicallyQuantizableLinear: a subclass that keeps Linear's forward."""


def test_linear_subclasses_are_wrapped_only_when_they_keep_linear_forward():
    with pytest.raises(TypeError, match="_DoubledLinear: it overrides nn.Linear.forward"):
        HydraLinear(_DoubledLinear(4, 4), HydraConfig(r=2, num_heads=2))
    layer = HydraLinear(_PlainSubclass(4, 4), HydraConfig(r=2, num_heads=2))
    x = torch.randn(3, 4)
    assert torch.equal(layer(x), layer.base_layer(x))


def test_weight_and_bias_read_and_write_through_to_the_base_layer():
    """Code written for nn.Linear reads `.weight.dtype`; transformers' tie_weights assigns `.weight`."""
    layer = make_layer(mixing="learned")
    assert layer.weight is layer.base_layer.weight and layer.bias is layer.base_layer.bias
    names = sorted(name for name, _ in layer.named_parameters())
    tied = nn.Parameter(torch.zeros_like(layer.weight))
    layer.weight = tied
    layer.bias = None
    assert layer.base_layer.weight is tied and layer.base_layer.bias is None
    assert sorted(name for name, _ in layer.named_parameters()) == [n for n in names if n != "base_layer.bias"]


def test_head_weights_that_are_not_a_tensor_are_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor or None, got list"):
        make_layer(mixing="fixed").set_head_weights([1.0, 0.0, 0.0, 0.0])


def test_repr_names_rank_heads_and_mixing():
    text = repr(make_layer(mixing="learned"))
    assert "r=3" in text and "heads=4" in text and "mixing=learned" in text and "scale=2" in text
