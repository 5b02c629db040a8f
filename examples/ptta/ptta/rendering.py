"""Rendering HunyuanVideo videos from prompt embeddings, with an adapter, a LoRA file or neither.

Shared by `ptta sample` (sample/generate.py) and training's validation samples
(train/validation.py), so neither stage imports the other. Defaults are HunyuanVideo's inference
settings: embedded guidance 6.0, flow shift 7.0, 50 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ptta.models.hunyuan_video import load_pipeline, resolve_vae_dtype
from ptta.torch_runtime import resolve_dtype

if TYPE_CHECKING:
    import numpy as np

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 6.0
DEFAULT_FLOW_SHIFT = 7.0
ADAPTER_SUBDIR = "adapter"


def load_sampling_pipeline(model_dir: Path, device, *, adapter=None, lora=None, head_weights=None, merge: bool = False,
                           flow_shift: float = DEFAULT_FLOW_SHIFT, vae_dtype: str = "auto", transformer=None):
    """Transformer and VAE on `device` (no text encoders: `render_video` takes embeddings), the
    adapter or LoRA applied (a file or PEFT folder in any `ptta export` format), the flow shift
    set. `transformer` replaces the model's own (validation passes the one being trained)."""
    import hydralora
    import torch

    components = {"text_encoder": None, "text_encoder_2": None, "tokenizer": None, "tokenizer_2": None}
    if transformer is not None:
        components["transformer"] = transformer
    pipe = load_pipeline(model_dir, resolve_dtype("auto", device), vae_dtype=resolve_vae_dtype(vae_dtype, device),
                         **components)
    set_flow_shift(pipe, flow_shift)
    # decoding 33+ frames at 448x800 in one piece needs tens of GB; small videos are not tiled
    pipe.vae.enable_tiling()
    if adapter is not None:
        hydralora.load_adapter(pipe.transformer, resolve_adapter_dir(adapter))
        if head_weights is not None:
            num_heads = hydralora.adapter_config(pipe.transformer).num_heads
            if len(head_weights) != num_heads:
                raise ValueError(f"head weights {list(head_weights)} have {len(head_weights)} entries; the adapter "
                                 f"at {adapter} has {num_heads} heads")
            hydralora.set_head_weights(pipe.transformer, torch.tensor(list(head_weights), dtype=torch.float32))
    elif lora is not None:
        from ptta.models.hunyuan_video_lora import check_lora_fits, read_lora_file

        lora = Path(lora)
        if not lora.exists():
            raise FileNotFoundError(f"--lora {lora}: no such file")
        # any export format (original and kohya layouts split back to diffusers modules); what cannot
        # be applied is an error, not a warning in a log
        lora_file = read_lora_file(lora)
        check_lora_fits(lora_file, pipe.transformer)
        pipe.load_lora_weights(lora_file.diffusers_state_dict("transformer"))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if merge:
        # on the device, so the fold is computed there; nothing ever unmerges, so no original
        # weights are kept (they would be a CPU copy of the whole transformer)
        hydralora.merge_adapter(pipe.transformer, keep_original=False)
    return pipe


def set_flow_shift(pipe, flow_shift: float) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=flow_shift)


def render_video(pipe, prompt_embeds, pooled, seed: int, steps: int, guidance: float, height: int, width: int,
                 frames: int) -> np.ndarray:
    """One video (frames, height, width, 3) uint8 from cached prompt embeddings (L, D) and pooled (P,)."""
    import numpy as np
    import torch

    device = pipe._execution_device
    mask = torch.ones((1, prompt_embeds.shape[0]), dtype=torch.long, device=device)
    output = pipe(
        prompt_embeds=prompt_embeds[None].to(device),
        pooled_prompt_embeds=pooled[None].to(device),
        prompt_attention_mask=mask,
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    )
    return (np.clip(output.frames[0], 0, 1) * 255).round().astype(np.uint8)


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter folder, or a training output folder holding one in `adapter/`."""
    path = Path(path)
    for candidate in (path, path / ADAPTER_SUBDIR):
        if (candidate / "adapter_model.safetensors").is_file():
            return candidate
    raise FileNotFoundError(f"--adapter {path}: no adapter_model.safetensors there or in {path / ADAPTER_SUBDIR}")
