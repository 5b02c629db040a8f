"""Clips as frame ranges of their sources: read a clip's frames from the video it was cut from.

By default `ptta curate` writes no file per clip: a clip is its address in the manifest, `source`
plus `first_frame` and `source_frames` (0-based index and count of the frames the curation's own
decode gives, `source.CurationSource`: display order, upright, square pixels, limited-range
yuv420p, repeated timestamps dropped), `start`/`end` (their times), `frames` and `fps` (the clip
after resampling), `width`/`height`, `clip_format_version` and `source_signature` (size, mtime and
a hash of the first and last MiB). `SourceClipReader` turns such an address back into the frames a
written clip would hold, through the very functions that make written clips
(`clip_writer.resample_times` and `output_frames`), so the two cannot disagree.

One source is kept open while consecutive clips are read from it: each clip is reached by decoding
forward from the previous one, or by seeking to the keyframe before it when it lies more than
SEEK_GAP_SECONDS ahead. A seek is checked against the address (the first frame's time, the time
after the last, the number of frames); a source where it cannot be trusted (timestamps that
restart, frames without timestamps) is decoded from its first frame instead and counted there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ptta.curate.clip_writer import output_frames, resample_times
from ptta.curate.probe import InputError
from ptta.curate.records import source_signature
from ptta.curate.settings import CLIP_FORMAT_VERSION
from ptta.curate.source import CurationSource

# A clip starting this far past the frame the decoder has reached is reached by seeking instead.
SEEK_GAP_SECONDS = 10.0
# Times in the manifest are rounded to the microsecond.
TIME_TOLERANCE = 2e-6
_UNLIMITED_PIXELS = 1 << 62
_UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED (colorspace); AVCOL_RANGE_UNSPECIFIED is 0


class ClipSourceError(Exception):
    """A clip's source is missing, changed since curation, or does not decode to the recorded frames."""


@dataclass(frozen=True)
class ClipAddress:
    id: str
    source: Path
    first_frame: int
    source_frames: int
    start: float
    end: float
    frames: int  # after resampling to fps
    fps: float
    size: tuple[int, int]  # (width, height) of the clip
    signature: dict
    clip_format_version: int

    @classmethod
    def from_row(cls, row: dict, base: Path | None = None) -> ClipAddress | None:
        """The address in a manifest row (a relative source counts from `base`); None in a row of a
        folder curated before clips had addresses."""
        if row.get("first_frame") is None or row.get("source_frames") is None or not row.get("source"):
            return None
        source = Path(row["source"])
        if base is not None and not source.is_absolute():
            source = base / source
        return cls(str(row["id"]), source, int(row["first_frame"]), int(row["source_frames"]), float(row["start"]),
                   float(row["end"]), int(row["frames"]), float(row["fps"]), (int(row["width"]), int(row["height"])),
                   dict(row.get("source_signature") or {}), int(row.get("clip_format_version") or 0))


def check_source(address: ClipAddress) -> None:
    """ClipSourceError naming the source unless it is there with the signature it was curated with.

    Size and the hash of the first and last MiB must match; a different modification time alone
    (a copy that did not keep times) is accepted. A row without the hash (never written by this
    version) is checked on size and modification time.
    """
    path, stored = address.source, address.signature
    if not path.is_file():
        raise ClipSourceError(f"source {path} of clip {address.id} does not exist (moved or deleted since it was "
                              "curated); restore it, or curate again with --write-clips while it is there")
    current = source_signature(path)
    keys = ("size", "head_tail_blake2b") if "head_tail_blake2b" in stored else ("size", "mtime_ns")
    changed = [key for key in keys if key in stored and stored[key] != current[key]]
    if changed:
        what = "size" if "size" in changed else ("first or last MiB" if "head_tail_blake2b" in changed else "mtime")
        raise ClipSourceError(f"source {path} of clip {address.id} changed since it was curated ({what} differs): "
                              "its clips can no longer be read from it; curate it again")
    if address.clip_format_version != CLIP_FORMAT_VERSION:
        raise ClipSourceError(f"clip {address.id} is a frame range of {path} curated with clip format "
                              f"{address.clip_format_version}; this ptta decodes frames as format {CLIP_FORMAT_VERSION} "
                              "does: curate it again")


