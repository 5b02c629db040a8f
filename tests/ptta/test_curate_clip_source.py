"""Clips as frame ranges of their sources: the frames read back from a source equal those of the
clip `--write-clips` writes, on every kind of source curation handles.

Each source is curated with every clip written losslessly (crf 0), then every clip is read from
its source through the manifest's address, in order with one reader, each with a fresh reader
(which seeks), and in reverse order; the RGB frames and the frame rate must equal what
`video_io.read_video` (what `ptta cache` reads a written clip with) gives for the written clip.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from test_curate_pipeline import write_h264
from test_curate_sources import FPS, curate, encode

from ptta.assets import big_buck_bunny_path
from ptta.curate.clip_source import ClipAddress, ClipSourceError, SourceClipReader
from ptta.curate.settings import CLIP_FORMAT_VERSION
from ptta.synthetic import ShotSpec, make_animation_video
from ptta.video_io import read_video


def colourful(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Smooth saturated colours moving right one pixel a frame (no cut): the colour conversion shows."""
    import cv2

    coarse = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return [np.roll(base, index, axis=1) for index in range(count)]


def addresses(record: dict) -> list[ClipAddress]:
    return [ClipAddress.from_row({**clip, "source_signature": record["signature"]}) for clip in record["clips"]]


def assert_sources_give_the_written_clips(record: dict, out: Path) -> None:
    assert record["error"] is None, record["error"]
    clips = [clip for clip in record["clips"] if clip["clip_path"]]
    assert clips and len(clips) == len(record["clips"])
    written = {clip["id"]: read_video(out / clip["clip_path"]) for clip in clips}

    def check(address: ClipAddress, reader: SourceClipReader) -> None:
        frames, rate = reader.read_rgb(address)
        want_frames, want_rate = written[address.id]
        assert rate == want_rate and len(frames) == address.frames
        np.testing.assert_array_equal(frames, want_frames, err_msg=address.id)

    with SourceClipReader() as reader:
        for address in addresses(record):
            check(address, reader)
    for address in addresses(record):
        with SourceClipReader() as reader:
            check(address, reader)
    with SourceClipReader() as reader:
        for address in reversed(addresses(record)):
            check(address, reader)


def short_gops(stream) -> None:
    stream.codec_context.gop_size = 12  # a keyframe every half second: reads seek


def bt709(stream) -> None:
    short_gops(stream)
    stream.codec_context.colorspace = stream.codec_context.color_primaries = stream.codec_context.color_trc = 1


@pytest.mark.parametrize("name", ["mp4", "bt709", "rotated", "ntsc_mkv", "vfr", "joined", "b_frames_avi", "raw_h264",
                                  "resized"])
def test_a_source_gives_the_frames_of_the_written_clip(tmp_path, name):
    settings = {}
    if name == "mp4":
        source = encode(tmp_path / "a.mp4", colourful(3 * FPS), configure=short_gops)
    elif name == "bt709":  # the written clip loses the tag; the source's frames must convert alike
        source = encode(tmp_path / "a.mp4", colourful(2 * FPS), configure=bt709)
    elif name == "rotated":
        source = encode(tmp_path / "phone.mp4", colourful(2 * FPS, 64, 32),
                        configure=lambda s: (short_gops(s), s.set_display_rotation(90)))
    elif name == "ntsc_mkv":  # millisecond times snapped to the 23.976 grid, resampled to 24 fps
        source = encode(tmp_path / "ntsc.mkv", colourful(70), rate=Fraction(24000, 1001), configure=short_gops)
        settings = {"out_fps": 24}
    elif name == "vfr":
        frames = np.stack(colourful(60))
        source = write_h264(tmp_path / "vfr.mkv", frames, np.cumsum([0] + [55 if i % 2 else 30 for i in range(59)]).tolist())
    elif name == "joined":  # the clock restarts: a seek cannot find the recorded times
        parts = [encode(tmp_path / f"part{i}.ts", colourful(n), container_format="mpegts", configure=short_gops)
                 for i, n in enumerate((36, 36))]
        source = tmp_path / "joined.ts"
        source.write_bytes(b"".join(part.read_bytes() for part in parts))
    elif name == "b_frames_avi":
        plain, source = encode(tmp_path / "plain.mkv", colourful(2 * FPS), "ffv1"), tmp_path / "b.avi"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(plain), "-c:v", "libx264",
                        "-bf", "2", "-g", "12", "-crf", "10", "-pix_fmt", "yuv420p", str(source)], check=True)
    elif name == "raw_h264":  # no timestamps at all
        source = encode(tmp_path / "camera.h264", colourful(2 * FPS), container_format="h264", configure=short_gops)
    else:
        source = encode(tmp_path / "a.mp4", colourful(2 * FPS, 96, 48), configure=short_gops)
        settings = {"out_size": (32, 24), "out_fps": 12}
    record = curate(source, tmp_path / "out", **settings)
    assert len(record["clips"]) >= 2
    assert_sources_give_the_written_clips(record, tmp_path / "out")


