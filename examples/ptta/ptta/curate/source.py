"""Decode a video's frames in the one form every later stage expects, whatever the source holds.

Shot detection, flow, the aesthetic scorer and the written clips all get frames that are
limited-range yuv420p, upright, in square pixels and of even size, with times that only go forward:

* the display matrix (phone video) is applied as FFmpeg's autorotate does: a mirror in it flips
  the picture upside down, then the rotation turns it in steps of 90 degrees counter-clockwise
  (every rotation/flip combination matches FFmpeg's own decode);
* non-square pixels (SAR other than 1: anamorphic DVD, HDV) are scaled to the display width;
* an odd width or height loses its last column or row (yuv420p needs even sizes, and cropping one
  line keeps the picture sharp where scaling would resample all of it);
* full-range ("JPEG": MJPEG, many phone and screen recordings), 10-bit, 4:2:2, 4:4:4, RGB and
  alpha formats are converted to limited-range 8-bit 4:2:0, alpha dropped. The range must be
  stated to libswscale: PyAV's reformat passes "unspecified", which copies full-range values
  unchanged into a limited-range frame (crushed blacks, clipped whites);
* a frame without a timestamp (a raw .h264 stream has none) is placed one frame after the
  previous one, and a jump back in time of more than DISCONTINUITY_SECONDS (recordings joined
  byte by byte, each with its own clock) continues the timeline after the earlier frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from ptta.curate.probe import InputError, VideoInfo
from ptta.video_io import yuv420_planes

# Backward steps up to this are out-of-order or repeated timestamps (their frames are dropped);
# longer ones are a restart of the clock.
DISCONTINUITY_SECONDS = 1.0
FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def iter_curation_frames(path: str | Path, info: VideoInfo, warnings: list[str]) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (time in seconds, frame) for the stream `info` describes; warnings are appended as found."""
    frame_interval = 1.0 / info.fps
    offset, previous = 0.0, None
    with av.open(str(path)) as container:
        stream = container.streams[info.stream_index]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if (frame.width, frame.height) != (info.source_width, info.source_height):
                raise InputError(f"frame size changes mid-stream ({info.source_width}x{info.source_height} -> "
                                 f"{frame.width}x{frame.height})")
            if frame.pts is None:
                time = 0.0 if previous is None else previous + frame_interval
            else:
                time = float(frame.pts * stream.time_base) + offset
                if previous is not None and time < previous - DISCONTINUITY_SECONDS:
                    warnings.append(f"timestamps jump back from {previous - offset:.2f} s to {time - offset:.2f} s "
                                    "(joined recordings?): the later frames are placed after the earlier ones")
                    offset += previous + frame_interval - time
                    time = previous + frame_interval
            if previous is not None and time <= previous:
                continue  # a repeated or out-of-order timestamp carries no new picture time
            if previous is None and frame.interlaced_frame:
                warnings.append("interlaced video: curated as is, not deinterlaced (combing shows where things move)")
            previous = time
            yield time, upright_yuv420p(frame, info)


def upright_yuv420p(frame: av.VideoFrame, info: VideoInfo) -> av.VideoFrame:
    """The frame as limited-range yuv420p of info's (width, height): scaled for SAR, cropped even, rotated."""
    turns = info.rotation // 90
    # The size before rotation: square pixels, even sides.
    width, height = (info.height, info.width) if turns % 2 else (info.width, info.height)
    if info.sample_aspect_ratio is not None:
        frame = frame.reformat(width=width, height=height, format="yuv420p", src_color_range=_range(frame),
                               dst_color_range="MPEG")
    elif frame.format.name != "yuv420p" or frame.color_range == FULL_RANGE:
        frame = frame.reformat(format="yuv420p", src_color_range=_range(frame), dst_color_range="MPEG")
    if turns == 0 and not info.mirrored and (frame.width, frame.height) == (width, height):
        return frame
    upright = av.VideoFrame(info.width, info.height, "yuv420p")
    for shrink, source, target in zip((1, 2, 2), yuv420_planes(frame), yuv420_planes(upright)):
        plane = source[: height // shrink, : width // shrink]
        target[:] = np.rot90(plane[::-1] if info.mirrored else plane, turns)
    return upright


def _range(frame: av.VideoFrame) -> str:
    """The source range as libswscale must be told it (see the module docstring)."""
    return "JPEG" if frame.color_range == FULL_RANGE or frame.format.name.startswith("yuvj") else "MPEG"
