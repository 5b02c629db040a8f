"""`ptta cache` storage: dtypes, the format-1 caches it still reads, and resampling to `data.fps`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_train_fixtures import built_cache, clip_manifest, make_config_dict, tiny_model_dir  # noqa: F401

from ptta.synthetic import ShotSpec, make_animation_video
from ptta.cache.buckets import resample_frames
from ptta.cache.build import CACHE_INFO_FILE, CacheError, build_cache, read_cache, shard_path, skipped_clips
from ptta.config import config_from_dict
from ptta.train.data import CachedClipReader


def shard_tensors(path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


def test_latents_keep_the_vae_dtype_and_text_embeddings_the_text_encoder_dtype(built_cache):
    info = json.loads((built_cache / CACHE_INFO_FILE).read_text())
    # on a CPU "auto" runs the VAE and text encoders in fp32
    assert (info["format_version"], info["vae_dtype"], info["text_encoder_dtype"], info["fps"]) == (
        2, "float32", "float32", 24.0)
    metadata, tensors = shard_tensors(shard_path(built_cache, 0))
    assert {t.dtype for k, t in tensors.items() if k.endswith("/latents")} == {torch.float32}
    assert {t.dtype for k, t in tensors.items() if not k.endswith("/latents")} == {torch.float32}
    assert {r["source_fps"] for r in json.loads(metadata["clips"])} == {24.0}



def test_cached_embeddings_are_the_ones_sampling_encodes_on_the_same_device(built_cache, tiny_model_dir):
    from ptta.models.text_encoders import encode_prompts_alone

    clip = read_cache(built_cache)[0]
    with safe_open(str(clip.shard), framework="pt") as handle:
        cached = handle.get_tensor(f"{clip.id}/prompt_embeds"), handle.get_tensor(f"{clip.id}/pooled")
    [encoded] = encode_prompts_alone(tiny_model_dir, [clip.caption], 256, torch.device("cpu"))
    assert all(torch.equal(c, e) for c, e in zip(cached, encoded))

def test_format_1_caches_with_fp32_embeddings_still_load(built_cache, tmp_path):
    old = shutil.copytree(built_cache, tmp_path / "old")
    info = json.loads((old / CACHE_INFO_FILE).read_text())
    for key in ("fps", "vae_dtype", "text_encoder_dtype"):
        del info[key]
    (old / CACHE_INFO_FILE).write_text(json.dumps({**info, "format_version": 1}))
    for index in range(info["num_shards"]):
        metadata, tensors = shard_tensors(shard_path(old, index))
        records = [{k: v for k, v in r.items() if k != "source_fps"} for r in json.loads(metadata["clips"])]
        save_file({k: v.float() for k, v in tensors.items()}, str(shard_path(old, index)),
                  metadata={**metadata, "clips": json.dumps(records)})
    new_batch = CachedClipReader(read_cache(built_cache)).batch([0, 1], "cpu")
    old_batch = CachedClipReader(read_cache(old)).batch([0, 1], "cpu")
    for name in ("latents", "prompt_embeds", "pooled"):
        assert getattr(old_batch, name).dtype == torch.float32
        torch.testing.assert_close(getattr(old_batch, name), getattr(new_batch, name), rtol=0, atol=0)

    (old / CACHE_INFO_FILE).write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(CacheError, match="cache format 99 was written by a newer ptta"):
        read_cache(old)


def test_resample_frames_takes_the_nearest_source_frame():
    frames = np.arange(12)
    # 0.4 s: the last output time, 0.375 s, is nearest to source frame 11 (0.367 s)
    np.testing.assert_array_equal(resample_frames(frames, 30, 24), [0, 1, 3, 4, 5, 6, 8, 9, 10, 11])
    np.testing.assert_array_equal(resample_frames(frames[:4], 12, 24), [0, 1, 1, 2, 2, 3, 3, 3])
    assert resample_frames(frames, 24, 24) is frames


@pytest.mark.parametrize(("source_fps", "count"), [(24.01, 97), (23.976, 97), (23.99, 97), (24.03, 97), (25, 93),
                                                   (30, 78), (60, 39)])
def test_measured_rates_near_the_target_keep_every_frame(source_fps, count):
    # 97 frames: ~4.04 s at 24 fps; rate noise must not push a clip below its 97-frame bucket
    resampled = resample_frames(np.arange(97), source_fps, 24)
    assert len(resampled) == count and len(set(resampled.tolist())) == count


def test_30_fps_clips_are_cached_at_the_training_fps(tiny_model_dir, tmp_path):
    # at 30 fps 12 frames (0.4 s) give 10 at 24 fps (enough for the 9-frame bucket); 10 frames
    # (1/3 s) give 8 and are skipped, though without resampling they would fill the bucket
    records = []
    for name, seconds in (("long", 0.4), ("short", 1 / 3)):
        make_animation_video(tmp_path / f"{name}.mp4", [ShotSpec(seconds)], fps=30, size=(64, 48))
        records.append({"id": name, "clip_path": f"{name}.mp4", "caption": "a red ball", "selected": True})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = config_from_dict(make_config_dict(tiny_model_dir, manifest, tmp_path / "cache", tmp_path / "run"))
    cache = build_cache(config, progress=False)
    assert [c.id for c in read_cache(cache)] == ["long"]
    metadata, _ = shard_tensors(shard_path(cache, 0))
    assert json.loads(metadata["clips"])[0]["source_fps"] == 30.0
    [skipped] = skipped_clips(cache)
    assert skipped["id"] == "short" and "8 frames at 24 fps (source 30 fps)" in skipped["reason"]
