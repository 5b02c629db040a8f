"""Property tests: random shapes, ranks, head counts, leading dims, dtypes, mixing modes and overrides.

The oracle is the explicit fp64 sum over heads. Tolerances are relative to a bound on what the
low-precision arithmetic can round: eps * (|x||W| + |b| + scale * sum_i |omega_i| |B_i||A||x|).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from explicit_math import explicit_hydra
from hypothesis import given, settings
from hypothesis import strategies as st

from hydralora import HydraConfig, HydraLinear

MODES = ["router-x", "router-lora", "learned", "fixed"]
OVERRIDES = ["none", "per-layer", "per-sample", "per-token"]
# allowed error per unit of the rounding bound: a few ulps of each dtype, kept tight enough that
# a wrong head, weight or scale (an error the size of the adapter's term) fails
RELATIVE_ERROR = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 3e-2}
FAST = settings(max_examples=40, deadline=None)


@st.composite
def layer_cases(draw, dtypes=(torch.float32, torch.bfloat16, torch.float64), modes=MODES):
    heads = draw(st.integers(1, 5))
    mode = draw(st.sampled_from(modes))
    lead = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    override = draw(st.sampled_from(OVERRIDES if lead else ["none", "per-layer"]))
    return {
        "in_features": draw(st.integers(1, 12)),
        "out_features": draw(st.integers(1, 12)),
        "r": draw(st.integers(1, 6)),
        "heads": heads,
        "mode": mode,
        "lead": lead,
        "dtype": draw(st.sampled_from(dtypes)),
        "bias": draw(st.booleans()),
        "alpha": draw(st.sampled_from([0.5, 1.0, 8.0])),
        "temperature": draw(st.sampled_from([0.5, 1.0, 2.0])),
        "fixed": draw(st.lists(st.floats(-2, 2), min_size=heads, max_size=heads)),
        "override": override,
        "seed": draw(st.integers(0, 2**16)),
    }


def build(case: dict) -> HydraLinear:
    torch.manual_seed(case["seed"])
    mode = case["mode"]
    config = HydraConfig(
        r=case["r"],
        alpha=case["alpha"],
        num_heads=case["heads"],
        mixing="router" if mode.startswith("router") else mode,
        router_input="lora" if mode == "router-lora" else "x",
        router_temperature=case["temperature"],
        fixed_weights=case["fixed"] if mode == "fixed" else None,
    )
    layer = HydraLinear(nn.Linear(case["in_features"], case["out_features"], bias=case["bias"]).to(case["dtype"]), config)
    with torch.no_grad():
        layer.lora_B.normal_()
        if layer.router is not None:
            layer.router.weight.normal_()
        if mode == "learned":
            layer.head_weights.uniform_(-1, 1)
    return layer


def inputs_and_override(case: dict, layer: HydraLinear) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(x, the override to set or None, the same omega broadcastable over x's leading dims)."""
    generator = torch.Generator().manual_seed(case["seed"] + 1)
    lead, heads = case["lead"], case["heads"]
    x = torch.randn(*lead, case["in_features"], generator=generator, dtype=torch.float64).to(case["dtype"])
    kind = case["override"]
    if kind == "none":
        return x, None, None
    shape = {"per-layer": (heads,), "per-sample": (lead[0], heads) if lead else None, "per-token": (*lead, heads)}[kind]
    omega = torch.rand(shape, generator=generator, dtype=torch.float64)
    broadcast = omega.view(lead[0], *([1] * (len(lead) - 1)), heads) if kind == "per-sample" else omega
    return x, omega, broadcast


def rounding_bound(layer: HydraLinear, x: torch.Tensor, omega: torch.Tensor | None) -> float:
    absx = x.double().abs()
    bound = absx @ layer.base_layer.weight.double().abs().t()
    if layer.base_layer.bias is not None:
        bound = bound + layer.base_layer.bias.double().abs()
    s = absx @ layer.lora_A.detach().double().abs().t()
    heads = layer.lora_B.detach().double().abs()
    if omega is not None:
        weights = omega.double().abs()
    elif layer.router is not None:
        # the gate itself is rounded: its error grows with the logits' size over the temperature
        router_in = absx if layer.config.router_input == "x" else s
        logit = (router_in @ layer.router.weight.detach().double().abs().t()).amax(-1, keepdim=True)
        weights = (1 + logit / layer.config.router_temperature).expand(*s.shape[:-1], layer.num_heads)
    else:
        weights = layer.head_weights.detach().double().abs()
    for head in range(layer.num_heads):
        bound = bound + layer.scale * weights[..., head : head + 1] * (s @ heads[head].t())
    return float(bound.max()) + 1.0


