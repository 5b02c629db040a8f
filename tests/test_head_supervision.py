"""Training heads with head weights per sample, and the warning for heads that cannot specialise.

With one omega per layer (mixing "learned" or "fixed") every head gets the gradient omega_i * G, so
heads that start equal stay equal; `HeadCollapseWarning` says so once per model. Head weights per
sample (B, N) or per token, set with `hydralora.head_weights(model, w)` around the forward and the
backward, supervise each head on its own samples. The kernels' side of the same path is in
tests/kernels/test_hydra_linear_per_sample.py.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from explicit_math import explicit_hydra

import hydralora
from hydralora import HeadCollapseWarning, HydraConfig, HydraLinear

HEADS = 4


def two_layer_model(random_b: bool = True, **config) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 5)).double()
    settings = {"r": 3, "num_heads": HEADS, "mixing": "fixed", **config}
    hydralora.inject(model, HydraConfig(**settings))
    if random_b:
        with torch.no_grad():
            for _, layer in hydralora.hydra_layers(model):
                layer.lora_B.normal_()
    return model.train()


def batch(size: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(size, 4, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def collapse_warnings(step) -> list[warnings.WarningMessage]:
    """The HeadCollapseWarnings `step()` raises, every one (no deduplication by location)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step()
    return [w for w in caught if issubclass(w.category, HeadCollapseWarning)]


def train(model: nn.Module, steps: int = 3, weights: torch.Tensor | None = None) -> None:
    for step in range(steps):
        x = batch(seed=step)
        if weights is None:
            model(x).square().mean().backward()
        else:
            with hydralora.head_weights(model, weights):
                model(x).square().mean().backward()


# -- the collapse warning -------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", ["learned", "fixed"])
def test_warns_once_when_per_layer_mixing_trains_without_head_weights(mixing):
    model = two_layer_model(mixing=mixing)
    caught = collapse_warnings(lambda: train(model, steps=3))
    assert len(caught) == 1, "once per model, not per layer or per step"
    message = str(caught[0].message)
    for part in ("2 layers", f"mixing={mixing!r}", f"num_heads={HEADS}", "same gradient", "rank-3 LoRA",
                 "mixing='router'", "hydralora.head_weights(model, weights)", "head_report"):
        assert part in message, part
    assert issubclass(HeadCollapseWarning, UserWarning)
    assert "HeadCollapseWarning" in hydralora.__all__


@pytest.mark.parametrize("config", [
    {"init_b": "normal"},                                            # heads start apart: still one LoRA
    {"mixing": "fixed", "fixed_weights": [0.7, 0.1, 0.1, 0.1]},    # unequal omega: proportional gradients
])
def test_warns_whatever_the_initialisation(config):
    model = two_layer_model(random_b=False, **config)
    assert len(collapse_warnings(lambda: train(model, steps=1))) == 1


@pytest.mark.parametrize("weights", [
    F.one_hot(torch.tensor([0, 2, 3]), HEADS).double(),  # per sample
    torch.rand(3, 4, HEADS, dtype=torch.float64),         # per token
    torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64),  # one head for the whole batch
], ids=["per-sample", "per-token", "per-layer"])
def test_no_warning_while_head_weights_are_set(weights):
    model = two_layer_model(mixing="fixed")
    assert collapse_warnings(lambda: train(model, weights=weights)) == []

    def with_setter():
        hydralora.set_head_weights(model, weights)
        model(batch()).sum().backward()
        hydralora.set_head_weights(model, None)

    assert collapse_warnings(with_setter) == []


def test_no_warning_for_a_router_or_a_single_head():
    for config in ({"mixing": "router"}, {"mixing": "router", "router_input": "lora"},
                   {"mixing": "learned", "num_heads": 1}, {"mixing": "fixed", "num_heads": 1}):
        model = two_layer_model(**config)
        assert collapse_warnings(lambda model=model: train(model)) == [], config


