"""Adapter-only save and strict load: `adapter_model.safetensors` + `adapter_config.json`, no pickle.

A failed load leaves the model as it was: the config and every tensor are checked against the
model before an adapter is injected or a value copied.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize_safetensors

from hydralora.config import CONFIG_NAME, HydraConfig
from hydralora.injection import HydraInjectionError, _target_slots, describe_targets, hydra_layers, inject
from hydralora.layer import HydraLinear

WEIGHTS_NAME = "adapter_model.safetensors"
# error messages name this many tensors of a longer list
NAMES_SHOWN = 3
# config fields that are not tensors: a mismatch would load cleanly and change the output
CONFIG_FIELDS_TO_MATCH = ("r", "alpha", "num_heads", "mixing", "router_input", "router_temperature")


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
        state.update(_adapter_tensors(name, layer))
    return state


def _adapter_tensors(name: str, layer: HydraLinear) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": tensor for key, tensor in layer.state_dict().items() if not key.startswith("base_layer.")}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Copy `state` into the model's adapters strictly; any mismatch names the tensors and `source`."""
    merged = [name for name, layer in hydra_layers(model) if layer.merged]
    if merged:
        raise AdapterLoadError(f"cannot load {source} into merged layers (e.g. {merged[:3]}): unmerge_adapter(model) first")
    expected = adapter_state_dict(model)
    _check_fits(state, {key: tuple(tensor.shape) for key, tensor in expected.items()}, source)
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key].to(device=target.device, dtype=target.dtype))


def _check_fits(state: dict[str, torch.Tensor], expected_shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise AdapterLoadError unless `state` holds exactly the expected keys, shapes, float dtypes and finite values."""
    if not state.keys() & expected_shapes.keys():
        raise AdapterLoadError(
            f"cannot load {source}: none of its {_summary(sorted(state))} belongs to an adapter of this model "
            f"({_summary(sorted(expected_shapes))}), so it was saved from another model"
        )
    problems = []
    missing = sorted(expected_shapes.keys() - state.keys())
    if missing:
        problems.append(f"missing {_summary(missing)}")
    extra = sorted(state.keys() - expected_shapes.keys())
    if extra:
        problems.append(f"extra {_summary(extra)} (the model has no adapter on their modules)")
    common = sorted(state.keys() & expected_shapes.keys())
    reshaped = [
        f"{key} {_shape(state[key].shape)} vs {_shape(expected_shapes[key])}"
        for key in common
        if tuple(state[key].shape) != expected_shapes[key]
    ]
    if reshaped:
        problems.append(f"file vs model shape differs in {_summary(reshaped)}")
    not_float = [f"{key} ({state[key].dtype})" for key in sorted(state) if not state[key].is_floating_point()]
    if not_float:
        problems.append(f"non-float dtype in {_summary(not_float)}")
    not_finite = [key for key in sorted(state) if state[key].is_floating_point() and not torch.isfinite(state[key]).all()]
    if not_finite:
        problems.append(f"NaN or infinite values in {_summary(not_finite)}")
    if problems:
        raise AdapterLoadError(f"cannot load {source}: " + "; ".join(problems))


def _summary(items: list[str]) -> str:
    """'2 tensors: a, b', or '24 tensors, e.g. a, b, c' for a long list."""
    count = f"{len(items)} tensor{'' if len(items) == 1 else 's'}"
    if len(items) <= NAMES_SHOWN:
        return f"{count}: {', '.join(items)}"
    return f"{count}, e.g. {', '.join(items[:NAMES_SHOWN])}"


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape) or "scalar"


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the adapter (tensors and config, with the library version) into `directory`."""
    from hydralora import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = adapter_config(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(model).items()}
    save_safetensors(state, directory / WEIGHTS_NAME, metadata={"format": "pt", "adapter_type": "hydralora"})
    modules = [name for name, _ in hydra_layers(model)]
    config.save(directory, adapter_type="hydralora", hydralora_version=__version__, modules=modules)
    return directory


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` to `path` atomically, with the mode the umask gives; identical input, identical bytes.

    Tensors must be contiguous and share no memory, as for `safetensors.torch.save_file`.
    """
    path = Path(path)
    serialized = serialize_safetensors(tensors, metadata=metadata)
    header_end = 8 + int.from_bytes(serialized[:8], "little")
    header = json.loads(serialized[8:header_end])
    # safetensors writes the metadata in hash order, which changes from run to run
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    # padded with spaces, as safetensors does, so the tensor data starts 8-byte aligned
    header_bytes += b" " * (-len(header_bytes) % 8)
    with _replaced_atomically(path) as handle:
        handle.write(len(header_bytes).to_bytes(8, "little"))
        handle.write(header_bytes)
        handle.write(memoryview(serialized)[header_end:])
    return path


@contextmanager
def _replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """A file whose content replaces `path` once the block ends without error, so a crash never
    leaves a half-written file. Created 0o666 like open() does, so the umask gives the final mode
    (tempfile's 0o600 would stay with the file after the rename)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    handle = os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load an adapter saved by `save_adapter`, injecting it first if the model has none.

    A model that already has adapters must have been made with the same r, alpha, heads, mixing,
    router input and router temperature. Nothing in the model changes unless the load succeeds.
    """
    directory = Path(directory)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no adapter weights at {weights_path}")
    config = HydraConfig.load(directory)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise AdapterLoadError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    if any(True for _ in hydra_layers(model)):
        current = adapter_config(model)
        for field in CONFIG_FIELDS_TO_MATCH:
            if getattr(current, field) != getattr(config, field):
                raise AdapterLoadError(
                    f"{directory / CONFIG_NAME}: {field}={getattr(config, field)!r} but the model's adapters have "
                    f"{field}={getattr(current, field)!r}"
                )
    else:
        expected_shapes = _shapes_after_inject(model, config)
        if not expected_shapes:
            raise AdapterLoadError(
                f"{directory / CONFIG_NAME}: the adapter was made for another model: its "
                f"{describe_targets(config)} match no nn.Linear of this {type(model).__name__}"
            )
        _check_fits(state, expected_shapes, str(weights_path))
        # raises before it changes anything when a target cannot take an adapter
        inject(model, config)
    load_adapter_state_dict(model, state, source=str(weights_path))
    return model


def _shapes_after_inject(model: nn.Module, config: HydraConfig) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the adapter tensors `inject(model, config)` would make, leaving the model alone.

    Each adapter is built around a meta-device Linear of the same size: the real class gives the
    names and shapes, and nothing is allocated.
    """
    targets = {id(child) for _, _, _, child in _target_slots(model, config) if isinstance(child, nn.Linear)}
    shapes = {}
    # a Linear held in several places is named, as hydra_layers will name its adapter, where named_modules meets it first
    for name, module in model.named_modules():
        if id(module) in targets:
            stand_in = HydraLinear(nn.Linear(module.in_features, module.out_features, bias=False, device="meta"), config)
            shapes.update({key: tuple(tensor.shape) for key, tensor in _adapter_tensors(name, stand_in).items()})
    return shapes
