"""Merge / unmerge / unload(merge=True) and the LoRA export that diffusers and PEFT load."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from explicit_math import make_layer
from safetensors.torch import load_file
from tiny_models import (
    HUNYUAN_TARGETS,
    build_hunyuan,
    build_hunyuan_pipeline,
    build_llama,
    build_nested,
    hunyuan_inputs,
    llama_inputs,
    model_output,
    nested_inputs,
    randomize_adapters,
)

import hydralora
from hydralora import HydraConfig, HydraInjectionError, HydraLinear, HydraMergeError

FP32 = {"rtol": 1e-5, "atol": 1e-5}


def adapted(case, mixing: str) -> nn.Module:
    model = case.build(0)
    hydralora.inject(model, case.config(mixing=mixing))
    randomize_adapters(model, std=0.2)
    return model


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.base_layer.weight.detach().clone() for name, layer in hydralora.hydra_layers(model)}


@pytest.mark.parametrize("mixing", ["learned", "fixed"])
def test_merge_keeps_the_output_and_unmerge_restores_the_weight_bit_exactly(model_case, mixing):
    model = adapted(model_case, mixing)
    inputs = model_case.inputs()
    unmerged = model_output(model, inputs)
    originals = base_weights(model)
    assert not torch.allclose(unmerged, model_output(model_case.build(0), inputs), atol=1e-3)

    hydralora.merge_adapter(model)
    assert all(layer.merged for _, layer in hydralora.hydra_layers(model))
    assert any(not torch.equal(w, originals[n]) for n, w in base_weights(model).items())
    torch.testing.assert_close(model_output(model, inputs), unmerged, **FP32)

    hydralora.unmerge_adapter(model)
    assert all(torch.equal(w, originals[n]) for n, w in base_weights(model).items())
    assert torch.equal(model_output(model, inputs), unmerged)


def test_unmerge_without_the_kept_original_is_approximate(model_case):
    model = adapted(model_case, "learned")
    originals = base_weights(model)
    hydralora.merge_adapter(model, keep_original=False)
    hydralora.unmerge_adapter(model)
    for name, weight in base_weights(model).items():
        torch.testing.assert_close(weight, originals[name], rtol=0, atol=1e-6)


def test_unload_with_merge_gives_plain_linears_with_the_same_output(model_case):
    model = adapted(model_case, "fixed")
    inputs = model_case.inputs()
    adapted_output = model_output(model, inputs)
    hydralora.unload(model, merge=True)
    assert not any(isinstance(m, HydraLinear) for m in model.modules())
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    torch.testing.assert_close(model_output(model, inputs), adapted_output, **FP32)


def test_merged_weight_is_w_plus_scaled_mixed_heads_in_fp64():
    layer = make_layer(mixing="fixed", fixed_weights=[0.1, -0.2, 0.3, 0.8])
    weight = layer.base_layer.weight.detach().clone()
    omega = torch.tensor([0.1, -0.2, 0.3, 0.8], dtype=torch.float64)
    delta = sum(omega[i] * layer.lora_B[i].detach() @ layer.lora_A.detach() for i in range(4))
    layer.merge()
    torch.testing.assert_close(layer.base_layer.weight, weight + 2.0 * delta, rtol=1e-12, atol=1e-12)


def test_half_precision_merge_is_computed_in_fp32_and_cast_once():
    base = nn.Linear(6, 5).to(torch.bfloat16)
    layer = HydraLinear(base, HydraConfig(r=3, num_heads=2, mixing="learned"))
    with torch.no_grad():
        layer.lora_B.normal_(std=0.3)
    original = base.weight.detach().clone()
    expected = (original.float() + layer.delta_weight()).to(torch.bfloat16)
    layer.merge()
    assert base.weight.dtype == torch.bfloat16 and torch.equal(base.weight, expected)
    layer.unmerge()
    assert torch.equal(base.weight, original)


def test_router_mode_refuses_to_merge_with_an_explanation():
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3, mixing="router"))
    with pytest.raises(HydraMergeError, match="per-token router cannot be collapsed"):
        hydralora.merge_adapter(model)
    with pytest.raises(HydraMergeError, match="per-token router"):
        hydralora.unload(model, merge=True)


def test_router_with_pinned_per_layer_weights_can_merge():
    layer = make_layer(mixing="router")
    x = torch.randn(4, 6, dtype=torch.float64)
    layer.set_head_weights(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    steered = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), steered, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mixing", ["router", "learned"])
def test_unmerge_subtracts_what_merge_added_even_after_the_override_is_cleared(mixing):
    layer = make_layer(mixing=mixing)
    original = layer.base_layer.weight.detach().clone()
    model = nn.Sequential(layer)
    with hydralora.head_weights(model, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)):
        hydralora.merge_adapter(model, keep_original=False)
    assert layer.head_weights_override is None
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, original, rtol=1e-12, atol=1e-12)


def test_per_sample_weights_cannot_be_collapsed():
    layer = make_layer(mixing="fixed")
    layer.set_head_weights(torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(HydraMergeError, match=r"only per-layer head weights \(N,\)"):
        layer.merge()


def test_merge_state_errors():
    layer = make_layer(mixing="fixed")
    with pytest.raises(HydraMergeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(HydraMergeError, match="already merged"):
        layer.merge()
    with pytest.raises(HydraMergeError, match="unmerge first"):
        layer.set_head_weights(torch.ones(4, dtype=torch.float64))
    with pytest.raises(HydraInjectionError, match="no HydraLoRA adapters"):
        hydralora.merge_adapter(nn.Sequential(nn.Linear(2, 2)))


# -- export ----------------------------------------------------------------------------------------


def test_diffusers_export_holds_a_to_b_eff_per_layer(tmp_path):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=6.0, num_heads=3, mixing="fixed", fixed_weights=[0.5, 0.2, 0.3]))
    randomize_adapters(model)
    path = hydralora.export_lora(model, tmp_path / "lora")
    assert path == tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    state = load_file(path)
    names = [name for name, _ in hydralora.hydra_layers(model)]
    assert sorted(state) == sorted(f"transformer.{n}.lora_{ab}.weight" for n in names for ab in "AB")
    head = model.head
    b_eff = 3.0 * sum(w * head.lora_B[i] for i, w in enumerate([0.5, 0.2, 0.3]))
    torch.testing.assert_close(state["transformer.head.lora_A.weight"], head.lora_A.detach())
    torch.testing.assert_close(state["transformer.head.lora_B.weight"], b_eff.detach())


def test_export_to_a_file_path_with_prefix_and_dtype(tmp_path):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3, mixing="learned", target_modules=["head"]))
    path = hydralora.export_lora(model, tmp_path / "style.safetensors", prefix="unet", dtype=torch.bfloat16)
    assert path == tmp_path / "style.safetensors"
    state = load_file(path)
    assert sorted(state) == ["unet.head.lora_A.weight", "unet.head.lora_B.weight"]
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    no_prefix = load_file(hydralora.export_lora(model, tmp_path / "bare.safetensors", prefix=""))
    assert sorted(no_prefix) == ["head.lora_A.weight", "head.lora_B.weight"]


def test_router_export_says_why_and_names_the_module(tmp_path):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3, mixing="router"))
    for fmt in ("diffusers", "peft"):
        with pytest.raises(HydraMergeError, match=r"cannot export 'embed' as a LoRA: a per-token router"):
            hydralora.export_lora(model, tmp_path / fmt, format=fmt)


def test_unknown_export_format(tmp_path):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3, mixing="fixed"))
    with pytest.raises(ValueError, match="export format must be one of"):
        hydralora.export_lora(model, tmp_path, format="comfy")


def test_diffusers_lora_loaded_into_a_hunyuan_pipeline_matches_the_injected_model(tmp_path):
    model = build_hunyuan(0)
    hydralora.inject(model, HydraConfig(r=4, alpha=8.0, num_heads=3, mixing="learned", target_modules=HUNYUAN_TARGETS))
    randomize_adapters(model, std=0.2)
    expected = model_output(model, hunyuan_inputs())
    path = hydralora.export_lora(model, tmp_path)

    pipe = build_hunyuan_pipeline(build_hunyuan(0))
    base = model_output(pipe.transformer, hunyuan_inputs())
    assert not torch.allclose(base, expected, atol=1e-2)
    pipe.load_lora_weights(str(path))
    torch.testing.assert_close(model_output(pipe.transformer, hunyuan_inputs()), expected, **FP32)


def test_peft_export_loads_with_peft_model_from_pretrained(tmp_path):
    from peft import PeftModel

    model = build_llama(0)
    hydralora.inject(model, HydraConfig(r=4, alpha=2.0, num_heads=3, mixing="fixed", fixed_weights=[0.6, 0.3, 0.1],
                                        target_modules=["q_proj", "v_proj", "down_proj"]))
    randomize_adapters(model)
    expected = model_output(model, llama_inputs())
    path = hydralora.export_lora(model, tmp_path / "peft", format="peft")
    assert path.name == "adapter_model.safetensors"
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 4

    peft_model = PeftModel.from_pretrained(build_llama(0), tmp_path / "peft").eval()
    assert not torch.allclose(model_output(build_llama(0), llama_inputs()), expected, atol=1e-3)
    torch.testing.assert_close(model_output(peft_model, llama_inputs()), expected, **FP32)


def test_peft_export_loads_with_set_peft_model_state_dict(tmp_path):
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    targets = ["embed", "mlp.0", "mlp.2", "head"]  # not the shared Linear: PEFT wraps only one of its parents
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=5.0, num_heads=3, mixing="learned", target_modules=targets))
    randomize_adapters(model)
    expected = model_output(model, nested_inputs())
    path = hydralora.export_lora(model, tmp_path, format="peft")
    config = json.loads((tmp_path / "adapter_config.json").read_text())

    peft_model = inject_adapter_in_model(
        LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], target_modules=config["target_modules"]), build_nested()
    )
    state = {key.removeprefix("base_model.model."): value for key, value in load_file(path).items()}
    result = set_peft_model_state_dict(peft_model, state)
    assert not result.unexpected_keys
    assert not [key for key in result.missing_keys if "lora_" in key]
    torch.testing.assert_close(model_output(peft_model, nested_inputs()), expected, **FP32)


def tied_pair(mixing: str = "learned") -> nn.Sequential:
    """Two Linears sharing one weight Parameter (tied), each with its own adapter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    model[1].weight = model[0].weight
    hydralora.inject(model, HydraConfig(r=4, num_heads=3, mixing=mixing))
    randomize_adapters(model, std=0.2)
    return model