@FAST
@given(layer_cases())
def test_forward_matches_the_explicit_sum_over_heads(case):
    layer = build(case)
    x, override, broadcast = inputs_and_override(case, layer)
    layer.set_head_weights(override)
    y = layer(x)
    assert y.shape == (*case["lead"], case["out_features"]) and y.dtype == case["dtype"]
    with torch.no_grad():
        expected = explicit_hydra(layer, x, omega=broadcast)
    bound = rounding_bound(layer, x, broadcast)
    # the router's softmax is fp32 even for fp64 inputs
    fp64_router = case["dtype"] == torch.float64 and override is None and layer.router is not None
    tolerance = (1e-6 if fp64_router else RELATIVE_ERROR[case["dtype"]]) * bound
    error = (y.double() - expected).abs().max().item() if y.numel() else 0.0
    assert error <= tolerance, f"error {error:.3g} > {tolerance:.3g} for {case}"


@FAST
@given(layer_cases(dtypes=(torch.float64,)))
def test_permuting_heads_together_with_their_weights_changes_nothing(case):
    layer = build(case)
    x, override, _ = inputs_and_override(case, layer)
    layer.set_head_weights(override)
    y = layer(x)
    permutation = torch.randperm(case["heads"], generator=torch.Generator().manual_seed(case["seed"]))
    with torch.no_grad():
        layer.lora_B.copy_(layer.lora_B[permutation])
        if layer.router is not None:
            layer.router.weight.copy_(layer.router.weight[permutation])
        if case["mode"] in ("learned", "fixed"):
            layer.head_weights.copy_(layer.head_weights[permutation])
    layer.set_head_weights(None if override is None else override[..., permutation])
    torch.testing.assert_close(layer(x), y, rtol=1e-6, atol=1e-6)


@FAST
@given(layer_cases(dtypes=(torch.float64,), modes=["learned", "fixed", "router-x"]))
def test_per_sample_override_equals_each_sample_run_alone(case):
    if not case["lead"]:
        case["lead"] = (2,)
    layer = build(case)
    x, _, _ = inputs_and_override(case, layer)
    omega = torch.rand(case["lead"][0], case["heads"], dtype=torch.float64)
    layer.set_head_weights(omega)
    together = layer(x)
    for sample in range(case["lead"][0]):
        layer.set_head_weights(omega[sample])
        torch.testing.assert_close(layer(x[sample]), together[sample], rtol=1e-12, atol=1e-12)


@FAST
@given(layer_cases(dtypes=(torch.float32, torch.float64, torch.bfloat16), modes=["learned", "fixed"]))
def test_merge_keeps_the_output_and_unmerge_restores_the_weight(case):
    layer = build(case)
    x, override, _ = inputs_and_override(case, layer)
    if case["override"] == "per-layer":
        layer.set_head_weights(override)
    original = layer.base_layer.weight.detach().clone()
    y = layer(x)
    layer.merge()
    merged = layer(x)
    bound = rounding_bound(layer, x, override if case["override"] == "per-layer" else None)
    error = (merged.double() - y.double()).abs().max().item() if y.numel() else 0.0
    # merging rounds W + delta once more, so allow two roundings of the bound
    assert error <= 2 * RELATIVE_ERROR[case["dtype"]] * bound
    layer.unmerge()
    assert torch.equal(layer.base_layer.weight, original)
    assert torch.equal(layer(x), y)


@FAST
@given(layer_cases(dtypes=(torch.float64,), modes=["learned", "fixed"]))
def test_collapsed_lora_reproduces_the_adapter_term(case):
    layer = build(case)
    x, _, _ = inputs_and_override(case, layer)
    lora_a, b_eff = layer.collapsed_lora()
    assert lora_a.shape == (case["r"], case["in_features"]) and b_eff.shape == (case["out_features"], case["r"])
    torch.testing.assert_close(layer.base_layer(x) + x @ lora_a.t() @ b_eff.t(), layer(x), rtol=1e-10, atol=1e-10)
