"""Head weights set at call time (per layer, per sample, per token; setter and context manager) and the balance loss."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from explicit_math import explicit_hydra, make_layer

import hydralora
from hydralora import HydraConfig, HydraInjectionError

EXACT = {"rtol": 1e-12, "atol": 1e-12}
MODES = {
    "router-x": {"mixing": "router"},
    "router-lora": {"mixing": "router", "router_input": "lora"},
    "learned": {"mixing": "learned"},
    "fixed": {"mixing": "fixed"},
}


def overrides(batch: int, tokens: int, heads: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{kind: (override as given to the layer, the same omega shaped to broadcast over (B, T))}."""
    generator = torch.Generator().manual_seed(5)
    per_layer = torch.randn(heads, generator=generator, dtype=torch.float64)
    per_sample = torch.randn(batch, heads, generator=generator, dtype=torch.float64)
    per_token = torch.randn(batch, tokens, heads, generator=generator, dtype=torch.float64)
    return {
        "per-layer": (per_layer, per_layer),
        "per-sample": (per_sample, per_sample[:, None, :]),
        "per-token": (per_token, per_token),
    }


@pytest.mark.parametrize("kind", ["per-layer", "per-sample", "per-token"])
@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_layer_override_replaces_the_mixing(mode, kind):
    layer = make_layer(**mode)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    given, broadcast = overrides(2, 3, layer.num_heads)[kind]
    layer.set_head_weights(given)
    assert layer.head_weights_override is given
    torch.testing.assert_close(layer(x), explicit_hydra(layer, x, omega=broadcast), **EXACT)
    layer.set_head_weights(None)
    assert layer.head_weights_override is None
    assert not torch.allclose(layer(x), explicit_hydra(layer, x, omega=broadcast), atol=1e-3)


def test_per_sample_override_on_four_dim_input():
    layer = make_layer(mixing="fixed")
    x = torch.randn(2, 3, 2, 6, dtype=torch.float64)
    omega = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]], dtype=torch.float64)
    layer.set_head_weights(omega)
    torch.testing.assert_close(layer(x), explicit_hydra(layer, x, omega=omega[:, None, None, :]), **EXACT)


def test_one_hot_override_selects_a_single_head():
    layer = make_layer(mixing="router")
    x = torch.randn(4, 6, dtype=torch.float64)
    outputs = []
    for head in range(layer.num_heads):
        layer.set_head_weights(torch.nn.functional.one_hot(torch.tensor(head), layer.num_heads).double())
        outputs.append(layer(x))
    layer.set_head_weights(torch.ones(layer.num_heads, dtype=torch.float64))
    base = layer.base_layer(x)
    torch.testing.assert_close(layer(x) - base, sum(o - base for o in outputs), **EXACT)


def test_override_with_wrong_head_count_is_refused_at_the_setter():
    layer = make_layer(mixing="fixed")
    with pytest.raises(ValueError, match="need 4 entries"):
        layer.set_head_weights(torch.ones(3))
    with pytest.raises(ValueError, match="need 4 entries"):
        layer.set_head_weights(torch.tensor(1.0))  # a 0-dim tensor has no last dim


def test_override_with_wrong_leading_shape_fails_at_forward():
    layer = make_layer(mixing="fixed")
    layer.set_head_weights(torch.ones(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="fit neither per layer"):
        layer(torch.randn(2, 3, 6, dtype=torch.float64))


def two_layer_model(**mode) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 5)).double()
    hydralora.inject(model, HydraConfig(r=3, num_heads=4, **mode))
    with torch.no_grad():
        for _, layer in hydralora.hydra_layers(model):
            layer.lora_B.normal_()
    return model


