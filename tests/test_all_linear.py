"""`target_modules="all-linear"` selects what PEFT's all-linear selects; GPT-2's Conv1D is refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from tiny_models import build_hunyuan, build_llama, build_nested, llama_inputs, model_output, randomize_adapters

import hydralora
from hydralora import HydraConfig, HydraInjectionError


def build_falcon(seed: int = 0) -> nn.Module:
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(seed)
    return FalconForCausalLM(FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)).eval()


def build_gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def hydra_names(model: nn.Module) -> set[str]:
    return {name for name, _ in hydralora.hydra_layers(model)}


def peft_all_linear_names(model: nn.Module) -> set[str]:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = inject_adapter_in_model(LoraConfig(r=2, target_modules="all-linear"), model)
    return {name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}


@pytest.mark.parametrize("build", [build_llama, build_falcon, build_hunyuan, build_nested],
                         ids=["llama", "falcon", "hunyuan", "nested"])
def test_all_linear_selects_exactly_what_peft_all_linear_selects(build):
    expected = peft_all_linear_names(build(0))
    model = build(0)
    hydralora.inject(model, HydraConfig(r=2, num_heads=2))
    assert hydra_names(model) == expected


def test_peft_get_peft_model_agrees_on_llama_and_leaves_out_lm_head():
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    peft_model = get_peft_model(build_llama(), LoraConfig(r=2, target_modules="all-linear"))
    prefix = "base_model.model."
    expected = {name.removeprefix(prefix) for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    model = build_llama()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2))
    assert hydra_names(model) == expected and len(expected) == 2 * 7
    assert "lm_head" not in expected and isinstance(model.lm_head, nn.Linear)


def test_the_output_layer_can_still_be_named_explicitly():
    model = build_llama()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=["q_proj", "lm_head"]))
    assert "lm_head" in hydra_names(model)


def test_an_all_linear_llama_adapter_saves_and_loads_without_lm_head(tmp_path):
    model = build_llama()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, mixing="learned"))
    randomize_adapters(model)
    hydralora.save_adapter(model, tmp_path)
    fresh = hydralora.load_adapter(build_llama(), tmp_path)
    assert hydra_names(fresh) == hydra_names(model)
    assert torch.equal(model_output(fresh, llama_inputs()), model_output(model, llama_inputs()))


@pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")
def test_gpt2_conv1d_is_refused_by_name_leaving_the_model_untouched():
    from transformers.pytorch_utils import Conv1D

    model = build_gpt2()
    conv1d = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    assert len(conv1d) == 8 and peft_all_linear_names(build_gpt2()) == set(conv1d)  # PEFT adapts them, not lm_head
    with pytest.raises(HydraInjectionError) as info:
        hydralora.inject(model, HydraConfig(r=2, num_heads=2))
    message = str(info.value)
    assert len(message) < 600
    assert "target_modules='all-linear' matched 8 transformers Conv1D layers of this GPT2LMHeadModel" in message
    assert "transformer.h.0.attn.c_attn" in message and "not supported" in message and "exclude_modules" in message
    assert not hydra_names(model) and all(p.requires_grad for p in model.parameters())


def test_gpt2_conv1d_named_explicitly_is_refused_too():
    with pytest.raises(HydraInjectionError, match=r"\['c_attn'\] matched 2 transformers Conv1D layers .*not supported"):
        hydralora.inject(build_gpt2(), HydraConfig(r=2, num_heads=2, target_modules=["c_attn"]))


def test_gpt2_without_its_conv1d_has_nothing_for_all_linear_and_says_why():
    config = HydraConfig(r=2, num_heads=2, exclude_modules=r".*\.c_(attn|proj|fc)")
    with pytest.raises(HydraInjectionError, match="matched no nn.Linear") as info:
        hydralora.inject(build_gpt2(), config)
    message = str(info.value)
    assert "lm_head" in message and "output layer" in message and "8 transformers Conv1D" in message


def test_gpt2_lm_head_named_explicitly_takes_an_adapter():
    model = build_gpt2()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=["lm_head"]))
    assert hydra_names(model) == {"lm_head"}


def test_all_linear_finding_a_single_module_warns_naming_it():
    with pytest.warns(UserWarning, match=r"'all-linear' found a single module in this Sequential: '0'"):
        hydralora.inject(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), HydraConfig(r=2, num_heads=2))


def test_the_single_module_warning_says_what_was_left_out():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.warns(UserWarning, match=r"single module .*: '0'; it left out '1' \(the output layer") as caught:
        hydralora.inject(model, HydraConfig(r=2, num_heads=2, exclude_modules=["1"]))
    assert len(caught) == 1


@pytest.mark.parametrize("targets", ["all-linear", ["0"]], ids=["several", "explicit"])
def test_no_single_module_warning_for_several_modules_or_an_explicit_target(targets):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=targets))
