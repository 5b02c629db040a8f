"""Frame-count and resolution buckets: every clip is cut to 4k+1 frames and a size divisible by 16.

HunyuanVideo's VAE compresses time by 4 keeping the first frame ((F - 1) / 4 + 1 latent frames),
so other frame counts silently lose frames; space is compressed by 8 and patched by 2, so other
sizes are silently cropped. Clips of one bucket share a shape and can be batched together.
Before bucketing, a clip is brought to the training frame rate (`resample_frames`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where it is used, so `ptta --help` does not load it
    import numpy as np


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int

    @property
    def key(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def choose_bucket(num_frames: int, height: int, width: int, frame_buckets: list[int],
                  resolution_buckets: list[list[int]]) -> Bucket | None:
    """The longest frame bucket the clip fills and the size closest in aspect ratio; None if too short."""
    fitting = [f for f in frame_buckets if f <= num_frames]
    if not fitting:
        return None
    aspect = math.log(width / height)
    bucket_h, bucket_w = min(resolution_buckets, key=lambda hw: abs(math.log(hw[1] / hw[0]) - aspect))
    return Bucket(max(fitting), bucket_h, bucket_w)


def fit_clip(frames: np.ndarray, bucket: Bucket) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (bucket.frames, bucket.height, bucket.width, 3): the middle frames,
    scaled to cover the bucket and centre-cropped (consecutive frames keep the motion's speed)."""
    import cv2
    import numpy as np

    frames = frames[middle_frames(len(frames), bucket)]
    h, w = frames.shape[1:3]
    scale = max(bucket.height / h, bucket.width / w)
    new_h, new_w = max(bucket.height, round(h * scale)), max(bucket.width, round(w * scale))
    top, left = (new_h - bucket.height) // 2, (new_w - bucket.width) // 2
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.empty((bucket.frames, bucket.height, bucket.width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
        out[i] = resized[top:top + bucket.height, left:left + bucket.width]
    return out


def middle_frames(count: int, bucket: Bucket) -> slice:
    """The bucket's frames among a clip's `count` (at the training rate): the middle ones."""
    if count < bucket.frames:
        raise ValueError(f"clip has {count} frames, bucket {bucket.key} needs {bucket.frames}")
    start = (count - bucket.frames) // 2
    return slice(start, start + bucket.frames)


def resample_frames(frames: np.ndarray, source_fps: float, fps: float) -> np.ndarray:
    """Frames of a constant-rate clip at `fps`: for each output time k/fps, the source frame nearest
    in time. Output times run while a source frame lies within half a source frame interval of them
    (k * source_fps / fps <= len(frames) - 0.5), so equal rates keep every frame and a measured rate
    a little off the nominal one loses none (97 frames at 24.01 or 23.976 fps give 97 at 24 fps),
    while no trailing frame is repeated. Equal rates return `frames` as is."""
    positions = resampled_positions(len(frames), source_fps, fps)
    return frames if source_fps == fps else frames[positions]


def resampled_positions(count: int, source_fps: float, fps: float) -> np.ndarray:
    """Which of a clip's `count` frames at `source_fps` make it at `fps` (resample_frames)."""
    import numpy as np

    if source_fps <= 0 or fps <= 0:
        raise ValueError(f"frame rates must be > 0, got source {source_fps} and target {fps}")
    if source_fps == fps:
        return np.arange(count)
    # the 1e-9 only absorbs float rounding of an exact half-interval tie, which counts as inside
    total = max(1, int(np.floor((count - 0.5) * fps / source_fps + 1e-9)) + 1)
    nearest = np.floor(np.arange(total) * source_fps / fps + 0.5).astype(int)
    # a tie at the last frame's half interval rounds up past the end: take the last frame
    return np.minimum(nearest, count - 1)
