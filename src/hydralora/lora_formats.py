"""LoRA files in the key formats other tools read, module names mapped by a pluggable key map, and back.

A LoRA here is `{module name: (A (r, k), B (d, r))}` with the scale already folded into B, so the
weight delta of a module is exactly `B @ A`. Three key styles are written and read:

- "diffusers": `<prefix>.<module>.lora_A.weight` / `.lora_B.weight` (no alpha: scale 1);
- "peft": `base_model.model.<module>.lora_*.weight` in a folder with a LoRA `adapter_config.json`;
- "kohya": `lora_unet_<module with . as _>.lora_down.weight` / `.lora_up.weight` / `.alpha`,
  written with alpha = rank (scale 1). Reading a flat name back needs the key map's `unflatten`.

A model whose checkpoint layout differs from its module layout (HunyuanVideo's original
checkpoints fuse q, k and v into one Linear) plugs in a key map: an object with
`to_file(layers) -> (file layers, {module: reason skipped})`,
`from_file(layers) -> (model layers, {file module: reason unmapped})` and
`unflatten(flat name) -> dotted name | None`. `FusedKeyMap` is one for fixed layouts.

Fusing is exact: modules whose outputs a fused Linear stacks, (A_i, B_i), become
A = cat(A_1, ..., A_n) (rank sum r_i) and B = block_diag(B_1, ..., B_n); a part without an adapter
gets d_i zero rows. Splitting takes B's rows per part and keeps the rank columns that are non-zero
in that part, so a fused file splits back into the very (A_i, B_i).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

LoraPair = tuple[torch.Tensor, torch.Tensor]
KEY_STYLES = ("diffusers", "peft", "kohya")
KOHYA_PREFIX = "lora_unet_"
PEFT_PREFIX = "base_model.model."
# prefixes other tools put before module names; read_lora strips the first one that matches
KNOWN_PREFIXES = (PEFT_PREFIX, "transformer.", "diffusion_model.", "unet.")
_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_down.weight": "A", ".lora_up.weight": "B",
             ".alpha": "alpha"}


class KeyMap(Protocol):
    def to_file(self, layers: Mapping[str, LoraPair]) -> tuple[dict[str, LoraPair], dict[str, str]]: ...

    def from_file(self, layers: Mapping[str, LoraPair]) -> tuple[dict[str, LoraPair], dict[str, str]]: ...

    def unflatten(self, flat: str) -> str | None: ...


# -- the math ------------------------------------------------------------------------------------


def fuse_lora(parts: Sequence[LoraPair | int]) -> LoraPair:
    """One LoRA for a Linear whose output rows stack `parts`: each (A_i, B_i), or d_i for a part
    without an adapter (d_i zero rows). A = cat(A_i), B = block_diag(B_i): B @ A stacks B_i @ A_i."""
    present = [part for part in parts if not isinstance(part, int)]
    if not present:
        raise ValueError("fuse_lora needs at least one (A, B) part")
    in_features = present[0][0].shape[1]
    dtype = torch.promote_types(present[0][0].dtype, present[0][1].dtype)
    for lora_a, lora_b in present:
        if lora_a.shape[1] != in_features or lora_b.shape[1] != lora_a.shape[0]:
            raise ValueError(f"parts to fuse must share the input width {in_features} and have B (d, r) for A (r, k); "
                             f"got A {tuple(lora_a.shape)}, B {tuple(lora_b.shape)}")
    rows = [part if isinstance(part, int) else part[1].shape[0] for part in parts]
    rank = sum(a.shape[0] for a, _ in present)
    lora_a = torch.cat([a.to(dtype) for a, _ in present])
    lora_b = torch.zeros(sum(rows), rank, dtype=dtype, device=lora_a.device)
    row = col = 0
    for part, size in zip(parts, rows):
        if not isinstance(part, int):
            r = part[0].shape[0]
            lora_b[row:row + size, col:col + r] = part[1].to(dtype)
            col += r
        row += size
    return lora_a, lora_b


def split_lora(lora_a: torch.Tensor, lora_b: torch.Tensor, sizes: Sequence[int]) -> list[LoraPair | None]:
    """Inverse of `fuse_lora`: B's rows split by `sizes`, each part keeping the rank columns that are
    non-zero in it (None for a part whose rows are all zero: no delta)."""
    if sum(sizes) != lora_b.shape[0]:
        raise ValueError(f"sizes {list(sizes)} add up to {sum(sizes)}, but B has {lora_b.shape[0]} rows")
    out: list[LoraPair | None] = []
    for rows in torch.split(lora_b, list(sizes)):
        used = (rows != 0).any(dim=0)
        out.append((lora_a[used].contiguous(), rows[:, used].contiguous()) if used.any() else None)
    return out


def swap_halves(lora_b: torch.Tensor) -> torch.Tensor:
    """B with its two halves of rows swapped ((shift, scale) <-> (scale, shift)); its own inverse."""
    first, second = lora_b.chunk(2, dim=0)
    return torch.cat([second, first]).contiguous()


# -- a key map for fixed layouts -------------------------------------------------------------------


@dataclass(frozen=True)
class FusedModule:
    """A Linear of the file's layout whose output stacks the model's `parts` (sizes rows each), in
    order; `swap_halves`: its output is the single part's with the two halves swapped."""

    name: str
    parts: tuple[str, ...]
    sizes: tuple[int, ...]
    swap_halves: bool = False

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.sizes) or not self.parts:
            raise ValueError(f"{self.name}: {len(self.parts)} parts but {len(self.sizes)} sizes")
        if self.swap_halves and len(self.parts) != 1:
            raise ValueError(f"{self.name}: swap_halves needs exactly one part")


