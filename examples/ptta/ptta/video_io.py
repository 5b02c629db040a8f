"""Video reading and writing shared by every PTTA stage (PyAV; frames are uint8 RGB, (H, W, 3)).

Decoding streams frame by frame so a two-hour file never sits in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def iter_frames(path: str | Path, start: float = 0.0, end: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in seconds, RGB frame) for every decoded frame with start <= time < end."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start > 0:
            # seek lands on the keyframe before `start`; frames before it are skipped below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if t < start - 1e-6:
                continue
            if end is not None and t >= end - 1e-6:
                break
            yield t, frame.to_ndarray(format="rgb24")


def iter_decoded_frames(path: str | Path) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield (time in seconds, decoded frame in its native pixel format) for the first video stream.

    For stages that convert or scale frames themselves: keeping the decoder's own frame avoids an
    RGB copy of every frame. Frames without a timestamp are skipped.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.pts is not None:
                yield float(frame.pts * stream.time_base), frame


def yuv420_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of a decoded frame as uint8 arrays (views, no copy, for yuv420p).

    Frames in any other pixel format are converted to yuv420p first. Working on the planes with
    OpenCV is several times cheaper than PyAV's reformat (libswscale) for scaling and grey frames.
    """
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return tuple(
        np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width] for plane in frame.planes
    )


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video, (N, H, W, 3), and its frame rate (the stream's average rate).

    Meant for short clips such as generated samples; use `iter_frames` for long footage.
    """
    frames, rate = decode_video(path)
    return np.stack([frame.to_ndarray(format="rgb24") for frame in frames]), rate


def decode_video(path: str | Path) -> tuple[list[av.VideoFrame], float]:
    """All decoded frames of a short video, in the decoder's pixel format, and its frame rate: for a
    caller that converts only some of them to RGB (`frame.to_ndarray(format="rgb24")`, as
    `read_video` does for every frame). ValueError naming the file when nothing decodes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        stream.thread_type = "AUTO"
        frames = list(container.decode(stream))
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    if not rate:
        raise ValueError(f"{path}: the video stream has no frame rate")
    return frames, float(rate)


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float, crf: int = 18,
                preset: str = "veryfast") -> Path:
    """Encode RGB uint8 frames as H.264 mp4 (yuv420p; odd sizes are padded by one pixel).

    `preset` is libx264's speed/size trade-off (ultrafast ... veryslow); quality is set by `crf`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_decoded_video(path: str | Path, frames: Sequence[av.VideoFrame], fps: float, encoder: str = "libx264",
                        options: dict[str, str] | None = None, threads: int = 0) -> Path:
    """Encode decoded frames (any pixel format, all one size) as yuv420p mp4, with no RGB round trip.

    `encoder` is any FFmpeg video encoder PyAV has (libx264, libx265, h264_nvenc, ...), opened with
    `options` (its AVOptions, e.g. {"crf": "20", "preset": "superfast"}); an option the encoder
    does not know raises ValueError rather than being ignored. Frames are re-timed at a constant
    `fps`. An odd width or height is rounded down to even (yuv420p needs even sizes), which the
    encoder does by scaling. `threads` caps the encoder's threads (0: the encoder's own choice).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=rate)
        stream.width, stream.height = frames[0].width // 2 * 2, frames[0].height // 2 * 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = threads
        stream.options = dict(options or {})
        for number, frame in enumerate(frames):
            if frame.format.name != "yuv420p" or (frame.width, frame.height) != (stream.width, stream.height):
                frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
            # The encoder keeps its own reference with these values, so a frame may be sent twice.
            frame.pts = number
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            if number == 0 and stream.codec_context.options:
                # Opening the encoder consumed the options it knows; FFmpeg silently drops the rest.
                raise ValueError(f"{encoder} has no option {', '.join(sorted(stream.codec_context.options))}")
        container.mux(stream.encode())
    return path


def check_encoder(encoder: str, options: dict[str, str] | None = None) -> None:
    """Encode two small frames with `encoder` and `options`; ValueError saying why if that fails
    (an unknown encoder, no yuv420p, a bad or unknown option, a hardware encoder without its device)."""
    if encoder not in av.codecs_available:
        raise ValueError(f"{encoder}: no such encoder in this FFmpeg (PyAV {av.__version__})")
    codec = av.codec.Codec(encoder, "w")
    if codec.type != "video":
        raise ValueError(f"{encoder}: not a video encoder")
    if "yuv420p" not in {f.name for f in codec.video_formats or ()}:
        raise ValueError(f"{encoder}: does not encode yuv420p")
    blank = [av.VideoFrame(256, 144, "yuv420p") for _ in range(2)]
    for frame in blank:
        for plane in yuv420_planes(frame):
            plane[:] = 128
    with tempfile.TemporaryDirectory() as scratch:
        try:
            write_decoded_video(Path(scratch) / "check.mp4", blank, fps=24, encoder=encoder, options=options)
        except (av.error.FFmpegError, OSError) as error:
            raise ValueError(f"{encoder} with options {options or {}} cannot encode: {error}") from None


def write_gif(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float) -> Path:
    """Write an animated GIF (loops forever)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return path
