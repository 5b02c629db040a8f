"""The LAION aesthetic scorer against the real checkpoint formats and the reference's preprocessing
(improved-aesthetic-predictor's simple_inference.py: openai CLIP ViT-L/14 via `clip.load`). Tiny
random checkpoints, nothing downloaded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from curate_support import save_random_aesthetic_head, save_tiny_clip
from PIL import Image

from ptta.curate.aesthetic import LaionAestheticScorer

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-vit", projection_dim=24)


def reference_preprocess(frame: np.ndarray, size: int) -> np.ndarray:
    """clip.load's transform: PIL bicubic resize of the short side to `size`, centre crop, CLIP mean/std."""
    image = Image.fromarray(frame)
    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = (size, int(height * scale)) if width < height else (int(width * scale), size)
    image = image.resize((new_width, new_height), Image.BICUBIC)
    left, top = round((new_width - size) / 2), round((new_height - size) / 2)
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255.0
    return ((pixels - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)


def reference_scores(clip_dir, head_path, frames) -> list[float]:
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    state = torch.load(head_path, weights_only=True)
    pixels = torch.from_numpy(np.stack([reference_preprocess(f, clip.config.vision_config.image_size) for f in frames]))
    with torch.no_grad():
        features = clip.get_image_features(pixel_values=pixels)
        x = getattr(features, "pooler_output", features)  # encode_image: the projected class token
        x = x / x.norm(dim=-1, keepdim=True)
        for index in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    return x.squeeze(-1).tolist()


def test_openai_style_folder_without_a_vision_projection_dim(tiny_clip_dir, tmp_path):
    # openai/clip-vit-large-patch14 and LAION's CLIP folders state projection_dim only at the top level;
    # loading the vision tower on its own config alone would build a 512-d projection and fail.
    folder = shutil.copytree(tiny_clip_dir, tmp_path / "legacy-clip")
    config = json.loads((folder / "config.json").read_text())
    for sub in ("vision_config", "text_config"):
        del config[sub]["projection_dim"]
    (folder / "config.json").write_text(json.dumps(config))
    head = save_random_aesthetic_head(tmp_path / "head.pth", input_dim=24)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(2)]
    assert LaionAestheticScorer(folder, head).score(frames) == pytest.approx(
        reference_scores(tiny_clip_dir, head, frames), rel=1e-4, abs=1e-5)


def test_preprocessing_matches_clip_load_with_or_without_a_preprocessor_file(tiny_clip_dir, tmp_path):
    head = save_random_aesthetic_head(tmp_path / "head.pth", input_dim=24)
    bare = shutil.copytree(tiny_clip_dir, tmp_path / "no-preprocessor")
    (bare / "preprocessor_config.json").unlink()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((90, 160, 3), (120, 90, 3))]
    expected = reference_scores(tiny_clip_dir, head, frames)
    assert LaionAestheticScorer(tiny_clip_dir, head).score(frames) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert LaionAestheticScorer(bare, head).score(frames) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_a_pickled_module_head_is_refused_clearly(tiny_clip_dir, tmp_path):
    pickled = tmp_path / "whole-module.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(24, 1)), pickled)
    with pytest.raises(ValueError, match=r"--aesthetic-head .*whole-module.pth: holds pickled objects"):
        LaionAestheticScorer(tiny_clip_dir, pickled)


def test_a_folder_that_is_not_clip_is_refused(tiny_clip_dir, tmp_path):
    folder = shutil.copytree(tiny_clip_dir, tmp_path / "not-clip")
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    with pytest.raises(ValueError, match=r"--aesthetic-clip .*not-clip: model_type 'siglip'"):
        LaionAestheticScorer(folder, save_random_aesthetic_head(tmp_path / "head.pth", input_dim=24))