def test_unmerge_restores_a_weight_tied_between_two_layers_bit_exactly():
    model = tied_pair()
    original = model[0].base_layer.weight.detach().clone()
    for layer in model:  # layer by layer: the model-wide merge refuses tied weights
        layer.merge()
    hydralora.unmerge_adapter(model)
    assert torch.equal(model[0].base_layer.weight, original)
    for layer in model:
        layer.merge()
    hydralora.unload(model)
    assert torch.equal(model[0].weight, original)


def test_model_wide_merge_refuses_a_base_weight_tied_to_another_module():
    model = tied_pair()
    original = model[0].base_layer.weight.detach().clone()
    with pytest.raises(HydraMergeError, match=r"'0': its base weight is tied to \['1.base_layer.weight'\]"):
        hydralora.merge_adapter(model)
    with pytest.raises(HydraMergeError, match="tied to"):
        hydralora.unload(model, merge=True)
    assert torch.equal(model[0].base_layer.weight, original) and not any(layer.merged for layer in model)


def test_merge_refuses_a_weight_sharing_memory_with_another_parameter_object():
    """nn.Parameter(emb.weight.data) is a second Parameter over the same memory: tied all the same."""
    embedding, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = nn.Parameter(embedding.weight.data)
    model = nn.ModuleDict({"embedding": embedding, "head": head})
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, mixing="learned", target_modules=["head"]))
    with pytest.raises(HydraMergeError, match=r"'head': its base weight is tied to \['embedding.weight'\]"):
        hydralora.merge_adapter(model)


