"""load_adapter fails without touching the model; written files are atomic, umask-moded and reproducible."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import NestedNet, build_nested, model_output, nested_inputs, randomize_adapters

import hydralora
from hydralora import AdapterLoadError, HydraConfig, HydraConfigError, HydraLinear
from hydralora.io import save_safetensors


def save_random_adapter(directory, model=None, **config):
    """A nested model (or `model`) with random adapters saved to `directory`; returns the model."""
    model = build_nested() if model is None else model
    hydralora.inject(model, HydraConfig(**{"r": 2, "alpha": 4.0, "num_heads": 3, **config}))
    randomize_adapters(model)
    hydralora.save_adapter(model, directory)
    return model


def snapshot(model):
    """Every state_dict value and every parameter's requires_grad."""
    return (
        {key: value.clone() for key, value in model.state_dict().items()},
        {name: parameter.requires_grad for name, parameter in model.named_parameters()},
    )


def assert_unchanged(model, before) -> None:
    state, requires_grad = snapshot(model)
    assert state.keys() == before[0].keys()
    assert all(torch.equal(state[key], before[0][key]) for key in state)
    assert requires_grad == before[1]


def edit_tensors(edit):
    def apply(directory) -> None:
        path = directory / "adapter_model.safetensors"
        state = load_file(path)
        edit(state)
        save_file(state, path)

    return apply


def edit_config(**fields):
    def apply(directory) -> None:
        path = directory / "adapter_config.json"
        payload = json.loads(path.read_text())
        payload["hydra_config"].update(fields)
        path.write_text(json.dumps(payload))

    return apply


def truncate(directory) -> None:
    path = directory / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-40])


def set_item(key, value):
    return edit_tensors(lambda state: state.__setitem__(key, value))


def poison(key, value):
    def apply(state) -> None:
        state[key][0] = value

    return edit_tensors(apply)


BREAKAGES = {
    "truncated file": (truncate, AdapterLoadError, r"adapter_model\.safetensors is not a readable safetensors file"),
    "wrong shape": (set_item("head.lora_B", torch.zeros(3, 7, 5)), AdapterLoadError,
                    r"adapter_model\.safetensors: file vs model shape differs in 1 tensor: head\.lora_B 3x7x5 vs 3x7x2$"),
    "missing key": (edit_tensors(lambda state: state.pop("head.lora_A")), AdapterLoadError,
                    r"adapter_model\.safetensors: missing 1 tensor: head\.lora_A$"),
    "int64 tensor": (set_item("head.lora_A", torch.ones(2, 12, dtype=torch.int64)), AdapterLoadError,
                     r"adapter_model\.safetensors: non-float dtype in 1 tensor: head\.lora_A \(torch\.int64\)$"),
    "bool tensor": (set_item("embed.router.weight", torch.ones(3, 7, dtype=torch.bool)), AdapterLoadError,
                    r"adapter_model\.safetensors: non-float dtype in 1 tensor: embed\.router\.weight \(torch\.bool\)$"),
    "NaN": (poison("head.lora_B", float("nan")), AdapterLoadError,
            r"adapter_model\.safetensors: NaN or infinite values in 1 tensor: head\.lora_B$"),
    "inf": (poison("embed.lora_A", float("-inf")), AdapterLoadError,
            r"adapter_model\.safetensors: NaN or infinite values in 1 tensor: embed\.lora_A$"),
    "r=0": (edit_config(r=0), HydraConfigError, r"adapter_config\.json: HydraConfig\.r: must be a positive integer, got 0"),
    "r='4'": (edit_config(r="4"), HydraConfigError, r"adapter_config\.json: HydraConfig\.r: .* got '4'"),
    "unknown field": (edit_config(rank=4), HydraConfigError, r"adapter_config\.json: unknown HydraConfig field\(s\) \['rank'\]"),
    "another model": (edit_config(target_modules=["to_q", "to_k"]), AdapterLoadError,
                      r"adapter_config\.json: the adapter was made for another model: its target_modules=\['to_q', 'to_k'\]"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_failed_load_leaves_a_fresh_model_as_it_was_and_a_good_load_then_works(tmp_path, breakage):
    break_adapter, error, message = BREAKAGES[breakage]
    good = save_random_adapter(tmp_path / "good")
    save_random_adapter(tmp_path / "bad")
    break_adapter(tmp_path / "bad")
    model = build_nested()
    before = snapshot(model)

    with pytest.raises(error, match=message):
        hydralora.load_adapter(model, tmp_path / "bad")

    assert_unchanged(model, before)
    assert not any(isinstance(module, HydraLinear) for module in model.modules())
    hydralora.load_adapter(model, tmp_path / "good")
    assert torch.equal(model_output(model, nested_inputs()), model_output(good, nested_inputs()))


@pytest.mark.parametrize("breakage", ["int64 tensor", "NaN", "wrong shape"])
def test_a_failed_load_leaves_existing_adapters_as_they_were(tmp_path, breakage):
    break_adapter, error, message = BREAKAGES[breakage]
    save_random_adapter(tmp_path / "bad")
    break_adapter(tmp_path / "bad")
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=4.0, num_heads=3))
    before = snapshot(model)

    with pytest.raises(error, match=message):
        hydralora.load_adapter(model, tmp_path / "bad")

    assert_unchanged(model, before)


