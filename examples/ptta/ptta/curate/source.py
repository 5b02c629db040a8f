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
  byte by byte, each with its own clock) continues the timeline after the earlier frames;
* a frame is timed from its pts unless the pts goes backwards more often than the dts, as in
  FFmpeg's best-effort timestamp (here also counted a few frames ahead): H.264 with B-frames in
  AVI gives decoded frames pts such as 1, 3, 4, 2, 6, 7, 5 while their dts counts up one a frame;
* a packet the decoder rejects (a damaged stretch of the file) is skipped, as FFmpeg's own tools
  do, instead of ending the video; frames up to the next keyframe are dropped too (they would
  show the decoder's concealment smears), and the first frame after the gap is flagged so that
  no clip runs across it;
* in a millisecond time base (Matroska, WebM, FLV), a time within SNAP_SECONDS of the nominal
  frame grid is put on it: 23.976 fps frames are stamped 0, 42, 83, 125 ms, and these roundings
  would otherwise make a clip resampled to 24 fps drop and repeat a frame after under 2 s.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ptta.curate.probe import InputError, VideoInfo, open_media, read_stream_header, video_info
from ptta.video_io import yuv420_planes

# Backward steps up to this are out-of-order or repeated timestamps (their frames are dropped);
# longer ones are a restart of the clock.
DISCONTINUITY_SECONDS = 1.0
# Rounding to a 1 ms time base moves a time by at most 0.5 ms; a variable-rate frame that is this
# close to the grid is not told apart from one on it by any later stage.
SNAP_SECONDS = 1e-3
# Frames decoded ahead of the one being timed, so that a pts going backwards a few frames in (the
# first B-frame) is noticed before the frames before it are timed from their faulty pts.
TIMESTAMP_LOOKAHEAD_FRAMES = 8
FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def probe_video(path: str | Path, max_pixels: int) -> VideoInfo:
    """What curating `path` would know before its frames: the header and the first frame's
    orientation; InputError with a reason for anything that cannot be curated."""
    with CurationSource(path, max_pixels, []) as source:
        return source.info


class CurationSource:
    """A video opened once: probed from its header and first frame (`info`), then decoded from that
    same frame on by `frames()`.

    Probing needs the first decoded frame (the display matrix is only on frames); keeping the file
    open and the decoder going saves opening the file and starting a decoder twice, which cost
    about a tenth of the whole curation of a 5 s 720p file. Use as a context manager, and close
    it only after `frames()` is finished or closed.
    """

    def __init__(self, path: str | Path, max_pixels: int, warnings: list[str], threads: int = 0):
        """`threads` caps the decoder's threads (0: FFmpeg's choice, about one per core)."""
        self._warnings = warnings
        self._container = open_media(path)
        try:
            header = read_stream_header(self._container, max_pixels)
            self._stream = header.stream
            # Threading must be chosen before the first packet opens the decoder.
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = threads
            self._damaged: set[int] = set()  # ids of the first frames after skipped damage
            self._decoded = decode_past_damage(self._container, self._stream, self._damaged, warnings)
            self._first, self._first_error = None, None
            try:
                self._first = next(self._decoded, None)
            except av.error.FFmpegError as error:
                # The header was fine: this is reported as a decoding failure once frames are read.
                self._first_error = error
            self.info = video_info(path, self._container, header, self._first)
            # The start of the frame grid that millisecond times are snapped to: the first frame's
            # time, kept for a pass that seeks (frames(seek_to=...)) past that frame.
            self._grid_origin = _first_time(self._first, self._stream)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> CurationSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def decoder_threads(self) -> int:
        """The threads the decoder runs on (FFmpeg's count once it has opened)."""
        return self._stream.codec_context.thread_count

    def close(self) -> None:
        self._decoded.close()
        self._container.close()

    def _seek(self, seconds: float) -> None:
        """Go to the keyframe at or before `seconds` (on the stream's own clock) and decode from there."""
        self._decoded.close()
        self._damaged.clear()
        target = int(seconds / self._stream.time_base)
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._decoded = decode_past_damage(self._container, self._stream, self._damaged, self._warnings)

    def frames(self, seek_to: float | None = None) -> Iterator[tuple[float, av.VideoFrame, bool]]:
        """Yield (time in seconds, frame, whether frames were lost just before it); warnings are
        appended as found.

        `seek_to` (seconds) starts at the keyframe at or before that time instead of the first frame,
        for reading a stretch of a long video (clips addressed as frame ranges of their sources).
        The times are then those of a pass from the start only where the timeline has no jump
        back (timestamps restarting) before that point and every frame has its pts: a caller must
        check the frames it finds against what it expects. Each call with `seek_to` seeks again;
        a call without it (the whole video) is possible once, before any seek.
        """
        if self._first_error is not None:
            raise self._first_error
        # Held only until it is yielded, like every later frame.
        first, self._first = self._first, None
        if seek_to is not None:
            self._seek(seek_to)
            decoded = self._decoded
        elif first is None:
            return
        else:
            decoded = itertools.chain([first], self._decoded)
        info, stream, warnings = self.info, self._stream, self._warnings
        frame_interval = 1.0 / info.fps
        offset, previous = 0.0, None
        # The frame grid starts at the first timestamp (Matroska may start at 7 ms).
        grid_origin = None if seek_to is None else self._grid_origin
        snap_to_grid = stream.time_base >= Fraction(1, 1000)
        lost_before = False  # frames were lost before the next frame yielded
        for timestamp, frame in best_effort_timestamps(decoded):
            if id(frame) in self._damaged:
                self._damaged.discard(id(frame))  # ids are reused once a frame is freed
                lost_before = True
            if (frame.width, frame.height) != (info.source_width, info.source_height):
                raise InputError(f"frame size changes mid-stream ({info.source_width}x{info.source_height} -> "
                                 f"{frame.width}x{frame.height})")
            if timestamp is None:
                time = 0.0 if previous is None else previous + frame_interval
            else:
                time = float(timestamp * stream.time_base)
                grid_origin = time if grid_origin is None else grid_origin
                grid_time = grid_origin + round((time - grid_origin) * info.fps) / info.fps
                if snap_to_grid and abs(time - grid_time) <= SNAP_SECONDS:
                    time = grid_time
                time += offset
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
            yield time, upright_yuv420p(frame, info), lost_before
            lost_before = False


def _first_time(frame: av.VideoFrame | None, stream: av.video.stream.VideoStream) -> float | None:
    """The time of the first frame as frames() computes it before any offset, if it has a timestamp."""
    if frame is None:
        return None
    timestamp = frame.pts if frame.pts is not None else frame.dts
    return None if timestamp is None else float(timestamp * stream.time_base)


def decode_past_damage(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       damaged: set[int], warnings: list[str]) -> Iterator[av.VideoFrame]:
    """container.decode(stream), except that a packet the decoder rejects is skipped with the frames
    up to the next keyframe; the id of the frame that resumes is added to `damaged`."""
    skipped_packets = dropped_frames = 0
    resyncing = False
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            skipped_packets += 1
            resyncing = True
            continue
        for frame in frames:
            if resyncing and not frame.key_frame:
                dropped_frames += 1
                continue
            if resyncing:
                damaged.add(id(frame))
                resyncing = False
            yield frame
    if skipped_packets:
        warnings.append(f"damaged stream: {skipped_packets} packets the decoder rejected were skipped, with the "
                        f"{dropped_frames} frames after them up to the next keyframe; no clip spans the gaps")


def best_effort_timestamps(frames: Iterator[av.VideoFrame]) -> Iterator[tuple[int | None, av.VideoFrame]]:
    """Each frame with its timestamp chosen as FFmpeg's best_effort_timestamp does, but counting the
    faults up to TIMESTAMP_LOOKAHEAD_FRAMES ahead as well."""
    faults = TimestampFaults()
    held: deque[av.VideoFrame] = deque()
    for frame in frames:
        faults.count(frame)
        held.append(frame)
        if len(held) > TIMESTAMP_LOOKAHEAD_FRAMES:
            earliest = held.popleft()
            yield faults.timestamp(earliest), earliest
    for frame in held:
        yield faults.timestamp(frame), frame


class TimestampFaults:
    """How often pts and dts have gone backwards (or repeated), as FFmpeg's guess_correct_pts counts."""

    def __init__(self) -> None:
        self._last_pts = self._last_dts = None
        self._pts_faults = self._dts_faults = 0

    def count(self, frame: av.VideoFrame) -> None:
        if frame.pts is not None:
            self._pts_faults += self._last_pts is not None and frame.pts <= self._last_pts
            self._last_pts = frame.pts
        if frame.dts is not None:
            self._dts_faults += self._last_dts is not None and frame.dts <= self._last_dts
            self._last_dts = frame.dts

    def timestamp(self, frame: av.VideoFrame) -> int | None:
        """The frame's pts, unless the stream has dts and pts has more faults. A frame then without
        dts (the last ones flushed from the decoder) gets None, to be placed one frame after the
        previous rather than at its faulty pts."""
        if frame.pts is not None and (self._last_dts is None or self._pts_faults <= self._dts_faults):
            return frame.pts
        return frame.dts


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
