"""HunyuanVideo's LoRA key map: diffusers module names <-> the original checkpoint layout.

The original HunyuanVideo code (and ComfyUI, diffusion-pipe, musubi-tuner, which use it) fuses
modules that diffusers keeps apart: q, k and v of each attention into one `*_attn_qkv` Linear, and
in a single-stream block q, k, v and the MLP input into `linear1` (rows q, k, v, mlp). The final
layer's modulation `final_layer.adaLN_modulation.1` is diffusers' `norm_out.linear` with its
(shift, scale) halves swapped. Everything else is a rename. The tables below are the inverse of
diffusers' own conversion (`convert_hunyuan_video_transformer_to_diffusers`), which
tests/ptta/test_export.py runs on the tiny model to check them.

`HunyuanVideoKeyMap` plugs into hydralora.lora_formats: `to_file` fuses exactly (concatenated A,
block-diagonal B, zero rows for a part without an adapter), `from_file` splits, and diffusers names
in a file pass through unchanged, so one reader takes both layouts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pathlib import Path

from hydralora.lora_formats import FusedKeyMap, FusedModule, LoraFile, LoraPair, read_lora

# original name (after the block prefix) -> the diffusers modules whose outputs it stacks, in order
DOUBLE_BLOCK = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn_proj": ("attn.to_out.0",),
    "txt_attn_proj": ("attn.to_add_out",),
    "img_mod.linear": ("norm1.linear",),
    "txt_mod.linear": ("norm1_context.linear",),
    "img_mlp.fc1": ("ff.net.0.proj",),
    "img_mlp.fc2": ("ff.net.2",),
    "txt_mlp.fc1": ("ff_context.net.0.proj",),
    "txt_mlp.fc2": ("ff_context.net.2",),
}
SINGLE_BLOCK = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.linear": ("norm.linear",),
}
REFINER_BLOCK = {
    "self_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "self_attn_proj": ("attn.to_out.0",),
    "mlp.fc1": ("ff.net.0.proj",),
    "mlp.fc2": ("ff.net.2",),
    "adaLN_modulation.1": ("norm_out.linear",),
}
# block prefix: original -> diffusers, with the table of its modules
BLOCKS = {
    "double_blocks": ("transformer_blocks", DOUBLE_BLOCK),
    "single_blocks": ("single_transformer_blocks", SINGLE_BLOCK),
    "txt_in.individual_token_refiner.blocks": ("context_embedder.token_refiner.refiner_blocks", REFINER_BLOCK),
}
TOP_LEVEL = {
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
    "time_in.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "guidance_in.mlp.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_text_embed.guidance_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
}
SWAPPED_HALVES = {"final_layer.adaLN_modulation.1"}
# parts whose width is the MLP's, not the hidden size
MLP_PARTS = {"proj_mlp"}
_PREFIXES = [prefix for original, (diffusers, _) in BLOCKS.items() for prefix in (original, diffusers)]
_BLOCK_NAME = re.compile(rf"^(?P<prefix>{'|'.join(map(re.escape, _PREFIXES))})\.(?P<index>\d+)\.(?P<rest>.+)$")


def original_names(model_name: str) -> tuple[str, int, int] | None:
    """(original module, index of this part, number of parts) for a diffusers module name, or None."""
    for original, diffusers in TOP_LEVEL.items():
        if model_name == diffusers:
            return original, 0, 1
    match = _BLOCK_NAME.match(model_name)
    if match:
        for original_prefix, (diffusers_prefix, table) in BLOCKS.items():
            if match["prefix"] != diffusers_prefix:
                continue
            for original, parts in table.items():
                if match["rest"] in parts:
                    return f"{original_prefix}.{match['index']}.{original}", parts.index(match["rest"]), len(parts)
    return None


def diffusers_parts(original: str) -> tuple[str, ...] | None:
    """The diffusers modules an original module stacks, in order, or None for an unknown name."""
    if original in TOP_LEVEL:
        return (TOP_LEVEL[original],)
    match = _BLOCK_NAME.match(original)
    if match and match["prefix"] in BLOCKS:
        diffusers_prefix, table = BLOCKS[match["prefix"]]
        parts = table.get(match["rest"])
        if parts is not None:
            return tuple(f"{diffusers_prefix}.{match['index']}.{part}" for part in parts)
    return None


def is_diffusers_linear(name: str) -> bool:
    return original_names(name) is not None


class HunyuanVideoKeyMap:
    """hydralora key map between diffusers HunyuanVideo modules and the original layout.

    mlp_width: the MLP's hidden width (hidden size x mlp_ratio), needed only to write a `linear1`
    whose proj_mlp has no adapter when the adapter has no other layer that shows the width.
    """

    def __init__(self, mlp_width: int | None = None) -> None:
        self.mlp_width = mlp_width

    def to_file(self, layers: Mapping[str, LoraPair]) -> tuple[dict[str, LoraPair], dict[str, str]]:
        mlp = self.mlp_width or _mlp_width_from(layers)
        groups: dict[str, list[str]] = {}
        skipped = {}
        for name in layers:
            found = original_names(name)
            if found is None:
                skipped[name] = "no counterpart in HunyuanVideo's original layout"
            else:
                groups.setdefault(found[0], []).append(name)
        modules = []
        for original, adapted in groups.items():
            parts = diffusers_parts(original)
            # every part of a fused group reads the hidden state; q, k and v are as wide as it
            hidden = layers[adapted[0]][0].shape[1]
            sizes = [layers[part][1].shape[0] if part in layers
                     else (mlp if part.rsplit(".", 1)[-1] in MLP_PARTS else hidden) for part in parts]
            if None in sizes:
                for name in adapted:
                    skipped[name] = (f"{original} also holds proj_mlp, which has no adapter, and the MLP width is "
                                     f"unknown (give the model, or adapt an MLP layer)")
                continue
            modules.append(FusedModule(original, parts, tuple(sizes), swap_halves=original in SWAPPED_HALVES))
        out, more = FusedKeyMap(modules).to_file({k: v for k, v in layers.items() if k not in skipped})
        skipped.update(more)
        return out, skipped

    def from_file(self, layers: Mapping[str, LoraPair]) -> tuple[dict[str, LoraPair], dict[str, str]]:
        modules, passthrough, unmapped = [], [], {}
        for name, (lora_a, lora_b) in layers.items():
            parts = diffusers_parts(name)
            if parts is None:
                if is_diffusers_linear(name):
                    passthrough.append(name)
                else:
                    unmapped[name] = "no such Linear in HunyuanVideo (original or diffusers layout)"
                continue
            rows = lora_b.shape[0]
            if len(parts) == 4:
                # linear1 takes the hidden state: q, k, v are as wide as its input, the MLP the rest
                hidden = lora_a.shape[1]
                sizes = (hidden, hidden, hidden, rows - 3 * hidden)
            else:
                sizes = (rows // len(parts),) * len(parts)
            if min(sizes) <= 0 or sum(sizes) != rows:
                unmapped[name] = f"B has {rows} rows, which do not split into {len(parts)} parts {parts}"
                continue
            modules.append(FusedModule(name, parts, sizes, swap_halves=name in SWAPPED_HALVES))
        out, more = FusedKeyMap(modules, passthrough).from_file({k: v for k, v in layers.items() if k not in unmapped})
        unmapped.update(more)
        clashes = sorted(set(passthrough) & {p for m in modules for p in m.parts})
        if clashes:
            raise ValueError(f"the file holds {clashes[0]} both under its diffusers name and inside a fused "
                             f"original module ({len(clashes)} such modules)")
        return out, unmapped

    def unflatten(self, flat: str) -> str | None:
        """A kohya name (dots as underscores) in either layout back to its dotted module name."""
        for name in (*TOP_LEVEL, *TOP_LEVEL.values()):
            if name.replace(".", "_") == flat:
                return name
        for original_prefix, (diffusers_prefix, table) in BLOCKS.items():
            for prefix, names in ((original_prefix, table), (diffusers_prefix, {p for ps in table.values() for p in ps})):
                match = re.fullmatch(re.escape(prefix.replace(".", "_")) + r"_(\d+)_(.+)", flat)
                if match:
                    for name in names:
                        if name.replace(".", "_") == match[2]:
                            return f"{prefix}.{match[1]}.{name}"
        return None


def _mlp_width_from(layers: Mapping[str, LoraPair]) -> int | None:
    """The MLP width shown by any adapted MLP layer of a block (HunyuanVideo uses one mlp_ratio)."""
    for name, (lora_a, lora_b) in layers.items():
        rest = _BLOCK_NAME.match(name)
        if rest is None or rest["prefix"] not in ("transformer_blocks", "single_transformer_blocks"):
            continue
        if rest["rest"] in ("ff.net.0.proj", "ff_context.net.0.proj", "proj_mlp"):
            return lora_b.shape[0]
        if rest["rest"] in ("ff.net.2", "ff_context.net.2"):
            return lora_a.shape[1]
        if rest["rest"] == "proj_out":
            return lora_a.shape[1] - lora_b.shape[0]
    return None


def needs_mlp_width(layers: Mapping[str, LoraPair]) -> bool:
    """True when writing the original layout needs the MLP width from the model's config: a single
    block's q, k or v is adapted but its proj_mlp is not, and no adapted layer shows the width."""
    if _mlp_width_from(layers) is not None:
        return False
    for name in layers:
        found = original_names(name)
        if found is not None and found[2] == 4 and not any(p in layers for p in diffusers_parts(found[0])
                                                           if p.endswith("proj_mlp")):
            return True
    return False


