"""`ptta curate` writes no clip files by default (a clip is a frame range of its source); with
`--write-clips`, at once or later over the same folder, the clips are written bit for bit alike;
a folder made before clips had addresses still resumes and is still read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from curate_support import read_manifest, run_command

from ptta.cache.manifest import read_selected_clips
from ptta.synthetic import ShotSpec, make_animation_video


def make_inputs(folder: Path) -> Path:
    make_animation_video(folder / "a.mp4", [ShotSpec(3.4, speed=0.6), ShotSpec(3.2, speed=0.5, hold=2)], fps=24,
                         size=(96, 54), seed=1)
    make_animation_video(folder / "b.mkv", [ShotSpec(3.5, speed=0.4)], fps=30, size=(64, 48), seed=2)
    for stem in ("a", "b"):
        (folder / f"{stem}.txt").write_text(f"tags of {stem}\n")
    return folder


def digests(out: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted((out / "clips").glob("*"))}


@pytest.mark.parametrize("options", [[], ["--resize", "64x48", "--fps", "12"]], ids=["source-size", "resized"])
def test_clips_written_later_are_the_clips_written_at_once(tmp_path, options):
    inputs = make_inputs(tmp_path / "in")
    common = [str(inputs), *options, "--captioner", "sidecar", "--no-progress"]
    ranges = tmp_path / "ranges"
    assert run_command("ptta.curate.command", [*common, "--out", str(ranges)]) == 0
    rows = read_manifest(ranges)
    selected = [row for row in rows if row["selected"]]
    assert len(selected) == 3 and not digests(ranges)
    for row in selected:
        assert row["clip_path"] is None and row["caption"].startswith("tags of")
        assert row["first_frame"] >= 0 and row["source_frames"] > 0 and row["clip_format_version"] >= 2
        assert set(row["source_signature"]) == {"size", "mtime_ns", "head_tail_blake2b"}
        assert (ranges / row["thumbnail"]).is_file()
    assert (ranges / "report.html").is_file()
    assert [clip.path for clip in read_selected_clips(ranges / "manifest.jsonl")] == [None] * 3

    at_once = tmp_path / "at-once"
    assert run_command("ptta.curate.command", [*common, "--out", str(at_once), "--write-clips"]) == 0
    assert run_command("ptta.curate.command", [*common, "--out", str(ranges), "--write-clips"]) == 0
    assert len(digests(at_once)) == 3
    assert digests(ranges) == digests(at_once)
    later, first = read_manifest(ranges), read_manifest(at_once)
    assert later == first  # the same rows: paths, captions, scores and addresses
    assert all((ranges / clip.path).is_file() for clip in read_selected_clips(ranges / "manifest.jsonl"))
    # nothing is missing any more: a further run writes nothing
    before = {path.name: path.stat().st_mtime_ns for path in (ranges / "clips").iterdir()}
    assert run_command("ptta.curate.command", [*common, "--out", str(ranges), "--write-clips"]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in (ranges / "clips").iterdir()} == before


def test_a_clip_whose_source_changed_is_not_written_and_its_video_is_retried(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--no-progress"]) == 0
    record_path = next((out / "videos").glob("a-*.json"))
    record = json.loads(record_path.read_text())
    record["signature"]["head_tail_blake2b"] = "0" * 32  # as if the file had changed behind size and mtime
    record_path.write_text(json.dumps(record))
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--write-clips", "--no-progress"]) == 1
    rows = {row["id"]: row for row in read_manifest(out)}
    failed = [row for row in rows.values() if row["error"] and row["selected"]]
    assert failed and all("writing the clip failed: source" in row["error"] and "changed since it was curated"
                          in row["error"] for row in failed)
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--write-clips", "--retry-failed",
                                               "--no-progress"]) == 0
    assert all(row["clip_path"] and (out / row["clip_path"]).is_file() for row in read_manifest(out) if row["selected"])


def test_a_folder_curated_before_clips_had_addresses_resumes_and_is_read(tmp_path):
    inputs = tmp_path / "in"
    make_animation_video(inputs / "old.mp4", [ShotSpec(3.5, speed=0.6)], size=(96, 54), seed=1)
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--write-clips", "--no-progress"]) == 0
    # what the previous version left: clips written, no addresses, a signature of size and mtime only
    (record_path,) = (out / "videos").glob("*.json")
    record = json.loads(record_path.read_text())
    for clip in record["clips"]:
        for key in ("first_frame", "source_frames", "clip_format_version"):
            del clip[key]
    del record["signature"]["head_tail_blake2b"]
    record_path.write_text(json.dumps(record))
    settings = json.loads((out / "settings.json").read_text())
    assert "write_clips" not in settings  # the setting does not decide whether a folder resumes

    make_animation_video(inputs / "new.mp4", [ShotSpec(3.5, speed=0.5)], size=(96, 54), seed=2)
    for stem in ("old", "new"):
        (inputs / f"{stem}.txt").write_text(f"{stem} clip\n")
    argv = [str(inputs), "--out", str(out), "--captioner", "sidecar", "--no-progress"]
    assert run_command("ptta.curate.command", argv) == 0
    assert json.loads(record_path.read_text())["clips"][0]["caption"] == "old clip"  # resumed, not redone
    rows = {Path(row["source"]).stem: row for row in read_manifest(out) if row["selected"]}
    assert rows["old"]["clip_path"] and rows["old"]["first_frame"] is None
    assert rows["new"]["clip_path"] is None and rows["new"]["first_frame"] == 0
    clips = {clip.id: clip for clip in read_selected_clips(out / "manifest.jsonl")}
    assert clips[rows["old"]["id"]].path.is_file() and clips[rows["old"]["id"]].address is None
    assert clips[rows["new"]["id"]].path is None and clips[rows["new"]["id"]].address["first_frame"] == 0
    # --write-clips writes the one clip missing
    assert run_command("ptta.curate.command", [*argv, "--write-clips"]) == 0
    assert all((out / row["clip_path"]).is_file() for row in read_manifest(out) if row["selected"])
