"""Captioners: a selected clip in, a tag-style caption out (or None when there is none).

* `QwenCaptioner` runs Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) from a local directory on
  each clip as a video at 2 fps, batched over clips. The video input is built as qwen-vl-utils
  builds it, with numpy and PIL (`ptta.models.qwen_vl`): transformers' video
  processor needs torchvision, which the curation stage does not otherwise need.
* `SidecarCaptioner` reads captions written by someone else: a CSV or JSONL file with a `caption`
  column keyed by clip `id` or by source video (`source`, absolute or relative to the file, or
  just the file name), or else a `<video stem>.txt` next to each source video.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ptta.curate.clip_source import ClipAddress, ClipSourceError, SourceClipReader, clip_rgb
from ptta.models.qwen_vl import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    QwenVisionLayout,
    patchify,
    saved_chat_template,
    smart_resize,
    video_modality_ids,
)
from ptta.tables import read_table

# The paper's captions are comma-separated tags (Fig. 2: "anime girl, reading books, desk, gentle
# action, soft gaze, solo, full body, anime style"); the prompt asks for exactly that shape.
TAG_PROMPT = (
    "This video is one animation clip. Describe it as a single line of comma-separated tags, in this "
    "order: the subjects (for example 'anime girl', 'solo'), what they do, the setting and objects, the "
    "kind of motion (for example 'gentle action', 'fast action', 'camera pan'), expressions, the framing "
    "(for example 'close-up', 'full body') and the art style. Example: anime girl, reading books, desk, "
    "gentle action, soft gaze, solo, full body, anime style. Answer with the tags only."
)


@dataclass(frozen=True)
class ClipToCaption:
    clip_id: str
    source: Path  # the source video
    clip_path: Path | None  # the written clip, if written
    address: ClipAddress | None = None  # else its frames in the source


class Captioner(Protocol):
    name: str

    def caption(self, clips: list[ClipToCaption]) -> list[str | None]:
        """One caption per clip, None where none could be made."""


def clean_tags(text: str) -> str:
    """One line of tags: no surrounding quotes, labels or repeated separators."""
    text = re.sub(r"^\s*(tags|caption)\s*:\s*", "", text.strip(), flags=re.IGNORECASE)
    text = text.strip().strip("\"'`").replace("\n", ", ")
    tags = [tag.strip(" .") for tag in text.split(",")]
    return ", ".join(tag for tag in tags if tag)


class SidecarCaptioner:
    name = "sidecar"

    def __init__(self, caption_file: str | Path | None = None):
        self._by_key: dict[str, str] = {}
        if caption_file is not None:
            self._load(Path(caption_file))

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"--caption-file {path}: no such file")
        rows = read_table(path, label=f"--caption-file {path}")
        for number, (_, row) in enumerate(rows, 1):
            if not row.get("caption") or not (row.get("id") or row.get("source")):
                raise ValueError(f"--caption-file {path}: row {number} needs 'caption' and 'id' or 'source'")
            if row.get("id"):
                self._by_key[f"id:{row['id']}"] = row["caption"]
            if row.get("source"):
                source = Path(row["source"])
                absolute = source if source.is_absolute() else path.parent / source
                self._by_key[f"path:{absolute.resolve()}"] = row["caption"]
                self._by_key[f"name:{source.name}"] = row["caption"]

    def caption(self, clips: list[ClipToCaption]) -> list[str | None]:
        return [self._caption_one(clip) for clip in clips]

    def _caption_one(self, clip: ClipToCaption) -> str | None:
        for key in (f"id:{clip.clip_id}", f"path:{clip.source.resolve()}", f"name:{clip.source.name}"):
            if key in self._by_key:
                return clean_tags(self._by_key[key])
        beside = clip.source.with_suffix(".txt")
        if beside.is_file():
            return clean_tags(beside.read_text())
        return None


def clip_frames(path: Path, per_second: float, max_frames: int) -> list[np.ndarray]:
    """RGB frames of a clip at `per_second`, from its first frame on (at most `max_frames`)."""
    from ptta.video_io import iter_frames

    frames = every(iter_frames(path), per_second, max_frames)
    if not frames:
        raise ValueError(f"{path}: no decodable frames to caption")
    return frames


def source_clip_frames(address: ClipAddress, reader: SourceClipReader, per_second: float,
                       max_frames: int) -> list[np.ndarray]:
    """clip_frames of the clip `address` names, read from its source (the same frames as from the
    written clip)."""
    frames = reader.read(address)
    return every(((k / address.fps, clip_rgb(frame)) for k, frame in enumerate(frames)), per_second, max_frames)


def every(timed_frames, per_second: float, max_frames: int) -> list[np.ndarray]:
    """The frames of (time, frame) pairs at `per_second` from the first on, at most `max_frames`."""
    frames, next_time = [], None
    for time, frame in timed_frames:
        if next_time is None or time >= next_time - 1e-6:
            next_time = time + 1.0 / per_second
            frames.append(frame)
            if len(frames) == max_frames:
                break
    return frames


# Qwen2-VL / Qwen2.5-VL's own chat template (as in the released checkpoints' chat_template.json), for
# folders saved without one: the prompt format is fixed by the model, not by the folder.
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_chat_template(model_dir: Path, tokenizer_template: str | None) -> str:
    """The folder's saved chat template, else the tokenizer's, else Qwen's own."""
    try:
        saved = saved_chat_template(model_dir)
    except ValueError as error:
        raise ValueError(f"--caption-model {error}") from None
    return saved or tokenizer_template or QWEN_VL_CHAT_TEMPLATE


