"""Find input videos and probe them with PyAV before decoding."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv",
    ".3gp", ".ogv", ".vob", ".mxf", ".h264", ".264", ".h265", ".hevc",
})  # fmt: skip
DISPLAY_MATRIX = SideDataType.DISPLAYMATRIX


class InputError(Exception):
    """A file that cannot be curated; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    size_bytes: int
    duration: float | None  # seconds; None when the container does not say
    fps: float  # nominal (average) frame rate
    width: int  # of the frames as curated: upright, square pixels, even (see source.py)
    height: int
    codec: str
    pixel_format: str | None
    frames: int | None  # from the container header; None when unknown
    has_audio: bool
    stream_index: int  # the video stream curated (cover pictures are never chosen)
    source_width: int  # as stored in the stream
    source_height: int
    rotation: int  # degrees counter-clockwise the display matrix turns the picture: 0, 90, 180 or 270
    mirrored: bool  # the matrix also mirrors it (upside down before the rotation, see source.py)
    sample_aspect_ratio: str | None  # "32/27" for non-square pixels; None for square ones

    def to_dict(self) -> dict:
        return asdict(self)


def find_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand directories recursively (video extensions only); files named explicitly are kept as is.

    A file named explicitly is kept whatever its extension, so a bad file the user asked for is
    reported rather than silently skipped. A path that does not exist raises FileNotFoundError.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in _video_files_under(path):
                found[child.resolve()] = None
        elif path.exists():
            found[path.resolve()] = None
        else:
            raise FileNotFoundError(f"input {item}: no such file or directory")
    return list(found)


def _video_files_under(folder: Path) -> list[Path]:
    """Files with a video extension under `folder`, sorted, following symlinked folders.

    Datasets are often assembled from symlinked folders, which Path.rglob does not enter; each
    real folder is walked once, so a link pointing back up ends rather than loops.
    """
    files, walked = [], set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = Path(root).resolve()
        if real in walked:
            folders.clear()
            continue
        walked.add(real)
        files += [Path(root) / name for name in names if Path(name).suffix.lower() in VIDEO_EXTENSIONS]
    return sorted(file for file in files if file.is_file())


def read_file_list(list_path: str | Path) -> list[str]:
    """Paths listed one per line (blank lines and lines starting with # are skipped).

    Relative paths are taken relative to the list file's directory.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"--file-list {list_path}: no such file")
    entries = []
    for line in list_path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line)
            entries.append(str(entry if entry.is_absolute() else list_path.parent / entry))
    return entries


def video_id(path: str | Path) -> str:
    """A stable, readable id: the sanitised file stem plus 8 hex digits of the absolute path's hash."""
    path = Path(path).resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:48] or "video"
    return f"{stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def shard_of(path: str | Path, num_shards: int) -> int:
    """Shard index of a video: a hash of its absolute path, so every shard agrees without a listing."""
    return int(hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8], 16) % num_shards


