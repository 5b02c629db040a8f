"""Collapse per-layer-mixed HydraLoRA adapters into standard LoRA files (diffusers, PEFT, kohya).

With omega fixed per layer, dW = (alpha/r) * (sum_i omega_i B_i) A = B_eff A exactly, so each
layer becomes a plain rank-r LoRA with the scale folded into B_eff; loaders then use scale 1
(no alpha, or alpha = rank). The collapse needs only the adapter's tensors and config: an adapter
folder exports without loading the model it was trained on. A key map (hydralora.lora_formats)
renames and fuses modules for a checkpoint layout that differs from the model's modules.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from hydralora.config import HydraConfig
from hydralora.injection import hydra_layers
from hydralora.io import WEIGHTS_NAME, AdapterLoadError, save_safetensors
from hydralora.layer import HydraMergeError
from hydralora.lora_formats import KeyMap, LoraPair, lora_state_dict, peft_config

EXPORT_FORMATS = ("diffusers", "peft", "kohya")
DIFFUSERS_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
KOHYA_WEIGHTS_NAME = "lora_kohya.safetensors"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"


@dataclass
class LoraExport:
    """What `write_lora` wrote: the weights file, {module in the file: rank}, {model module: why skipped}."""

    path: Path
    modules: dict[str, int]
    skipped: dict[str, str]


def collapsed_lora_state(model: nn.Module, dtype: torch.dtype = torch.float32,
                         head_weights: torch.Tensor | Sequence[float] | None = None) -> dict[str, LoraPair]:
    """{module name: (A (r, k), B_eff (d, r))} for every adapter layer; `head_weights` (N,) replaces omega."""
    omega = None if head_weights is None else torch.as_tensor(head_weights, dtype=torch.float64)
    out = {}
    for name, layer in hydra_layers(model):
        try:
            if omega is not None:
                _check_omega(omega, layer.num_heads)
            lora_a, b_eff = layer.collapsed_lora(omega)
        except HydraMergeError as exc:
            raise HydraMergeError(f"cannot export {name!r} as a LoRA: {exc}") from exc
        out[name] = (lora_a.to("cpu", dtype).contiguous(), b_eff.to("cpu", dtype).contiguous())
    return out


def collapse_adapter(directory: str | Path,
                     head_weights: torch.Tensor | Sequence[float] | None = None) -> dict[str, LoraPair]:
    """(A, B_eff) per module from an adapter folder written by `save_adapter`, without the model.

    omega is each layer's own (learned or fixed mixing) or `head_weights` (N,) for every layer; a
    router adapter needs `head_weights`. fp32, or fp64 for an fp64 adapter.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = HydraConfig.load(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no adapter weights at {weights}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise AdapterLoadError(f"{weights} is not a readable safetensors file: {exc}") from exc
    omega = None
    if head_weights is not None:
        omega = torch.as_tensor(head_weights, dtype=torch.float64)
        _check_omega(omega, config.num_heads)
    elif not config.per_layer_mixing:
        raise HydraMergeError(
            f"{directory} mixes its {config.num_heads} heads with a per-token router, which cannot be collapsed "
            f"into one LoRA: pin the head weights (one per head, e.g. {','.join(['0.25'] * config.num_heads)})")
    modules = sorted(key.removesuffix(".lora_A") for key in state if key.endswith(".lora_A"))
    if not modules:
        raise AdapterLoadError(f"{weights} holds no `<module>.lora_A` tensor: not a HydraLoRA adapter")
    out = {}
    for name in modules:
        lora_a, lora_b = state[name + ".lora_A"], state.get(name + ".lora_B")
        if lora_b is None or lora_a.dim() != 2 or lora_b.dim() != 3 or lora_a.shape[0] != config.r \
                or lora_b.shape[0] != config.num_heads or lora_b.shape[2] != config.r:
            raise AdapterLoadError(
                f"{weights}: {name} has lora_A {_shape(lora_a)} and lora_B {_shape(lora_b)}, not (r={config.r}, k) "
                f"and (N={config.num_heads}, d, r={config.r}) as adapter_config.json says")
        mix = omega if omega is not None else state.get(name + ".head_weights")
        if mix is None:
            raise AdapterLoadError(f"{weights}: {name} has no head_weights tensor, though the config mixes "
                                   f"{config.mixing!r}")
        dtype = torch.float64 if lora_b.dtype == torch.float64 else torch.float32
        b_eff = config.scale * torch.einsum("n,ndr->dr", mix.to(dtype), lora_b.to(dtype))
        out[name] = (lora_a.to(dtype).contiguous(), b_eff.contiguous())
    return out


def write_lora(layers: Mapping[str, LoraPair], path: str | Path, format: str = "diffusers",
               prefix: str = "transformer", key_map: KeyMap | None = None,
               dtype: torch.dtype = torch.float32) -> LoraExport:
    """Write collapsed `layers` as a LoRA file in `format`, renamed and fused by `key_map` if given.

    "diffusers": one file, `<prefix>.<module>.lora_A.weight` / `.lora_B.weight`; "kohya": one file,
    `lora_unet_<module with _>.lora_down.weight` / `.lora_up.weight` / `.alpha` (alpha = rank, so
    the scale is 1); for these a directory or a path without suffix gets a default file name.
    "peft": a directory with `adapter_model.safetensors` and a LoRA `adapter_config.json`.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    skipped: dict[str, str] = {}
    if key_map is not None:
        layers, skipped = key_map.to_file(layers)
    if not layers:
        raise ValueError("nothing to export: " + ("; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no layers"))
    path = Path(path)
    if format == "peft":
        path.mkdir(parents=True, exist_ok=True)
        file_path = path / PEFT_WEIGHTS_NAME
    else:
        default_name = DIFFUSERS_WEIGHTS_NAME if format == "diffusers" else KOHYA_WEIGHTS_NAME
        file_path = path / default_name if (path.is_dir() or not path.suffix) else path
        file_path.parent.mkdir(parents=True, exist_ok=True)
    state = lora_state_dict(layers, format, prefix, dtype)
    bad = [name for name, (a, b) in layers.items() if not (torch.isfinite(a).all() and torch.isfinite(b).all())]
    if bad:
        raise ValueError(f"NaN or infinite values in {sorted(bad)[:3]} ({len(bad)} modules): nothing written")
    save_safetensors(state, file_path, metadata={"format": "pt"})
    if format == "peft":
        (path / "adapter_config.json").write_text(json.dumps(peft_config(layers), indent=2))
    return LoraExport(file_path, {name: pair[0].shape[0] for name, pair in sorted(layers.items())}, skipped)


def export_lora(
    model: nn.Module | str | Path,
    path: str | Path,
    format: str = "diffusers",
    prefix: str = "transformer",
    dtype: torch.dtype = torch.float32,
    *,
    key_map: KeyMap | None = None,
    head_weights: torch.Tensor | Sequence[float] | None = None,
) -> Path:
    """Write the adapters of `model` (or of an adapter folder) as a LoRA and return the weights file.

    format: "diffusers" (for `pipe.load_lora_weights`; a directory `path` gets
    `pytorch_lora_weights.safetensors`), "peft" (a folder for `PeftModel.from_pretrained`) or
    "kohya" (`lora_unet_*` keys with alpha = rank). key_map: renames/fuses modules into another
    checkpoint layout (hydralora.lora_formats); modules it cannot place are skipped with a
    warning naming them. head_weights (N,): the omega of every layer (needed for a router).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    if isinstance(model, (str, Path)):
        layers = collapse_adapter(model, head_weights)
    else:
        layers = collapsed_lora_state(model, torch.float32, head_weights)
    result = write_lora(layers, path, format, prefix, key_map, dtype)
    if result.skipped:
        listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(result.skipped.items()))
        warnings.warn(f"export_lora skipped {len(result.skipped)} module(s) the key map cannot place: {listed}",
                      stacklevel=2)
    return result.path


def _check_omega(omega: torch.Tensor, num_heads: int) -> None:
    if omega.dim() != 1 or omega.shape[0] != num_heads:
        raise ValueError(f"head weights need one entry per head ({num_heads}), got shape {tuple(omega.shape)}")
    if not all(math.isfinite(float(w)) for w in omega):
        raise ValueError(f"head weights must be finite, got {omega.tolist()}")


def _shape(tensor: torch.Tensor | None) -> str:
    return "missing" if tensor is None else str(tuple(tensor.shape))
