"""`export_adapter`: a HydraLoRA adapter folder (or `ptta train` run folder) -> a LoRA file.

    from ptta.export.lora import export_adapter
    result = export_adapter("runs/ptta-hydra", "lora.safetensors", "original", heads="0,1,0,0")
    print(*result.report(), sep="\\n")

Per layer, B_eff = (alpha/r) * sum_i omega_i B_i with the adapter's own omega (learned or fixed
mixing) or the pinned `heads`; computed from the adapter's tensors alone. For `original` and
`kohya` the diffusers modules are renamed and fused into HunyuanVideo's original layout by
`ptta.models.hunyuan_video_lora`; a module with no place there is skipped and reported.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import hydralora
import torch
from hydralora.export import LoraExport, collapse_adapter, write_lora

from ptta.models.hunyuan_video import resolve_model_dir
from ptta.models.hunyuan_video_lora import HunyuanVideoKeyMap, needs_mlp_width
from ptta.models.text_encoders import TEXT_ENCODING_FILE
from ptta.rendering import ADAPTER_SUBDIR
from ptta.train.heads import parse_head_weights

# format -> (key style, HunyuanVideo original layout?, default file name)
FORMATS = {
    "diffusers": ("diffusers", False, "pytorch_lora_weights.safetensors"),
    "peft": ("peft", False, None),
    "original": ("diffusers", True, "lora_original.safetensors"),
    "kohya": ("kohya", True, "lora_kohya.safetensors"),
}
RUN_CONFIG_FILE = "config.yaml"


@dataclass
class AdapterExport:
    """What `export_adapter` did: the written file, its modules and ranks, the skipped modules."""

    format: str
    adapter_dir: Path
    written: LoraExport
    head_weights: list[float] | None
    notes: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        ranks = sorted(set(self.written.modules.values()))
        mixing = f"heads pinned to {self.head_weights}" if self.head_weights else "the adapter's own per-layer mixing"
        lines = [(f"wrote {self.written.path} ({self.format}): {len(self.written.modules)} LoRA modules, "
                  f"rank {'/'.join(map(str, ranks))}, scale folded into B, {mixing}")]
        lines += self.notes
        lines += [f"skipped {name}: {reason}" for name, reason in sorted(self.written.skipped.items())]
        if self.written.skipped:
            lines.append(f"{len(self.written.skipped)} adapter layer(s) skipped: the file does not hold them")
        return lines


def export_adapter(source: str | Path, out: str | Path, format: str, *, heads: str | list[float] | None = None,
                   model: str | Path | None = None, dtype: str = "float32") -> AdapterExport:
    """Write the adapter at `source` as a LoRA in `format` (diffusers, peft, original, kohya) at `out`."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}, got {format!r}")
    adapter_dir = _adapter_dir(Path(source))
    config = hydralora.HydraConfig.load(adapter_dir)
    head_weights = _head_weights(heads, config, adapter_dir)
    layers = collapse_adapter(adapter_dir, head_weights)
    style, original, default_name = FORMATS[format]
    out = Path(out)
    if default_name is not None and (out.is_dir() or not out.suffix):
        out = out / default_name
    notes = []
    key_map = None
    if original:
        mlp_width = None
        spec = model if model is not None else _recorded_model(adapter_dir)
        if spec is not None and (model is not None or needs_mlp_width(layers)):
            mlp_width = _mlp_width(spec, layers)
            notes.append(f"MLP width {mlp_width} read from the config of model {spec}")
        key_map = HunyuanVideoKeyMap(mlp_width)
    written = write_lora(layers, out, style, "transformer", key_map, getattr(torch, dtype))
    copied = _copy_text_encoding(adapter_dir, written.path.parent)
    if copied:
        notes.append(f"copied {TEXT_ENCODING_FILE} beside it (prompt length and fps for `ptta sample --lora`)")
    return AdapterExport(format, adapter_dir, written, head_weights, notes)


def _adapter_dir(path: Path) -> Path:
    for candidate in (path, path / ADAPTER_SUBDIR):
        if (candidate / "adapter_model.safetensors").is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such adapter or run folder")
    raise FileNotFoundError(f"{path}: no adapter_model.safetensors there or in {path / ADAPTER_SUBDIR}")


def _head_weights(heads, config, adapter_dir: Path) -> list[float] | None:
    n = config.num_heads
    if heads is None:
        if not config.per_layer_mixing:
            raise ValueError(f"{adapter_dir} mixes its {n} heads with a per-token router, which no LoRA file can "
                             f"hold: pin the mix with --heads, {n} weights (e.g. --heads "
                             f"{','.join(['1'] + ['0'] * (n - 1))})")
        return None
    weights = parse_head_weights(heads, n) if isinstance(heads, str) else [float(w) for w in heads]
    if len(weights) != n:
        raise ValueError(f"--heads: got {len(weights)} weights but the adapter has {n} heads")
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"--heads: weights must be finite numbers, got {weights}")
    return weights


def _recorded_model(adapter_dir: Path) -> str | None:
    """The `model` of the run's config.yaml when the adapter is a run's `adapter/` folder."""
    import yaml

    for folder in (adapter_dir, adapter_dir.parent):
        path = folder / RUN_CONFIG_FILE
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                return None
            return str(data["model"]) if isinstance(data, dict) and data.get("model") else None
    return None


def _mlp_width(spec: str | Path, layers) -> int:
    """hidden x mlp_ratio from the model's transformer/config.json (no weights are read)."""
    path = resolve_model_dir(spec) / "transformer" / "config.json"
    config = json.loads(path.read_text())
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    inputs = {pair[0].shape[1] for name, pair in layers.items() if name.endswith(("attn.to_q", "attn.add_q_proj"))}
    if inputs and inputs != {hidden}:
        raise ValueError(f"the adapter's attention layers read {sorted(inputs)} features but the model {spec} has "
                         f"hidden size {hidden}: give the model the adapter was trained on (--model)")
    return int(hidden * config.get("mlp_ratio", 4.0))


def _copy_text_encoding(adapter_dir: Path, folder: Path) -> bool:
    source, target = adapter_dir / TEXT_ENCODING_FILE, folder / TEXT_ENCODING_FILE
    if not source.is_file() or target.exists() or source.resolve() == target.resolve():
        return False
    shutil.copyfile(source, target)
    return True
