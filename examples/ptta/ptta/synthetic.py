"""Synthetic "animation" videos with known ground truth, for tests, demos and benchmarks.

Each video is a sequence of shots. A shot is flat-colour shapes on a flat background (optionally
with a panning striped background), drawn with its own palette so that shot changes are hard cuts.
Shapes move in straight lines and bounce off the frame edges at a constant, known speed; a shot can
be static (speed 0) or drawn "on twos/threes" (each drawing held for 2 or 3 frames, as in
hand-drawn animation).

    from ptta.synthetic import ShotSpec, make_animation_video
    truth = make_animation_video("cuts.mp4", [ShotSpec(2.0), ShotSpec(4.0, speed=0.0)], fps=24)
    truth.cut_frames   # [48]: the first frame of every shot after the first
    truth.shots[1]     # ShotTruth(start_frame=48, end_frame=144, speed=0.0, ...)

Speeds are in frame heights per second so they mean the same at any size; `ShotTruth` also gives
them in output pixels per second. Nothing here depends on the curation code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ptta.video_io import write_video

# Background and shape colours (RGB), chosen so that any two palettes differ strongly in hue or
# brightness: a cut between them is unambiguous for a content-based shot detector.
PALETTES: tuple[tuple[tuple[int, int, int], tuple[tuple[int, int, int], ...]], ...] = (
    ((235, 225, 200), ((200, 40, 40), (30, 90, 200), (250, 190, 20))),
    ((25, 40, 90), ((250, 240, 120), (240, 120, 160), (120, 230, 200))),
    ((110, 190, 90), ((90, 40, 20), (250, 250, 250), (200, 60, 150))),
    ((240, 140, 60), ((20, 20, 30), (60, 160, 240), (255, 255, 255))),
    ((60, 60, 60), ((240, 70, 70), (80, 220, 100), (90, 120, 250))),
    ((190, 220, 250), ((230, 80, 30), (40, 120, 60), (120, 50, 160))),
)


@dataclass(frozen=True)
class ShotSpec:
    """One shot of a synthetic video.

    seconds: duration (rounded to whole frames).
    speed: speed of every shape in frame heights per second; 0 makes a static shot.
    hold: frames each drawing is held (1 = on ones, 2 = on twos, 3 = on threes).
    pan: speed of the background stripes in frame heights per second (0 = flat background).
    palette: index into PALETTES; None picks the shot's index, so neighbouring shots differ.
    num_shapes: how many moving shapes (each of radius 0.18 frame heights).
    """

    seconds: float
    speed: float = 0.5
    hold: int = 1
    pan: float = 0.0
    palette: int | None = None
    num_shapes: int = 3


@dataclass(frozen=True)
class ShotTruth:
    """Ground truth of one written shot: frames [start_frame, end_frame)."""

    start_frame: int
    end_frame: int
    speed: float  # frame heights per second
    speed_px_per_second: float  # output pixels per second
    pan: float  # frame heights per second
    hold: int
    palette: int

    @property
    def static(self) -> bool:
        return self.speed == 0 and self.pan == 0


@dataclass(frozen=True)
class AnimationTruth:
    """Ground truth of a written synthetic video."""

    path: str
    fps: float
    size: tuple[int, int]  # (width, height)
    num_frames: int
    shots: list[ShotTruth] = field(default_factory=list)

    @property
    def cut_frames(self) -> list[int]:
        """Index of the first frame of every shot but the first."""
        return [shot.start_frame for shot in self.shots[1:]]

    def to_dict(self) -> dict:
        return {**asdict(self), "cut_frames": self.cut_frames}


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold an unbounded straight-line position into [low, high] as if reflecting off walls."""
    span = high - low
    phase = np.mod(position - low, 2 * span)
    return low + np.where(phase <= span, phase, 2 * span - phase)


