"""Adapter-only save and strict load: `adapter_model.safetensors` + `adapter_config.json`, no pickle."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hydralora.config import CONFIG_NAME, HydraConfig
from hydralora.injection import HydraInjectionError, hydra_layers, inject

WEIGHTS_NAME = "adapter_model.safetensors"


class AdapterLoadError(ValueError):
    """An adapter file does not fit the model: missing, extra or mis-shaped tensors, or a bad file."""


def adapter_config(model: nn.Module) -> HydraConfig:
    """The HydraConfig the model's adapters were made with."""
    for _, layer in hydra_layers(model):
        return layer.config
    raise HydraInjectionError("the model has no HydraLoRA adapters")


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors only, keyed `<module name>.<lora_A|lora_B|router.weight|head_weights>`."""
    state = {}
    for name, layer in hydra_layers(model):
        for key, tensor in layer.state_dict().items():
            if not key.startswith("base_layer."):
                state[f"{name}.{key}"] = tensor
    return state


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Copy `state` into the model's adapters strictly; any mismatch names the module and `source`."""
    merged = [name for name, layer in hydra_layers(model) if layer.merged]
    if merged:
        raise AdapterLoadError(f"cannot load {source} into merged layers (e.g. {merged[:3]}): unmerge_adapter(model) first")
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s) (modules the model has no adapter for), e.g. {extra[:5]}")
    for key in sorted(set(expected) & set(state)):
        if tuple(state[key].shape) != tuple(expected[key].shape):
            problems.append(f"{key}: shape {tuple(state[key].shape)} in {source}, {tuple(expected[key].shape)} in the model")
    if problems:
        raise AdapterLoadError(f"adapter from {source} does not fit the model: " + "; ".join(problems))
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key].to(device=target.device, dtype=target.dtype))


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the adapter (tensors and config, with the library version) into `directory`."""
    from hydralora import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = adapter_config(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(model).items()}
    # write to a temporary name first so a crash never leaves a half-written adapter behind
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as handle:
        tmp_path = handle.name
    try:
        save_file(state, tmp_path, metadata={"format": "pt", "adapter_type": "hydralora"})
        os.replace(tmp_path, directory / WEIGHTS_NAME)
    except BaseException:
        Path(tmp_path).unlink(missing_ok=True)
        raise
    modules = [name for name, _ in hydra_layers(model)]
    config.save(directory, adapter_type="hydralora", hydralora_version=__version__, modules=modules)
    return directory


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load an adapter saved by `save_adapter`, injecting it first if the model has none.

    A model that already has adapters must have been made with the same r, alpha, heads, mixing,
    router input and router temperature.
    """
    directory = Path(directory)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no adapter weights at {weights_path}")
    config = HydraConfig.load(directory)
    if any(True for _ in hydra_layers(model)):
        current = adapter_config(model)
        # alpha and the temperature are not tensors: a mismatch would load cleanly and change the output
        for field in ("r", "alpha", "num_heads", "mixing", "router_input", "router_temperature"):
            if getattr(current, field) != getattr(config, field):
                raise AdapterLoadError(
                    f"{directory / CONFIG_NAME}: {field}={getattr(config, field)!r} but the model's adapters have "
                    f"{field}={getattr(current, field)!r}"
                )
    else:
        inject(model, config)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise AdapterLoadError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    load_adapter_state_dict(model, state, source=str(weights_path))
    return model