class FusedKeyMap:
    """Maps the model's modules onto `modules` of the file's layout; `passthrough` names are the
    same in both. Anything else is skipped (writing) or unmapped (reading), with the reason."""

    def __init__(self, modules: Iterable[FusedModule], passthrough: Iterable[str] = ()) -> None:
        self._by_file = {module.name: module for module in modules}
        self.passthrough = set(passthrough)

    def to_file(self, layers: Mapping[str, LoraPair]) -> tuple[dict[str, LoraPair], dict[str, str]]:
        out, skipped, used = {}, {}, set()
        for module in self._by_file.values():
            if not any(part in layers for part in module.parts):
                continue
            pieces: list[LoraPair | int] = []
            for part, size in zip(module.parts, module.sizes):
                if part in layers:
                    if layers[part][1].shape[0] != size:
                        raise ValueError(f"{part} has {layers[part][1].shape[0]} output rows, but {module.name} "
                                         f"expects {size} there")
                    pieces.append(layers[part])
                    used.add(part)
                else:
                    pieces.append(size)
            lora_a, lora_b = fuse_lora(pieces)
            out[module.name] = (lora_a, swap_halves(lora_b) if module.swap_halves else lora_b)
        for name in layers:
            if name in used:
                continue
            if name in self.passthrough:
                out[name] = layers[name]
            else:
                skipped[name] = "no counterpart in the file's layout"
        return out, skipped

    def from_file(self, layers: Mapping[str, LoraPair]) -> tuple[dict[str, LoraPair], dict[str, str]]:
        out, unmapped = {}, {}
        for name, (lora_a, lora_b) in layers.items():
            module = self._by_file.get(name)
            if module is None:
                if name in self.passthrough:
                    out[name] = (lora_a, lora_b)
                else:
                    unmapped[name] = "no such module in the model's layout"
                continue
            if sum(module.sizes) != lora_b.shape[0]:
                unmapped[name] = f"B has {lora_b.shape[0]} rows, the layout expects {sum(module.sizes)}"
                continue
            if module.swap_halves:
                lora_b = swap_halves(lora_b)
            for part, piece in zip(module.parts, split_lora(lora_a, lora_b, module.sizes)):
                if piece is not None:
                    out[part] = piece
        return out, unmapped

    def unflatten(self, flat: str) -> str | None:
        names = {*self._by_file, *self.passthrough}
        return {name.replace(".", "_"): name for name in names}.get(flat)


# -- writing ---------------------------------------------------------------------------------------


