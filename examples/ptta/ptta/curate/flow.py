"""Optical-flow motion score, streamed over a whole video.

The unit (see docs/ptta-curation.md for the calibration):

    S_flow = mean DIS optical-flow magnitude over all pixels, in pixels per second, expressed at a
             frame whose short side is 480 px (the 848x480 training resolution),

measured between frames 6 apart (12 at 48-60 fps): about a quarter second. Six is a multiple of
both 2 and 3, so animation drawn on ones, twos or threes is always compared across the same number
of changed drawings and scores the same as the same motion drawn on ones. Flow is computed with
OpenCV's DIS (ultrafast preset) on grey frames scaled to a 320-px short side, which costs about
half as much as 480 px; flow magnitude scales linearly with resolution (Big Buck Bunny: 14.43 px/s
computed at 480 px, 9.70 x 1.5 = 14.55 computed at 320 px), so it is multiplied by 480/320.

Samples are taken on a time grid (6 nominal frame durations) and each pair is divided by its true
time difference, so variable-frame-rate video is measured in true seconds. Each
(sample, next sample) pair is stored with its times; a clip's score is the mean over the pairs
that lie wholly inside it, so a pair across a cut never counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np

from ptta.curate.frames import grey

FLOW_STRIDE_FRAMES = 6  # frames between compared frames at 24-30 fps (doubled at 48-60 fps)
FLOW_WORK_SHORT_SIDE = 320  # px: where the flow is computed
FLOW_UNIT_SHORT_SIDE = 480  # px: the resolution the score is expressed at


@dataclass(frozen=True)
class FlowPair:
    start: float  # time of the earlier frame (s)
    end: float  # time of the later frame (s)
    pixels_per_second: float  # mean magnitude in the unit above


def working_size(width: int, height: int, short_side: int = FLOW_WORK_SHORT_SIDE) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side`, both even."""
    scale = short_side / min(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def flow_interval(fps: float) -> float:
    """Seconds between compared frames: 6 frames, or a multiple of 6 near a quarter second."""
    return FLOW_STRIDE_FRAMES * max(1, round(fps / 24)) / fps


class FlowTracker:
    """Samples frames every flow_interval(fps) seconds and keeps the scored pairs."""

    def __init__(self, width: int, height: int, fps: float):
        self._size = working_size(width, height)
        self._interval = flow_interval(fps)
        self._half_frame = 0.5 / fps
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: tuple[float, np.ndarray] | None = None
        self._next_sample_time = -np.inf
        self.pairs: list[FlowPair] = []

    def push(self, time: float, frame: av.VideoFrame) -> None:
        if time + 1e-6 < self._next_sample_time:
            return
        # Half a frame of slack keeps the grid on whole frames despite timestamp rounding.
        self._next_sample_time = time + self._interval - self._half_frame
        current = grey(frame, *self._size)
        if self._previous is not None:
            previous_time, previous = self._previous
            flow = self._dis.calc(previous, current, None)
            magnitude = float(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).mean())
            scale = FLOW_UNIT_SHORT_SIDE / FLOW_WORK_SHORT_SIDE
            self.pairs.append(FlowPair(previous_time, time, magnitude * scale / (time - previous_time)))
        self._previous = (time, current)

    def score(self, start: float, end: float) -> float | None:
        """Mean over the pairs inside [start, end] (times of the clip's first and last frame)."""
        inside = [p.pixels_per_second for p in self.pairs if p.start >= start - 1e-6 and p.end <= end + 1e-6]
        return float(np.mean(inside)) if inside else None

    def forget_before(self, time: float) -> None:
        """Drop pairs that start before `time` (no open clip can use them)."""
        self.pairs = [p for p in self.pairs if p.start >= time - 1e-6]