def test_an_adapter_for_a_wider_model_gets_a_short_summary(tmp_path):
    save_random_adapter(tmp_path, model=NestedNet(width=16).eval())
    with pytest.raises(AdapterLoadError) as info:
        hydralora.load_adapter(build_nested(), tmp_path)
    assert str(info.value) == (
        f"cannot load {tmp_path / 'adapter_model.safetensors'}: file vs model shape differs in 18 tensors, e.g. "
        f"blocks.0.mlp.0.lora_A 2x16 vs 2x12, blocks.0.mlp.0.lora_B 3x32x2 vs 3x24x2, blocks.0.mlp.0.router.weight 3x16 vs 3x12"
    )


def test_an_adapter_with_no_module_in_common_says_it_is_for_another_model(tmp_path):
    save_random_adapter(tmp_path, model=torch.nn.Sequential(torch.nn.Linear(12, 12)))
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=4.0, num_heads=3))
    with pytest.raises(AdapterLoadError, match=r"adapter_model\.safetensors: none of its 3 tensors: 0\.lora_A, 0\.lora_B, "
                       r"0\.router\.weight belongs to an adapter of this model \(21 tensors, e\.g\. .*\), so it was "
                       r"saved from another model$"):
        hydralora.load_adapter(model, tmp_path)


# -- written files ------------------------------------------------------------------------------------


@pytest.fixture
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)], indirect=["umask"],
                         ids=["umask 022", "umask 077"])
def test_written_files_take_the_mode_the_umask_gives(tmp_path, umask, mode):
    model = save_random_adapter(tmp_path / "adapter", mixing="fixed")
    hydralora.export_lora(model, tmp_path / "diffusers", format="diffusers")
    hydralora.export_lora(model, tmp_path / "peft", format="peft")
    written = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    assert [path.relative_to(tmp_path).as_posix() for path in written] == [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "diffusers/pytorch_lora_weights.safetensors",
        "peft/adapter_config.json",
        "peft/adapter_model.safetensors",
    ]
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in written} == {path.name: oct(mode) for path in written}


def test_saving_the_same_adapter_again_gives_identical_bytes(tmp_path):
    model = save_random_adapter(tmp_path / "first")
    # safetensors orders metadata by hash, which differs between calls: several saves make a lucky pass unlikely
    for copy in range(8):
        hydralora.save_adapter(model, tmp_path / f"copy{copy}")
    first = (tmp_path / "first" / "adapter_model.safetensors").read_bytes()
    assert all((tmp_path / f"copy{copy}" / "adapter_model.safetensors").read_bytes() == first for copy in range(8))


def test_save_safetensors_sorts_metadata_and_keeps_the_format(tmp_path):
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(5, dtype=torch.float16)}
    metadata = {key: key.upper() for key in "zyxwvu"}
    path = save_safetensors(tensors, tmp_path / "t.safetensors", metadata=metadata)
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    assert (8 + header_length) % 8 == 0
    assert list(json.loads(data[8:8 + header_length])["__metadata__"]) == sorted(metadata)
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[key], tensors[key]) for key in tensors)


def test_a_save_that_fails_while_writing_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = save_safetensors({"a": torch.ones(2)}, tmp_path / "t.safetensors")
    previous = path.read_bytes()

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_safetensors({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
