"""Video metrics that need no model weights: motion from OpenCV optical flow, and frame differences.

These are *not* VideoScore. VideoScore is a learned judge of how people rate a video; these are
fixed signal measurements that explain part of such ratings:

- `dynamic_degree` follows VBench's rule (frames taken at about 8 fps; for each pair the mean of
  the largest 5% flow magnitudes; the pair "moves" above 6 * short_side / 256 pixels, times 8 / fps
  for clips under 8 fps; the clip is dynamic (1) when round(4 * frames / 16) pairs move),
  but with Farneback flow instead of VBench's RAFT network, so values are close, not identical.
- `motion_magnitude` is the same per-pair statistic, averaged and rescaled to a 256-pixel short
  side: a continuous amount of motion where `dynamic_degree` is a yes/no.
- `temporal_flickering` is VBench's (255 - mean |frame_t+1 - frame_t|) / 255 over every frame.
  VBench defines it on static clips: on a moving clip, motion lowers it as much as flicker does.
- `warp_consistency` removes that confusion: frame t+1 is warped back onto frame t along the
  flow, and the score is (255 - mean remaining difference) / 255. Smooth motion keeps it near 1;
  flicker, popping and morphing lower it.

Farneback flow is local: in flat regions and along straight stripes (the aperture problem) small
changes such as compression noise under a brightness flicker can yield large spurious vectors,
where RAFT fills such regions in from their surroundings. Read `dynamic_degree` on flickering
clips with flat, striped backgrounds with that in mind.
"""

from __future__ import annotations

import cv2
import numpy as np

from ptta.evaluate.scorers.base import DecodedVideo, Scorer, ScoreResult

VBENCH_FPS = 8.0  # VBench samples frames for its flow at about this rate
TOP_FRACTION = 0.05  # VBench averages the largest 5% flow magnitudes of a frame pair
REFERENCE_SIDE = 256.0  # VBench scales its motion threshold with short_side / 256
BASE_THRESHOLD = 6.0  # pixels at a 256-pixel short side


def resize_short_side(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Frames with the short side shrunk to `max_side` (flow on 4K frames is slow, and VBench's
    threshold scales with the size anyway); smaller frames are kept as they are."""
    height, width = frames.shape[1:3]
    scale = min(1.0, max_side / min(height, width))
    if scale == 1.0:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])


def grayscale(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])


def farneback_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) from `prev` to `nxt` (grayscale uint8): where each pixel of prev moved."""
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def top_flow_magnitude(flow: np.ndarray) -> float:
    """Mean of the largest 5% flow magnitudes (VBench's per-pair motion statistic)."""
    magnitude = np.hypot(flow[..., 0], flow[..., 1]).ravel()
    count = max(1, int(magnitude.size * TOP_FRACTION))
    return float(np.partition(magnitude, magnitude.size - count)[-count:].mean())


def vbench_motion(frames: np.ndarray, fps: float, max_side: int = 256) -> tuple[int, float]:
    """(dynamic 0/1, motion magnitude in pixels at a 256-pixel short side) by VBench's rule."""
    interval = max(1, round(fps / VBENCH_FPS))
    sampled = grayscale(resize_short_side(frames[::interval], max_side))
    if len(sampled) < 2:
        raise ValueError(f"need at least 2 frames at ~{VBENCH_FPS:g} fps to measure motion, got {len(sampled)}")
    short_side = min(sampled.shape[1:3])
    # Slower clips move further between sampled frames, so VBench raises the bar for them.
    threshold = max(1.0, VBENCH_FPS / fps) * BASE_THRESHOLD * short_side / REFERENCE_SIDE
    # VBench uses round(4 * n / 16) without a floor; a floor of 1 keeps 2-frame clips from
    # counting as dynamic with no moving pair at all.
    needed = max(1, round(4 * len(sampled) / 16))
    per_pair = [top_flow_magnitude(farneback_flow(a, b)) for a, b in zip(sampled[:-1], sampled[1:], strict=True)]
    dynamic = int(sum(value > threshold for value in per_pair) >= needed)
    return dynamic, float(np.mean(per_pair)) * REFERENCE_SIDE / short_side


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench temporal flickering: (255 - mean absolute difference of consecutive frames) / 255."""
    if len(frames) < 2:
        raise ValueError("need at least 2 frames to measure flickering")
    pairs = zip(frames[:-1], frames[1:], strict=True)
    diffs = [np.abs(b.astype(np.int16) - a.astype(np.int16)).mean() for a, b in pairs]
    return float((255.0 - np.mean(diffs)) / 255.0)


def warp_consistency(frames: np.ndarray, max_side: int = 256) -> float:
    """(255 - mean |frame_t - warp(frame_t+1 -> t)|) / 255 over consecutive pairs, pixels whose flow
    leaves the frame left out."""
    if len(frames) < 2:
        raise ValueError("need at least 2 frames to measure frame consistency")
    colour = resize_short_side(frames, max_side)
    gray = grayscale(colour)
    height, width = colour.shape[1:3]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    errors = []
    for t in range(len(frames) - 1):
        flow = farneback_flow(gray[t], gray[t + 1])
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        warped = cv2.remap(colour[t + 1], map_x, map_y, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        if not inside.any():
            continue
        diff = np.abs(warped.astype(np.float32) - colour[t].astype(np.float32)).mean(axis=-1)
        errors.append(float(diff[inside].mean()))
    if not errors:
        raise ValueError("the flow moved every pixel out of the frame in every pair")
    return float((255.0 - np.mean(errors)) / 255.0)


class WeightFreeScorer(Scorer):
    """Dynamic degree, motion magnitude, temporal flickering and warp consistency (no weights)."""

    name = "weightfree"
    metrics = ("dynamic_degree", "motion_magnitude", "temporal_flickering", "warp_consistency")

    def __init__(self, max_side: int = 256):
        if max_side < 16:
            raise ValueError(f"max_side: need at least 16 pixels, got {max_side}")
        self.max_side = max_side

    @property
    def signature(self) -> str:
        return f"{self.name}:farneback:side{self.max_side}"

    def score(self, video: DecodedVideo, prompt: str) -> ScoreResult:
        dynamic, magnitude = vbench_motion(video.frames, video.fps, self.max_side)
        values = {
            "dynamic_degree": float(dynamic),
            "motion_magnitude": magnitude,
            "temporal_flickering": temporal_flickering(video.frames),
            "warp_consistency": warp_consistency(video.frames, self.max_side),
        }
        return ScoreResult(values)
