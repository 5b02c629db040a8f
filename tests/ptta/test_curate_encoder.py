"""`--encoder` / `--encoder-option`: clips written by any FFmpeg encoder, bad choices refused up front."""

from __future__ import annotations

import dataclasses

import av
import pytest
from curate_support import read_manifest, run_command

from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.settings import CurateSettings
from ptta.curate.video_task import VideoCurator
from ptta.synthetic import ShotSpec, make_animation_video
from ptta.video_io import check_encoder, write_decoded_video

FPS = 24
SHOTS = [ShotSpec(4.0, speed=0.6)]  # one kept clip


def written_clip(tmp_path, settings: CurateSettings, name: str):
    video = make_animation_video(tmp_path / "in" / "moving.mp4", SHOTS, fps=FPS, size=(96, 54), seed=5)
    out = tmp_path / name
    settings = dataclasses.replace(settings, write_clips=True)
    record = VideoCurator(settings, out, ImageStatisticsProxyScorer()).run(video.path)
    assert record["error"] is None
    (clip,) = [c for c in record["clips"] if c["selected"]]
    return out / clip["clip_path"], clip


def test_clips_are_written_by_the_chosen_encoder_with_its_options(tmp_path):
    fine, clip = written_clip(tmp_path, CurateSettings(encoder="mpeg4", encoder_options={"qmin": "2", "qmax": "2"}),
                              "fine")
    coarse, _ = written_clip(tmp_path, CurateSettings(encoder="mpeg4", encoder_options={"qmin": "31", "qmax": "31"}),
                             "coarse")
    with av.open(str(fine)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4"
        assert sum(1 for _ in container.decode(stream)) == clip["frames"]
    # The quantiser options reached the encoder: the finest quantiser writes several times the bytes.
    assert fine.stat().st_size > 3 * coarse.stat().st_size


def test_crf_and_preset_apply_to_x264_only():
    assert CurateSettings(crf=17, preset="fast").encoder_open_options() == {"crf": "17", "preset": "fast"}
    settings = CurateSettings(encoder="h264_nvenc", encoder_options={"cq": "20", "preset": "p4"})
    assert settings.encoder_open_options() == {"cq": "20", "preset": "p4"}
    # --encoder-option wins over --crf for libx264 too
    assert CurateSettings(encoder_options={"crf": "0"}).encoder_open_options()["crf"] == "0"


def test_an_option_the_encoder_does_not_know_is_refused_not_dropped(tmp_path):
    with pytest.raises(ValueError, match="libx264 has no option bogus"):
        write_decoded_video(tmp_path / "x.mp4", [av.VideoFrame(64, 36, "yuv420p")], fps=24,
                            options={"crf": "20", "bogus": "1"})


@pytest.mark.parametrize(("encoder", "options", "message"), [
    ("no_such_encoder", {}, "no such encoder"),
    ("aac", {}, "not a video encoder"),
    ("png", {}, "does not encode yuv420p"),
    ("libx264", {"preset": "nope"}, "cannot encode"),
])
def test_check_encoder_says_why(encoder, options, message):
    with pytest.raises(ValueError, match=message):
        check_encoder(encoder, options)


def test_the_command_refuses_a_bad_encoder_before_curating(tmp_path):
    inputs = tmp_path / "in"
    make_animation_video(inputs / "moving.mp4", SHOTS, fps=FPS, size=(64, 36), seed=5)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="libx264 with options .*'nope'.* cannot encode"):
        run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--encoder-option", "preset=nope"])
    with pytest.raises(SystemExit, match="--crf and --preset are options of libx264 and libx265; give mpeg4"):
        run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--encoder", "mpeg4", "--crf", "18"])
    assert not out.exists()  # nothing started
    with pytest.raises(SystemExit):  # argparse: not KEY=VALUE
        run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--encoder-option", "cq"])


def test_an_encoder_change_is_not_resumed_into(tmp_path):
    inputs = tmp_path / "in"
    make_animation_video(inputs / "moving.mp4", SHOTS, fps=FPS, size=(64, 36), seed=5)
    out = tmp_path / "out"
    common = [str(inputs), "--out", str(out), "--write-clips", "--no-progress"]
    assert run_command("ptta.curate.command", [*common, "--encoder", "mpeg4", "--encoder-option", "qmax=4"]) == 0
    (row,) = [r for r in read_manifest(out) if r["selected"]]
    with av.open(str(out / row["clip_path"])) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    with pytest.raises(SystemExit, match="encoder: 'mpeg4' -> None"):
        run_command("ptta.curate.command", common)


def test_default_encoder_settings_keep_older_folders_resumable():
    """Folders begun before --encoder existed stored no encoder: the default must match them."""
    assert "encoder" not in CurateSettings().results_fingerprint()
    assert CurateSettings(encoder="libx265").results_fingerprint()["encoder"] == "libx265"