def explicit_model(model: nn.Module, x: torch.Tensor, omega: torch.Tensor | None) -> torch.Tensor:
    return explicit_hydra(model[2], torch.tanh(explicit_hydra(model[0], x, omega=omega)), omega=omega)


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_model_setter_overrides_every_layer_until_cleared(mode):
    model = two_layer_model(**mode)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    omega = torch.tensor([[0.5, 0.5, 0, 0], [0, 0.2, 0.3, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        plain = explicit_model(model, x, None)
        steered = explicit_model(model, x, omega[:, None, :])
    hydralora.set_head_weights(model, omega)
    assert all(layer.head_weights_override is omega for _, layer in hydralora.hydra_layers(model))
    torch.testing.assert_close(model(x), steered, **EXACT)
    hydralora.set_head_weights(model, None)
    torch.testing.assert_close(model(x), plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_context_manager_steers_inside_and_restores_the_previous_state(mode):
    model = two_layer_model(**mode)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    outer = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    inner = torch.rand(2, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        expected_outer = explicit_model(model, x, outer)
        expected_inner = explicit_model(model, x, inner)
    with hydralora.head_weights(model, outer) as yielded:
        assert yielded is model
        torch.testing.assert_close(model(x), expected_outer, **EXACT)
        with hydralora.head_weights(model, inner):
            torch.testing.assert_close(model(x), expected_inner, **EXACT)
        torch.testing.assert_close(model(x), expected_outer, **EXACT)
    assert all(layer.head_weights_override is None for _, layer in hydralora.hydra_layers(model))


def test_context_manager_restores_after_an_exception():
    model = two_layer_model(mixing="fixed")
    with pytest.raises(RuntimeError, match="boom"):
        with hydralora.head_weights(model, torch.ones(4, dtype=torch.float64)):
            raise RuntimeError("boom")
    assert all(layer.head_weights_override is None for _, layer in hydralora.hydra_layers(model))


def test_model_level_override_needs_adapters():
    with pytest.raises(HydraInjectionError, match="no HydraLoRA adapters"):
        hydralora.set_head_weights(nn.Sequential(nn.Linear(2, 2)), torch.ones(2))
    with pytest.raises(HydraInjectionError, match="no HydraLoRA adapters"):
        with hydralora.head_weights(nn.Sequential(nn.Linear(2, 2)), torch.ones(2)):
            pass


# -- balance loss ---------------------------------------------------------------------------------


def router_model(weight: float, **extra) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    hydralora.inject(model, HydraConfig(r=4, num_heads=4, mixing="router", balance_loss_weight=weight, **extra))
    return model.train()


def switch_loss_by_hand(probs: torch.Tensor) -> torch.Tensor:
    """N * sum_i (fraction of tokens whose top gate is i) * (mean gate of i)."""
    heads = probs.shape[-1]
    flat = probs.reshape(-1, heads)
    counts = torch.stack([(flat.argmax(-1) == i).double().mean() for i in range(heads)])
    return heads * (counts * flat.double().mean(0)).sum()


def test_balance_loss_is_zero_without_a_weight_or_without_a_router():
    no_weight = router_model(0.0)
    no_weight(torch.randn(5, 8))
    assert all(layer.last_balance_loss is None for _, layer in hydralora.hydra_layers(no_weight))
    assert hydralora.balance_loss(no_weight).item() == 0.0

    learned = nn.Sequential(nn.Linear(8, 8))
    hydralora.inject(learned, HydraConfig(r=2, num_heads=3, mixing="learned"))
    learned.train()(torch.randn(5, 8))
    assert hydralora.balance_loss(learned).item() == 0.0


def test_balance_loss_is_zero_after_an_eval_forward():
    model = router_model(0.05)
    model(torch.randn(5, 8))
    assert hydralora.balance_loss(model).item() > 0
    model.eval()(torch.randn(5, 8))
    assert hydralora.balance_loss(model).item() == 0.0


@pytest.mark.parametrize("router_input", ["x", "lora"])
def test_balance_loss_is_a_weighted_mean_of_switch_losses_with_gradient_to_the_router(router_input):
    model = router_model(0.05, router_input=router_input)
    x = torch.randn(2, 7, 8)
    captured = {}
    for index in (0, 2):
        layer = model[index]
        layer.register_forward_hook(lambda m, i, o, index=index: captured.__setitem__(index, i[0].detach()))
    model(x)
    loss = hydralora.balance_loss(model)
    assert loss.dim() == 0 and loss.item() > 0
    by_hand = []
    for index in (0, 2):
        layer = model[index]
        router_in = captured[index] if router_input == "x" else captured[index] @ layer.lora_A.t()
        by_hand.append(switch_loss_by_hand(torch.softmax(router_in @ layer.router.weight.t(), -1)))
    assert loss.item() == pytest.approx(0.05 * torch.stack(by_hand).mean().item(), rel=1e-5)
    loss.backward()
    for index in (0, 2):
        assert model[index].router.weight.grad is not None and model[index].router.weight.grad.abs().max() > 0


def test_balance_loss_equals_its_weight_at_perfectly_uniform_gates():
    model = router_model(0.03)
    with torch.no_grad():
        for _, layer in hydralora.hydra_layers(model):
            layer.router.weight.zero_()
    model(torch.randn(3, 4, 8))
    assert hydralora.balance_loss(model).item() == pytest.approx(0.03, rel=1e-6)
    for _, layer in hydralora.hydra_layers(model):
        torch.testing.assert_close(layer.last_head_usage, torch.full((4,), 0.25))


def test_head_usage_is_the_mean_gate_and_sums_to_one():
    model = router_model(0.0)
    model.eval()(torch.randn(6, 8))
    for _, layer in hydralora.hydra_layers(model):
        assert layer.last_head_usage.shape == (4,)
        assert layer.last_head_usage.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_balance_loss_under_non_reentrant_checkpointing():
    """The gradient reaches the routers as without checkpointing, and the backward's recompute (which
    stops early) leaves balance_loss(model) as the forward set it."""
    x = torch.randn(2, 7, 8)
    plain, checkpointed = router_model(0.05), router_model(0.05)
    checkpointed.load_state_dict(plain.state_dict())
    plain_loss = plain(x).square().mean() + hydralora.balance_loss(plain)
    plain_loss.backward()
    y = torch.utils.checkpoint.checkpoint(checkpointed, x.clone().requires_grad_(), use_reentrant=False)
    before = hydralora.balance_loss(checkpointed)
    (y.square().mean() + before).backward()
    assert hydralora.balance_loss(checkpointed).item() == before.item()
    for index, layer in hydralora.hydra_layers(checkpointed):
        torch.testing.assert_close(layer.router.weight.grad, plain.get_submodule(index).router.weight.grad)


def test_balance_loss_warns_when_the_router_forward_had_no_autograd():
    """A reentrant checkpoint runs the forward under no_grad: the loss would silently not train the routers."""
    model = router_model(0.05)
    x = torch.randn(2, 7, 8, requires_grad=True)
    torch.utils.checkpoint.checkpoint(model, x, use_reentrant=True)
    with pytest.warns(UserWarning, match="carries no gradient"):
        hydralora.balance_loss(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)
        hydralora.balance_loss(model)  # only read for logging: nothing to warn about
