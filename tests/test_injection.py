"""inject / unload on the three tiny models: target matching, shared Linears, freezing, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from tiny_models import build_llama, build_nested, forward_output, model_output, randomize_adapters

import hydralora
from hydralora import HydraConfig, HydraInjectionError, HydraLinear

NESTED_LINEARS = ["embed", "blocks.0.mlp.0", "blocks.0.mlp.2", "blocks.0.shared", "blocks.1.mlp.0", "blocks.1.mlp.2", "head"]


def injected_names(model: nn.Module) -> list[str]:
    return [name for name, _ in hydralora.hydra_layers(model)]


def test_all_linear_wraps_every_linear_and_leaves_the_rest_alone():
    model = build_nested()
    norm, act = model.blocks[0].norm, model.blocks[0].mlp[1]
    originals = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    assert hydralora.inject(model, HydraConfig(r=2, num_heads=2)) is model
    assert injected_names(model) == NESTED_LINEARS
    for name, layer in hydralora.hydra_layers(model):
        assert layer.base_layer is originals[name]
    assert model.blocks[0].norm is norm and model.blocks[0].mlp[1] is act
    assert not any(p.requires_grad for p in norm.parameters())


def test_a_linear_shared_by_two_parents_gets_one_adapter():
    model = build_nested()
    shared = model.blocks[0].shared
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=["shared"]))
    wrapper = model.blocks[0].shared
    assert isinstance(wrapper, HydraLinear) and model.blocks[1].shared is wrapper
    assert wrapper.base_layer is shared
    assert injected_names(model) == ["blocks.0.shared"]
    assert sorted(hydralora.adapter_state_dict(model)) == ["blocks.0.shared.lora_A", "blocks.0.shared.lora_B", "blocks.0.shared.router.weight"]


def test_shared_linear_excluded_under_one_name_still_gets_its_one_adapter_at_both():
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=["shared"], exclude_modules=["blocks.1.shared"]))
    assert isinstance(model.blocks[1].shared, HydraLinear) and model.blocks[1].shared is model.blocks[0].shared


@pytest.mark.parametrize(
    ("targets", "excludes", "expected"),
    [
        (["mlp.2", "head"], None, ["blocks.0.mlp.2", "blocks.1.mlp.2", "head"]),
        (["blocks.1.mlp.0"], None, ["blocks.1.mlp.0"]),
        (r"blocks\.\d+\.mlp\.0", None, ["blocks.0.mlp.0", "blocks.1.mlp.0"]),
        (r"blocks\.1\.(mlp\.[02]|shared)", None, ["blocks.1.mlp.0", "blocks.1.mlp.2", "blocks.0.shared"]),
        ("all-linear", ["head", "embed"], ["blocks.0.mlp.0", "blocks.0.mlp.2", "blocks.0.shared", "blocks.1.mlp.0", "blocks.1.mlp.2"]),
        ("all-linear", r"blocks\.\d\.mlp\.\d", ["embed", "blocks.0.shared", "head"]),
    ],
)
def test_target_and_exclude_patterns_follow_peft_rules(targets, excludes, expected):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=targets, exclude_modules=excludes))
    assert sorted(injected_names(model)) == sorted(expected)


def test_injection_freezes_everything_but_the_adapters(model_case):
    model = model_case.build(0)
    hydralora.inject(model, model_case.config(mixing="learned"))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in hydralora.adapter_parameters(model)}
    assert trainable and all(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "head_weights") for name in trainable)
    adapter_total = sum(p.numel() for name, p in model.named_parameters() if name in trainable)
    assert hydralora.count_parameters(model)["trainable"] == adapter_total


def test_gradients_reach_only_adapter_parameters(model_case):
    model = model_case.build(0)
    hydralora.inject(model, model_case.config(mixing="router"))
    randomize_adapters(model, std=0.05)
    model.train()
    forward_output(model, model_case.inputs()).square().mean().backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
        else:
            assert parameter.grad is None, name
    for name, layer in hydralora.hydra_layers(model):
        assert layer.lora_B.grad.abs().max() > 0, name


def test_injected_model_starts_at_the_base_output_exactly(model_case):
    model = model_case.build(0)
    before = model_output(model, model_case.inputs())
    hydralora.inject(model, model_case.config(mixing="router"))
    assert torch.equal(model_output(model, model_case.inputs()), before)


def test_unload_without_merge_gives_back_the_original_modules(model_case):
    model = model_case.build(0)
    before = model_output(model, model_case.inputs())
    originals = {name: m for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Linear)}
    hydralora.inject(model, model_case.config())
    randomize_adapters(model)
    assert not torch.allclose(model_output(model, model_case.inputs()), before, atol=1e-4)
    assert hydralora.unload(model) is model
    assert not list(hydralora.hydra_layers(model))
    after = {name: m for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Linear)}
    assert after.keys() == originals.keys() and all(after[n] is originals[n] for n in originals)
    assert torch.equal(model_output(model, model_case.inputs()), before)
    hydralora.inject(model, model_case.config())  # a clean model takes an adapter again


def test_nothing_matched_lists_the_candidates():
    with pytest.raises(HydraInjectionError, match="matched no nn.Linear") as info:
        hydralora.inject(build_nested(), HydraConfig(target_modules=["q_proj"]))
    message = str(info.value)
    assert "q_proj" in message and all(name in message for name in NESTED_LINEARS)
    assert "blocks.1.shared" in message


def test_suffixes_match_only_at_a_dot():
    with pytest.raises(HydraInjectionError, match="matched no nn.Linear"):
        hydralora.inject(build_nested(), HydraConfig(target_modules=["ead"]))


def test_everything_excluded_is_nothing_matched():
    with pytest.raises(HydraInjectionError, match="exclude_modules='.*'"):
        hydralora.inject(build_nested(), HydraConfig(exclude_modules=".*"))


def test_model_without_linears_says_so():
    with pytest.raises(HydraInjectionError, match="the model has no nn.Linear"):
        hydralora.inject(nn.Sequential(nn.Conv1d(2, 2, 1), nn.ReLU()), HydraConfig())


def test_a_match_that_is_not_linear_names_the_module_and_its_type():
    with pytest.raises(HydraInjectionError, match=r"'blocks\.0\.mlp', a Sequential"):
        hydralora.inject(build_nested(), HydraConfig(target_modules=r"blocks\.0\.mlp"))
    with pytest.raises(HydraInjectionError, match=r"'blocks\.0\.norm', a LayerNorm"):
        hydralora.inject(build_nested(), HydraConfig(target_modules=["norm"]))


def test_failed_injection_leaves_the_model_untouched():
    model = build_nested()
    with pytest.raises(HydraInjectionError):
        hydralora.inject(model, HydraConfig(target_modules=["mlp.0", "norm"]))
    assert not list(hydralora.hydra_layers(model))
    assert all(p.requires_grad for p in model.parameters())


def test_injecting_twice_is_refused():
    model = build_nested()
    hydralora.inject(model, HydraConfig(target_modules=["head"]))
    with pytest.raises(HydraInjectionError, match="already has HydraLoRA adapters"):
        hydralora.inject(model, HydraConfig(target_modules=["embed"]))
    with pytest.raises(HydraInjectionError, match="already has HydraLoRA adapters"):
        hydralora.inject(model.head, HydraConfig())


def test_root_linear_cannot_be_replaced():
    with pytest.raises(HydraInjectionError, match="root module"):
        hydralora.inject(nn.Linear(3, 3), HydraConfig())


def test_llama_all_linear_reaches_attention_and_mlp_but_not_the_output_layer():
    model = build_llama()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2))
    names = injected_names(model)
    assert len(names) == 2 * 7 and "lm_head" not in names  # as PEFT's all-linear (tests/test_all_linear.py)
    assert isinstance(model.model.layers[1].mlp.down_proj, HydraLinear)


class _WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attn(x, x, x)[0])


def test_all_linear_skips_multihead_attention_internals_and_explicit_targets_there_are_refused():
    torch.manual_seed(0)
    model = _WithAttention()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules="all-linear"))
    assert [name for name, _ in hydralora.hydra_layers(model)] == ["proj"]
    assert model(torch.randn(1, 3, 8)).shape == (1, 3, 8)
    with pytest.raises(HydraInjectionError, match="MultiheadAttention"):
        hydralora.inject(_WithAttention(), HydraConfig(r=2, num_heads=2, target_modules=["out_proj"]))


class _ScaledLinear(nn.Linear):
    """A Linear that changes the math in its forward, as quantized Linears (bitsandbytes) do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * super().forward(x)


