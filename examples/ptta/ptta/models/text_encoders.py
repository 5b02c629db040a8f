"""Prompt embeddings as HunyuanVideo computes them, trimmed to the prompt's own tokens.

`HunyuanVideoPipeline.encode_prompt` applies the chat template, runs Llama and keeps
hidden_states[-3] after `crop_start` (right-padded, with a mask), plus CLIP-L's pooled output.
Trimming the padding makes caches small; `pad_prompt_batch` pads again for a batch.

The prompt length limit and frame rate an adapter was trained with are recorded beside its weights
(`text_encoding.json`), so sampling truncates prompts exactly as the cache did and writes videos at
the rate the adapter learned motion at.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ptta.models.hunyuan_video import load_pipeline, prompt_template, text_encoder_dtype

TEXT_ENCODING_FILE = "text_encoding.json"
# HunyuanVideo's own limit: used for adapters that record none (and for the base model)
DEFAULT_MAX_SEQUENCE_LENGTH = 256


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], template: dict, max_sequence_length: int, device,
                   batch_size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(prompt_embeds (L_i, D), pooled (P,))] per prompt, on the CPU in fp32."""
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        embeds, pooled, mask = pipe.encode_prompt(
            prompt=chunk, prompt_template=template, device=device, max_sequence_length=max_sequence_length
        )
        lengths = mask.sum(dim=1).tolist()
        for i, length in enumerate(lengths):
            # right padding: the first `length` tokens are the prompt; keep at least one token
            keep = max(1, int(length))
            out.append((embeds[i, :keep].float().cpu(), pooled[i].float().cpu()))
    return out


def encode_prompts_alone(model_dir: Path, prompts: list[str], max_sequence_length: int,
                         device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`encode_prompts` with only the text encoders loaded, freed again before returning, so the
    8B Llama never sits in memory beside the transformer."""

    pipe = load_pipeline(model_dir, text_encoder_dtype(device), transformer=None, vae=None).to(device)
    embeddings = encode_prompts(pipe, prompts, prompt_template(model_dir), max_sequence_length, device)
    del pipe
    return embeddings


def pad_prompt_batch(embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L_i, D) embeddings to (B, L_max, D) with a (B, L_max) mask, as the pipeline does."""
    longest = max(e.shape[0] for e in embeds)
    batch = embeds[0].new_zeros((len(embeds), longest, embeds[0].shape[1]))
    mask = torch.zeros((len(embeds), longest), dtype=torch.long)
    for i, e in enumerate(embeds):
        batch[i, :e.shape[0]] = e
        mask[i, :e.shape[0]] = 1
    return batch, mask


def write_text_encoding(directory: Path, max_sequence_length: int, fps: float) -> None:
    """Record beside an adapter (or exported LoRA) the prompt length limit and frame rate it was trained with."""
    record = {"max_sequence_length": max_sequence_length, "fps": fps}
    (Path(directory) / TEXT_ENCODING_FILE).write_text(json.dumps(record))


def recorded_max_sequence_length(directory: Path) -> int | None:
    """The limit `write_text_encoding` recorded in `directory`; None if it holds no record."""
    path = Path(directory) / TEXT_ENCODING_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())["max_sequence_length"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: expected {{\"max_sequence_length\": N}}: {exc}") from exc
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path}: max_sequence_length must be a positive integer, got {value!r}")
    return value


def recorded_fps(directory: Path) -> float | None:
    """The frame rate `write_text_encoding` recorded in `directory`; None if it holds no record
    (or one written before training recorded it)."""
    path = Path(directory) / TEXT_ENCODING_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("fps")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{path}: expected {{\"max_sequence_length\": N, \"fps\": F}}: {exc}") from exc
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{path}: fps must be a positive number, got {value!r}")
    return float(value)
