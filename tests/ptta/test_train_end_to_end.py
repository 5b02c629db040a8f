"""`ptta cache` and `ptta train` on the embedded tiny model, end to end on the CPU."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_train_fixtures import built_cache, clip_manifest, make_config, make_config_dict, tiny_model_dir  # noqa: F401

import hydralora
from ptta.cache.build import CacheError, build_cache, read_cache, shard_path, skipped_clips
from ptta.train.checkpoint import list_checkpoints
from ptta.config import ConfigError, config_from_dict
from ptta.train.data import epoch_plan
from ptta.train.trainer import TrainingDivergedError, train


def adapter_tensors(directory) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def test_cache_holds_every_usable_clip_with_bucketed_shapes(built_cache):
    clips = read_cache(built_cache)
    assert sorted(c.id for c in clips) == ["clip0", "clip1", "clip2", "clip3"]
    assert {c.bucket.key for c in clips} == {"9x32x48"}  # 64x48 sources pick the wide bucket
    assert [s["id"] for s in skipped_clips(built_cache)] == ["short"]
    from safetensors import safe_open

    with safe_open(str(clips[0].shard), framework="pt") as handle:
        latents = handle.get_tensor(f"{clips[0].id}/latents")
        embeds = handle.get_tensor(f"{clips[0].id}/prompt_embeds")
    assert latents.shape == (4, 3, 4, 6)  # (C, (9-1)/4+1, 32/8, 48/8)
    assert embeds.shape[1] == 16 and 1 <= embeds.shape[0] <= 256


def test_cache_resumes_only_the_missing_shard(tiny_model_dir, clip_manifest, tmp_path):
    config = config_from_dict(make_config_dict(tiny_model_dir, clip_manifest, tmp_path / "cache", tmp_path / "out"))
    build_cache(config, progress=False)
    first, second = shard_path(config.cache_path, 0), shard_path(config.cache_path, 1)
    first_mtime = first.stat().st_mtime_ns
    second.unlink()
    build_cache(config, progress=False)
    assert second.is_file() and first.stat().st_mtime_ns == first_mtime
    other = config_from_dict(make_config_dict(tiny_model_dir, clip_manifest, tmp_path / "cache", tmp_path / "out",
                                              data={"frame_buckets": [5]}))
    with pytest.raises(CacheError, match="differs in: frame_buckets"):
        build_cache(other, progress=False)


def test_loss_falls_when_overfitting_a_few_clips(make_config):
    config = make_config(training={"epochs": 100, "max_steps": 40, "batch_size": 4, "checkpoint_every": 1000,
                                   "sigma_sampling": "uniform", "gradient_checkpointing": False},
                         optimizer={"lr": 1e-2})
    result = train(config, progress=False)
    losses = [json.loads(line)["loss"] for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    assert (result.output_dir / "loss_curve.png").stat().st_size > 0


def test_resumed_run_ends_with_the_same_adapter(make_config):
    whole = train(make_config("whole", training={"epochs": 3, "max_steps": 6, "checkpoint_every": 3}), progress=False)
    part = train(make_config("part", training={"epochs": 3, "max_steps": 3, "checkpoint_every": 3}), progress=False)
    assert [p.name for p in list_checkpoints(part.output_dir)] == ["step-000003"]
    resumed = train(make_config("part", training={"epochs": 3, "max_steps": 6, "checkpoint_every": 3}), resume="latest",
                    progress=False)
    assert resumed.steps == 6
    expected, got = adapter_tensors(whole.adapter_dir), adapter_tensors(resumed.adapter_dir)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(line)["step"] for line in (resumed.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_settings_and_fresh_run_refuses_old_checkpoints(make_config):
    train(make_config(training={"max_steps": 2}), progress=False)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(make_config(training={"max_steps": 2}), progress=False)
    with pytest.raises(ConfigError, match=r"config changed \['optimizer'\]"):
        train(make_config(training={"max_steps": 4}, optimizer={"lr": 5e-4}), resume="latest", progress=False)
    with pytest.raises(ConfigError, match=r"config changed \['adapter'\]"):
        train(make_config(training={"max_steps": 4}, adapter={"r": 8}), resume="latest", progress=False)


def test_saved_adapter_loads_and_export_matches_in_a_diffusers_pipeline(make_config, tiny_model_dir):
    from diffusers import HunyuanVideoPipeline, HunyuanVideoTransformer3DModel

    result = train(make_config(adapter={"mixing": "learned"}, training={"max_steps": 3}), progress=False)
    assert result.lora_path is not None and result.lora_path.is_file()

    inputs = {
        "hidden_states": torch.randn(1, 4, 3, 4, 6, generator=torch.Generator().manual_seed(0)),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(1)),
        "encoder_attention_mask": torch.ones(1, 5, dtype=torch.long),
        "pooled_projections": torch.randn(1, 8, generator=torch.Generator().manual_seed(2)),
        "guidance": torch.tensor([6000.0]),
        "return_dict": False,
    }
    hydra = HunyuanVideoTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer")
    base_out = hydra(**inputs)[0]
    hydralora.load_adapter(hydra, result.adapter_dir)
    with torch.no_grad():
        hydra_out = hydra(**inputs)[0]
    assert not torch.allclose(hydra_out, base_out)  # the trained adapter changes the output

    pipe = HunyuanVideoPipeline.from_pretrained(tiny_model_dir)
    pipe.load_lora_weights(str(result.lora_path))
    with torch.no_grad():
        lora_out = pipe.transformer(**inputs)[0]
    torch.testing.assert_close(lora_out, hydra_out, rtol=1e-4, atol=1e-5)


def test_lora_baseline_trains_one_head(make_config):
    lora = train(make_config("lora", adapter={"type": "lora"}, training={"max_steps": 2}), progress=False)
    assert hydralora.adapter_config(lora.model).num_heads == 1
    assert all(v.shape[0] == 1 for k, v in adapter_tensors(lora.adapter_dir).items() if k.endswith("lora_B"))


def test_caption_heads_train_only_the_heads_the_captions_name(make_config):
    # every test caption holds "a" or "the", tagged here as the object head (index 2) only
    tags = {"male": [], "female": [], "object": ["a", "the"], "background": []}
    config = make_config(adapter={"mixing": "fixed"}, heads={"from_captions": True, "tags": tags},
                         optimizer={"weight_decay": 0.0}, training={"max_steps": 3, "checkpoint_every": 1})
    result = train(config, progress=False)
    before = adapter_tensors(list_checkpoints(result.output_dir)[0])  # after step 1
    after = adapter_tensors(result.adapter_dir)
    heads_b = [k for k in after if k.endswith("lora_B")]
    assert heads_b
    for key in heads_b:
        changed = (after[key] - before[key]).flatten(1).abs().amax(dim=1)
        assert changed[2] > 0, key
        assert torch.equal(changed[[0, 1, 3]], torch.zeros(3)), key


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(make_config, built_cache, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    # a copy of the cache whose second shard holds NaN latents

    cache = tmp_path / "nan-cache"
    shutil.copytree(built_cache, cache)
    path = shard_path(cache, 1)
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    tensors = {k: (torch.full_like(v, float("nan")) if k.endswith("latents") else v) for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)

    config = make_config(data={"cache_dir": str(cache)}, training={"batch_size": 1, "checkpoint_every": 1})
    clips = read_cache(cache)
    plan = epoch_plan(clips, 1, config.seed, 0, 1)
    good_steps = next(i for i, batch in enumerate(plan) if clips[batch[0]].shard == path)
    assert good_steps >= 1  # the seed puts a finite clip first, so a checkpoint exists before the NaN
    with pytest.raises(TrainingDivergedError, match=f"at step {good_steps + 1} .*training stopped before the update"
                       ) as info:
        train(config, progress=False)
    checkpoints = list_checkpoints(config.output_path)
    assert [p.name for p in checkpoints][-1] == f"step-{good_steps:06d}"
    assert str(checkpoints[-1]) in str(info.value)
    assert all(torch.isfinite(t).all() for t in adapter_tensors(checkpoints[-1]).values())
    assert not any(p.name.endswith(".partial") for p in (config.output_path / "checkpoints").iterdir())


def test_adapter_type_none_has_nothing_to_train(make_config):
    with pytest.raises(ConfigError, match="nothing to train"):
        train(make_config(adapter={"type": "none"}), progress=False)


def test_cache_of_another_model_is_refused(make_config, tmp_path):
    from ptta.models.tiny_hunyuan_video import save_tiny_model

    other = save_tiny_model(tmp_path / "other-model", seed=1)
    with pytest.raises(ConfigError, match="was made with model"):
        train(make_config(model=str(other)), progress=False)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_cache_of_another_prompt_length_limit_is_refused(make_config):
    # the adapter records the limit for sampling, so it must be the one the cached embeddings used
    with pytest.raises(ConfigError, match="data.max_sequence_length is 128, but the cache .* was made with 256"):
        train(make_config(data={"max_sequence_length": 128}), progress=False)


def test_cache_resampled_to_another_fps_is_refused(make_config):
    # the latents hold the cached fps's motion, which the adapter records for sampling
    with pytest.raises(ConfigError, match="data.fps is 30, but the cache .* was resampled to 24 fps"):
        train(make_config(data={"fps": 30}), progress=False)


def test_validation_samples_are_written_during_training(make_config):
    config = make_config(training={"max_steps": 2},
                         validation={"every": 2, "prompts": ["a girl walks"], "steps": 2, "height": 32, "width": 48,
                                     "frames": 9})
    result = train(config, progress=False)
    assert (result.output_dir / "validation" / "step-000002" / "000-seed0.mp4").is_file()


@pytest.mark.parametrize("training", [{"objective": "epsilon"}, {"sigma_sampling": "shift", "shift": 3.0},
                                      {"mixed_precision": "bf16", "gradient_accumulation_steps": 2}])
def test_objectives_and_bf16_mixed_precision_train(make_config, training):
    result = train(make_config(training={"max_steps": 1, **training}), progress=False)
    assert result.steps == 1 and result.last_loss == result.last_loss  # finite, not NaN
    adapter = adapter_tensors(result.adapter_dir)
    assert all(t.dtype == torch.float32 for t in adapter.values())  # fp32 adapters even on a bf16 base


def test_make_tiny_model_command(tmp_path, capsys):
    from diffusers import HunyuanVideoPipeline

    from ptta.cli import main

    assert main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    pipe = HunyuanVideoPipeline.from_pretrained(tmp_path / "tiny")
    assert pipe.transformer.config.patch_size == 2
    assert main(["make-tiny-model", str(tmp_path / "tiny")]) == 2
    assert "already exists" in capsys.readouterr().err
