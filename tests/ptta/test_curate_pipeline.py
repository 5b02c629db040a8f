"""`ptta curate` end to end on synthetic animation with known cuts, Big Buck Bunny and bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from curate_support import read_manifest, run_command, video_stream_facts

from ptta.assets import big_buck_bunny_path
from ptta.synthetic import ShotSpec, make_animation_video, render_animation

FPS = 24
SHOTS = [
    ShotSpec(4.5, speed=0.6),  # moving: one 4.5 s clip
    ShotSpec(4.0, speed=0.0),  # static: one clip, rejected for low flow
    ShotSpec(4.5, speed=0.6, hold=2),  # drawn on twos: kept like the first
    ShotSpec(2.0, speed=0.6),  # shorter than 3 s: no clip
    ShotSpec(11.0, speed=0.4, hold=3),  # long, on threes: 5 + 5 s, the last 1 s dropped
]


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """The multi-shot video curated once with the paper's defaults."""
    root = tmp_path_factory.mktemp("curate")
    truth = make_animation_video(root / "inputs" / "shots.mp4", SHOTS, fps=FPS, size=(160, 90), seed=3)
    status = run_command("ptta.curate.command", [str(root / "inputs"), "--out", str(root / "out"), "--write-clips",
                                                  "--no-progress"])
    return truth, root / "out", status


def test_cuts_are_found_within_one_frame_and_no_clip_spans_one(curated):
    truth, out, status = curated
    assert status == 0
    rows = read_manifest(out)
    cut_times = [frame / FPS for frame in truth.cut_frames]
    shot_starts = [0.0, *cut_times]
    # Every shot long enough for a clip starts one at its first frame (so the cut was found there).
    for shot, start in zip(truth.shots, shot_starts):
        if (shot.end_frame - shot.start_frame) / FPS >= 3.0:
            assert min(abs(r["start"] - start) for r in rows) <= 1 / FPS + 1e-6, f"no clip starts at the cut {start}"
    for row in rows:
        assert 3.0 - 1e-6 <= row["end"] - row["start"] <= 5.0 + 1e-6
        assert not any(row["start"] + 1 / FPS < cut < row["end"] - 1 / FPS for cut in cut_times), row
    assert [(r["shot"], r["start"], r["end"]) for r in rows] == [
        (0, 0.0, 4.5), (1, 4.5, 8.5), (2, 8.5, 13.0), (4, 15.0, 20.0), (4, 20.0, 25.0)]  # fmt: skip


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_a_cut_right_after_a_short_shot_is_kept(tmp_path, detector):
    """A 6- and a 10-frame shot (a flash, an insert): the cuts on both sides of each are found,
    so no clip spans one (PySceneDetect's min_scene_len of 15 used to drop the second cut)."""
    shots = [ShotSpec(4.0, speed=0.6), ShotSpec(0.25, speed=0.6), ShotSpec(4.5, speed=0.6),
             ShotSpec(10 / FPS, speed=0.6), ShotSpec(4.0, speed=0.6)]
    truth = make_animation_video(tmp_path / "in" / "short.mp4", shots, fps=FPS, size=(160, 90), seed=4)
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(tmp_path / "in"), "--out", str(out), "--no-progress",
                                               "--detector", detector, "--theta", "0"]) == 0
    cut_times = [frame / FPS for frame in truth.cut_frames]
    rows = read_manifest(out)
    spans = [t for r in rows for t in (r["start"], r["end"])]
    assert spans == pytest.approx([0.0, 4.0, 4.25, 8.75, 8.75 + 10 / FPS, 12.75 + 10 / FPS], abs=1e-3)
    for row in rows:
        assert not any(row["start"] + 1 / FPS < cut < row["end"] - 1 / FPS for cut in cut_times), row


