"""Real-world sources `ptta curate` must handle: phone rotation, non-square pixels, full range and
10-bit, odd sizes, extra video streams, missing, restarting, reordered (AVI B-frames) or
millisecond-rounded timestamps, symlinked folders.

Each input is generated here (64x48 to 96x48, at most 2 s) and curated by VideoCurator with
0.5-1 s clips and theta 0, so every clip is written (losslessly, crf 0) and can be compared.
"""

from __future__ import annotations

import os
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.probe import find_videos
from ptta.curate.settings import CurateSettings
from ptta.curate.source import CurationSource
from ptta.curate.video_task import VideoCurator
from ptta.video_io import yuv420_planes

FPS = 24
BACKGROUND, SQUARE = 40, 200  # RGB grey levels


def moving_square(count: int, width: int = 64, height: int = 48, side: int = 24) -> list[np.ndarray]:
    """Dark frames with a bright side x side square moving right one pixel per frame."""
    frames = []
    for index in range(count):
        rgb = np.full((height, width, 3), BACKGROUND, np.uint8)
        top, left = (height - side) // 2, 4 + index % (width - side - 8)
        rgb[top : top + side, left : left + side] = SQUARE
        frames.append(rgb)
    return frames


def encode(path: Path, frames: list[np.ndarray], codec: str = "libx264", pix_fmt: str = "yuv420p",
           container_format: str | None = None, full_range: bool = False, configure=lambda stream: None,
           rate: Fraction | int = FPS) -> Path:
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if full_range:
            stream.codec_context.color_range = 2
        configure(stream)
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if full_range:
                frame = frame.reformat(format=pix_fmt, dst_color_range="JPEG")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def curate(path: Path, out: Path, **settings) -> dict:
    settings = CurateSettings(**{"min_clip_seconds": 0.5, "max_clip_seconds": 1.0, "theta": 0.0, "crf": 0, "write_clips": True,
                                 "preset": "ultrafast", **settings})
    return VideoCurator(settings, out, ImageStatisticsProxyScorer()).run(path)


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def first_clip(record: dict, out: Path) -> list[av.VideoFrame]:
    assert record["error"] is None, record["error"]
    return decoded(out / record["clips"][0]["clip_path"])


def test_phone_rotation_is_applied(tmp_path):
    source = encode(tmp_path / "phone.mp4", moving_square(FPS), configure=lambda s: s.set_display_rotation(90))
    record = curate(source, tmp_path / "out")
    assert (record["info"]["rotation"], record["info"]["width"], record["info"]["height"]) == (90, 48, 64)
    clip = first_clip(record, tmp_path / "out")
    assert (clip[0].width, clip[0].height) == (48, 64)
    for stored, written in zip(decoded(source), clip, strict=True):
        # Counter-clockwise, as the display matrix says and players show it.
        np.testing.assert_array_equal(yuv420_planes(written)[0], np.rot90(yuv420_planes(stored)[0]))


@pytest.mark.parametrize("flags", [["-display_hflip"], ["-display_vflip"], ["-display_rotation", "90", "-display_hflip"]],
                         ids=["hflip", "vflip", "rot90-hflip"])
def test_a_mirroring_display_matrix_is_applied_as_ffmpeg_does(tmp_path, flags):
    """PyAV reports a mirror as a rotation (hflip reads -180 degrees); the clip must instead show
    what FFmpeg's autorotating decode shows."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    frames = moving_square(FPS)
    for rgb in frames:
        rgb[2:8, 2:12] = 255  # a corner mark: the square alone is symmetric top to bottom
    plain, source = encode(tmp_path / "plain.mp4", frames), tmp_path / "mirrored.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", *flags, "-i", str(plain), "-c", "copy", str(source)], check=True)
    record = curate(source, tmp_path / "out")
    assert record["info"]["mirrored"]
    first = first_clip(record, tmp_path / "out")[0]
    shown = subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(source), "-frames:v", "1", "-f", "rawvideo",
                            "-pix_fmt", "yuv420p", "-"], capture_output=True, check=True).stdout
    luma = np.frombuffer(shown, np.uint8)[: first.width * first.height].reshape(first.height, first.width)
    assert np.abs(yuv420_planes(first)[0].astype(int) - luma).max() <= 1


def square_position(frame: av.VideoFrame) -> int:
    """The bright square's left edge, which moving_square advances one pixel per frame."""
    bright = frame.to_ndarray(format="gray") > (BACKGROUND + SQUARE) / 2
    return int(np.argmax(bright.any(axis=0)))


