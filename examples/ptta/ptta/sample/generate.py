"""Sampling HunyuanVideo with a trained adapter: `generate_videos`, shared by `ptta sample`, the
demo and the evaluation.

    from ptta.sample.generate import generate_videos
    paths = generate_videos(["anime girl reading books"], "out/", model="tiny", adapter="runs/x/adapter",
                            seeds=range(10), steps=50, height=448, width=800, frames=33)

Defaults are HunyuanVideo's inference settings: embedded guidance 6.0, flow shift 7.0, 50 steps.
Prompts are encoded first, with only the text encoders loaded, and truncated to the length the
adapter was trained with (its `text_encoding.json`, which also gives the default fps); the text
encoders are freed before the transformer and VAE are loaded, so the two never share the device.
The adapter or LoRA files are checked before anything loads, so a bad path fails at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ptta.models.hunyuan_video import check_frame_count, check_resolution, resolve_model_dir
from ptta.rendering import (
    DEFAULT_FLOW_SHIFT,
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    load_sampling_pipeline,
    render_video,
    resolve_adapter_dir,
)
from ptta.tables import jsonl_text, write_text_atomic
from ptta.torch_runtime import resolve_device
from ptta.train.heads import caption_head_weights, read_caption_heads

# HunyuanVideo's frame rate: used for adapters that record no training fps (and for the base model)
DEFAULT_FPS = 24.0
SAMPLES_INDEX_FILE = "samples.jsonl"


def generate_videos(
    prompts: Sequence[str],
    out_dir: str | Path,
    *,
    model: str | Path = "tiny",
    adapter: str | Path | None = None,
    lora: str | Path | None = None,
    head_weights: Sequence[float] | None = None,
    merge: bool = False,
    seeds: Iterable[int] = (0,),
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    flow_shift: float = DEFAULT_FLOW_SHIFT,
    height: int = 448,
    width: int = 800,
    frames: int = 33,
    fps: float | None = None,
    gif: bool = True,
    device: str | None = None,
    vae_dtype: str = "auto",
    max_sequence_length: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Generate one video per (prompt, seed) and return the mp4 paths, prompt-major.

    model: a diffusers HunyuanVideo directory or "tiny". adapter: a HydraLoRA adapter folder
    (or a `ptta train` output folder holding `adapter/`); lora: a LoRA file (or PEFT folder) in any
    `ptta export` format (`lora_diffusers.safetensors` from training, `ptta export` files, diffusion-pipe
    and musubi-tuner HunyuanVideo LoRAs); neither samples the base model. head_weights: one weight per
    head (e.g. [0.7, 0.3, 0, 0]) used in every layer instead of the adapter's mixing; without it, an
    adapter trained with caption heads (its caption_heads.json) gets each prompt's weights from the
    prompt's tag words, by the rule training used on captions. merge: fold
    the adapter into the base weights first (per-layer mixing, or with head_weights); bf16 rounding
    of the merged weights makes the videos drift from the unmerged adapter's. vae_dtype: "auto"
    (float16 on a GPU, float32 on a CPU) or a dtype name. max_sequence_length: Llama prompt tokens;
    None takes the value recorded beside the adapter or LoRA by training, else HunyuanVideo's 256.
    fps: of the written videos; None takes the training fps recorded there, else 24.
    Writes `<index>-<prompt words>-seed<seed>.mp4` (and .gif) plus `samples.jsonl` into out_dir.
    """
    from tqdm import tqdm

    from ptta.models.text_encoders import (
        DEFAULT_MAX_SEQUENCE_LENGTH,
        encode_prompts_alone,
        recorded_fps,
        recorded_max_sequence_length,
    )
    from ptta.video_io import write_gif, write_video

    prompts, seeds = list(prompts), list(seeds)
    _check_arguments(prompts, seeds, adapter, lora, head_weights, merge, steps, height, width, frames,
                     max_sequence_length, fps)
    trained_dir = _check_adapter_files(adapter, lora, head_weights)
    caption_heads = read_caption_heads(trained_dir) if adapter is not None and head_weights is None else None
    if caption_heads is not None and merge:
        raise ValueError(f"the adapter at {adapter} was trained with caption heads, so each prompt sets its own head "
                         f"weights; to merge, pin one mix with head weights (--heads w1,...,wN --merge)")
    model_dir = resolve_model_dir(model)
    device = resolve_device(device)
    if max_sequence_length is None:
        max_sequence_length = (trained_dir and recorded_max_sequence_length(trained_dir)) or DEFAULT_MAX_SEQUENCE_LENGTH
    if fps is None:
        fps = (trained_dir and recorded_fps(trained_dir)) or DEFAULT_FPS
    embeddings = encode_prompts_alone(model_dir, prompts, max_sequence_length, device)
    pipe = load_sampling_pipeline(model_dir, device, adapter=adapter, lora=lora, head_weights=head_weights,
                                  merge=merge, flow_shift=flow_shift, vae_dtype=vae_dtype)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, index = [], []
    bar = tqdm(total=len(prompts) * len(seeds), desc="sample", unit="video", disable=not progress)
    for i, (prompt, (prompt_embeds, pooled)) in enumerate(zip(prompts, embeddings)):
        weights, heads_from = _prompt_head_weights(pipe, prompt, head_weights, caption_heads)
        if caption_heads is not None:
            bar.write(f"[sample] prompt {i}: head weights {_rounded(weights)} from its words ({caption_heads[0]})")
        for seed in seeds:
            video = render_video(pipe, prompt_embeds, pooled, seed, steps, guidance, height, width, frames)
            stem = f"{i:03d}-{_slug(prompt)}-seed{seed}"
            path = write_video(out_dir / f"{stem}.mp4", video, fps)
            if gif:
                write_gif(out_dir / f"{stem}.gif", video, fps)
            paths.append(path)
            index.append({"prompt_index": i, "prompt": prompt, "seed": seed, "video": path.name,
                          "head_weights": weights, "heads_from": heads_from})
            bar.update()
    bar.close()
    write_text_atomic(out_dir / SAMPLES_INDEX_FILE, jsonl_text(index))
    return paths