def test_no_warning_in_eval_or_without_grad_and_these_do_not_use_up_the_warning():
    model = two_layer_model(mixing="learned")

    def not_training():
        model.eval()(batch())
        model.train()
        with torch.no_grad():
            model(batch())
        with torch.inference_mode():
            model(batch())

    assert collapse_warnings(not_training) == []
    assert len(collapse_warnings(lambda: train(model, steps=1))) == 1


def test_no_warning_when_the_heads_are_frozen():
    model = two_layer_model(mixing="learned")
    for _, layer in hydralora.hydra_layers(model):
        layer.lora_B.requires_grad_(False)
    assert collapse_warnings(lambda: train(model)) == []


def test_each_model_and_each_standalone_layer_warns_once():
    first, second = two_layer_model(mixing="fixed"), two_layer_model(mixing="fixed")
    layer = HydraLinear(nn.Linear(6, 5), HydraConfig(r=2, num_heads=3, mixing="learned")).train()

    def train_all():
        for _ in range(2):
            train(first, steps=1)
            train(second, steps=1)
            layer(torch.randn(2, 6)).sum().backward()

    caught = collapse_warnings(train_all)
    assert [str(w.message).split(" with ")[0] for w in caught] == [
        "HydraLoRA: 2 layers", "HydraLoRA: 2 layers", "HydraLoRA: 1 layer"]
    assert "1 layer with mixing='learned' and num_heads=3 is training" in str(caught[2].message)


