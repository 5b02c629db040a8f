"""Captioners: a selected clip in, a tag-style caption out (or None when there is none).

* `QwenCaptioner` runs Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) from a local directory on
  frames taken from the clip at 2 fps, batched over clips. The frames go in as an ordered series
  of images: that needs only the model's image processor (the video processor of current
  transformers requires torchvision, which the curation stage does not otherwise need).
* `SidecarCaptioner` reads captions written by someone else: a CSV or JSONL file with a `caption`
  column keyed by clip `id` or by source video (`source`, absolute or relative to the file, or
  just the file name), or else a `<video stem>.txt` next to each source video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ptta.tables import read_table

# The paper's captions are comma-separated tags (Fig. 2: "anime girl, reading books, desk, gentle
# action, soft gaze, solo, full body, anime style"); the prompt asks for exactly that shape.
TAG_PROMPT = (
    "These images are frames of one animation clip, in order, two per second. Describe the clip as a "
    "single line of comma-separated tags, in this order: the subjects (for example 'anime girl', "
    "'solo'), what they do, the setting and objects, the kind of motion (for example 'gentle action', "
    "'fast action', 'camera pan'), expressions, the framing (for example 'close-up', 'full body') and "
    "the art style. Example: anime girl, reading books, desk, gentle action, soft gaze, solo, full "
    "body, anime style. Answer with the tags only."
)


@dataclass(frozen=True)
class ClipToCaption:
    clip_id: str
    source: Path  # the source video
    clip_path: Path  # the written clip


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


def clip_frames(path: Path, per_second: float, max_frames: int, max_side: int) -> list[np.ndarray]:
    """Frames of a clip at `per_second` (at most `max_frames`), scaled so the long side <= max_side."""
    import cv2

    from ptta.video_io import iter_frames

    frames, next_time = [], None
    for time, frame in iter_frames(path):
        if next_time is None or time >= next_time - 1e-6:
            next_time = time + 1.0 / per_second
            height, width = frame.shape[:2]
            scale = min(1.0, max_side / max(height, width))
            if scale < 1:
                frame = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            frames.append(frame)
            if len(frames) == max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no decodable frames to caption")
    return frames


class QwenCaptioner:
    name = "qwen"
    IMAGE_PAD = "<|image_pad|>"

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 4, per_second: float = 2.0,
                 max_frames: int = 12, max_side: int = 448, max_new_tokens: int = 77, prompt: str = TAG_PROMPT):
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"--caption-model {model_dir}: not a model directory (no config.json)")
        self._torch = torch
        self._device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not self.tokenizer.chat_template:
            raise ValueError(f"--caption-model {model_dir}: the tokenizer has no chat template")
        self.tokenizer.padding_side = "left"  # generation continues every row from its end
        self.image_processor = AutoImageProcessor.from_pretrained(model_dir)
        dtype = "auto" if self._device.type == "cuda" else torch.float32
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(self._device).eval()
        self.batch_size = batch_size
        self.per_second, self.max_frames, self.max_side = per_second, max_frames, max_side
        self.max_new_tokens, self.prompt = max_new_tokens, prompt

    def caption(self, clips: list[ClipToCaption]) -> list[str | None]:
        captions: list[str | None] = []
        for begin in range(0, len(clips), self.batch_size):
            batch = clips[begin : begin + self.batch_size]
            captions += self._caption_batch([clip_frames(c.clip_path, self.per_second, self.max_frames, self.max_side)
                                             for c in batch])
        return captions

    def _caption_batch(self, videos: list[list[np.ndarray]]) -> list[str]:
        images = [frame for frames in videos for frame in frames]
        vision = self.image_processor(images=images, return_tensors="pt")
        merge = self.image_processor.merge_size**2
        tokens_per_image = (vision["image_grid_thw"].prod(-1) // merge).tolist()
        texts, image_number = [], 0
        for frames in videos:
            content = [{"type": "image"} for _ in frames] + [{"type": "text", "text": self.prompt}]
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
            # The chat template writes one pad token per image; the model needs one per merged patch.
            pieces = text.split(self.IMAGE_PAD)
            if len(pieces) != len(frames) + 1:
                raise ValueError(f"the chat template wrote {len(pieces) - 1} image slots for {len(frames)} frames")
            text = pieces[0]
            for piece in pieces[1:]:
                text += self.IMAGE_PAD * tokens_per_image[image_number] + piece
                image_number += 1
            texts.append(text)
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True).to(self._device)
        with self._torch.no_grad():
            output = self.model.generate(
                **inputs,
                pixel_values=vision["pixel_values"].to(self._device, self.model.dtype),
                image_grid_thw=vision["image_grid_thw"].to(self._device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [clean_tags(text) for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def make_captioner(kind: str, model_dir: str | None, caption_file: str | None, device: str, batch_size: int) -> Captioner:
    if kind == "qwen":
        if not model_dir:
            raise ValueError("--captioner qwen needs --caption-model DIR")
        return QwenCaptioner(model_dir, device=device, batch_size=batch_size)
    if kind == "sidecar":
        return SidecarCaptioner(caption_file)
    raise ValueError(f"--captioner must be qwen, sidecar or none, got {kind!r}")