def test_tied_lm_head_stays_tied_through_tie_weights_and_refuses_to_merge_into_the_embedding():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=50, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, mixing="learned", target_modules=["q_proj", "lm_head"]))
    keys = sorted(hydralora.adapter_state_dict(model))
    model.tie_weights()  # assigns lm_head.weight: it must re-tie the base, not add a parameter to the adapter
    assert model.lm_head.weight is model.lm_head.base_layer.weight is model.model.embed_tokens.weight
    assert sorted(hydralora.adapter_state_dict(model)) == keys
    with pytest.raises(HydraMergeError, match=r"'lm_head'.*model\.embed_tokens\.weight"):
        hydralora.merge_adapter(model)


def test_model_wide_merge_and_unload_check_every_layer_before_changing_any():
    model = tied_pair(mixing="router")
    original = model[0].base_layer.weight.detach().clone()
    model[0].set_head_weights(torch.tensor([1.0, 0.0, 0.0]))  # layer 0 can merge, layer 1 cannot
    with pytest.raises(HydraMergeError, match="per-token router"):
        hydralora.merge_adapter(model)
    with pytest.raises(HydraMergeError, match="per-token router"):
        hydralora.unload(model, merge=True)
    assert all(isinstance(layer, HydraLinear) and not layer.merged for layer in model)
    assert torch.equal(model[0].base_layer.weight, original)
    model[1].set_head_weights(torch.tensor([0.0, 1.0, 0.0]))
    model[1].merge()
    with pytest.raises(HydraMergeError, match="'0': layer is not merged"):
        hydralora.unmerge_adapter(model)
    assert model[1].merged
