"""Small parts of the training stage: buckets, caption heads, objectives, the data plan, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptta.cache.buckets import Bucket, choose_bucket, fit_clip
from ptta.models.hunyuan_video import check_frame_count
from ptta.cache.build import CachedClip
from ptta.config import DEFAULT_HEAD_NAMES, DEFAULT_HEAD_TAGS, TrainingConfig
from ptta.train.data import epoch_plan, rank_step_groups, steps_per_epoch
from ptta.train.heads import caption_head_weights, parse_head_weights
from ptta.train.metrics import MetricsLog, read_metrics
from ptta.train.objective import make_noisy_batch, sample_sigmas


def test_frame_counts_must_be_4k_plus_1():
    for good in (1, 9, 33, 65, 97):
        check_frame_count(good)
    for bad in (0, 32, 34, 96):
        with pytest.raises(ValueError, match="4k\\+1"):
            check_frame_count(bad)


def test_bucket_takes_longest_fitting_frames_and_closest_aspect():
    buckets = [[448, 800], [480, 480], [800, 448]]
    assert choose_bucket(120, 450, 800, [33, 65, 97], buckets) == Bucket(97, 448, 800)
    assert choose_bucket(70, 1080, 608, [33, 65, 97], buckets) == Bucket(65, 800, 448)
    assert choose_bucket(20, 450, 800, [33], buckets) is None


def test_fit_clip_takes_middle_frames_scaled_and_centre_cropped():
    frames = np.zeros((13, 60, 100, 3), np.uint8)
    for i in range(13):
        frames[i] = i
    frames[:, :, 45:55] = 255  # a bright vertical band in the middle survives the centre crop
    out = fit_clip(frames, Bucket(9, 32, 48))
    assert out.shape == (9, 32, 48, 3)
    assert out[0, 0, 0, 0] == 2 and out[-1, 0, 0, 0] == 10  # frames 2..10 of 13
    assert out[0, 16, 24, 0] == 255


def test_caption_heads():
    names, tags = DEFAULT_HEAD_NAMES, DEFAULT_HEAD_TAGS
    assert caption_head_weights("anime girl, reading books, desk", names, tags) == [0, 0.5, 0.5, 0]
    assert caption_head_weights("a boy and a girl under the sky", names, tags) == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])
    assert caption_head_weights("abstract swirls", names, tags) == [0.25] * 4
    assert parse_head_weights("0.7,0.3,0,0", 4) == [0.7, 0.3, 0.0, 0.0]
    with pytest.raises(ValueError, match="2 weights but the adapter has 4 heads"):
        parse_head_weights("1,0", 4)


def test_flow_objective_interpolates_towards_noise():
    config = TrainingConfig(sigma_sampling="uniform")
    x0 = torch.randn(3, 4, 2, 2, 2)
    batch = make_noisy_batch(x0, config, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=generator)
    sigma = torch.rand(3, generator=generator)
    torch.testing.assert_close(batch.timestep, sigma * 1000)
    torch.testing.assert_close(batch.noisy, (1 - sigma.view(3, 1, 1, 1, 1)) * x0 + sigma.view(3, 1, 1, 1, 1) * noise)
    torch.testing.assert_close(batch.target, noise - x0)


def test_sigma_samplers_stay_in_range_and_shift_moves_mass_to_noise():
    generator = torch.Generator().manual_seed(0)
    logit = sample_sigmas(4000, TrainingConfig(sigma_sampling="logit_normal"), generator)
    shifted = sample_sigmas(4000, TrainingConfig(sigma_sampling="shift", shift=5.0), generator)
    for sigmas in (logit, shifted):
        assert ((sigmas > 0) & (sigmas < 1)).all()
    assert abs(logit.mean().item() - 0.5) < 0.03 and shifted.mean().item() > 0.7


def test_epsilon_objective_targets_the_noise():
    batch = make_noisy_batch(torch.zeros(2, 4, 1, 2, 2), TrainingConfig(objective="epsilon"),
                             torch.Generator().manual_seed(1))
    assert batch.timestep.min() >= 0 and batch.timestep.max() < 1000
    # with x0 = 0, z_t = sqrt(1 - abar) * noise, so target and input are parallel
    ratio = batch.noisy / batch.target
    assert torch.allclose(ratio, ratio.flatten(1)[:, :1].view(2, 1, 1, 1, 1))


def clips_in(buckets: list[str]) -> list[CachedClip]:
    shapes = {"a": Bucket(9, 32, 48), "b": Bucket(9, 48, 32)}
    return [CachedClip(f"c{i}", "", shapes[b], Path("x")) for i, b in enumerate(buckets)]


def test_epoch_plan_batches_within_buckets_and_covers_each_clip_once():
    clips = clips_in(["a"] * 5 + ["b"] * 4)
    plan = epoch_plan(clips, 2, seed=3, epoch=0, world_size=1)
    assert sorted(i for batch in plan for i in batch) == list(range(9))
    assert all(len({clips[i].bucket for i in batch}) == 1 for batch in plan)
    assert plan == epoch_plan(clips, 2, seed=3, epoch=0, world_size=1)
    assert plan != epoch_plan(clips, 2, seed=3, epoch=1, world_size=1)


def test_ranks_get_disjoint_equal_shares():
    clips = clips_in(["a"] * 7)
    plan = epoch_plan(clips, 1, seed=0, epoch=0, world_size=2)
    assert len(plan) == 6  # cut to a multiple of the world size
    rank0, rank1 = rank_step_groups(plan, 0, 2, 2), rank_step_groups(plan, 1, 2, 2)
    assert len(rank0) == len(rank1) == steps_per_epoch(plan, 2, 2) == 2
    seen = [i for groups in (rank0, rank1) for group in groups for batch in group for i in batch]
    assert len(seen) == len(set(seen)) == 6


def test_metrics_log_drops_records_after_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in range(1, 6):
        log.write({"step": step, "loss": float(step)})
    MetricsLog(tmp_path / "m.jsonl", resume_step=3).write({"step": 4, "loss": 0.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "m.jsonl")] == [(1, 1.0), (2, 2.0), (3, 3.0),
                                                                                      (4, 0.0)]
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])["step"] == 1
