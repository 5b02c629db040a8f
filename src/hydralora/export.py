"""Collapse per-layer-mixed HydraLoRA adapters into standard rank-r LoRA files (diffusers, PEFT).

With omega fixed per layer, dW = (alpha/r) * (sum_i omega_i B_i) A = B_eff A exactly, so each
layer becomes a plain LoRA with the scale folded into B_eff; loaders then use alpha = r (scale 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from hydralora.injection import hydra_layers
from hydralora.io import adapter_config, save_safetensors
from hydralora.layer import HydraMergeError

EXPORT_FORMATS = ("diffusers", "peft")
DIFFUSERS_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def collapsed_lora_state(model: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A (r, k), B_eff (d, r))} for every adapter layer."""
    out = {}
    for name, layer in hydra_layers(model):
        try:
            lora_a, b_eff = layer.collapsed_lora()
        except HydraMergeError as exc:
            raise HydraMergeError(f"cannot export {name!r} as a LoRA: {exc}") from exc
        out[name] = (lora_a.to("cpu", dtype).contiguous(), b_eff.to("cpu", dtype).contiguous())
    return out


def export_lora(
    model: nn.Module,
    path: str | Path,
    format: str = "diffusers",
    prefix: str = "transformer",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the adapters as a rank-r LoRA and return the weights file.

    format="diffusers": one safetensors file with keys `<prefix>.<module>.lora_A.weight` /
    `.lora_B.weight`, for `pipe.load_lora_weights` (and ComfyUI). A directory `path` gets
    `pytorch_lora_weights.safetensors` inside it. format="peft": a directory with
    `adapter_model.safetensors` (`base_model.model.<module>.lora_*.weight`) and a LoRA
    `adapter_config.json` for `PeftModel.from_pretrained`. Router mixing cannot be collapsed.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    config = adapter_config(model)
    layers = collapsed_lora_state(model, dtype)
    path = Path(path)
    if format == "diffusers":
        file_path = path / DIFFUSERS_WEIGHTS_NAME if (path.is_dir() or not path.suffix) else path
        key_prefix = f"{prefix}." if prefix else ""
        file_path.parent.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, (lora_a, b_eff) in layers.items():
            state[f"{key_prefix}{name}.lora_A.weight"] = lora_a
            state[f"{key_prefix}{name}.lora_B.weight"] = b_eff
        save_safetensors(state, file_path, metadata={"format": "pt"})
        return file_path
    path.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, (lora_a, b_eff) in layers.items():
        state[f"base_model.model.{name}.lora_A.weight"] = lora_a
        state[f"base_model.model.{name}.lora_B.weight"] = b_eff
    file_path = path / "adapter_model.safetensors"
    save_safetensors(state, file_path, metadata={"format": "pt"})
    peft_config = {
        "peft_type": "LORA",
        "r": config.r,
        # the scale alpha/r is already folded into lora_B
        "lora_alpha": config.r,
        "target_modules": sorted(layers),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    (path / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
    return file_path
