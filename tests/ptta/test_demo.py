"""`ptta demo`: the whole chain on the embedded tiny model leaves a complete run folder."""

from __future__ import annotations

import json
import re

import numpy as np

from ptta.cli import main
from ptta.video_io import read_video


def test_demo_leaves_a_summary_page_whose_links_all_resolve(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PTTA_HOME", str(tmp_path / "home"))  # the tiny model is created here, not in ~/.cache
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train-steps", "4", "--sample-steps", "2"]) == 0
    page = (out / "summary.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"curated/report.html", "train/loss_curve.png", "train.yaml"} <= set(links)
    missing = [link for link in links if not (out / link).exists()]
    assert not missing
    # 2 prompts with and without the adapter, the first prompt with each of the 4 heads alone
    assert sum(link.endswith(".gif") for link in links) == 8
    assert (out / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert "4 steps of hydralora" in page

    # the heads learned different things and steering them changes the video
    summary = json.loads((out / "train" / "train_summary.json").read_text())
    assert summary["heads"]["collapsed"] is False and summary["heads"]["mean_distance"] > 0
    assert [json.loads(line)["step"] for line in (out / "train" / "heads.jsonl").read_text().splitlines()][-1] == 4
    videos = {name: read_video(next((out / "samples" / f"head-{name}").glob("*.mp4")))[0]
              for name in ("male", "female", "object", "background")}
    assert not np.array_equal(videos["object"], videos["background"])
    assert "the heads differ" in page
    # adapter samples took their head weights from the prompt's tag words, as training did from captions
    assert (out / "train" / "adapter" / "caption_heads.json").is_file()
    index = [json.loads(line) for line in (out / "samples" / "adapter" / "samples.jsonl").read_text().splitlines()]
    assert [entry["heads_from"] for entry in index] == ["prompt", "prompt"]
    assert index[0]["head_weights"] == [0.0, 0.0, 1.0, 0.0]  # "colorful circles bouncing, flat shapes": object

    (out / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
