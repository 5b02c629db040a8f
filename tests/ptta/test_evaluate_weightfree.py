"""Weight-free metrics on synthetic H.264 clips whose motion is known by construction."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ptta.evaluate.scorers import DecodedVideo, WeightFreeScorer
from ptta.evaluate.scorers.weightfree import top_flow_magnitude, vbench_motion
from ptta.video_io import read_video, write_video

SIZE, FRAMES, FPS = 64, 16, 8.0


def textured_background() -> np.ndarray:
    """Smooth colour blobs: texture in every direction, so the flow is well posed everywhere."""
    rng = np.random.default_rng(0)
    return cv2.resize(rng.integers(120, 230, (8, 8, 3)).astype(np.uint8), (SIZE, SIZE),
                      interpolation=cv2.INTER_CUBIC)


def synthetic_clip(path: Path, speed: int = 0, flicker: int = 0) -> DecodedVideo:
    """A red disc on a textured background moving `speed` pixels per frame; `flicker` adds +-flicker
    to every pixel on alternate frames (a global brightness flicker)."""
    frames = []
    for t in range(FRAMES):
        frame = textured_background()
        cv2.circle(frame, (12 + speed * t, SIZE // 2), 8, (200, 40, 40), -1)
        if flicker:
            frame = np.clip(frame.astype(int) + (flicker if t % 2 else -flicker), 0, 255).astype(np.uint8)
        frames.append(frame)
    write_video(path, frames, FPS, crf=23)
    decoded, fps = read_video(path)
    return DecodedVideo(path, decoded, fps)


@pytest.fixture
def clips(tmp_path) -> dict[str, DecodedVideo]:
    return {"static": synthetic_clip(tmp_path / "static.mp4"),
            "moving": synthetic_clip(tmp_path / "moving.mp4", speed=3),
            "flicker": synthetic_clip(tmp_path / "flicker.mp4", flicker=30),
            "moving_flicker": synthetic_clip(tmp_path / "moving_flicker.mp4", speed=3, flicker=30)}


def scores(clip: DecodedVideo) -> dict[str, float]:
    return WeightFreeScorer().checked_score(clip, "a red ball").values


def test_a_static_clip_is_not_dynamic_and_a_moving_one_is(clips):
    static, moving = scores(clips["static"]), scores(clips["moving"])
    assert static["dynamic_degree"] == 0.0 and moving["dynamic_degree"] == 1.0
    # 3 px per frame at 64 px is 12 px at VBench's 256-pixel reference; compression noise stays far below.
    assert static["motion_magnitude"] < 1.0 < 8.0 < moving["motion_magnitude"] < 16.0


def test_flicker_lowers_both_consistency_scores_and_smooth_motion_keeps_warp_consistency(clips):
    static, moving = scores(clips["static"]), scores(clips["moving"])
    flicker, moving_flicker = scores(clips["flicker"]), scores(clips["moving_flicker"])
    # Flickering clips score clearly lower than their smooth counterparts on both metrics.
    assert flicker["temporal_flickering"] < static["temporal_flickering"] - 0.1
    assert moving_flicker["warp_consistency"] < moving["warp_consistency"] - 0.1
    # Plain frame differences also punish honest motion; warping along the flow removes most of
    # that (what is left are the disc's occlusion edges), so smooth motion stays far above flicker.
    assert moving["temporal_flickering"] < static["temporal_flickering"]
    assert moving["temporal_flickering"] < moving["warp_consistency"]
    assert moving["warp_consistency"] > 0.98 > 0.8 > moving_flicker["warp_consistency"]
    # A flickering but static clip does not count as dynamic.
    assert flicker["dynamic_degree"] == 0.0


def test_vbench_threshold_rises_for_slow_frame_rates():
    # The same 1.5 px/frame drift at 64 px: above VBench's bar at 8 fps, below the doubled bar at 4 fps.
    frames = np.stack([textured_background() for _ in range(FRAMES)])
    for t in range(FRAMES):
        cv2.circle(frames[t], (int(12 + 1.6 * t), 32), 8, (30, 30, 30), -1)
    assert vbench_motion(frames, 8.0)[0] == 1
    assert vbench_motion(frames, 4.0)[0] == 0


def test_top_flow_magnitude_averages_the_largest_five_percent():
    flow = np.zeros((10, 10, 2), np.float32)
    flow[0, :5, 0] = 4.0  # 5 of 100 pixels move by 4 px
    assert top_flow_magnitude(flow) == pytest.approx(4.0)


def test_single_frame_videos_are_refused_with_a_reason(tmp_path):
    clip = DecodedVideo(tmp_path / "one.mp4", np.zeros((1, SIZE, SIZE, 3), np.uint8), FPS)
    with pytest.raises(ValueError, match="at least 2 frames"):
        WeightFreeScorer().score(clip, "x")