def test_static_shot_is_rejected_and_moving_shots_are_kept(curated):
    _, out, _ = curated
    rows = read_manifest(out)
    static = rows[1]
    assert static["flow"] < 1.0 and not static["selected"] and "theta" in static["reason"]
    assert static["clip_path"] is None
    for row in rows[:1] + rows[2:]:
        assert row["selected"] and row["flow"] > 20 and row["score"] >= 10
        frames, rate, width, height = video_stream_facts(out / row["clip_path"])
        assert (frames, rate, width, height) == (row["frames"], FPS, 160, 90)
        assert frames == round((row["end"] - row["start"]) * FPS)
    # Ones and twos of the same motion score alike (the stride spans whole drawings).
    assert rows[2]["flow"] == pytest.approx(rows[0]["flow"], rel=0.35)


def test_outputs_agree_manifest_parquet_report(curated):
    _, out, _ = curated
    rows = read_manifest(out)
    table = pd.read_parquet(out / "manifest.parquet")
    assert list(table["id"]) == [r["id"] for r in rows]
    assert table["flow"].to_numpy() == pytest.approx([r["flow"] for r in rows])
    assert table["selected"].tolist() == [r["selected"] for r in rows]
    page = (out / "report.html").read_text()
    assert "5 candidate clips, 4 selected" in page
    for image in ("flow", "aesthetic", "score", "selected", "rejected"):
        assert (out / "report" / f"{image}.png").stat().st_size > 1000
    assert all((out / r["thumbnail"]).is_file() for r in rows)
    assert (out / "errors.log").read_text() == ""


def test_rerun_skips_finished_videos_and_other_settings_are_refused(curated):
    truth, out, _ = curated
    record = out / "videos" / f"{read_manifest(out)[0]['video_id']}.json"
    before = record.stat().st_mtime_ns
    assert run_command("ptta.curate.command", [str(Path(truth.path).parent), "--out", str(out), "--no-progress"]) == 0
    assert record.stat().st_mtime_ns == before
    with pytest.raises(SystemExit, match="theta: 10.0 -> 5.0"):
        run_command("ptta.curate.command", [truth.path, "--out", str(out), "--theta", "5"])


def test_resize_and_frame_rate_normalisation(tmp_path):
    video = make_animation_video(tmp_path / "in" / "clip.mp4", [ShotSpec(3.5, speed=0.5)], fps=30, size=(160, 90))
    out = tmp_path / "out"
    argv = [video.path, "--out", str(out), "--fps", "12", "--resize", "64x64", "--write-clips", "--no-progress"]
    assert run_command("ptta.curate.command", argv) == 0
    (row,) = read_manifest(out)
    assert (row["fps"], row["width"], row["height"], row["frames"]) == (12, 64, 64, 42)
    assert video_stream_facts(out / row["clip_path"]) == (42, 12.0, 64, 64)


def test_big_buck_bunny_goes_through_the_whole_stage(tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"source": "bigbuckbunny.mp4", "caption": "rabbit, stretching, meadow"}) + "\n")
    out = tmp_path / "out"
    argv = [str(big_buck_bunny_path()), "--out", str(out), "--resize", "424x240", "--captioner", "sidecar",
            "--caption-file", str(captions), "--write-clips", "--no-progress"]  # fmt: skip
    assert run_command("ptta.curate.command", argv) == 0
    (row,) = read_manifest(out)
    # One 5.28 s CG shot: one 5 s clip; the bunny climbs out and stretches, well above the bar.
    assert (row["start"], row["end"], row["frames"], row["fps"]) == (0.0, 5.0, 125, 25.0)
    assert 10 < row["flow"] < 30 and row["selected"]
    assert row["caption"] == "rabbit, stretching, meadow"
    assert video_stream_facts(out / row["clip_path"]) == (125, 25.0, 424, 240)


