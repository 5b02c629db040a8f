"""What a new user of `ptta evaluate` trips over (issue #17, items 1-4): relative paths, a folder of
videos, the chart and its intervals, and the words of the per-video errors. Weight-free metrics
only, on tiny synthetic videos, so each run takes seconds."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ptta.cli import main
from ptta.evaluate import html_page
from ptta.evaluate.protocol import ManifestError, read_manifest, read_video_folder
from ptta.evaluate.report import summarize
from ptta.video_io import write_video


def moving_disc(speed: int) -> list[np.ndarray]:
    frames = []
    for t in range(12):
        frame = np.full((48, 64, 3), 150, np.uint8)
        cv2.circle(frame, (8 + speed * t, 24), 7, (200, 40, 40), -1)
        frames.append(frame)
    return frames


def raw_folder(root: Path) -> Path:
    """raw/bigbuckbunny.mp4 and raw/other.mp4 with a manifest of relative paths, as a user writes it."""
    raw = root / "raw"
    write_video(raw / "bigbuckbunny.mp4", moving_disc(1), fps=8)
    write_video(raw / "other.mp4", moving_disc(4), fps=8)
    (raw / "manifest.csv").write_text("video,prompt\nbigbuckbunny.mp4,a white rabbit\nother.mp4,a red disc\n")
    return raw


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# 1 -----------------------------------------------------------------------------------------------

def test_relative_manifest_and_out_give_gifs_not_file_not_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw_folder(tmp_path)
    assert main(["evaluate", "--manifest", "raw/manifest.csv", "--out", "work/eval"]) == 0
    page = (tmp_path / "work/eval/index.html").read_text()
    assert "FileNotFoundError" not in page and "class='error'" not in page
    assert len(list((tmp_path / "work/eval/gifs").rglob("*.gif"))) == 2
    assert capsys.readouterr().err == ""


def test_manifest_paths_are_relative_to_the_manifest_folder_not_the_working_directory(tmp_path, monkeypatch):
    raw_folder(tmp_path)
    monkeypatch.chdir(tmp_path / "raw")
    records = read_manifest("manifest.csv")
    assert all(r.video.is_absolute() and r.video.is_file() for r in records)
    monkeypatch.chdir(tmp_path)
    assert read_manifest("raw/manifest.csv") == records


def test_a_page_that_shows_errors_exits_non_zero_with_a_line_on_stderr(tmp_path, monkeypatch, capsys):
    raw_folder(tmp_path)

    def no_preview(video, gif):
        raise OSError("preview writer unavailable")

    monkeypatch.setattr(html_page, "make_preview", no_preview)  # scores are fine, only the GIFs fail
    out = tmp_path / "eval"
    assert main(["evaluate", "--manifest", str(tmp_path / "raw/manifest.csv"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 videos failed" in err and str(out / "index.html") in err


def test_a_video_that_fails_to_score_is_counted_on_stderr(tmp_path, capsys):
    raw = raw_folder(tmp_path)
    (raw / "broken.mp4").write_bytes(b"this is not a video")
    with (raw / "manifest.csv").open("a") as handle:
        handle.write("broken.mp4,a broken file\n")
    assert main(["evaluate", "--manifest", str(raw / "manifest.csv"), "--out", str(tmp_path / "eval")]) == 1
    assert "1 of 3 videos failed" in capsys.readouterr().err


# 2 -----------------------------------------------------------------------------------------------

def test_a_folder_of_videos_is_scored_with_prompts_from_sidecars(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for method, speed in (("base", 0), ("ptta", 3)):
        write_video(tmp_path / "raw" / method / "a.mp4", moving_disc(speed), fps=8)
        (tmp_path / "raw" / method / "a.txt").write_text("a red disc\nrolling right\n")
    assert main(["evaluate", "--manifest", "raw/", "--out", "eval"]) == 0
    rows = rows_of(tmp_path / "eval/per_video.csv")
    assert [(r["method"], r["prompt"], r["prompt_id"]) for r in rows] == [
        ("base", "a red disc rolling right", "p01"), ("ptta", "a red disc rolling right", "p01")]


def test_a_folder_takes_prompt_for_videos_without_a_sidecar_and_names_the_ones_that_have_none(tmp_path):
    raw = raw_folder(tmp_path)
    (raw / "other.txt").write_text("a red disc")
    records = read_video_folder(raw, prompt="a white rabbit")
    assert [(r.video.name, r.prompt) for r in records] == [("bigbuckbunny.mp4", "a white rabbit"),
                                                           ("other.mp4", "a red disc")]
    with pytest.raises(ManifestError, match=r"no prompt for 1 video.*bigbuckbunny\.mp4.*--prompt.*manifest\.csv"):
        read_video_folder(raw)


def test_a_folder_of_ptta_sample_output_reads_its_samples_jsonl(tmp_path):
    write_video(tmp_path / "000-a-cat-seed3.mp4", moving_disc(2), fps=8)
    (tmp_path / "samples.jsonl").write_text('{"prompt_index": 0, "prompt": "a cat", "seed": 3, '
                                            '"video": "000-a-cat-seed3.mp4"}\n')
    (record,) = read_video_folder(tmp_path)
    assert (record.prompt, record.seed) == ("a cat", 3)


def test_a_folder_where_a_file_is_expected_is_called_a_directory(tmp_path, capsys):
    raw = raw_folder(tmp_path)
    with pytest.raises(ManifestError, match="is a directory"):
        read_manifest(raw)
    with pytest.raises(SystemExit, match="is a directory"):
        main(["evaluate", "--model", "tiny", "--method", "base", "--prompts", str(raw), "--out", str(tmp_path / "e")])


# 3 -----------------------------------------------------------------------------------------------

def test_intervals_stay_inside_the_metric_range_and_show_n(tmp_path):
    rows = [{"method": "a", "motion_magnitude": 1.0, "temporal_flickering": 0.999},
            {"method": "a", "motion_magnitude": 20.0, "temporal_flickering": 0.95}]
    motion, flicker = summarize(rows, ["a"], ["motion_magnitude", "temporal_flickering"])
    assert motion.mean - motion.ci95 < 0  # the plain t interval would reach below zero ...
    assert motion.low == 0.0 and motion.high == pytest.approx(motion.mean + motion.ci95)  # ... it stops at 0
    assert flicker.high == 1.0 and flicker.low == pytest.approx(flicker.mean - flicker.ci95)

    raw = raw_folder(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--manifest", str(raw / "manifest.csv"), "--out", str(out)]) == 0
    summary = {r["metric"]: r for r in rows_of(out / "summary.csv")}
    assert float(summary["motion_magnitude"]["low"]) >= 0
    assert all(float(r["high"]) <= 1 for m, r in summary.items() if m != "motion_magnitude")
    table = (out / "table.md").read_text()
    assert "| n |" in table and "[0.000, " in table


def test_the_chart_fits_the_page(tmp_path):
    from PIL import Image

    raw = raw_folder(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--manifest", str(raw / "manifest.csv"), "--out", str(out)]) == 0
    assert Image.open(out / "scores.png").size[0] <= 1000
    page = (out / "index.html").read_text()
    assert "max-width: 100%" in page and "<th title='videos scored'>n</th>" in page


# 4 -----------------------------------------------------------------------------------------------

def test_per_video_csv_leaves_failed_metrics_empty_and_says_why_in_words(tmp_path):
    raw = raw_folder(tmp_path)
    (raw / "broken.mp4").write_bytes(b"this is not a video")
    (raw / "broken.txt").write_text("a broken file")
    (raw / "bigbuckbunny.txt").write_text("a white rabbit")
    (raw / "other.txt").write_text("a red disc")
    out = tmp_path / "eval"
    assert main(["evaluate", "--manifest", str(raw), "--out", str(out)]) == 1
    text = (out / "per_video.csv").read_text()
    assert "nan" not in text and "Errno" not in text
    broken = next(r for r in rows_of(out / "per_video.csv") if r["video"].endswith("broken.mp4"))
    assert broken["motion_magnitude"] == "" and broken["seed"] == ""
    assert "invalid data found when processing input" in broken["errors"]
    assert "Errno" not in (out / "index.html").read_text()


def test_ffmpeg_error_codes_are_spelled_out():
    from ptta.evaluate.errors import describe_error, spell_out

    assert spell_out("weightfree: [Errno 1094995529] ") == "weightfree: invalid data found when processing input: "
    assert spell_out("[Errno 2] No such file") == "[Errno 2] No such file"  # not FFmpeg's: left alone
    assert "end of file" in describe_error(type("EOFError", (Exception,), {"__module__": "av.error", "errno": 541478725})())


def test_a_scorer_directory_that_does_not_exist_says_so(tmp_path):
    raw = raw_folder(tmp_path)
    for flag in ("--videoscore", "--videoscore2", "--clip"):
        with pytest.raises(SystemExit, match=r"/nonexistent: does not exist"):
            main(["evaluate", "--manifest", str(raw / "manifest.csv"), "--out", str(tmp_path / "e"),
                  flag, "/nonexistent"])
    with pytest.raises(SystemExit, match="is a file, not a directory"):
        main(["evaluate", "--manifest", str(raw / "manifest.csv"), "--out", str(tmp_path / "e"),
              "--clip", str(raw / "manifest.csv")])