def model_placement(device: str) -> dict:
    """from_pretrained arguments: weights load straight onto the device, in the checkpoint's bf16 on a GPU.

    Plain "cuda" spreads the layers over every visible GPU (Qwen2.5-VL-72B is ~145 GB in bf16, more
    than one GPU holds); "cuda:N" keeps the model on that GPU. On the CPU, float32.
    """
    import torch

    target = torch.device(device)
    if target.type == "cuda":
        return {"dtype": "auto", "device_map": "auto" if target.index is None else {"": target}}
    return {"dtype": torch.float32, "device_map": {"": target}}


class QwenCaptioner:
    """Qwen2.5-VL on each clip as a video, the way its reference code (qwen-vl-utils) feeds one.

    Frames at 2 fps go in as one video (pairs of frames share a temporal patch; the model's
    time-aligned positions get the seconds per pair), sized between `min_pixels` and `max_pixels`
    per frame (qwen-vl-utils' defaults). Batches are left-padded and decoded greedily.
    """

    name = "qwen"

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 4, per_second: float = 2.0,
                 max_frames: int = 12, min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS,
                 max_new_tokens: int = 77, prompt: str = TAG_PROMPT):
        import torch
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"--caption-model {model_dir}: not a model directory (no config.json)")
        self._torch = torch
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"  # generation continues every row from its end
        self.chat_template = qwen_chat_template(model_dir, self.tokenizer.chat_template)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, **model_placement(device)).eval()
        self.layout = vision_layout(model_dir, self.model.config.vision_config)
        self.batch_size = batch_size
        self.per_second, self.max_frames = per_second, max_frames
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.max_new_tokens, self.prompt = max_new_tokens, prompt
        self._reader = SourceClipReader()  # for clips not written: their source stays open for the next

    def caption(self, clips: list[ClipToCaption]) -> list[str | None]:
        captions: list[str | None] = []
        for begin in range(0, len(clips), self.batch_size):
            batch = clips[begin : begin + self.batch_size]
            captions += self._caption_batch([self.video_input(clip) for clip in batch])
        return captions

    def video_input(self, clip: ClipToCaption | Path) -> ClipVideo:
        """The model's video input for a clip: its written file (or a path), else its frames in the source."""
        if isinstance(clip, ClipToCaption) and clip.clip_path is None:
            try:
                frames = source_clip_frames(clip.address, self._reader, self.per_second, self.max_frames)
            except ClipSourceError as error:
                raise ValueError(str(error)) from None
        else:
            frames = clip_frames(clip.clip_path if isinstance(clip, ClipToCaption) else clip, self.per_second,
                                 self.max_frames)
        height, width = frames[0].shape[:2]
        new_height, new_width = smart_resize(height, width, self.layout.factor, self.min_pixels, self.max_pixels)
        mean = np.asarray(self.layout.mean, np.float32)[:, None, None]
        std = np.asarray(self.layout.std, np.float32)[:, None, None]
        resized = np.stack([np.asarray(Image.fromarray(frame).resize((new_width, new_height), Image.BICUBIC),
                                       np.float32).transpose(2, 0, 1) for frame in frames])
        # patchify repeats the last frame up to a whole temporal patch, as transformers' video processor does
        pixel_values, grid_thw = patchify((resized / 255.0 - mean) / std, self.layout)
        return ClipVideo(pixel_values.astype(np.float32), grid_thw)

    def prompt_text(self, video: ClipVideo) -> str:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.prompt}]}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)
        # The template writes one pad token per video; the model needs one per merged patch.
        pad = self.tokenizer.convert_ids_to_tokens(self.model.config.video_token_id)
        if text.count(pad) != 1:
            raise ValueError(f"--caption-model {self.model_dir}: its chat template wrote {text.count(pad)} "
                             f"{pad} tokens for one video")
        return text.replace(pad, pad * (int(np.prod(video.grid_thw)) // self.layout.merge_size**2))

    def _caption_batch(self, videos: list[ClipVideo]) -> list[str]:
        torch = self._torch
        inputs = self.tokenizer([self.prompt_text(video) for video in videos], return_tensors="pt", padding=True,
                                add_special_tokens=False)
        device = self.model.device
        seconds_per_temporal_patch = self.layout.temporal_patch_size / self.per_second
        vision = {
            "pixel_values_videos": torch.from_numpy(np.concatenate([v.pixel_values for v in videos])).to(
                device, self.model.dtype),
            "video_grid_thw": torch.tensor([v.grid_thw for v in videos], device=device),
            "second_per_grid_ts": torch.tensor([seconds_per_temporal_patch] * len(videos), device=device),
        }
        input_ids = inputs["input_ids"].to(device)
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=inputs["attention_mask"].to(device),
                **vision,
                **video_modality_ids(self.model, input_ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [clean_tags(text) for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


@dataclass(frozen=True)
class ClipVideo:
    """A clip as Qwen2.5-VL video input."""

    pixel_values: np.ndarray  # (grid_t * grid_h * grid_w, C * temporal_patch * patch * patch) float32
    grid_thw: tuple[int, int, int]


def vision_layout(model_dir: Path, vision_config) -> QwenVisionLayout:
    """Patch geometry from the model config; pixel mean/std from preprocessor_config.json when present."""
    preprocessor = model_dir / "preprocessor_config.json"
    norm = json.loads(preprocessor.read_text()) if preprocessor.is_file() else {}
    return QwenVisionLayout(vision_config.patch_size, vision_config.temporal_patch_size,
                            vision_config.spatial_merge_size, tuple(norm.get("image_mean", OPENAI_CLIP_MEAN)),
                            tuple(norm.get("image_std", OPENAI_CLIP_STD)))


def make_captioner(kind: str, model_dir: str | None, caption_file: str | None, device: str, batch_size: int) -> Captioner:
    if kind == "qwen":
        if not model_dir:
            raise ValueError("--captioner qwen needs --caption-model DIR")
        return QwenCaptioner(model_dir, device=device, batch_size=batch_size)
    if kind == "sidecar":
        return SidecarCaptioner(caption_file)
    raise ValueError(f"--captioner must be qwen, sidecar or none, got {kind!r}")