def open_media(path: str | Path) -> av.container.InputContainer:
    """The opened container; InputError for an empty or unreadable file."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as error:
        raise InputError(f"not a readable media file: {error}") from None


@dataclass(frozen=True)
class StreamHeader:
    """The video stream to curate and what its header states, read before anything is decoded:
    decoding updates the codec context to the first frame's size, which may differ (a damaged
    start), and the --max-pixels check and the frame-size check must use what was checked."""

    stream: av.VideoStream
    source_width: int
    source_height: int
    sample_aspect_ratio: Fraction | None  # only when it changes the display width
    rate: Fraction
    codec: str
    pixel_format: str | None


def read_stream_header(container: av.container.InputContainer, max_pixels: int) -> StreamHeader:
    """The video stream to curate, checked from the header alone (nothing decoded yet)."""
    stream = pick_video_stream(container)
    if stream is None:
        kinds = sorted({"cover picture" if _is_cover(s) else s.type for s in container.streams}) or ["no streams"]
        raise InputError(f"no video stream (contains: {', '.join(kinds)})")
    source_width, source_height = stream.codec_context.width, stream.codec_context.height
    if not source_width or not source_height:
        raise InputError("video stream has no frame size (corrupt header)")
    if min(source_width, source_height) < 2:
        raise InputError(f"frames of {source_width}x{source_height} are too small")
    sample_aspect_ratio = _non_square_pixels(stream)
    # A rotation swaps the sides, so the curated size can be checked before the first frame is.
    width, height = curated_size(source_width, source_height, sample_aspect_ratio, 0)
    if max(width * height, source_width * source_height) > max_pixels:
        raise InputError(f"frames of {source_width}x{source_height} exceed --max-pixels {max_pixels}")
    rate = _frame_rate(container, stream)
    if not rate or float(rate) <= 0:
        raise InputError("video stream has no frame rate")
    return StreamHeader(stream, source_width, source_height, sample_aspect_ratio, rate,
                        stream.codec_context.name, stream.codec_context.pix_fmt)


def video_info(path: str | Path, container: av.container.InputContainer, header: StreamHeader,
               first_frame: av.VideoFrame | None) -> VideoInfo:
    """What curation needs to know of a stream read_stream_header accepted; the first decoded
    frame carries the display matrix (None: taken as upright)."""
    path = Path(path)
    rotation, mirrored = display_orientation(first_frame)
    width, height = curated_size(header.source_width, header.source_height, header.sample_aspect_ratio, rotation)
    return VideoInfo(
        path=str(path),
        size_bytes=path.stat().st_size,
        duration=_video_duration(container, header.stream),
        fps=float(header.rate),
        width=width,
        height=height,
        codec=header.codec,
        pixel_format=header.pixel_format,
        frames=header.stream.frames or None,
        has_audio=bool(container.streams.audio),
        stream_index=header.stream.index,
        source_width=header.source_width,
        source_height=header.source_height,
        rotation=rotation,
        mirrored=mirrored,
        sample_aspect_ratio=None if header.sample_aspect_ratio is None else str(header.sample_aspect_ratio),
    )


def _frame_rate(container: av.container.InputContainer, stream: av.VideoStream) -> Fraction | None:
    """The nominal rate. A raw stream (.h264) has no container timing: its average rate is FFmpeg's
    default guess of 25, while the codec states the rate it was encoded at."""
    if container.duration is None and stream.codec_context.framerate:
        return stream.codec_context.framerate
    return stream.average_rate or stream.guessed_rate or stream.base_rate


def pick_video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The stream FFmpeg would play (default disposition, then the most frames), never a cover picture."""
    best = container.streams.best("video")
    if best is not None and not _is_cover(best):
        return best
    return next((s for s in container.streams.video if not _is_cover(s)), None)


def curated_size(source_width: int, source_height: int, sample_aspect_ratio: Fraction | None,
                 rotation: int) -> tuple[int, int]:
    """(width, height) of the frames curated: square pixels at the display width, even, upright."""
    if sample_aspect_ratio is None:
        width = source_width // 2 * 2
    else:
        width = max(2, 2 * round(source_width * sample_aspect_ratio / 2))
    height = source_height // 2 * 2
    return (height, width) if rotation % 180 else (width, height)


def _video_duration(container, stream) -> float | None:
    """Seconds of the video stream, None when nothing states them.

    Matroska keeps no duration on the stream but writers tag it (DURATION=00:00:06.000000000);
    the container's own duration is the longest stream's, so it stands for the video only when
    there is no other stream (an audio track that outlasts the picture would make the video look
    truncated).
    """
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = next((v for k, v in stream.metadata.items() if k.lower() == "duration"), None)
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            pass  # an unreadable tag states nothing
    others = [s for s in container.streams if s.index != stream.index and not _is_cover(s)]
    if container.duration is not None and not others:
        return container.duration / av.time_base
    return None


def _is_cover(stream: av.stream.Stream) -> bool:
    """An attached picture: the cover art of an mp4/mkv/mp3, one still image."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def _non_square_pixels(stream: av.VideoStream) -> Fraction | None:
    """The sample aspect ratio (container's, else the codec's) when it changes the display width."""
    ratio = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not ratio or ratio <= 0:
        return None
    width = stream.codec_context.width
    return ratio if 2 * round(width * ratio / 2) != width // 2 * 2 else None


def display_orientation(frame: av.VideoFrame | None) -> tuple[int, bool]:
    """(rotation, mirrored) of a decoded frame's display matrix: the rotation rounded to 0, 90, 180
    or 270 degrees counter-clockwise, and whether the matrix mirrors the picture (a negative
    determinant). PyAV shows the matrix only on decoded frames; no frame or no matrix is upright."""
    matrices = [] if frame is None else [data for data in frame.side_data if data.type == DISPLAY_MATRIX]
    if not matrices:
        return 0, False
    # 3 x 3 int32, row-major; a, b, c, d = entries 0, 1, 3, 4 (16.16 fixed point)
    a, b, _, c, d = (int(value) for value in np.frombuffer(bytes(matrices[0]), np.int32)[:5])
    return round(frame.rotation / 90) % 4 * 90, a * d - b * c < 0