def square_size(frame: av.VideoFrame) -> tuple[int, int]:
    """(width, height) of the bright square."""
    bright = frame.to_ndarray(format="gray") > (BACKGROUND + SQUARE) / 2
    return int(bright.any(axis=0).sum()), int(bright.any(axis=1).sum())


def test_non_square_pixels_are_scaled_to_the_display_aspect(tmp_path):
    def anamorphic(stream):
        stream.codec_context.sample_aspect_ratio = Fraction(32, 27)

    # 72x48 stored pixels of 32:27 show as 85.3x48; the 24x24 stored square as 28.4x24.
    source = encode(tmp_path / "dvd.mp4", moving_square(FPS, width=72), configure=anamorphic)
    record = curate(source, tmp_path / "out")
    assert record["info"]["sample_aspect_ratio"] == "32/27"
    clip = first_clip(record, tmp_path / "out")
    assert (clip[0].width, clip[0].height) == (86, 48)
    assert square_size(clip[0]) in {(28, 24), (29, 24)}
    # --resize covers and crops the display picture: scaled by 0.75 to 64.5x36.
    resized = first_clip(curate(source, tmp_path / "resized", out_size=(64, 36)), tmp_path / "resized")
    assert square_size(resized[0]) in {(21, 18), (22, 18)}


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "full_range"), [
    ("motion.avi", "mjpeg", "yuvj420p", False),  # JPEG frames are full range
    ("phone.mkv", "libx264", "yuv420p10le", True),
])  # fmt: skip
def test_full_range_and_10_bit_sources_keep_their_levels(tmp_path, name, codec, pix_fmt, full_range):
    source = encode(tmp_path / name, moving_square(FPS), codec, pix_fmt, full_range=full_range)
    clip = first_clip(curate(source, tmp_path / "out"), tmp_path / "out")
    rgb = clip[0].to_ndarray(format="rgb24").astype(int)
    # Read as limited range, full-range levels came out as 23 and 215.
    assert abs(rgb[2, 2] - BACKGROUND).max() <= 3
    assert abs(rgb[24, 20] - SQUARE).max() <= 3


def test_odd_sizes_lose_their_last_line_instead_of_being_rescaled(tmp_path):
    source = encode(tmp_path / "odd.mkv", moving_square(FPS, width=65, height=37, side=16), "ffv1")
    record = curate(source, tmp_path / "out")
    clip = first_clip(record, tmp_path / "out")
    assert (clip[0].width, clip[0].height) == (64, 36)
    for stored, written in zip(decoded(source), clip, strict=True):
        for stored_plane, written_plane in zip(yuv420_planes(stored), yuv420_planes(written)):
            height, width = written_plane.shape
            np.testing.assert_array_equal(written_plane, stored_plane[:height, :width])


