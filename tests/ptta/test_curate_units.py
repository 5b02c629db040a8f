"""Curation building blocks: clip layout, flow unit, selection rule, probing, scorers, sidecar captions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.caption import ClipToCaption, SidecarCaptioner, clean_tags
from ptta.curate.clips import ClipCutter
from ptta.curate.flow import FlowTracker, flow_interval
from ptta.curate.frames import downscale
from ptta.curate.pipeline import threads_per_worker
from ptta.curate.probe import InputError, find_videos, read_file_list, shard_of, video_id
from ptta.curate.settings import CurateSettings
from ptta.curate.shots import detection_size
from ptta.curate.source import CurationSource, probe_video
from ptta.curate.video_task import select
from ptta.synthetic import ShotSpec, make_animation_video
from ptta.video_io import iter_decoded_frames


def lay_clips(num_frames: int, cuts: list[int], fps: float = 24, delay: int = 3, lag: int = 16):
    """Run ClipCutter over frames 0..num_frames-1, each cut reported `delay` frames late."""
    cutter = ClipCutter(1 / fps, 3.0, 5.0, lag)
    spans = []
    for index in range(num_frames):
        spans += cutter.push(index, index / fps, [c for c in cuts if c + delay == index])
    spans += cutter.finish([c for c in cuts if c + delay >= num_frames])
    return spans


@pytest.mark.parametrize(
    "seconds, cuts_s, expected",
    [
        (12.0, [], [(0, 0.0, 5.0), (0, 5.0, 10.0)]),  # the last 2 s are too short
        (12.0, [9.0], [(0, 0.0, 5.0), (0, 5.0, 9.0), (1, 9.0, 12.0)]),
        (12.0, [2.5, 9.0], [(1, 2.5, 7.5), (2, 9.0, 12.0)]),  # 2.5 s shot: none; 1.5 s tail dropped
        (13.0, [5.0], [(0, 0.0, 5.0), (1, 5.0, 10.0), (1, 10.0, 13.0)]),  # a cut right at a clip's end
        (2.9, [], []),
    ],
)
def test_clips_are_laid_greedily_inside_shots(seconds, cuts_s, expected):
    fps = 24
    spans = lay_clips(int(seconds * fps), [int(c * fps) for c in cuts_s], fps)
    assert [(s.shot, round(s.start, 3), round(s.end, 3)) for s in spans] == expected
    for span in spans:
        assert 3.0 - 1e-6 <= span.duration <= 5.0 + 1e-6
        assert not any(span.first < int(c * fps) <= span.last for c in cuts_s), "a clip contains a cut"


def test_a_cut_reported_twice_starts_one_shot():
    """Lost frames cut at once and the detector reports the same cut later; a cut on a full clip's
    end is reported three times: each starts one shot, so shot numbers do not skip."""
    cutter = ClipCutter(1 / 24, 3.0, 5.0, lag_frames=5)
    spans = []
    for index in range(24 * 13):
        reported = {24 * 4: [24 * 4], 24 * 4 + 3: [24 * 4], 24 * 9 + 3: [24 * 9], 24 * 9 + 6: [24 * 9]}.get(index, [])
        spans += cutter.push(index, index / 24, reported)
    spans += cutter.finish([24 * 9])
    assert [(s.shot, round(s.start, 3), round(s.end, 3)) for s in spans] == [(0, 0.0, 4.0), (1, 4.0, 9.0),
                                                                             (2, 9.0, 13.0)]


def test_clip_cutter_waits_for_the_detector_lag_before_closing_a_full_clip():
    cutter = ClipCutter(1 / 24, 3.0, 5.0, lag_frames=20)
    closed_at = None
    for index in range(200):
        if cutter.push(index, index / 24, []) and closed_at is None:
            closed_at = index
    assert closed_at == 120 + 20  # frame 120 starts the next clip; 20 more frames rule out a cut
    with pytest.raises(ValueError, match="consecutive"):
        cutter.push(500, 500 / 24, [])


def test_flow_is_zero_for_a_static_shot_and_the_same_on_ones_twos_and_threes(tmp_path):
    scores = {}
    for hold in (1, 2, 3):
        path = make_animation_video(tmp_path / f"hold{hold}.mp4", [ShotSpec(3.0, speed=0.3, hold=hold)], seed=4)
        scores[hold] = score_whole_video(path.path)
    static = make_animation_video(tmp_path / "static.mp4", [ShotSpec(3.0, speed=0.0)], seed=4)
    assert score_whole_video(static.path) < 0.5
    assert scores[1] > 20
    for hold in (2, 3):
        assert scores[hold] == pytest.approx(scores[1], rel=0.1), scores


def test_flow_unit_does_not_depend_on_the_source_resolution(tmp_path):
    """Pixels at a 480-px short side: the same motion at two sizes scores the same."""
    shots = [ShotSpec(3.0, speed=0.3)]
    small = make_animation_video(tmp_path / "small.mp4", shots, size=(160, 90), seed=2)
    large = make_animation_video(tmp_path / "large.mp4", shots, size=(320, 180), seed=2)
    assert score_whole_video(small.path) == pytest.approx(score_whole_video(large.path), rel=0.15)


def score_whole_video(path) -> float:
    tracker, last = None, 0.0
    for time, frame in iter_decoded_frames(path):
        tracker = tracker or FlowTracker(frame.width, frame.height, 24.0)
        tracker.push(time, frame)
        last = time
    return tracker.score(0.0, last)


def test_flow_pairs_are_six_frames_apart_and_a_clip_only_counts_pairs_inside_it(tmp_path):
    assert flow_interval(24) == pytest.approx(0.25)
    assert flow_interval(25) == pytest.approx(0.24)
    assert flow_interval(60) == pytest.approx(0.2)  # 12 frames
    video = make_animation_video(tmp_path / "pan.mp4", [ShotSpec(1.0, speed=0.5)], size=(160, 90))
    tracker = FlowTracker(160, 90, 24.0)
    for time, frame in iter_decoded_frames(video.path):
        tracker.push(time, frame)
    assert [s.time for s in tracker.samples] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    # Nothing is computed until a clip asks: footage outside every clip costs no flow.
    assert all(s.grey is None and s.speed_to_next is None for s in tracker.samples)
    first_two = tracker.score(0.0, 0.5)
    assert first_two > 0
    assert [s.speed_to_next is not None for s in tracker.samples] == [True, True, False, False]
    assert tracker.samples[3].grey is None
    assert first_two == pytest.approx(np.mean([tracker.samples[0].speed_to_next, tracker.samples[1].speed_to_next]))
    assert tracker.score(0.3, 0.7) is None  # one pair starts before the clip, the other ends after it
    assert tracker.score(0.5, 0.75) == pytest.approx(tracker.samples[2].speed_to_next)
    tracker.forget_before(0.25)
    assert [s.time for s in tracker.samples] == pytest.approx([0.25, 0.5, 0.75])


def test_selection_follows_the_paper_rule_and_the_hard_limits():
    paper = CurateSettings()
    assert select(13.0, 5.0, paper)[:2] == (pytest.approx(0.7 * 13 + 0.3 * 5), True)
    score, selected, reason = select(11.0, 5.0, paper)
    assert score == pytest.approx(9.2) and not selected and "theta" in reason
    assert not select(30.0, 5.0, CurateSettings(max_flow=25.0))[1]
    assert not select(30.0, 5.0, CurateSettings(min_aesthetic=6.0))[1]
    assert not select(30.0, 5.0, CurateSettings(min_flow=40.0))[1]
    assert select(None, 9.0, paper) == (None, False, "no flow measurement inside the clip")


def test_settings_reject_bad_values_naming_the_option():
    with pytest.raises(ValueError, match="--min-clip-seconds"):
        CurateSettings(min_clip_seconds=6.0, max_clip_seconds=5.0)
    with pytest.raises(ValueError, match="--alpha"):
        CurateSettings(alpha=1.5)
    with pytest.raises(ValueError, match="--aesthetic-clip"):
        CurateSettings(aesthetic="laion")
    with pytest.raises(ValueError, match="--resize"):
        CurateSettings(out_size=(161, 90))


def test_find_videos_recurses_folders_and_keeps_named_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp4", "a/b/two.MKV", "a/notes.txt", "named.bin"):
        (tmp_path / name).write_bytes(b"x")
    found = find_videos([tmp_path / "a", tmp_path / "named.bin"])
    assert [p.name for p in found] == ["two.MKV", "one.mp4", "named.bin"]
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        find_videos([tmp_path / "missing.mp4"])
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\na/one.mp4\n\n")
    assert read_file_list(listing) == [str(tmp_path / "a" / "one.mp4")]


def test_ids_and_shards_are_stable(tmp_path):
    path = tmp_path / "My Video (1).mp4"
    assert video_id(path).startswith("My_Video_1_-") and video_id(path) == video_id(str(path))
    shards = [shard_of(tmp_path / f"v{i}.mp4", 3) for i in range(60)]
    assert set(shards) == {0, 1, 2}


def test_probe_reports_why_a_file_cannot_be_curated(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    good = make_animation_video(tmp_path / "good.mp4", [ShotSpec(1.0)], size=(64, 36))
    with pytest.raises(InputError, match="empty"):
        probe_video(empty, 10**9)
    with pytest.raises(InputError, match="not a readable media file"):
        probe_video(text, 10**9)
    with pytest.raises(InputError, match="exceed --max-pixels"):
        probe_video(good.path, 64 * 36 - 1)
    info = probe_video(good.path, 10**9)
    assert (info.width, info.height, info.fps, info.frames) == (64, 36, 24.0, 24)


def test_the_curation_source_probes_and_keeps_the_first_frame(tmp_path):
    """The source probes by decoding the first frame; that frame must still be curated."""
    video = make_animation_video(tmp_path / "good.mp4", [ShotSpec(1.0, speed=0.5)], size=(64, 36))
    with CurationSource(video.path, 10**9, []) as source:
        info = source.info
        assert (info.width, info.height, info.fps, info.frames, info.rotation) == (64, 36, 24.0, 24, 0)
        frames = list(source.frames())
    decoded = list(iter_decoded_frames(video.path))
    assert [t for t, _, _ in frames] == pytest.approx([t for t, _ in decoded])
    assert np.array_equal(frames[0][1].to_ndarray(), decoded[0][1].to_ndarray())
    with pytest.raises(InputError, match="exceed --max-pixels"):
        CurationSource(video.path, 64 * 36 - 1, [])


def test_proxy_aesthetic_orders_obvious_cases():
    scorer = ImageStatisticsProxyScorer()
    rng = np.random.default_rng(0)
    colourful = np.zeros((90, 160, 3), np.uint8)
    colourful[:, :53] = (220, 40, 40)
    colourful[:, 53:106] = (40, 200, 60)
    colourful[:, 106:] = (30, 60, 230)
    grey = np.full((90, 160, 3), 128, np.uint8)
    black = np.zeros((90, 160, 3), np.uint8)
    dim = (colourful * 0.15).astype(np.uint8) + rng.integers(0, 2, colourful.shape, dtype=np.uint8)
    scores = dict(zip(("colourful", "grey", "black", "dim"), scorer.score([colourful, grey, black, dim])))
    assert scores["colourful"] > scores["dim"] > scores["black"]
    assert scores["colourful"] > scores["grey"]
    assert all(0 <= s <= 10 for s in scores.values())


def test_sidecar_captions_from_csv_jsonl_and_text_files(tmp_path):
    video = tmp_path / "show" / "ep1.mp4"
    video.parent.mkdir()
    video.write_bytes(b"")
    other = tmp_path / "show" / "ep2.mp4"
    other.write_bytes(b"")
    (tmp_path / "show" / "ep2.txt").write_text("Tags: boy, running, city.\n")
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text('id,source,caption\nep1-xyz-0003,,"girl, walking, field"\n,show/ep1.mp4,"anime girl, solo"\n')
    captioner = SidecarCaptioner(csv_file)
    clips = [ClipToCaption("ep1-xyz-0003", video, video), ClipToCaption("ep1-xyz-0004", video, video),
             ClipToCaption("ep2-abc-0000", other, other), ClipToCaption("ep3-0", tmp_path / "ep3.mp4", video)]
    assert captioner.caption(clips) == ["girl, walking, field", "anime girl, solo", "boy, running, city", None]
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text(json.dumps({"source": "ep1.mp4", "caption": "sky, pan"}) + "\n")
    assert SidecarCaptioner(jsonl).caption(clips[:1]) == ["sky, pan"]
    jsonl.write_text('{"source": "ep1.mp4"}\n')
    with pytest.raises(ValueError, match="row 1 needs 'caption'"):
        SidecarCaptioner(jsonl)
    with pytest.raises(FileNotFoundError, match="--caption-file"):
        SidecarCaptioner(tmp_path / "absent.csv")


def test_clean_tags_makes_one_line_of_tags():
    assert clean_tags('Tags: "anime girl, reading books,\ndesk, , soft gaze."') == "anime girl, reading books, desk, soft gaze"


@pytest.mark.parametrize(("shape", "size", "factor"), [
    ((720, 1280), (128, 72), 10),  # halved, then 5: the 720p detector input
    ((272, 640), (128, 54), 5),  # 272 rows are 54.4 x 5: cropped to 270 first
    ((1080, 1920), (640, 360), 3),
])  # fmt: skip
def test_downscale_is_a_block_average_over_the_whole_factor(shape, size, factor):
    plane = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    width, height = size
    blocks = plane[: height * factor, : width * factor].reshape(height, factor, width, factor)
    expected = blocks.mean(axis=(1, 3))
    result = downscale(plane, width, height)
    assert result.shape == (height, width) and result.dtype == np.uint8
    assert np.abs(result - expected).max() <= 0.5 + 1e-9  # one average, rounded once
    halved = downscale(plane, width, height, halvings=True)
    assert np.abs(halved - expected).max() <= 1.5  # rounded once per halving and once at the end


def test_downscale_finishes_a_fractional_factor_bilinearly():
    plane = np.tile(np.arange(640, dtype=np.float64) * 255 / 639, (360, 1)).astype(np.uint8)
    result = downscale(plane, 568, 320)  # factor 1.13: bilinear only
    assert result.shape == (320, 568)
    assert np.all(np.diff(result[0].astype(int)) >= 0) and result[0, 0] <= 1 and result[0, -1] >= 254


def test_the_detector_reads_frames_scaled_by_a_power_of_two_near_128_px():
    sizes = [(1920, 1080), (1280, 720), (854, 480), (640, 272), (192, 108), (100, 56)]
    assert [detection_size(*size) for size in sizes] == [(120, 67), (160, 90), (106, 60), (160, 68), (192, 108),
                                                         (100, 56)]
    assert all(96 <= detection_size(w, w // 2)[0] <= 192 for w in range(193, 8000, 7))


def test_workers_share_the_cores_among_their_codec_and_opencv_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [threads_per_worker(w) for w in (1, 4, 16, 32)] == [16, 4, 1, 1]
    video = make_animation_video(tmp_path / "v.mp4", [ShotSpec(0.5)], size=(64, 36))
    for threads in (1, 2):
        with CurationSource(video.path, 10**9, [], threads=threads) as source:
            assert len(list(source.frames())) == 12
            assert source.decoder_threads == threads


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_worker_threads_follow_the_cpu_affinity_not_the_host(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [threads_per_worker(w) for w in (1, 2, 8)] == [4, 2, 1]