def test_a_linear_subclass_with_its_own_forward_is_skipped_by_all_linear_and_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), _ScaledLinear(4, 4))
    with pytest.raises(HydraInjectionError, match=r"'1' is a .*_ScaledLinear, an nn.Linear subclass with its own forward"):
        hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=["0", "1"]))
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules="all-linear"))
    assert injected_names(model) == ["0"]


def test_falcon_linear_whose_forward_is_plain_linear_takes_an_adapter():
    from transformers import FalconConfig, FalconForCausalLM

    config = FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    model = FalconForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(0))
    expected = model(ids).logits
    hydralora.inject(model, HydraConfig(r=4, num_heads=2, mixing="learned", target_modules=["query_key_value", "dense"]))
    assert len(injected_names(model)) == 2
    assert torch.equal(model(ids).logits, expected)  # B starts at zero: the same function


def test_layers_of_a_peft_adapter_are_refused_with_the_way_out():
    from peft import LoraConfig, inject_adapter_in_model

    model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj"]), build_llama())
    for targets in ("all-linear", ["q_proj"]):
        with pytest.raises(HydraInjectionError, match=r"PEFT adapter layer 'model\.layers\.0\.self_attn\.q_proj'.*merge_and_unload"):
            hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=targets))
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=["k_proj"]))
    assert injected_names(model) == ["model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.k_proj"]
