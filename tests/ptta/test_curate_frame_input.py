"""What the per-frame analysis reads: the shot detector's sampled input, and the worker's frame memory."""

from __future__ import annotations

import subprocess
import sys

import av
import cv2
import numpy as np

from ptta.curate.frames import sampled_bgr
from ptta.curate.shots import detection_size

FAULTS_AFTER_REUSE = """
import resource, sys
import numpy as np
from ptta.curate.frame_memory import keep_freed_frame_memory
if sys.argv[1] == "tuned":
    assert keep_freed_frame_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# 20 frames of 1080p yuv420p, touched and freed twice, as two videos' frame pools are.
for _ in range(2):
    frames = [np.ones(3 << 20, np.uint8) for _ in range(20)]
    del frames
before = faults()
frames = [np.ones(3 << 20, np.uint8) for _ in range(20)]
print(faults() - before)
"""


def test_the_detector_input_is_bilinear_samples_of_the_frame_like_pyscenedetects_downscale():
    # Blocks of colour wider than the 16x scaling factor, with chroma that varies between them.
    rng = np.random.default_rng(0)
    blocks = rng.integers(16, 236, (9, 16, 3), np.uint8)
    bgr = cv2.resize(blocks, (1920, 1080), interpolation=cv2.INTER_NEAREST)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p", dst_color_range="MPEG")
    width, height = detection_size(1920, 1080)
    result = sampled_bgr(frame, width, height)
    # PySceneDetect's SceneManager scales the decoded BGR frame with cv2.INTER_LINEAR.
    expected = cv2.resize(frame.to_ndarray(format="bgr24"), (width, height), interpolation=cv2.INTER_LINEAR)
    assert result.shape == (67, 120, 3) and result.dtype == np.uint8
    inside = np.abs(result.astype(int) - expected.astype(int))[1:-1, 1:-1]
    # Equal up to YUV rounding, except where a sample falls on a block edge (chroma is halved).
    assert np.median(inside) <= 2 and np.mean(inside > 8) < 0.1


def test_a_tuned_worker_reuses_freed_frame_memory_instead_of_faulting_it_in_again():
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", FAULTS_AFTER_REUSE, mode], capture_output=True, text=True,
                             check=True)  # fmt: skip
        return int(run.stdout)

    # glibc's defaults give the trimmed heap back: every 4 KiB page of the 60 MB faults again.
    assert faults("plain") > 10_000
    assert faults("tuned") < 500
