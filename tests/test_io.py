"""save_adapter / load_adapter: exact round trips on the three models, file layout, strict loading errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import build_nested, model_output, randomize_adapters

import hydralora
from hydralora import AdapterLoadError, HydraConfig, HydraConfigError, HydraInjectionError


def saved_nested(tmp_path, **config):
    """A nested model with random adapters, saved to tmp_path / 'adapter'."""
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=4.0, num_heads=3, **config))
    randomize_adapters(model)
    directory = hydralora.save_adapter(model, tmp_path / "adapter")
    return model, directory


@pytest.mark.parametrize("mixing", ["router", "learned", "fixed"])
def test_round_trip_into_a_fresh_model_is_exact(model_case, mixing, tmp_path):
    model = model_case.build(0)
    hydralora.inject(model, model_case.config(mixing=mixing))
    randomize_adapters(model)
    expected = model_output(model, model_case.inputs())
    hydralora.save_adapter(model, tmp_path)

    fresh = model_case.build(0)
    assert hydralora.load_adapter(fresh, tmp_path) is fresh
    assert [n for n, _ in hydralora.hydra_layers(fresh)] == [n for n, _ in hydralora.hydra_layers(model)]
    assert hydralora.adapter_config(fresh) == hydralora.adapter_config(model)
    saved, loaded = hydralora.adapter_state_dict(model), hydralora.adapter_state_dict(fresh)
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(model_output(fresh, model_case.inputs()), expected)


def test_load_into_a_model_that_already_has_matching_adapters(tmp_path):
    model, directory = saved_nested(tmp_path, mixing="learned")
    x = torch.randn(3, 7)
    target = build_nested()
    hydralora.inject(target, HydraConfig(r=2, alpha=4.0, num_heads=3, mixing="learned"))
    hydralora.load_adapter(target, directory)
    assert torch.equal(target(x), model(x))


def test_files_hold_the_adapter_only_with_config_and_version(tmp_path):
    model, directory = saved_nested(tmp_path, mixing="fixed", fixed_weights=[0.2, 0.3, 0.5])
    assert sorted(p.name for p in directory.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    state = load_file(directory / "adapter_model.safetensors")
    assert state.keys() == hydralora.adapter_state_dict(model).keys()
    assert not any("base_layer" in key for key in state)
    assert "blocks.0.shared.lora_A" in state and not any(key.startswith("blocks.1.shared") for key in state)
    torch.testing.assert_close(state["head.head_weights"], torch.tensor([0.2, 0.3, 0.5]))
    with safe_open(directory / "adapter_model.safetensors", framework="pt") as handle:
        assert handle.metadata()["adapter_type"] == "hydralora"
    payload = json.loads((directory / "adapter_config.json").read_text())
    assert payload["adapter_type"] == "hydralora"
    assert payload["hydralora_version"] == hydralora.__version__
    assert payload["modules"] == [name for name, _ in hydralora.hydra_layers(model)]
    assert HydraConfig.from_dict(payload["hydra_config"]) == hydralora.adapter_config(model)


def test_fixed_head_weights_travel_with_the_adapter(tmp_path):
    _, directory = saved_nested(tmp_path, mixing="fixed", fixed_weights=[0.2, 0.3, 0.5])
    fresh = hydralora.load_adapter(build_nested(), directory)
    for _, layer in hydralora.hydra_layers(fresh):
        torch.testing.assert_close(layer.head_weights, torch.tensor([0.2, 0.3, 0.5]))


def test_no_adapter_to_save_or_describe(tmp_path):
    with pytest.raises(HydraInjectionError, match="no HydraLoRA adapters"):
        hydralora.adapter_config(build_nested())
    with pytest.raises(HydraInjectionError, match="no HydraLoRA adapters"):
        hydralora.save_adapter(build_nested(), tmp_path)
    assert not list(tmp_path.iterdir())


# -- bad adapter files ------------------------------------------------------------------------------


def test_missing_directory_names_the_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        hydralora.load_adapter(build_nested(), tmp_path / "nowhere")


def test_missing_config_names_the_config_file(tmp_path):
    _, directory = saved_nested(tmp_path)
    (directory / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        hydralora.load_adapter(build_nested(), directory)


def test_corrupt_config_is_a_config_error(tmp_path):
    _, directory = saved_nested(tmp_path)
    (directory / "adapter_config.json").write_text('{"hydra_config": {"r": 2, "rank": 4}}')
    with pytest.raises(HydraConfigError, match="rank"):
        hydralora.load_adapter(build_nested(), directory)


def test_corrupt_safetensors_names_the_file(tmp_path):
    _, directory = saved_nested(tmp_path)
    (directory / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors is not a readable safetensors file"):
        hydralora.load_adapter(build_nested(), directory)


def rewrite(directory, edit) -> None:
    path = directory / "adapter_model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path)


def test_missing_key_names_the_module(tmp_path):
    _, directory = saved_nested(tmp_path)
    rewrite(directory, lambda state: state.pop("blocks.1.mlp.0.lora_B"))
    with pytest.raises(AdapterLoadError, match=r"missing 1 tensor: blocks\.1\.mlp\.0\.lora_B$") as info:
        hydralora.load_adapter(build_nested(), directory)
    assert "adapter_model.safetensors" in str(info.value)


def test_extra_key_names_the_module(tmp_path):
    _, directory = saved_nested(tmp_path)
    rewrite(directory, lambda state: state.__setitem__("blocks.7.mlp.0.lora_A", torch.zeros(2, 7)))
    with pytest.raises(AdapterLoadError, match=r"extra 1 tensor: blocks\.7\.mlp\.0\.lora_A \(the model has no adapter"):
        hydralora.load_adapter(build_nested(), directory)


def test_shape_mismatch_names_the_module_and_both_shapes(tmp_path):
    _, directory = saved_nested(tmp_path)
    rewrite(directory, lambda state: state.__setitem__("head.lora_B", torch.zeros(3, 7, 5)))
    with pytest.raises(AdapterLoadError, match=r"file vs model shape differs in 1 tensor: head\.lora_B 3x7x5 vs 3x7x2$"):
        hydralora.load_adapter(build_nested(), directory)


@pytest.mark.parametrize(
    ("field", "model_config"),
    [
        ("r", {"r": 4}),
        ("num_heads", {"num_heads": 2}),
        ("mixing", {"mixing": "learned"}),
        ("router_input", {"router_input": "lora"}),
        ("alpha", {"alpha": 8.0}),
        ("router_temperature", {"router_temperature": 2.0}),
    ],
)
def test_config_mismatch_with_existing_adapters_names_the_field_and_file(tmp_path, field, model_config):
    _, directory = saved_nested(tmp_path)
    target = build_nested()
    hydralora.inject(target, HydraConfig(**{"r": 2, "alpha": 4.0, "num_heads": 3, **model_config}))
    with pytest.raises(AdapterLoadError, match=rf"adapter_config\.json: {field}="):
        hydralora.load_adapter(target, directory)


def test_strict_load_changes_nothing_when_it_fails():
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3))
    before = {k: v.clone() for k, v in hydralora.adapter_state_dict(model).items()}
    state = {k: torch.ones_like(v) for k, v in before.items()}
    state["head.lora_A"] = torch.ones(3, 12)
    with pytest.raises(AdapterLoadError, match=r"cannot load my checkpoint: file vs model shape differs in 1 tensor: head\.lora_A 3x12 vs 2x12$"):
        hydralora.load_adapter_state_dict(model, state, source="my checkpoint")
    after = hydralora.adapter_state_dict(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_load_adapter_state_dict_copies_into_the_parameters():
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3, mixing="learned"))
    state = {k: torch.full_like(v, 0.5) for k, v in hydralora.adapter_state_dict(model).items()}
    hydralora.load_adapter_state_dict(model, state)
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in hydralora.adapter_state_dict(model).values())


def test_loading_into_merged_layers_is_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4))
    hydralora.inject(model, hydralora.HydraConfig(r=2, num_heads=2, mixing="learned"))
    hydralora.save_adapter(model, tmp_path)
    hydralora.merge_adapter(model)
    with pytest.raises(hydralora.AdapterLoadError, match="merged"):
        hydralora.load_adapter(model, tmp_path)
