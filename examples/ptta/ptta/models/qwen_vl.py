"""Video input for Qwen2.5-VL without torchvision: frame sampling, resizing and patching.

transformers' Qwen2-VL video processor needs torchvision, which the CPU test environment lacks,
so this module does the same three steps with numpy and PIL:

1. frames at `fps` (2 by default) like `qwen_vl_utils.smart_nframes`: duration * fps rounded down
   to an even count, at least 4, picked with `linspace(0, n - 1, k).round()`;
2. one size for all frames like `qwen_vl_utils.fetch_video`: sides multiples of 28, the pixel count
   within [min_pixels, max_pixels] where max_pixels also shares a total budget across frames;
3. the Qwen2-VL patch layout: normalise, group `temporal_patch_size` frames, cut 14 x 14 patches in
   2 x 2 merge blocks -> `pixel_values_videos` (patches, C * 2 * 14 * 14) and `video_grid_thw`.

Step 3 is checked against transformers' Qwen2-VL image processor in the tests (a still image is
a two-frame video of the same picture). Also here, for the captioner and VideoScore2 alike: the
chat template a checkpoint folder saves, and the modality ids that make transformers give the
video tokens their 3-D (time, height, width) positions.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# qwen_vl_utils defaults (vision_process.py)
FRAME_FACTOR = 2
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIDEO_TOKEN_TYPE = 2  # transformers' modality ids: 0 text, 1 image, 2 video


def saved_chat_template(model_dir: Path) -> str | None:
    """The folder's processor chat template, in the order AutoProcessor reads it, or None.

    chat_template.jinja (read by the tokenizer too), then the older chat_template.json: both come
    before tokenizer_config.json's template, which in some checkpoints is a text-only one.
    """
    jinja, legacy = model_dir / "chat_template.jinja", model_dir / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text()
    if legacy.is_file():
        try:
            return json.loads(legacy.read_text())["chat_template"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{legacy}: not a chat template file ({error})") from None
    return None


def video_modality_ids(model, input_ids):
    """{"mm_token_type_ids": ...} for a Qwen2.5-VL forward or generate, where transformers takes them.

    From transformers 5.3 on, `get_rope_index` builds the 3-D positions only from these ids; without
    them every video token silently gets a plain text position. Earlier versions found the video
    tokens themselves and take no such argument ({} then).
    """
    if "mm_token_type_ids" not in inspect.signature(type(model.model).get_rope_index).parameters:
        return {}
    return {"mm_token_type_ids": (input_ids == model.config.video_token_id).int() * VIDEO_TOKEN_TYPE}


@dataclass(frozen=True)
class QwenVisionLayout:
    """Patch geometry of a Qwen2.5-VL vision tower (from the model config) and pixel normalisation."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


@dataclass(frozen=True)
class QwenVideoInput:
    pixel_values: np.ndarray  # (grid_t * grid_h * grid_w, C * temporal * patch * patch) float32
    grid_thw: tuple[int, int, int]
    frame_indices: list[int]

    def num_tokens(self, layout: QwenVisionLayout) -> int:
        """Video placeholder tokens the language model sees (patches after merge x merge pooling)."""
        t, h, w = self.grid_thw
        return t * h * w // layout.merge_size**2


def sample_frame_indices(total: int, video_fps: float, fps: float = 2.0) -> list[int]:
    """Frames at about `fps`: an even count >= 4 (never more than the clip has), evenly spread."""
    if total < FRAME_FACTOR:
        raise ValueError(f"Qwen2.5-VL needs at least {FRAME_FACTOR} frames, the video has {total}")
    min_frames = math.ceil(FPS_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    max_frames = math.floor(min(FPS_MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
    wanted = min(max(total / video_fps * fps, min_frames), max_frames, total)
    count = math.floor(wanted / FRAME_FACTOR) * FRAME_FACTOR
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Sides that are multiples of `factor`, close to the original aspect, pixels within the bounds."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {width}x{height} is beyond the 200:1 Qwen2.5-VL accepts")
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / beta / factor) * factor)
        new_w = max(factor, math.floor(width / beta / factor) * factor)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / factor) * factor
        new_w = math.ceil(width * beta / factor) * factor
    return new_h, new_w


def patchify(frames: np.ndarray, layout: QwenVisionLayout) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Normalised frames (T, C, H, W) float32 -> Qwen2-VL patches and (grid_t, grid_h, grid_w)."""
    if len(frames) % layout.temporal_patch_size:
        # Pad with the last frame to a whole temporal patch, as the Qwen2-VL processors do.
        pad = layout.temporal_patch_size - len(frames) % layout.temporal_patch_size
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    total, channels, height, width = frames.shape
    p, tp, m = layout.patch_size, layout.temporal_patch_size, layout.merge_size
    grid_t, grid_h, grid_w = total // tp, height // p, width // p
    patches = frames.reshape(grid_t, tp, channels, grid_h // m, m, p, grid_w // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(grid_t * grid_h * grid_w, channels * tp * p * p), (grid_t, grid_h, grid_w)


def qwen_video_input(frames: np.ndarray, video_fps: float, layout: QwenVisionLayout, fps: float = 2.0,
                     min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS,
                     total_pixels: int = VIDEO_TOTAL_PIXELS) -> QwenVideoInput:
    """Model-ready video input from decoded RGB frames (N, H, W, 3) uint8."""
    indices = sample_frame_indices(len(frames), video_fps, fps)
    height, width = frames.shape[1:3]
    frame_budget = max(min(max_pixels, total_pixels / len(indices) * FRAME_FACTOR), int(min_pixels * 1.05))
    new_h, new_w = smart_resize(height, width, layout.factor, min_pixels, frame_budget)
    mean = np.asarray(layout.mean, np.float32)[:, None, None]
    std = np.asarray(layout.std, np.float32)[:, None, None]
    resized = np.stack([
        np.asarray(Image.fromarray(frames[i]).resize((new_w, new_h), Image.BICUBIC), np.float32).transpose(2, 0, 1)
        for i in indices
    ])
    pixel_values, grid = patchify((resized / 255.0 - mean) / std, layout)
    return QwenVideoInput(pixel_values.astype(np.float32), grid, indices)