def test_the_real_video_stream_is_curated_not_a_still_picture(tmp_path):
    path = tmp_path / "with_still.mkv"
    with av.open(str(path), "w") as container:
        still = container.add_stream("mjpeg", rate=1)
        still.width, still.height, still.pix_fmt = 32, 32, "yuvj420p"
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        still.disposition, video.disposition = av.stream.Disposition(0), av.stream.Disposition.default
        container.mux(still.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(still.encode())
        for rgb in moving_square(FPS):
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode())
    record = curate(path, tmp_path / "out")
    assert record["error"] is None
    assert (record["info"]["stream_index"], record["frames_decoded"], len(record["clips"])) == (1, FPS, 1)

    # Music with cover art only: the picture is not a video.
    song = tmp_path / "song.mp4"
    with av.open(str(song), "w") as container:
        audio = container.add_stream("aac", rate=44100)
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        container.mux(cover.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(cover.encode())
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    assert curate(song, tmp_path / "out")["error"] == "no video stream (contains: audio, cover picture)"


@pytest.mark.parametrize("container_format", ["mkv", "mp4"])
def test_audio_that_outlasts_the_picture_does_not_make_the_video_truncated(tmp_path, container_format):
    """Matroska has no duration on the video stream, and the file's is the longest stream's: 1 s of
    picture under 3 s of sound is a whole 1 s video, not one decoded to a third."""
    path = tmp_path / f"credits.{container_format}"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        for rgb in moving_square(FPS):
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode())
        for index in range(3 * 44100 // 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    record = curate(path, tmp_path / "out")
    assert record["error"] is None
    assert record["info"]["duration"] == pytest.approx(1.0, abs=0.05)
    assert len(record["clips"]) == 1


def test_a_damaged_stretch_loses_its_frames_not_the_rest_of_the_video(tmp_path):
    """300 scrambled bytes halfway through 10 s: the decoder rejects some packets; the video goes
    on from the next keyframe (one a second here), and no clip runs across the gap."""
    path = encode(tmp_path / "damaged.mp4", moving_square(10 * FPS),
                  configure=lambda stream: setattr(stream.codec_context, "gop_size", FPS))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 300] = np.random.default_rng(0).integers(0, 256, 300, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    record = curate(path, tmp_path / "out", min_clip_seconds=1.0, max_clip_seconds=2.0)
    assert record["error"] is None
    assert [w for w in record["warnings"] if "damaged stream" in w] == record["warnings"]  # and no VFR warning
    with CurationSource(path, 10**9, []) as source:
        times = [t for t, _, _ in source.frames()]
    gaps = [(a, b) for a, b in zip(times, times[1:]) if b - a > 1.5 / FPS]
    assert len(gaps) == 1 and 9 * FPS <= len(times) < 10 * FPS
    (lost_from, lost_to) = gaps[0]
    clips = record["clips"]
    assert not any(c["start"] <= lost_from and c["end"] > lost_to for c in clips)
    assert clips[-1]["end"] == pytest.approx(10.0, abs=1e-3)  # the rest of the video was curated
    assert any(c["start"] == pytest.approx(lost_to, abs=1e-3) for c in clips)  # a clip starts right after the gap


def test_a_raw_h264_stream_without_timestamps_is_timed_at_its_coded_rate(tmp_path):
    source = encode(tmp_path / "camera.h264", moving_square(36), container_format="h264")
    record = curate(source, tmp_path / "out")
    assert record["error"] is None
    # FFmpeg's average rate for a raw stream is a default 25; the stream itself says 24.
    assert (record["info"]["fps"], record["frames_decoded"]) == (24.0, 36)
    assert [(c["start"], c["end"], c["frames"]) for c in record["clips"]] == [(0.0, 1.0, 24), (1.0, 1.5, 12)]


def test_joined_recordings_continue_the_timeline(tmp_path):
    # Two MPEG-TS recordings joined byte by byte (cat a.ts b.ts): the clock restarts after 1.5 s.
    parts = [encode(tmp_path / f"part{i}.ts", moving_square(frames), container_format="mpegts")
             for i, frames in enumerate((36, 12))]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    record = curate(joined, tmp_path / "out")
    assert record["error"] is None and record["frames_decoded"] == 2 * FPS
    assert len(record["warnings"]) == 1 and "timestamps jump back" in record["warnings"][0]
    (first, second) = record["clips"]
    assert (first["frames"], second["frames"]) == (FPS, FPS)
    assert second["start"] == pytest.approx(first["end"]) == pytest.approx(first["start"] + 1.0)


def test_b_frames_in_avi_are_timed_from_dts(tmp_path):
    """AVI has no pts: the decoder's guessed pts of H.264 with B-frames go 1, 3, 4, 2, 6, 7, 5, ..."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    plain, source = encode(tmp_path / "plain.mkv", moving_square(2 * FPS, width=96), "ffv1"), tmp_path / "b.avi"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(plain), "-c:v", "libx264", "-bf", "2", "-crf", "10",
                    "-pix_fmt", "yuv420p", str(source)], check=True)
    record = curate(source, tmp_path / "out")
    assert (record["error"], record["warnings"], record["frames_decoded"]) == (None, [], 2 * FPS)
    for clip in record["clips"]:
        positions = [square_position(frame) for frame in decoded(tmp_path / "out" / clip["clip_path"])]
        assert np.diff(positions).tolist() == [1] * (clip["frames"] - 1)


@pytest.mark.parametrize("start_ms", [0, 7])
def test_millisecond_timestamps_of_ntsc_rates_resample_to_24_fps_without_repeats(tmp_path, start_ms):
    """23.976 fps in Matroska is stamped 0, 42, 83, 125 ms: over 2 s at 24 fps the grids drift only
    2 ms apart, but with the rounding on top a frame was repeated and the next one dropped. The
    frame grid starts at the first timestamp, which need not be 0."""
    source = encode(tmp_path / "ntsc.mkv", moving_square(47, width=96), rate=Fraction(24000, 1001))
    if start_ms:
        shifted = tmp_path / "shifted.mkv"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(source), "-c", "copy",
                        "-output_ts_offset", f"{start_ms / 1000}", str(shifted)], check=True)
        source = shifted
    record = curate(source, tmp_path / "out", out_fps=24, min_clip_seconds=1.5, max_clip_seconds=2.0)
    clip = first_clip(record, tmp_path / "out")
    assert np.diff([square_position(frame) for frame in clip]).tolist() == [1] * (len(clip) - 1)


def test_folders_are_searched_through_symlinks_once(tmp_path):
    (tmp_path / "data" / "show").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for name in ("data/show/ep1.mkv", "elsewhere/ep2.MP4", "elsewhere/ep3.h264", "elsewhere/ep3.txt"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "linked")
    os.symlink(tmp_path / "data", tmp_path / "data" / "show" / "loop")  # a link back up must not loop
    found = find_videos([tmp_path / "data"])
    assert sorted(path.relative_to(tmp_path).as_posix() for path in found) == [
        "data/show/ep1.mkv", "elsewhere/ep2.MP4", "elsewhere/ep3.h264"]  # fmt: skip


def test_a_size_change_mid_stream_fails_the_video_from_the_decoder_thread(tmp_path):
    """Raw H.264 streams of two sizes joined byte by byte: the error is raised where frames are
    decoded (a thread of its own) and must still fail the video with its reason."""
    parts = [encode(tmp_path / f"part{i}.h264", moving_square(36, width=width), container_format="h264")
             for i, width in enumerate((64, 96))]
    joined = tmp_path / "joined.h264"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    record = curate(joined, tmp_path / "out")
    assert record["error"] == "frame size changes mid-stream (64x48 -> 96x48)"
    assert record["status"] == "failed"


def test_the_size_checked_against_max_pixels_is_the_size_frames_must_keep(tmp_path):
    """A raw stream whose header says 64x48 but whose first decodable frames are 640x480 (the small
    part's slices are damaged): decoding the first frame must not move the checked size to 640x480,
    which would let frames over --max-pixels through."""
    small = encode(tmp_path / "small.h264", moving_square(48), container_format="h264").read_bytes()
    large = encode(tmp_path / "large.h264", moving_square(48, width=640, height=480, side=100),
                   container_format="h264").read_bytes()
    rng = np.random.default_rng(0)
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", small)] + [len(small)]
    damaged = bytearray(small[: starts[0]])
    for start, end in zip(starts, starts[1:]):
        unit = bytearray(small[start:end])
        if unit[3] & 0x1F in (1, 5):  # coded slices: scrambled, parameter sets kept
            unit[5:] = rng.integers(1, 256, len(unit) - 5, np.uint8).tobytes()
        damaged += unit
    joined = tmp_path / "joined.h264"
    joined.write_bytes(bytes(damaged) + large)
    record = curate(joined, tmp_path / "out", max_pixels=64 * 48)
    assert record["error"] == "frame size changes mid-stream (64x48 -> 640x480)"
    assert record["info"]["source_width"] == 64
