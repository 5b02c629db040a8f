"""`ptta evaluate` end to end on a folder of videos with tiny scorers: 2 prompts x 2 samples x 2
methods, the reports it writes, and its resilience (a corrupt video, reruns)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("transformers")

from ptta.evaluate import ablate, command
from ptta.evaluate.scorers import Scorer, VideoScore2Scorer, VideoScoreScorer
from ptta.models.tiny_scorers import save_tiny_videoscore, save_tiny_videoscore2
from ptta.video_io import write_video

PROMPTS = ["anime girl, reading books, desk, solo, anime style", "red paper airplane, gliding, classroom, anime style"]


def disc_clip(speed: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.integers(120, 230, (8, 8, 3)).astype(np.uint8), (64, 64),
                            interpolation=cv2.INTER_CUBIC)
    frames = []
    for t in range(16):
        frame = background.copy()
        cv2.circle(frame, (12 + speed * t, 32), 8, (200, 40, 40), -1)
        frames.append(frame)
    return frames


def write_folder(root: Path, methods: dict[str, int], method_column: str = "method") -> Path:
    """Videos for every method (value: disc speed) x prompt x 2 samples, plus a manifest."""
    rows = []
    for method, speed in methods.items():
        for p, prompt in enumerate(PROMPTS):
            for sample in range(2):
                name = f"{method}/p{p}_s{sample}.mp4"
                write_video(root / name, disc_clip(speed, sample), fps=8)
                rows.append({"video": name, "prompt": prompt, method_column: method})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "prompt", method_column])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_scorers")
    return {"videoscore": save_tiny_videoscore(root / "vs"), "videoscore2": save_tiny_videoscore2(root / "vs2")}


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def read_rows(out: Path) -> list[dict]:
    with (out / "per_video.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_of_videos_gives_table_plot_and_page_and_survives_a_corrupt_video(tmp_path, scorer_dirs, monkeypatch):
    manifest = write_folder(tmp_path / "videos", {"base": 0, "ptta": 3})
    (tmp_path / "videos" / "ptta" / "broken.mp4").write_bytes(b"this is not a video")
    with manifest.open("a", newline="") as handle:
        csv.writer(handle).writerow(["ptta/broken.mp4", PROMPTS[0], "ptta"])
    out = tmp_path / "eval"
    args = parse(command, ["--manifest", str(manifest), "--out", str(out), "--device", "cpu",
                           "--videoscore", str(scorer_dirs["videoscore"]), "--videoscore-variant", "v1",
                           "--videoscore2", str(scorer_dirs["videoscore2"]), "--vs2-max-new-tokens", "2"])
    assert command.run(args) == 1  # the corrupt video is an error; everything else is scored

    rows = read_rows(out)
    assert len(rows) == 9
    broken = next(r for r in rows if r["video"].endswith("broken.mp4"))
    assert all(f"{name}: " in broken["errors"] for name in ("weightfree", "videoscore", "videoscore2"))
    metrics = ["vs_visual_quality", "vs_text_alignment", "vs2_visual_quality", "dynamic_degree", "warp_consistency"]
    for row in rows:
        if row is not broken:
            assert row["errors"] == "" and all(math.isfinite(float(row[m])) for m in metrics)
    # Motion tells the methods apart: base discs stand still, ptta discs move.
    assert {r["dynamic_degree"] for r in rows if r["method"] == "base"} == {"0.0"}
    assert {r["dynamic_degree"] for r in rows if r["method"] == "ptta" and r is not broken} == {"1.0"}

    table = (out / "table.md").read_text()
    assert "| Methods | VSVQ ↑ | VSTC ↑ | VSDD ↑ | VSTVA ↑ | n |" in table
    assert table.count("| base |") == 2 and table.count("| ptta |") == 2  # paper table + other metrics
    with (out / "summary.csv").open(newline="") as handle:
        summary = {(r["method"], r["metric"]): r for r in csv.DictReader(handle)}
    ptta_motion = [float(r["motion_magnitude"]) for r in rows if r["method"] == "ptta" and r is not broken]
    assert float(summary[("ptta", "motion_magnitude")]["mean"]) == pytest.approx(np.mean(ptta_motion))
    assert summary[("ptta", "motion_magnitude")]["n"] == "4" and summary[("ptta", "motion_magnitude")]["missing"] == "1"
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    for method in ("base", "ptta"):
        for prompt_id in ("p01", "p02"):
            gif = out / "gifs" / method / f"{prompt_id}_s00.gif"
            assert gif.read_bytes()[:6] == b"GIF89a" and f"gifs/{method}/{prompt_id}_s00.gif" in page
    assert all(json.loads(line)["details"] is not None for line in (out / "per_video.jsonl").read_text().splitlines())

    # A rerun reuses every stored score: only the corrupt video is tried again.
    stored = (out / "scores.jsonl").read_text().splitlines()
    scored = []
    original = Scorer.checked_score
    monkeypatch.setattr(Scorer, "checked_score", lambda self, video, prompt: (scored.append(video.path.name),
                                                                             original(self, video, prompt))[1])
    loads = []
    for scorer_class in (VideoScoreScorer, VideoScore2Scorer):
        monkeypatch.setattr(scorer_class, "load", lambda self, load=scorer_class.load: (loads.append(self.name),
                                                                                         load(self))[1])
    assert command.run(args) == 1
    assert scored == [] and loads == []  # the corrupt file fails to decode, so no model is even loaded
    new_lines = (out / "scores.jsonl").read_text().splitlines()[len(stored):]
    assert len(new_lines) == 3 and all(json.loads(line)["status"] == "error" for line in new_lines)
    assert read_rows(out) == rows

    # Once the file is repaired, the next run scores just that video and the run is clean.
    write_video(tmp_path / "videos" / "ptta" / "broken.mp4", disc_clip(3, 7), fps=8)
    assert command.run(args) == 0
    assert scored == ["broken.mp4"] * 3 and loads == ["videoscore", "videoscore2"]
    assert read_rows(out)[-1]["errors"] == ""

    # A code change that alters a scorer's numbers bumps its revision: its stored scores go stale.
    scored.clear()
    loads.clear()
    monkeypatch.setattr(VideoScoreScorer, "revision", VideoScoreScorer.revision + 1)
    assert command.run(args) == 0
    assert loads == ["videoscore"] and len(scored) == 9


def test_a_scorer_that_fails_to_load_is_recorded_and_the_others_still_run(tmp_path, scorer_dirs, monkeypatch):
    manifest = write_folder(tmp_path / "videos", {"base": 0})

    def broken_load(self):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(VideoScoreScorer, "load", broken_load)
    out = tmp_path / "eval"
    args = parse(command, ["--manifest", str(manifest), "--out", str(out), "--device", "cpu",
                           "--videoscore", str(scorer_dirs["videoscore"])])
    assert command.run(args) == 1
    rows = read_rows(out)
    assert all("videoscore: loading videoscore failed: RuntimeError: CUDA out of memory" in r["errors"] for r in rows)
    assert all(math.isfinite(float(r["motion_magnitude"])) for r in rows)


def test_ablation_from_a_manifest_gives_the_table1_layout(tmp_path):
    manifest = write_folder(tmp_path / "videos", {"2": 0, "N4": 3}, method_column="method")
    out = tmp_path / "ablate"
    assert ablate.run(parse(ablate, ["--heads", "2,4", "--manifest", str(manifest), "--out", str(out)])) == 0
    table = (out / "table.md").read_text()
    assert "| B matrices nums N | DD-flow ↑ | Motion ↑ | Flicker ↑ | WarpCons ↑ | n |" in table
    assert "| 2 | 0.000" in table and "| 4 (Default) | 1.000" in table


def test_ablation_refuses_heads_the_manifest_does_not_have_and_missing_adapters(tmp_path):
    manifest = write_folder(tmp_path / "videos", {"8": 0})
    with pytest.raises(SystemExit, match=r"\['N8'\], not in --heads 2,4"):
        ablate.run(parse(ablate, ["--heads", "2,4", "--manifest", str(manifest), "--out", str(tmp_path / "a")]))
    with pytest.raises(SystemExit, match=r"no adapter for N = 2 \(.*heads2\), 4"):
        ablate.run(parse(ablate, ["--heads", "2,4", "--model", "tiny", "--out", str(tmp_path / "b")]))
    with pytest.raises(SystemExit, match="distinct head counts"):
        ablate.run(parse(ablate, ["--heads", "4,4", "--manifest", str(manifest), "--out", str(tmp_path / "c")]))
