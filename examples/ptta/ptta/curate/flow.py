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
time difference, so variable-frame-rate video is measured in true seconds. A clip's score is the
mean over the (sample, next sample) pairs that lie wholly inside it, so a pair across a cut never
counts. A pair's flow is computed only once its stretch of the shot is long enough to become a
clip (or when a clip containing it is scored): footage that never becomes a candidate clip (shots
shorter than a clip, the remainder of a shot) costs no flow.
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


@dataclass
class FlowSample:
    time: float  # seconds
    frame: av.VideoFrame
    grey: np.ndarray | None = None  # the frame at the working size, once a pair needed it
    speed_to_next: float | None = None  # the pair (this, next sample) in the unit above, once scored


def working_size(width: int, height: int, short_side: int = FLOW_WORK_SHORT_SIDE) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side`, both even."""
    scale = short_side / min(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def flow_interval(fps: float) -> float:
    """Seconds between compared frames: 6 frames, or a multiple of 6 near a quarter second."""
    return FLOW_STRIDE_FRAMES * max(1, round(fps / 24)) / fps


class FlowTracker:
    """Samples frames every flow_interval(fps) seconds; scores clips from the pairs inside them."""

    def __init__(self, width: int, height: int, fps: float):
        self._size = working_size(width, height)
        self._interval = flow_interval(fps)
        self._half_frame = 0.5 / fps
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._next_sample_time = -np.inf
        self.samples: list[FlowSample] = []

    def push(self, time: float, frame: av.VideoFrame) -> bool:
        """Take the frame as a sample if it is due; return whether it was."""
        if time + 1e-6 < self._next_sample_time:
            return False
        # Half a frame of slack keeps the grid on whole frames despite timestamp rounding.
        self._next_sample_time = time + self._interval - self._half_frame
        self.samples.append(FlowSample(time, frame))
        return True

    def measure_from(self, start: float) -> None:
        """Compute now the pairs from `start` on that are not yet computed.

        For a stretch that will become a clip: measuring as frames arrive overlaps the flow with
        decoding, where leaving it all to `score` would run it in one burst when the clip closes.
        """
        for earlier, later in zip(self.samples, self.samples[1:]):
            if earlier.time >= start - 1e-6:
                self._speed(earlier, later)

    def score(self, start: float, end: float) -> float | None:
        """Mean over the pairs inside [start, end] (times of the clip's first and last frame)."""
        pairs = [(earlier, later) for earlier, later in zip(self.samples, self.samples[1:])
                 if earlier.time >= start - 1e-6 and later.time <= end + 1e-6]  # fmt: skip
        speeds = [self._speed(earlier, later) for earlier, later in pairs]
        return float(np.mean(speeds)) if speeds else None

    def forget_before(self, time: float) -> None:
        """Drop samples before `time` (no open clip can use them, nor their frames)."""
        self.samples = [sample for sample in self.samples if sample.time >= time - 1e-6]

    def _speed(self, earlier: FlowSample, later: FlowSample) -> float:
        if earlier.speed_to_next is None:
            flow = self._dis.calc(self._grey(earlier), self._grey(later), None)
            magnitude = float(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).mean())
            scale = FLOW_UNIT_SHORT_SIDE / FLOW_WORK_SHORT_SIDE
            earlier.speed_to_next = magnitude * scale / (later.time - earlier.time)
        return earlier.speed_to_next

    def _grey(self, sample: FlowSample) -> np.ndarray:
        if sample.grey is None:
            sample.grey = grey(sample.frame, *self._size)
        return sample.grey