def test_warning_can_be_turned_into_an_error_or_silenced():
    model = two_layer_model(mixing="fixed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeadCollapseWarning)
        with pytest.raises(HeadCollapseWarning):
            model(batch())
    model = two_layer_model(mixing="fixed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", HeadCollapseWarning)
        train(model)
    assert caught == []


# -- training with head weights per sample --------------------------------------------------------


def explicit_model(model: nn.Module, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    return explicit_hydra(model[2], torch.tanh(explicit_hydra(model[0], x, omega=omega)), omega=omega)


def adapter_leaves(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{p}": getattr(layer, p) for name, layer in hydralora.hydra_layers(model) for p in ("lora_A", "lora_B")}


@pytest.mark.parametrize("kind", ["per-sample", "per-token"])
@pytest.mark.parametrize("mixing", ["learned", "fixed", "router"])
def test_model_gradients_under_the_context_match_explicit_math(mixing, kind):
    """Every adapter gradient, the input's and the head weights' through two adapted layers."""
    model = two_layer_model(mixing=mixing)
    generator = torch.Generator().manual_seed(7)
    shape = (3, HEADS) if kind == "per-sample" else (3, 4, HEADS)
    weights = torch.rand(*shape, generator=generator, dtype=torch.float64).requires_grad_()
    x = batch().requires_grad_()
    leaves = {**adapter_leaves(model), "x": x, "head_weights": weights}
    with hydralora.head_weights(model, weights):
        got = torch.autograd.grad(model(x).square().sum(), list(leaves.values()))
    omega = weights[:, None, :] if kind == "per-sample" else weights
    exact = torch.autograd.grad(explicit_model(model, x, omega).square().sum(), list(leaves.values()))
    for name, g, e in zip(leaves, got, exact):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=name)


def test_one_hot_labels_train_each_head_on_its_samples_only_in_every_layer():
    model = two_layer_model(mixing="fixed")
    labels = torch.tensor([0, 2, 0, 1])  # head 3 labels no sample
    one_hot = F.one_hot(labels, HEADS).double()
    x = batch(size=4)
    leaves = adapter_leaves(model)
    b_names = [name for name in leaves if name.endswith("lora_B")]

    def grads_of_b(rows: torch.Tensor) -> list[torch.Tensor]:
        with hydralora.head_weights(model, one_hot[rows]):
            loss = model(x[rows]).square().sum()  # a sum of per-sample terms
        return torch.autograd.grad(loss, [leaves[name] for name in b_names])

    full = grads_of_b(torch.arange(4))
    for head in range(HEADS):
        rows = (labels == head).nonzero().flatten()
        for name, grad in zip(b_names, full):
            if len(rows) == 0:
                assert torch.count_nonzero(grad[head]) == 0, (name, head)
        if len(rows):
            for name, grad, subset in zip(b_names, full, grads_of_b(rows)):
                torch.testing.assert_close(grad[head], subset[head], rtol=1e-10, atol=1e-12, msg=name)


def test_backward_after_leaving_the_context_gives_the_same_gradients():
    """The override is captured by the graph at the forward: the backward may run after the block."""
    model = two_layer_model(mixing="fixed")
    weights = F.one_hot(torch.tensor([1, 3, 0]), HEADS).double()
    x = batch()
    leaves = list(adapter_leaves(model).values())
    with hydralora.head_weights(model, weights):
        inside = torch.autograd.grad(model(x).square().sum(), leaves)
        loss = model(x).square().sum()
    after = torch.autograd.grad(loss, leaves)
    for a, b in zip(inside, after):
        assert torch.equal(a, b)


def test_context_with_non_reentrant_gradient_checkpointing():
    """With activations recomputed in the backward, the backward inside the block is exact."""
    model = two_layer_model(mixing="learned")
    weights = F.one_hot(torch.tensor([1, 3, 0]), HEADS).double()
    x = batch()
    leaves = list(adapter_leaves(model).values())
    with hydralora.head_weights(model, weights):
        plain = torch.autograd.grad(model(x).square().sum(), leaves)
        y = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=False)
        checkpointed = torch.autograd.grad(y.square().sum(), leaves)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_heads_trained_per_sample_specialise_and_per_layer_heads_stay_identical():
    def adam_steps(weights: torch.Tensor | None) -> torch.Tensor:
        model = two_layer_model(random_b=False, mixing="fixed")
        optimizer = torch.optim.Adam([p for _, p in hydralora.adapter_parameters(model)], lr=1e-2)
        for step in range(4):
            x = batch(size=4, seed=step)
            steering = hydralora.head_weights(model, weights) if weights is not None else contextlib.nullcontext()
            with steering, warnings.catch_warnings():
                warnings.simplefilter("ignore", HeadCollapseWarning)
                model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        return model[0].lora_B.detach()

    collapsed = adam_steps(None)
    assert collapsed.abs().max() > 0
    assert all(torch.equal(collapsed[0], collapsed[head]) for head in range(1, HEADS))
    specialised = adam_steps(F.one_hot(torch.tensor([0, 1, 2, 3]), HEADS).double())
    for i in range(HEADS):
        for j in range(i):
            assert (specialised[i] - specialised[j]).norm() > 0.1 * specialised.norm()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_weights_are_moved_once_for_a_cuda_model():
    model = two_layer_model(mixing="fixed").cuda()
    weights = F.one_hot(torch.tensor([1, 3, 0]), HEADS).double()
    with hydralora.head_weights(model, weights):
        overrides = [layer.head_weights_override for _, layer in hydralora.hydra_layers(model)]
        assert overrides[0].is_cuda and all(o is overrides[0] for o in overrides)
        y = model(batch().cuda())
    with hydralora.head_weights(model, weights.cuda()):
        torch.testing.assert_close(y, model(batch().cuda()), rtol=0, atol=0)
    assert all(layer.head_weights_override is None for _, layer in hydralora.hydra_layers(model))


def test_the_check_stays_out_of_a_fullgraph_compile():
    """warnings.warn cannot be traced: under torch.compile the check is skipped, not a graph break."""
    model = two_layer_model(mixing="fixed")
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    caught = collapse_warnings(lambda: compiled(batch()).square().mean().backward())
    assert caught == []
    assert len(collapse_warnings(lambda: train(model, steps=1))) == 1, "eager forwards still warn"
