"""The background clip writer: exact frames, and failures that end up in the manifest."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest
from curate_support import read_manifest, run_command

from ptta.curate import clip_writer
from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.frames import cover_crop
from ptta.curate.settings import CurateSettings
from ptta.curate.video_task import VideoCurator
from ptta.synthetic import ShotSpec, make_animation_video
from ptta.video_io import iter_decoded_frames, yuv420_planes

FPS = 24
# Two kept clips (5 s + 3.5 s of one moving shot), so the second waits for the first's write.
SHOTS = [ShotSpec(8.5, speed=0.6)]


# Matroska rounds timestamps to 1 ms, so 1/24 s is stored as 0.042 s.
@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_written_clips_hold_exactly_the_source_frames_of_their_span(tmp_path, container):
    video = make_animation_video(tmp_path / "in" / f"moving.{container}", SHOTS, fps=FPS, size=(96, 54), seed=5)
    out = tmp_path / "out"
    # crf 0 is lossless, so any frame that is missing, repeated or shifted shows as a difference.
    settings = CurateSettings(crf=0, preset="ultrafast", write_clips=True)
    record = VideoCurator(settings, out, ImageStatisticsProxyScorer()).run(video.path)
    assert record["error"] is None
    kept = [clip for clip in record["clips"] if clip["selected"]]
    assert [t for c in kept for t in (c["start"], c["end"])] == pytest.approx([0.0, 5.0, 5.0, 8.5], abs=1e-3)
    source = list(iter_decoded_frames(video.path))
    for clip in kept:
        expected = [frame for time, frame in source if clip["start"] - 1e-6 <= time < clip["end"] - 1e-6]
        written = [frame for _, frame in iter_decoded_frames(out / clip["clip_path"])]
        assert len(written) == len(expected) == clip["frames"]
        for want, got in zip(expected, written):
            for want_plane, got_plane in zip(yuv420_planes(want), yuv420_planes(got)):
                np.testing.assert_array_equal(got_plane, want_plane)
    assert not list((out / "clips").glob("*.partial.mp4"))


def test_clips_are_encoded_off_the_decoding_thread(tmp_path, monkeypatch):
    video = make_animation_video(tmp_path / "in" / "moving.mp4", SHOTS, fps=FPS, size=(64, 36), seed=5)
    encoding_threads = []
    encode = clip_writer.write_decoded_video

    def recording_encode(*args, **kwargs):
        encoding_threads.append(threading.current_thread())
        return encode(*args, **kwargs)

    monkeypatch.setattr(clip_writer, "write_decoded_video", recording_encode)
    record = VideoCurator(CurateSettings(write_clips=True), tmp_path / "out", ImageStatisticsProxyScorer()).run(video.path)
    assert record["error"] is None and len(encoding_threads) == 2
    assert threading.main_thread() not in encoding_threads


def test_a_failed_write_fails_the_video_in_the_manifest_and_leaves_no_file(tmp_path, monkeypatch):
    def failing_encode(path, frames, fps, encoder, options, threads):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a clip")
        raise OSError("No space left on device")

    monkeypatch.setattr(clip_writer, "write_decoded_video", failing_encode)
    inputs = tmp_path / "in"
    make_animation_video(inputs / "moving.mp4", SHOTS, fps=FPS, size=(64, 36), seed=5)
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--write-clips", "--no-progress"]) == 1
    rows = read_manifest(out)
    failed_clip, failed_video = rows[0], rows[-1]
    assert failed_clip["selected"] and failed_clip["clip_path"] is None
    assert "writing the clip failed: OSError: No space left on device" in failed_clip["error"]
    assert failed_video["clip_path"] is None and failed_clip["id"] in failed_video["error"]
    assert "No space left on device" in failed_video["error"]
    assert not list((out / "clips").glob("*"))
    # The failure is retried like any failed video, and then the clips are written.
    monkeypatch.undo()
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--retry-failed", "--write-clips",
                                                "--no-progress"]) == 0
    assert all((out / row["clip_path"]).is_file() for row in read_manifest(out) if row["selected"])


def test_resizing_covers_the_size_and_crops_the_centre():
    # Luma = column index, so each output column says which source column it came from.
    luma = np.tile(np.arange(160, dtype=np.uint8), (90, 1))
    chroma = np.full((45, 80), 90, np.uint8)
    planes = np.concatenate([luma.ravel(), chroma.ravel(), chroma.ravel() + 60]).reshape(135, 160)
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    square = cover_crop(frame, (64, 64))
    y, u, v = yuv420_planes(square)
    assert (square.width, square.height, square.format.name) == (64, 64, "yuv420p")
    # 160x90 covers 64x64 at 114x64 (scale 0.711): source columns 34-124 of 160, the middle.
    assert abs(int(y[:, 0].mean()) - 34) <= 2 and abs(int(y[:, -1].mean()) - 124) <= 2
    assert (u == 90).all() and (v == 150).all()