def _draw_frame(shot: ShotSpec, palette: int, t: float, size: tuple[int, int], seed: int) -> np.ndarray:
    """Draw the shot at time `t` seconds after its start."""
    width, height = size
    background, colours = PALETTES[palette % len(PALETTES)]
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    if shot.pan:
        # Darker vertical stripes every half frame height, moving left at `pan` heights/s.
        stripe = max(2, height // 8)
        period = max(2 * stripe, height // 2)
        offset = shot.pan * height * t
        columns = (np.arange(width) + offset) % period < stripe
        frame[:, columns] = (np.asarray(background) * 0.7).astype(np.uint8)
    rng = np.random.default_rng(seed)
    radius = 0.18 * height
    for i in range(shot.num_shapes):
        start = rng.uniform([radius, radius], [width - radius, height - radius])
        angle = rng.uniform(0, 2 * np.pi)
        velocity = shot.speed * height * np.array([np.cos(angle), np.sin(angle)])
        x, y = start + velocity * t
        x = float(_bounce(np.array(x), radius, width - radius))
        y = float(_bounce(np.array(y), radius, height - radius))
        colour = tuple(int(c) for c in colours[i % len(colours)])
        r = int(round(radius))
        if i % 2 == 0:
            cv2.circle(frame, (int(round(x)), int(round(y))), r, colour, thickness=-1)
        else:
            cv2.rectangle(frame, (int(round(x)) - r, int(round(y)) - r), (int(round(x)) + r, int(round(y)) + r),
                          colour, thickness=-1)
    return frame


def render_animation(shots: list[ShotSpec], fps: float = 24, size: tuple[int, int] = (160, 90),
                     seed: int = 0) -> tuple[np.ndarray, list[ShotTruth]]:
    """Render the frames (N, H, W, 3) uint8 RGB and the per-shot ground truth, without writing."""
    if not shots:
        raise ValueError("shots: need at least one ShotSpec")
    width, height = size
    frames, truths, start = [], [], 0
    for index, shot in enumerate(shots):
        if shot.hold < 1:
            raise ValueError(f"shots[{index}].hold must be >= 1, got {shot.hold}")
        count = int(round(shot.seconds * fps))
        if count < 1:
            raise ValueError(f"shots[{index}].seconds={shot.seconds} is shorter than one frame at {fps} fps")
        palette = index if shot.palette is None else shot.palette
        for k in range(count):
            drawing_time = (k // shot.hold) * shot.hold / fps  # held drawings repeat exactly
            frames.append(_draw_frame(shot, palette, drawing_time, size, seed=seed * 1000 + index))
        truths.append(ShotTruth(start, start + count, shot.speed, shot.speed * height, shot.pan, shot.hold,
                                palette % len(PALETTES)))
        start += count
    return np.stack(frames), truths


def make_animation_video(path: str | Path, shots: list[ShotSpec], fps: float = 24,
                         size: tuple[int, int] = (160, 90), seed: int = 0, crf: int = 18) -> AnimationTruth:
    """Write the shots as an H.264 mp4 at `path` and return its ground truth."""
    frames, truths = render_animation(shots, fps=fps, size=size, seed=seed)
    write_video(path, frames, fps=fps, crf=crf)
    return AnimationTruth(str(path), float(fps), (int(size[0]), int(size[1])), len(frames), truths)


# A few varied videos: hard cuts, a static shot, drawings on twos and threes, a pan, shots too short
# for a 3 s clip and a barely moving one.
DEMO_VIDEOS: dict[str, list[ShotSpec]] = {
    "cuts_static_twos": [ShotSpec(4.5, speed=0.6), ShotSpec(4.0, speed=0.0), ShotSpec(4.5, speed=0.6, hold=2)],
    "long_pan_threes": [ShotSpec(11.0, speed=0.4, hold=3, pan=0.5)],
    "short_shots": [ShotSpec(1.5, speed=0.8), ShotSpec(3.5, speed=0.01), ShotSpec(2.0, speed=0.8),
                    ShotSpec(5.0, speed=0.7)],
}


def make_demo_set(out_dir: str | Path, fps: float = 24, size: tuple[int, int] = (320, 180)) -> dict[str, AnimationTruth]:
    """Write DEMO_VIDEOS as `<name>.mp4` plus `<name>.truth.json` into `out_dir`; return name -> truth."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truths = {}
    for seed, (name, shots) in enumerate(DEMO_VIDEOS.items()):
        truth = make_animation_video(out_dir / f"{name}.mp4", shots, fps=fps, size=size, seed=seed)
        (out_dir / f"{name}.truth.json").write_text(json.dumps(truth.to_dict(), indent=2))
        truths[name] = truth
    return truths