def write_h264(path: Path, frames: np.ndarray, pts_ms: list[int] | None = None) -> Path:
    """An mkv of RGB frames at 24 fps, or with the given presentation times (ms) for VFR."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_bad_inputs_are_recorded_and_the_rest_finishes(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    frames, _ = render_animation([ShotSpec(6.0, speed=0.5)], size=(160, 90))
    make_animation_video(inputs / "good.mp4", [ShotSpec(3.5, speed=0.5)], size=(160, 90))
    (inputs / "empty.mp4").write_bytes(b"")
    (inputs / "notes.mp4").write_text("this is a text file\n" * 50)
    full = write_h264(tmp_path / "full.mkv", frames).read_bytes()
    (inputs / "truncated.mkv").write_bytes(full[: len(full) // 2])
    write_audio_only(inputs / "audio.m4a").rename(inputs / "audio.mp4")
    intervals = [55 if i % 2 else 30 for i in range(len(frames) - 1)]
    write_h264(inputs / "vfr.mkv", frames, pts_ms=np.cumsum([0, *intervals]).tolist())
    make_animation_video(inputs / "huge.mp4", [ShotSpec(1.0)], size=(640, 360))
    Image.fromarray(frames[0]).save(inputs / "still.png")
    (inputs / "still.png").rename(inputs / "still.mp4")
    out = tmp_path / "out"
    status = run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--max-pixels", "100000", "--write-clips",
                                                  "--no-progress"])

    rows = read_manifest(out)
    failures = {Path(r["source"]).name: r["error"] for r in rows if r["error"]}
    assert status == len(failures) == 6
    assert "empty file" in failures["empty.mp4"]
    assert "not a readable media file" in failures["notes.mp4"]
    assert "truncated" in failures["truncated.mkv"]
    assert "no video stream (contains: audio)" in failures["audio.mp4"]
    assert "exceed --max-pixels" in failures["huge.mp4"]
    assert "a single frame (a still image?)" in failures["still.mp4"]
    clips = {Path(r["source"]).name for r in rows if r["error"] is None}
    assert clips == {"good.mp4", "vfr.mkv"}
    vfr = [r for r in rows if r["source"].endswith("vfr.mkv")]
    # Cut on timestamps (frames 30 or 55 ms apart), not frame counts: it ends at the first frame >= 5 s.
    assert len(vfr) == 1 and vfr[0]["start"] == 0.0 and 5.0 <= vfr[0]["end"] < 5.055
    assert video_stream_facts(out / vfr[0]["clip_path"])[:2] == (120, 24.0)  # written at a constant rate
    assert vfr[0]["warnings"].startswith("variable frame rate")  # the manifest says so too
    log = (out / "errors.log").read_text()
    assert log.count("FAILED") == 6 and "WARNING: variable frame rate" in log
    assert "6 failed" in (out / "report.html").read_text()
    # Merging says the same in its exit status.
    assert run_command("ptta.curate.merge_command", [str(out), "--out", str(tmp_path / "merged")]) == 6


def test_clips_the_captioner_failed_on_are_reported_and_captioned_again_with_retry_failed(tmp_path, capsys):
    inputs = tmp_path / "in"
    make_animation_video(inputs / "moving.mp4", [ShotSpec(3.5, speed=0.6)], size=(96, 54))
    out = tmp_path / "out"
    argv = [str(inputs), "--out", str(out), "--captioner", "sidecar", "--no-progress"]
    assert run_command("ptta.curate.command", argv) == 0  # the clips are fine; only captions are missing
    (row,) = read_manifest(out)
    assert row["caption"] is None and row["error"] == "captioning failed: captioner sidecar gave no caption"
    assert "CAPTION FAILED: " + row["id"] in (out / "errors.log").read_text()
    assert "0 captioned (1 failed: see errors.log)" in capsys.readouterr().err

    (inputs / "moving.txt").write_text("anime, a ball rolls by")
    run_command("ptta.curate.command", argv)  # a plain rerun leaves failures alone
    assert read_manifest(out)[0]["caption"] is None
    run_command("ptta.curate.command", [*argv, "--retry-failed"])
    (row,) = read_manifest(out)
    assert (row["caption"], row["error"]) == ("anime, a ball rolls by", None)
    assert "CAPTION FAILED" not in (out / "errors.log").read_text()


@pytest.mark.parametrize("write", [[], ["--write-clips"]], ids=["frame-ranges", "written"])
def test_a_killed_run_resumes_losing_only_the_video_in_flight(tmp_path, write):
    inputs = tmp_path / "in"
    for i in range(4):
        make_animation_video(inputs / f"v{i}.mp4", [ShotSpec(8.0, speed=0.5)], size=(160, 90), seed=i)
    out = tmp_path / "out"
    script = ("import argparse, sys; from ptta.curate import command as c; p = argparse.ArgumentParser(); "
              "c.add_arguments(p); sys.exit(c.run(p.parse_args(sys.argv[1:])))")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", script, str(inputs), "--out", str(out), *write, "--no-progress"],
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "videos").glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "videos").glob("*.json")}
    assert 1 <= len(finished) < 4, "the run was not caught in the middle"
    assert not (out / "manifest.jsonl").exists()

    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), *write, "--no-progress"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "videos").glob("*.json") if p.name in finished} == finished
    rows = read_manifest(out)
    assert len({r["video_id"] for r in rows}) == 4
    written = sorted(p.name for p in (out / "clips").glob("*"))
    assert written == sorted(Path(r["clip_path"]).name for r in rows if r["clip_path"])  # nothing partial left
    selected = [r for r in rows if r["selected"]]
    assert selected and all(r["first_frame"] is not None and r["source_signature"]["size"] > 0 for r in selected)
    assert len(written) == (len(selected) if write else 0)


def test_files_of_a_video_a_killed_run_left_unfinished_are_reported(tmp_path, capsys):
    """A rerun deletes a killed video's clips when it curates that video again; if the video was
    dropped from the inputs, they stay, outside the manifest, and the summary says so."""
    inputs = tmp_path / "in"
    for name in ("kept", "dropped"):
        make_animation_video(inputs / f"{name}.mp4", [ShotSpec(3.5, speed=0.6)], size=(96, 54))
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--write-clips", "--no-progress"]) == 0
    (dropped_record,) = (out / "videos").glob("dropped-*.json")
    dropped_id = dropped_record.stem
    dropped_record.unlink()  # as if killed after writing its clip, before its record
    (inputs / "dropped.mp4").unlink()
    left = sorted(p.name for folder in ("clips", "thumbs") for p in (out / folder).glob(f"{dropped_id}-*"))
    assert len(left) == 2
    capsys.readouterr()
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--no-progress"]) == 0
    assert "2 files in clips/ or thumbs/ belong to videos a killed run left unfinished" in capsys.readouterr().err
    rows = read_manifest(out)
    assert rows and all(row["video_id"].startswith("kept-") for row in rows)


@pytest.mark.parametrize("write", [[], ["--write-clips"]], ids=["frame-ranges", "written"])
def test_shards_merge_into_the_same_manifest_as_one_run(tmp_path, write):
    inputs = tmp_path / "in"
    for i in range(4):
        make_animation_video(inputs / f"v{i}.mp4", [ShotSpec(3.2, speed=0.2 * i)], size=(96, 54), seed=i)
    single = tmp_path / "single"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(single), *write, "--no-progress"]) == 0
    shard_dirs = []
    for index in range(2):
        shard_dirs.append(tmp_path / f"shard{index}")
        argv = [str(inputs), "--out", str(shard_dirs[-1]), "--num-shards", "2", "--shard-index", str(index),
                "--workers", "2" if index == 0 else "1", *write, "--no-progress"]  # fmt: skip
        assert run_command("ptta.curate.command", argv) == 0
        assert not (shard_dirs[-1] / "manifest.jsonl").exists()
    merged = tmp_path / "merged"
    assert run_command("ptta.curate.merge_command", [*map(str, shard_dirs), "--out", str(merged)]) == 0
    expected = sorted((r["id"], r["selected"], r["flow"], r["first_frame"], r["source_frames"], r["source_signature"]["size"])
                      for r in read_manifest(single))
    rows = read_manifest(merged)
    got = sorted((r["id"], r["selected"], r["flow"], r["first_frame"], r["source_frames"], r["source_signature"]["size"])
                 for r in rows)
    assert [row[:2] + row[3:] for row in got] == [row[:2] + row[3:] for row in expected]
    assert [row[2] for row in got] == pytest.approx([row[2] for row in expected], rel=1e-4)
    assert all((merged / r["clip_path"]).is_file() for r in rows if r["clip_path"])
    assert sum(bool(r["clip_path"]) for r in rows) == (sum(r["selected"] for r in rows) if write else 0)
    other = tmp_path / "other"
    run_command("ptta.curate.command", [str(inputs), "--out", str(other), "--theta", "3", "--no-progress"])
    with pytest.raises(SystemExit, match="other settings"):
        run_command("ptta.curate.merge_command", [str(single), str(other), "--out", str(merged)])


def test_bad_arguments_fail_before_anything_is_curated(tmp_path):
    video = make_animation_video(tmp_path / "v.mp4", [ShotSpec(3.2)], size=(64, 36))
    out = tmp_path / "out"
    cases = [
        ([str(tmp_path / "absent.mp4")], "input .*absent.mp4: no such file"),
        ([video.path, "--captioner", "qwen", "--caption-model", str(tmp_path)], "--caption-model .*no config.json"),
        ([video.path, "--aesthetic", "laion", "--aesthetic-clip", str(tmp_path), "--aesthetic-head", "h.pth"],
         "--aesthetic-clip .*no config.json"),
        ([video.path, "--captioner", "sidecar", "--caption-file", str(tmp_path / "c.csv")], "--caption-file .*no such file"),
        ([video.path, "--min-clip-seconds", "6"], "--min-clip-seconds"),
        ([video.path, "--num-shards", "2", "--shard-index", "2"], "--shard-index"),
        ([str(tmp_path / "no-videos")], "no video files in .*no-videos .*folders are searched for"),
    ]
    (tmp_path / "no-videos").mkdir()
    (tmp_path / "no-videos" / "readme.txt").write_text("clips go here")
    for argv, message in cases:
        with pytest.raises(SystemExit, match=message):
            run_command("ptta.curate.command", [*argv, "--out", str(out), "--no-progress"])
        assert not (out / "videos").exists()


# Imported by every worker process at start-up (PYTHONPATH), it makes curating one file kill the
# process outright, as a decoder crash or the out-of-memory killer would.
CRASHING_WORKER = '''
import os
if os.environ.get("CRASH_ON_VIDEO"):
    from ptta.curate import video_task

    original_run = video_task.VideoCurator.run

    def run(self, path):
        if os.path.basename(str(path)) == os.environ["CRASH_ON_VIDEO"]:
            os._exit(1)
        return original_run(self, path)

    video_task.VideoCurator.run = run
'''


def test_a_worker_that_dies_costs_only_its_own_video(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CRASHING_WORKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CRASH_ON_VIDEO", "v1.mp4")
    inputs = tmp_path / "in"
    for i in range(3):
        make_animation_video(inputs / f"v{i}.mp4", [ShotSpec(3.2, speed=0.5)], size=(64, 36), seed=i)
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--workers", "2", "--no-progress"]) == 1
    rows = read_manifest(out)
    errors = {Path(r["source"]).name: r["error"] for r in rows}
    assert "worker process died" in errors["v1.mp4"]
    assert errors["v0.mp4"] is None and errors["v2.mp4"] is None


def test_folder_from_an_older_clip_format_is_not_resumed(tmp_path):
    """Clips written by code that rendered them differently (before rotation, square pixels, ...)
    must not be mixed with new ones: the stored fingerprint lacks the current format version."""
    from ptta.curate.pipeline import SETTINGS_FILE, check_settings
    from ptta.curate.settings import CLIP_FORMAT_VERSION, CurateSettings

    settings = CurateSettings()
    older = {k: v for k, v in settings.results_fingerprint().items() if k != "clip_format_version"}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(older))
    with pytest.raises(ValueError, match=f"clip_format_version: None -> {CLIP_FORMAT_VERSION}"):
        check_settings(tmp_path, settings)
    check_settings(tmp_path / "fresh", settings)
    check_settings(tmp_path / "fresh", settings)  # the same version resumes
