"""Peer check: a one-head HydraLoRA with omega = 1 is PEFT's LoRA, outputs and gradients alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from tiny_models import (
    build_llama,
    build_nested,
    forward_output,
    llama_inputs,
    model_output,
    nested_inputs,
    randomize_adapters,
)

import hydralora
from hydralora import HydraConfig

NESTED_TARGETS = ["embed", "mlp.0", "mlp.2", "head"]  # PEFT wraps a shared Linear under one parent only
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_twin(hydra_model: nn.Module, build, targets: list[str], r: int, alpha: float, wrap: str) -> tuple[nn.Module, nn.Module]:
    """(PEFT model, its inner module tree) with every LoRA layer set to the Hydra layer's A and B_1."""
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    if wrap == "inject":
        peft_model = inject_adapter_in_model(config, build(0))
        tree = peft_model
    else:
        peft_model = get_peft_model(build(0), config)
        tree = peft_model.base_model.model
    with torch.no_grad():
        for name, layer in hydralora.hydra_layers(hydra_model):
            lora = tree.get_submodule(name)
            lora.lora_A["default"].weight.copy_(layer.lora_A)
            lora.lora_B["default"].weight.copy_(layer.lora_B[0])
    return peft_model, tree


CASES = {
    "nested-inject": (build_nested, nested_inputs, NESTED_TARGETS, "inject"),
    "llama-get_peft_model": (build_llama, llama_inputs, LLAMA_TARGETS, "get_peft_model"),
}


@pytest.mark.parametrize("mixing", ["fixed", "learned"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_one_head_with_unit_weight_equals_peft_lora(case, mixing):
    build, inputs, targets, wrap = case
    r, alpha = 4, 12.0
    hydra_model = build(0)
    hydralora.inject(hydra_model, HydraConfig(r=r, alpha=alpha, num_heads=1, mixing=mixing, target_modules=targets))
    randomize_adapters(hydra_model, std=0.3)
    if mixing == "learned":
        with torch.no_grad():
            for _, layer in hydralora.hydra_layers(hydra_model):
                layer.head_weights.fill_(1.0)
    peft_model, tree = peft_twin(hydra_model, build, targets, r, alpha, wrap)
    peft_names = sorted(n.removesuffix(".lora_A") for n, _ in tree.named_modules() if n.endswith(".lora_A"))
    assert peft_names == sorted(name for name, _ in hydralora.hydra_layers(hydra_model))

    expected = model_output(hydra_model, inputs())
    assert not torch.allclose(expected, model_output(build(0), inputs()), atol=1e-3)
    torch.testing.assert_close(model_output(peft_model, inputs()), expected, rtol=1e-5, atol=1e-5)

    hydra_model.train()
    peft_model.train()
    forward_output(hydra_model, inputs()).square().mean().backward()
    forward_output(peft_model, inputs()).square().mean().backward()
    for name, layer in hydralora.hydra_layers(hydra_model):
        lora = tree.get_submodule(name)
        assert layer.lora_A.grad.abs().max() > 0
        torch.testing.assert_close(layer.lora_A.grad, lora.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(layer.lora_B.grad[0], lora.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-6)


def test_hydra_rank_and_scale_follow_peft_at_init():
    """Same init family: A kaiming-uniform with the LoRA bound, B zero, scale alpha / r."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    peft_model = inject_adapter_in_model(LoraConfig(r=8, lora_alpha=16, target_modules=["head"]), build_nested())
    hydra_model = build_nested()
    hydralora.inject(hydra_model, HydraConfig(r=8, alpha=16, num_heads=1, mixing="fixed", target_modules=["head"]))
    peft_layer, hydra_layer = peft_model.head, hydra_model.head
    assert peft_layer.scaling["default"] == hydra_layer.scale == 2.0
    assert peft_layer.lora_A["default"].weight.shape == hydra_layer.lora_A.shape
    assert peft_layer.lora_B["default"].weight.shape == hydra_layer.lora_B[0].shape
    assert torch.count_nonzero(peft_layer.lora_B["default"].weight) == torch.count_nonzero(hydra_layer.lora_B) == 0
    bound = 1 / hydra_layer.in_features**0.5
    for weight in (peft_layer.lora_A["default"].weight, hydra_layer.lora_A):
        assert weight.abs().max() <= bound