def read_lora_file(path: str | Path) -> LoraFile:
    """A LoRA in any of ptta's export formats (diffusers, peft, original, kohya), or as diffusion-pipe
    or musubi-tuner save it, as diffusers-named (A, B) per module with the scale folded into B.
    ValueError naming every tensor that cannot be used: nothing is dropped silently."""
    lora = read_lora(path, HunyuanVideoKeyMap())
    if lora.unmapped:
        listed = "; ".join(f"{key}: {why}" for key, why in sorted(lora.unmapped.items())[:5])
        more = f" (and {len(lora.unmapped) - 5} more)" if len(lora.unmapped) > 5 else ""
        raise ValueError(f"{lora.path}: {len(lora.unmapped)} tensor(s) or module(s) cannot be applied to "
                         f"HunyuanVideo: {listed}{more}")
    if not lora.layers:
        raise ValueError(f"{lora.path} holds no LoRA weights")
    return lora


def check_lora_fits(lora: LoraFile, transformer) -> None:
    """ValueError unless every module of `lora` is a Linear of `transformer` of the same shape."""
    import torch

    modules = dict(transformer.named_modules())
    problems = []
    for name, (lora_a, lora_b) in sorted(lora.layers.items()):
        module = modules.get(name)
        if not isinstance(module, torch.nn.Linear):
            problems.append(f"{name}: no such Linear in the transformer")
        elif (lora_b.shape[0], lora_a.shape[1]) != (module.out_features, module.in_features):
            problems.append(f"{name}: the LoRA is {lora_b.shape[0]}x{lora_a.shape[1]}, the Linear "
                            f"{module.out_features}x{module.in_features}")
    if problems:
        raise ValueError(f"{lora.path} does not fit this HunyuanVideo ({len(problems)} module(s)): "
                         + "; ".join(problems[:5]))