def _prompt_head_weights(pipe, prompt: str, head_weights, caption_heads) -> tuple[list[float] | None, str | None]:
    """The head weights a prompt is sampled with and where they come from; sets them on the pipe
    when they come from the prompt's words (given weights were set once when the adapter loaded)."""
    if head_weights is not None:
        return [float(w) for w in head_weights], "--heads"
    if caption_heads is None:
        return None, None
    import torch

    import hydralora

    names, tags = caption_heads
    weights = caption_head_weights(prompt, names, tags)
    hydralora.set_head_weights(pipe.transformer, torch.tensor(weights, dtype=torch.float32))
    return weights, "prompt"


def _rounded(weights: list[float]) -> list[float]:
    return [round(w, 3) for w in weights]


def _check_adapter_files(adapter, lora, head_weights) -> Path | None:
    """The folder holding the adapter or LoRA (and training's text_encoding.json), None for the base
    model; checked from the files alone, so a bad path or head count fails before minutes of prompt
    encoding on a real model."""
    import hydralora

    if adapter is not None:
        folder = resolve_adapter_dir(adapter)
        if head_weights is not None:
            num_heads = hydralora.HydraConfig.load(folder).num_heads
            if len(head_weights) != num_heads:
                raise ValueError(f"head weights {list(head_weights)} have {len(head_weights)} entries; the adapter "
                                 f"at {adapter} has {num_heads} heads")
        return folder
    if lora is not None:
        from ptta.models.hunyuan_video_lora import read_lora_file

        lora = Path(lora)
        if not lora.exists():
            raise FileNotFoundError(f"--lora {lora}: no such file")
        read_lora_file(lora)
        return lora if lora.is_dir() else lora.parent
    return None


def _check_arguments(prompts, seeds, adapter, lora, head_weights, merge, steps, height, width, frames,
                     max_sequence_length, fps) -> None:
    if not prompts:
        raise ValueError("no prompts given")
    if not seeds:
        raise ValueError("no seeds given")
    if adapter is not None and lora is not None:
        raise ValueError("give either an adapter folder or an exported LoRA file, not both")
    if head_weights is not None and adapter is None:
        raise ValueError("head weights steer a HydraLoRA adapter: give --adapter too")
    if merge and adapter is None:
        raise ValueError("--merge folds a HydraLoRA adapter into the model: give --adapter too")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if max_sequence_length is not None and max_sequence_length < 1:
        raise ValueError(f"max sequence length must be >= 1, got {max_sequence_length}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    check_resolution(height, width)
    check_frame_count(frames)


def _slug(prompt: str, max_words: int = 6) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:max_words]
    return "-".join(words) or "prompt"