def test_big_buck_bunny_gives_the_frames_of_the_written_clips(tmp_path):
    record = curate(big_buck_bunny_path(), tmp_path / "out", min_clip_seconds=1.0, max_clip_seconds=1.5)
    assert [clip["first_frame"] for clip in record["clips"]] == [0, 38, 76]
    assert_sources_give_the_written_clips(record, tmp_path / "out")


def test_synthetic_animation_with_cuts_gives_the_frames_of_the_written_clips(tmp_path):
    shots = [ShotSpec(1.5, speed=0.6), ShotSpec(1.2, speed=0.0), ShotSpec(2.5, speed=0.4, hold=2)]
    video = make_animation_video(tmp_path / "shots.mp4", shots, fps=FPS, size=(96, 54), seed=2)
    record = curate(Path(video.path), tmp_path / "out")
    assert len({clip["shot"] for clip in record["clips"]}) == 3
    assert_sources_give_the_written_clips(record, tmp_path / "out")


def test_a_changed_or_missing_source_is_refused_by_name(tmp_path):
    source = encode(tmp_path / "a.mp4", colourful(2 * FPS), configure=short_gops)
    record = curate(source, tmp_path / "out")
    first, *_ = addresses(record)
    kept = tmp_path / "kept.mp4"
    shutil.copy2(source, kept)

    encode(source, colourful(2 * FPS)[::-1], configure=short_gops)  # the same size, other frames
    with SourceClipReader() as reader, pytest.raises(ClipSourceError, match=f"source {source} of clip {first.id} "
                                                                           "changed since it was curated"):
        reader.read(first)
    source.unlink()
    with SourceClipReader() as reader, pytest.raises(ClipSourceError, match=f"source {source} .* does not exist"):
        reader.read(first)
    shutil.copy(kept, source)  # the same bytes, a new modification time: still the curated file
    with SourceClipReader() as reader:
        assert len(reader.read(first)) == first.frames
    older = ClipAddress.from_row({**record["clips"][0], "source_signature": record["signature"],
                                  "clip_format_version": CLIP_FORMAT_VERSION - 1})
    with SourceClipReader() as reader, pytest.raises(ClipSourceError, match="clip format"):
        reader.read(older)


def test_a_record_the_source_does_not_decode_to_is_refused(tmp_path):
    source = encode(tmp_path / "a.mp4", colourful(2 * FPS), configure=short_gops)
    record = curate(source, tmp_path / "out")
    clip = record["clips"][1]
    # One frame later than curated, with that frame's time: the clip's end no longer fits.
    wrong = ClipAddress.from_row({**clip, "source_signature": record["signature"], "first_frame": clip["first_frame"] + 1,
                                  "start": clip["start"] + 1 / FPS})
    with SourceClipReader() as reader, pytest.raises(ClipSourceError, match="does not decode to the frames recorded"):
        reader.read(wrong)
