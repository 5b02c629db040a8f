"""Validation samples during training: the training transformer renders the config's prompts.

The prompts are encoded once (text encoders are loaded, used and dropped again, so they do not sit
in memory beside the transformer); each validation loads only the small VAE next to it.
Videos go to OUT/validation/step-000100/<index>-seed<seed>.mp4 and .gif.
"""

from __future__ import annotations

from pathlib import Path

from ptta.config import TrainConfig
from ptta.rendering import load_sampling_pipeline, render_video

VALIDATION_DIR = "validation"


def encode_validation_prompts(config: TrainConfig, model_dir: Path, device) -> list:
    from ptta.models.text_encoders import encode_prompts_alone

    return encode_prompts_alone(model_dir, config.validation.prompts, config.data.max_sequence_length, device)


def render_validation(config: TrainConfig, model_dir: Path, transformer, embeddings: list, step: int, device) -> list[Path]:
    import torch

    from ptta.video_io import write_gif, write_video

    v = config.validation
    pipe = load_sampling_pipeline(model_dir, device, flow_shift=v.flow_shift, vae_dtype=config.vae_dtype,
                                  transformer=transformer)
    out_dir = config.output_path / VALIDATION_DIR / f"step-{step:06d}"
    paths = []
    with torch.no_grad():
        for i, (prompt_embeds, pooled) in enumerate(embeddings):
            video = render_video(pipe, prompt_embeds, pooled, v.seed, v.steps, v.guidance, v.height, v.width, v.frames)
            paths.append(write_video(out_dir / f"{i:03d}-seed{v.seed}.mp4", video, fps=config.data.fps))
            write_gif(out_dir / f"{i:03d}-seed{v.seed}.gif", video, fps=config.data.fps)
    return paths