def lora_state_dict(layers: Mapping[str, LoraPair], style: str = "diffusers", prefix: str = "transformer",
                    dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file in `style` (see the module docstring); `prefix` for "diffusers"."""
    if style not in KEY_STYLES:
        raise ValueError(f"LoRA key style must be one of {KEY_STYLES}, got {style!r}")

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu", dtype or tensor.dtype).contiguous()

    state = {}
    for name, (lora_a, lora_b) in sorted(layers.items()):
        if style == "kohya":
            stem = KOHYA_PREFIX + name.replace(".", "_")
            state[f"{stem}.lora_down.weight"] = cast(lora_a)
            state[f"{stem}.lora_up.weight"] = cast(lora_b)
            # alpha = rank: scale alpha/rank is 1, the scale is already in lora_up
            state[f"{stem}.alpha"] = torch.tensor(float(lora_a.shape[0]), dtype=torch.float32)
            continue
        stem = PEFT_PREFIX + name if style == "peft" else (f"{prefix}.{name}" if prefix else name)
        state[f"{stem}.lora_A.weight"] = cast(lora_a)
        state[f"{stem}.lora_B.weight"] = cast(lora_b)
    if style == "kohya":
        flat = [KOHYA_PREFIX + name.replace(".", "_") for name in layers]
        if len(set(flat)) != len(flat):
            raise ValueError("two modules have the same kohya name (their names differ only in '.' vs '_')")
    return state


def peft_config(layers: Mapping[str, LoraPair]) -> dict:
    """A LoRA adapter_config.json for `layers`: scale 1 everywhere (lora_alpha = r, per module too)."""
    ranks = {name: pair[0].shape[0] for name, pair in layers.items()}
    counts: dict[int, int] = {}
    for rank in ranks.values():
        counts[rank] = counts.get(rank, 0) + 1
    rank = max(sorted(counts), key=lambda r: counts[r]) if counts else 1
    pattern = {name: r for name, r in sorted(ranks.items()) if r != rank}
    return {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
            "target_modules": sorted(layers), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
            "init_lora_weights": True, "use_rslora": False, "use_dora": False, "task_type": None,
            "base_model_name_or_path": None}


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class LoraFile:
    """A LoRA read back: `layers` {module: (A, B)} with the scale folded into B, named as the key map
    maps them; `unmapped` {file key or module: why it could not be used}; `style` of the keys."""

    path: Path
    style: str
    layers: dict[str, LoraPair]
    unmapped: dict[str, str]

    def deltas(self) -> dict[str, torch.Tensor]:
        return {name: lora_b.float() @ lora_a.float() for name, (lora_a, lora_b) in self.layers.items()}

    def diffusers_state_dict(self, prefix: str = "transformer") -> dict[str, torch.Tensor]:
        return lora_state_dict(self.layers, "diffusers", prefix)


def read_lora(path: str | Path, key_map: KeyMap | None = None) -> LoraFile:
    """Read a LoRA file (or a PEFT folder) in any of the key styles, scale folded into B.

    Kohya names are made dotted by `key_map.unflatten`; with a key map, modules are then mapped by
    `key_map.from_file`. Nothing is dropped silently: tensors that are not LoRA weights, halves
    without their other half and modules the key map does not know are listed in `unmapped`.
    """
    path, config = _locate(Path(path))
    try:
        state = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    if metadata.get("adapter_type") == "hydralora" or any(key.endswith(".lora_A") for key in state):
        raise ValueError(f"{path} is a HydraLoRA adapter, not a LoRA: load it with hydralora.load_adapter")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unmapped: dict[str, str] = {}
    styles = set()
    for key, tensor in state.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            unmapped[key] = "not a LoRA weight (only lora_A/lora_B, lora_down/lora_up and alpha are read)"
            continue
        stem = key[: -len(suffix)]
        if stem.startswith(KOHYA_PREFIX):
            styles.add("kohya")
            flat = stem[len(KOHYA_PREFIX):]
            name = key_map.unflatten(flat) if key_map is not None else None
            if name is None:
                unmapped[key] = f"kohya name {flat!r} matches no module" + ("" if key_map else " (no key map given)")
                continue
        else:
            name = next((stem[len(p):] for p in KNOWN_PREFIXES if stem.startswith(p)), stem)
            styles.add("peft" if stem.startswith(PEFT_PREFIX) else "diffusers")
        group = groups.setdefault(name, {})
        if _SUFFIXES[suffix] in group:
            unmapped[key] = f"a second {_SUFFIXES[suffix]} tensor for module {name!r} (another prefix or key form)"
            continue
        group[_SUFFIXES[suffix]] = tensor
    layers = {}
    for name, group in sorted(groups.items()):
        if "A" not in group or "B" not in group:
            unmapped[name] = f"has {'lora_A/down' if 'A' in group else 'lora_B/up'} but not its other half"
            continue
        lora_a, lora_b = group["A"], group["B"]
        if lora_a.dim() != 2 or lora_b.dim() != 2 or lora_b.shape[1] != lora_a.shape[0]:
            unmapped[name] = f"A {tuple(lora_a.shape)} and B {tuple(lora_b.shape)} are not (r, k) and (d, r)"
            continue
        dtype = torch.float64 if lora_b.dtype == torch.float64 else torch.float32
        scale = _scale(name, lora_a.shape[0], group.get("alpha"), config)
        layers[name] = (lora_a.to(dtype), lora_b.to(dtype) * scale)
    if key_map is not None:
        layers, more = key_map.from_file(layers)
        unmapped.update(more)
    style = "peft" if config is not None else ("kohya" if "kohya" in styles else "diffusers")
    return LoraFile(path, style, layers, unmapped)


def _locate(path: Path) -> tuple[Path, dict | None]:
    """The weights file and, for a PEFT LoRA, its adapter_config.json."""
    if path.is_dir():
        for name in ("adapter_model.safetensors", "pytorch_lora_weights.safetensors"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no adapter_model.safetensors or pytorch_lora_weights.safetensors there")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    config_path = path.parent / "adapter_config.json"
    if path.name != "adapter_model.safetensors" or not config_path.is_file():
        return path, None
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if isinstance(config, dict) and "hydra_config" in config:
        raise ValueError(f"{path.parent} is a HydraLoRA adapter, not a LoRA: load it with hydralora.load_adapter")
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ValueError(f"{config_path} is not a PEFT LoRA config (peft_type is not 'LORA')")
    return path, config


def _scale(name: str, rank: int, alpha: torch.Tensor | None, config: dict | None) -> float:
    """alpha / rank from the file's alpha, else from a PEFT config (rank/alpha patterns, rsLoRA), else 1."""
    if alpha is not None:
        return float(alpha) / rank
    if config is None:
        return 1.0
    lora_alpha = _pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha", config.get("r", rank)))
    r = _pattern_value(config.get("rank_pattern"), name, config.get("r", rank))
    return float(lora_alpha) / (r ** 0.5 if config.get("use_rslora") else r)


def _pattern_value(pattern: dict | None, name: str, default):
    for key, value in (pattern or {}).items():
        if name == key or name.endswith("." + key):
            return value
    return default
