"""Cheap per-frame conversions on yuv420p planes (OpenCV), used for every decoded frame.

PyAV's reformat (libswscale) costs 3-6 ms per 720p frame here, several times the decode itself;
these take well under 1 ms, which keeps curation near the cost of decoding.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from ptta.video_io import yuv420_planes

# Limited-range ("TV") YUV to full range, as a decoder's RGB conversion would do.
_LUMA_TO_FULL = np.clip((np.arange(256) - 16) * 255.0 / 219.0, 0, 255).astype(np.uint8)
_CHROMA_TO_FULL = np.clip((np.arange(256) - 128) * 255.0 / 224.0 + 128, 0, 255).astype(np.uint8)
# Both, per channel of a (Y, Cr, Cb) image, for cv2.LUT.
_YCRCB_TO_FULL = np.dstack([_LUMA_TO_FULL, _CHROMA_TO_FULL, _CHROMA_TO_FULL]).reshape(256, 1, 3)


def downscale(plane: np.ndarray, width: int, height: int, halvings: bool = False) -> np.ndarray:
    """Area-average by the largest whole factor, then bilinear to the exact size.

    Whole-factor area averaging removes most aliasing; the bilinear step covers the remaining
    factor below 2. Also scales up (bilinear) when asked. The plane is first cropped to a multiple
    of the factor (under one output pixel is lost at the right and bottom edges), so that OpenCV
    scales by an exact integer on its fast path rather than by, say, 272/54 = 5.04 on its general
    one (640x272 to 128x54: 0.07 instead of 0.18 ms).

    `halvings` takes even factors as repeated 2x2 averages first, OpenCV's fastest path (720p luma
    to 160 px: 0.05 instead of 0.13 ms). An average of 2x2 averages is the same average only up
    to the rounding of each 8-bit step, so this is for the shot detector's input; the flow (whose
    unit was calibrated on single averages) and written clips use one average per pixel.
    """
    factor = int(min(plane.shape[0] / height, plane.shape[1] / width))
    while factor >= 2:
        step = 2 if halvings and factor % 2 == 0 else factor
        rows, columns = plane.shape[0] // step, plane.shape[1] // step
        plane = cv2.resize(plane[: rows * step, : columns * step], (columns, rows), interpolation=cv2.INTER_AREA)
        factor //= step
    if plane.shape[:2] != (height, width):
        plane = cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(plane)


def grey(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The luma plane scaled to (width, height)."""
    return downscale(yuv420_planes(frame)[0], width, height)


def small_bgr(frame: av.VideoFrame, width: int, height: int | None = None) -> np.ndarray:
    """BGR uint8 at `width` (never scaled up) by `height` (default: the aspect kept), each pixel an
    area average: what TransNetV2 reads."""
    if height is None or width > frame.width:
        width = min(width, frame.width)
        height = max(2, round(frame.height * width / frame.width))
    y, u, v = yuv420_planes(frame)
    return _bgr([downscale(plane, width, height, halvings=True) for plane in (y, v, u)])


def sampled_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """BGR uint8 of (width, height) by bilinear sampling, as PySceneDetect's own SceneManager scales
    frames for its detectors (cv2.INTER_LINEAR): each output pixel reads the 2x2 source pixels
    nearest its centre, so only those rows of a large frame are read (a freshly decoded 1080p frame
    to 120x67: 0.18 ms against 0.33 for area averaging by halvings). Averages that see every pixel
    are for what keeps the picture (flow, written clips, TransNetV2's input)."""
    y, u, v = yuv420_planes(frame)
    return _bgr([cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in (y, v, u)])


def _bgr(scaled_y_v_u: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 of the Y, V and U planes scaled to one size."""
    ycrcb = cv2.merge(scaled_y_v_u)
    # Curation frames are limited range (source.py converts full-range sources).
    return cv2.cvtColor(cv2.LUT(ycrcb, _YCRCB_TO_FULL), cv2.COLOR_YCrCb2BGR)


def cover_crop(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """A yuv420p frame scaled to cover `size` (width, height, both even) and centre-cropped to it."""
    width, height = size
    scale = max(width / frame.width, height / frame.height)
    scaled_w = max(width, 2 * round(frame.width * scale / 2))
    scaled_h = max(height, 2 * round(frame.height * scale / 2))
    left, top = (scaled_w - width) // 4 * 2, (scaled_h - height) // 4 * 2  # even, so chroma stays aligned
    cropped = av.VideoFrame(width, height, "yuv420p")
    # Each scaled plane is cropped straight into the new frame's buffer: a third cheaper than
    # stacking the planes into one array for VideoFrame.from_ndarray, which copies twice.
    for shrink, source, target in zip((1, 2, 2), yuv420_planes(frame), yuv420_planes(cropped)):
        scaled = downscale(source, scaled_w // shrink, scaled_h // shrink)
        target[:] = scaled[top // shrink : (top + height) // shrink, left // shrink : (left + width) // shrink]
    return cropped
