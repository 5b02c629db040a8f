"""Shared fixtures of the training, sampling and demo tests (imported by those modules).

Everything is built locally: the embedded tiny HunyuanVideo, a handful of synthetic clips with
captions, their curation-style manifest and the cache. Sizes are tiny (9 frames at 32x48) so a
training step takes a few tens of milliseconds on a CPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ptta.synthetic import ShotSpec, make_animation_video

CAPTIONS = [
    "a girl walks through a field",
    "a boy runs in the city",
    "a red ball bouncing",
    "clouds over the sky at sunset",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from ptta.models.tiny_hunyuan_video import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def clip_manifest(tmp_path_factory) -> Path:
    """manifest.jsonl: four selected clips, one too short for the 9-frame bucket, one unselected, one error."""
    root = tmp_path_factory.mktemp("curated")
    records = []
    for i, caption in enumerate(CAPTIONS):
        make_animation_video(root / "clips" / f"clip{i}.mp4", [ShotSpec(0.6, speed=0.6)], fps=24, size=(64, 48), seed=i)
        records.append({"id": f"clip{i}", "clip_path": f"clips/clip{i}.mp4", "caption": caption, "selected": True, "error": None})
    make_animation_video(root / "clips" / "short.mp4", [ShotSpec(0.2)], fps=24, size=(64, 48))
    records.append({"id": "short", "clip_path": "clips/short.mp4", "caption": "a short clip", "selected": True, "error": None})
    records.append({"id": "dull", "clip_path": "clips/clip0.mp4", "caption": "static", "selected": False, "error": None})
    records.append({"id": "broken", "clip_path": None, "caption": None, "selected": False, "error": "decode failed"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def make_config_dict(model_dir: Path, manifest: Path, cache_dir: Path, output_dir: Path, **sections) -> dict:
    """A small, fast config; `sections` (e.g. training={"max_steps": 4}) update its sections."""
    data = {
        "model": str(model_dir),
        "output_dir": str(output_dir),
        "seed": 7,
        "data": {"manifest": str(manifest), "cache_dir": str(cache_dir), "frame_buckets": [9],
                 "resolution_buckets": [[32, 48], [48, 32]], "shard_size": 2},
        "adapter": {"r": 4, "alpha": 4, "num_heads": 4, "init_b": "normal"},
        "optimizer": {"lr": 1e-3},
        "training": {"epochs": 2, "batch_size": 2, "mixed_precision": "no", "gradient_checkpointing": True,
                     "checkpoint_every": 2, "keep_checkpoints": 10},
    }
    data = copy.deepcopy(data)
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data


@pytest.fixture(scope="session")
def built_cache(tiny_model_dir, clip_manifest, tmp_path_factory) -> Path:
    from ptta.cache.build import build_cache
    from ptta.config import config_from_dict

    root = tmp_path_factory.mktemp("cache")
    config = config_from_dict(make_config_dict(tiny_model_dir, clip_manifest, root / "cache", root / "unused"))
    return build_cache(config, progress=False)


@pytest.fixture
def make_config(tiny_model_dir, clip_manifest, built_cache, tmp_path):
    """config_from_dict of make_config_dict on the shared cache, writing into this test's tmp_path."""
    from ptta.config import config_from_dict

    def build(output_name: str = "run", **sections):
        return config_from_dict(make_config_dict(tiny_model_dir, clip_manifest, built_cache, tmp_path / output_name,
                                                 **sections))

    return build
