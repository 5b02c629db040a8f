"""Find input videos and probe them with PyAV before decoding."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import av

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"})


class InputError(Exception):
    """A file that cannot be curated; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    size_bytes: int
    duration: float | None  # seconds; None when the container does not say
    fps: float  # nominal (average) frame rate
    width: int
    height: int
    codec: str
    pixel_format: str | None
    frames: int | None  # from the container header; None when unknown
    has_audio: bool

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
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in VIDEO_EXTENSIONS:
                    found[child.resolve()] = None
        elif path.exists():
            found[path.resolve()] = None
        else:
            raise FileNotFoundError(f"input {item}: no such file or directory")
    return list(found)


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


def probe_video(path: str | Path, max_pixels: int) -> VideoInfo:
    """Read the container header; raise InputError with a reason for anything that cannot be curated."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InputError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise InputError(f"not a readable media file: {error}") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise InputError(f"no video stream (contains: {', '.join(kinds)})")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise InputError("video stream has no frame size (corrupt header)")
        if width * height > max_pixels:
            raise InputError(f"frames of {width}x{height} exceed --max-pixels {max_pixels}")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or float(rate) <= 0:
            raise InputError("video stream has no frame rate")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(
            path=str(path),
            size_bytes=size,
            duration=duration,
            fps=float(rate),
            width=width,
            height=height,
            codec=stream.codec_context.name,
            pixel_format=stream.codec_context.pix_fmt,
            frames=stream.frames or None,
            has_audio=bool(container.streams.audio),
        )