def clip_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB of a clip frame as `video_io.read_video` gets it from the written clip. A written clip's
    stream carries no colour tags (the encoder is not given the source's), so its frames convert
    with libswscale's defaults (BT.601 matrix, limited range) even where the source was tagged
    BT.709; the source's frame is converted the same way."""
    frame.colorspace = _UNSPECIFIED
    frame.color_range = 0
    return frame.to_ndarray(format="rgb24")


class _Mismatch(Exception):
    """The frames found are not those of the address (a seek that cannot be trusted)."""


class _OpenSource:
    """One source being decoded forward; `index` counts frames only when decoding began at the first."""

    def __init__(self, path: Path, threads: int, seek_to: float | None):
        self.path = path
        self.source = CurationSource(path, _UNLIMITED_PIXELS, [], threads)
        self.indexed = seek_to is None
        self._frames: Iterator[tuple[float, av.VideoFrame, bool]] = self.source.frames(seek_to)
        self.index = 0  # of the next frame, when indexed
        self.pending: tuple[float, av.VideoFrame] | None = None
        self.last_time: float | None = None
        self.ended = False

    def close(self) -> None:
        self._frames.close()
        self.source.close()

    def seek(self, seconds: float) -> None:
        self._frames.close()
        self._frames = self.source.frames(seconds)
        self.indexed, self.pending, self.last_time, self.ended = False, None, None, False

    def next_time(self) -> float | None:
        """The time of the next frame (None at the end)."""
        frame = self._peek()
        return None if frame is None else frame[0]

    def _peek(self) -> tuple[float, av.VideoFrame] | None:
        if self.pending is None and not self.ended:
            try:
                time, frame, _ = next(self._frames)
                self.pending = (time, frame)
            except StopIteration:
                self.ended = True
        return self.pending

    def _take(self) -> tuple[float, av.VideoFrame] | None:
        frame = self._peek()
        if frame is not None:
            self.pending, self.index, self.last_time = None, self.index + 1, frame[0]
        return frame

    def clip(self, address: ClipAddress) -> tuple[list[tuple[float, av.VideoFrame]], float]:
        """The address's source frames with their times, and the clip's end time."""
        # The first frame: by index when counting from the start, else by time.
        while True:
            upcoming = self._peek()
            if upcoming is None:
                raise _Mismatch(f"the source ends before {address.start:.3f} s")
            if self.indexed and self.index == address.first_frame or not self.indexed and (
                    upcoming[0] >= address.start - TIME_TOLERANCE):
                break
            if self.indexed and self.index > address.first_frame:
                raise _Mismatch(f"frame {address.first_frame} was passed")
            self._take()
        if abs(upcoming[0] - address.start) > TIME_TOLERANCE:
            raise _Mismatch(f"the first frame is at {upcoming[0]:.6f} s, the clip starts at {address.start:.6f} s")
        frames = []
        for _ in range(address.source_frames):
            frame = self._take()
            if frame is None:
                raise _Mismatch(f"the source ends after {len(frames)} of the clip's {address.source_frames} frames")
            frames.append(frame)
        try:
            after = self.next_time()
        except av.error.FFmpegError:  # damage right after the clip: its end as recorded
            after, self.ended = address.end, True
        end = frames[-1][0] + 1.0 / self.source.info.fps if after is None else after
        if abs(end - address.end) > TIME_TOLERANCE:
            raise _Mismatch(f"the clip ends at {end:.6f} s, recorded {address.end:.6f} s")
        return frames, end


class SourceClipReader:
    """Read clips from their sources (`read`), keeping the last source open for the next clip of it.

    Use as a context manager. Each source is checked (check_source) when it is opened.
    """

    def __init__(self, threads: int = 0):
        """`threads` caps the decoder's threads (0: FFmpeg's choice)."""
        self._threads = threads
        self._open: _OpenSource | None = None
        self._unseekable: set[Path] = set()  # sources where a seek gave other frames than the record's

    def __enter__(self) -> SourceClipReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None

    def read(self, address: ClipAddress, out_size: tuple[int, int] | None | str = "auto",
             positions: Sequence[int] | None = None) -> list[av.VideoFrame]:
        """The frames a clip written for `address` would hold, in yuv420p (the encoder's input).

        `out_size` is curation's --resize; "auto" takes it from the address (no resizing where
        the clip has the upright source's size, which a resize to that size would leave equal).
        `positions` (indices among the clip's `address.frames` frames) returns only those, and
        resizes only those: every frame of the clip is still decoded and checked.
        """
        try:
            source_frames, end = self._source_frames(address)
        except av.error.FFmpegError as error:
            self.close()
            raise ClipSourceError(f"source {address.source} of clip {address.id}: decoding failed: {error}") from error
        times = resample_times(source_frames[0][0], end, address.fps)
        if len(times) != address.frames:
            raise ClipSourceError(f"source {address.source} of clip {address.id}: {len(times)} frames at "
                                  f"{address.fps:g} fps, the manifest says {address.frames}; curate it again")
        if out_size == "auto":
            info = self._open.source.info
            out_size = None if address.size == (info.width, info.height) else address.size
        return output_frames(source_frames, times, out_size, positions)

    def read_rgb(self, address: ClipAddress, positions: Sequence[int] | None = None) -> tuple[np.ndarray, float]:
        """(frames (N, H, W, 3) uint8, frame rate) as `video_io.read_video` reads the written clip;
        `positions` as for `read`."""
        frames = self.read(address, positions=positions)
        rgb = np.stack([clip_rgb(frame) for frame in frames])
        return rgb, written_rate(address.fps)

    def _source_frames(self, address: ClipAddress) -> tuple[list[tuple[float, av.VideoFrame]], float]:
        for attempt in range(2):
            try:
                state = self._state_for(address)
                return state.clip(address)
            except (_Mismatch, av.error.FFmpegError, InputError) as problem:
                counted = self._open is None or self._open.indexed
                self.close()
                if counted:
                    raise ClipSourceError(f"source {address.source} does not decode to the frames recorded for clip "
                                          f"{address.id} ({problem}); curate it again") from None
                # A seek cannot be trusted in this source: count its frames from the first.
                self._unseekable.add(address.source)
        raise AssertionError("unreachable")

    def _state_for(self, address: ClipAddress) -> _OpenSource:
        """The open source positioned at or before the address's first frame."""
        seekable = address.source not in self._unseekable and address.first_frame > 0
        state = self._open
        if state is not None and state.path == address.source:
            upcoming = state.next_time()
            if state.indexed:
                before = state.index <= address.first_frame
            else:
                before = upcoming is not None and upcoming <= address.start + TIME_TOLERANCE
            if before and (not seekable or upcoming is None or address.start - upcoming <= SEEK_GAP_SECONDS):
                return state
            if seekable:
                state.seek(address.start)
                return state
        self.close()
        check_source(address)
        self._open = _OpenSource(address.source, self._threads, address.start if seekable else None)
        return self._open


def written_rate(fps: float) -> float:
    """The frame rate a clip written at `fps` declares (video_io.write_decoded_video's stream rate)."""
    return float(Fraction(fps).limit_denominator(1001))
