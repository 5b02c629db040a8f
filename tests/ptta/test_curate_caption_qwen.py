"""The Qwen2.5-VL captioner against the model's reference input format (qwen-vl-utils + transformers):
a clip goes in as one video with time-aligned positions, and the chat template comes from where
AutoProcessor reads it. Tiny random checkpoints, nothing downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from curate_support import save_tiny_qwen

from ptta.curate.caption import (QWEN_VL_CHAT_TEMPLATE, ClipToCaption, ClipVideo, QwenCaptioner, model_placement,
                                 qwen_chat_template)  # fmt: skip
from ptta.models.qwen_vl import smart_resize
from ptta.synthetic import ShotSpec, make_animation_video

SMALL_FRAMES = 56 * 56  # tests keep the tiny frames small instead of raising them to 128 * 28 * 28


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory):
    return save_tiny_qwen(tmp_path_factory.mktemp("qwen") / "qwen2.5-vl")


def test_a_clip_is_one_video_with_time_aligned_positions(tiny_qwen_dir, tmp_path):
    # 3.2 s at 24 fps -> frames at 0, 0.5, ..., 3.0 s: 7, padded to 8 -> 4 temporal patches of 1 s.
    clip = Path(make_animation_video(tmp_path / "c.mp4", [ShotSpec(3.2, speed=0.5)], size=(96, 54)).path)
    captioner = QwenCaptioner(tiny_qwen_dir, max_new_tokens=3, min_pixels=SMALL_FRAMES)
    calls = []
    original = captioner.model.model.get_rope_index

    def recording_rope_index(*args, **kwargs):
        calls.append((kwargs, original(*args, **kwargs)))
        return calls[-1][1]

    captioner.model.model.get_rope_index = recording_rope_index
    (caption,) = captioner.caption([ClipToCaption("c", clip, clip)])
    assert caption

    # Without the modality ids transformers never computes 3-D positions and the video reads as text.
    assert calls, "the model built no multimodal positions"
    kwargs, (positions, _) = calls[0]
    height, width = smart_resize(54, 96, 28, SMALL_FRAMES, 28 * 28 * 768)
    assert kwargs["video_grid_thw"].tolist() == [[4, height // 14, width // 14]]
    assert kwargs["second_per_grid_ts"].tolist() == [1.0]
    video = kwargs["mm_token_type_ids"][0] == 2
    assert int(video.sum()) == 4 * (height // 28) * (width // 28)
    assert bool((kwargs["mm_token_type_ids"][0][~video] == 0).all())
    seconds_apart = captioner.model.config.vision_config.tokens_per_second * 1.0
    times = positions[0, 0, video].unique()
    assert torch.equal(times - times[0], torch.arange(4) * seconds_apart)


def test_video_pixels_follow_qwen_sizing_and_normalisation(tiny_qwen_dir, tmp_path):
    clip = Path(make_animation_video(tmp_path / "c.mp4", [ShotSpec(1.0, speed=0.5)], size=(96, 54)).path)
    captioner = QwenCaptioner(tiny_qwen_dir, min_pixels=SMALL_FRAMES, max_pixels=SMALL_FRAMES)
    video = captioner.video_input(clip)
    grid_t, grid_h, grid_w = video.grid_thw
    assert grid_t == 1 and grid_h * grid_w * 14 * 14 <= SMALL_FRAMES  # 2 frames (0, 0.5 s), max_pixels honoured
    assert video.pixel_values.shape == (grid_h * grid_w, 3 * 2 * 14 * 14)
    # OpenAI CLIP mean/std: a pixel in [0, 255] lands in about [-1.8, 2.2]
    assert -1.9 < video.pixel_values.min() and video.pixel_values.max() < 2.2


def test_batching_keeps_the_answers(tiny_qwen_dir, tmp_path):
    clips = []
    for i in range(3):
        path = tmp_path / f"c{i}.mp4"
        make_animation_video(path, [ShotSpec(1.0 + i, speed=0.5)], size=(96, 54), seed=i)
        clips.append(ClipToCaption(f"c{i}", path, path))
    batched = QwenCaptioner(tiny_qwen_dir, batch_size=2, max_new_tokens=6, min_pixels=SMALL_FRAMES).caption(clips)
    alone = QwenCaptioner(tiny_qwen_dir, batch_size=1, max_new_tokens=6, min_pixels=SMALL_FRAMES).caption(clips)
    assert batched == alone  # left padding, per-row positions and video slots line up in a batch
    assert all(isinstance(caption, str) and caption for caption in batched)


def test_chat_template_comes_from_where_the_processor_reads_it(tmp_path):
    assert qwen_chat_template(tmp_path, None) == QWEN_VL_CHAT_TEMPLATE  # an older folder saved without one
    assert qwen_chat_template(tmp_path, "tokenizer's") == "tokenizer's"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "processor's"}))
    assert qwen_chat_template(tmp_path, "tokenizer's") == "processor's"
    (tmp_path / "chat_template.jinja").write_text("jinja")
    assert qwen_chat_template(tmp_path, "tokenizer's") == "jinja"
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "chat_template.json").write_text("[]")
    with pytest.raises(ValueError, match="chat_template.json: not a chat template file"):
        qwen_chat_template(tmp_path, None)


def test_a_template_without_a_video_slot_is_refused(tiny_qwen_dir, tmp_path):
    folder = shutil.copytree(tiny_qwen_dir, tmp_path / "text-only")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}{% endfor %}")
    captioner = QwenCaptioner(folder)
    with pytest.raises(ValueError, match=r"--caption-model .*text-only: its chat template wrote 0 <\|video_pad\|>"):
        captioner.prompt_text(ClipVideo(np.zeros((4, 3 * 2 * 14 * 14), np.float32), (1, 2, 2)))


def test_model_placement():
    assert model_placement("cpu") == {"dtype": torch.float32, "device_map": {"": torch.device("cpu")}}
    # bf16 as the checkpoint stores it; a bare "cuda" shards a 72B model over all GPUs
    assert model_placement("cuda") == {"dtype": "auto", "device_map": "auto"}
    assert model_placement("cuda:1") == {"dtype": "auto", "device_map": {"": torch.device("cuda:1")}}


def test_a_clip_not_written_is_captioned_from_its_source_as_from_its_file(tiny_qwen_dir, tmp_path):
    from ptta.curate.aesthetic import ImageStatisticsProxyScorer
    from ptta.curate.caption_stage import caption_request
    from ptta.curate.settings import CurateSettings
    from ptta.curate.video_task import VideoCurator

    video = make_animation_video(tmp_path / "in.mp4", [ShotSpec(2.6, speed=0.5)], size=(96, 54), seed=4)
    settings = CurateSettings(min_clip_seconds=1.0, max_clip_seconds=1.2, theta=0.0, crf=0, preset="ultrafast",
                              write_clips=True)
    record = VideoCurator(settings, tmp_path / "out", ImageStatisticsProxyScorer()).run(video.path)
    captioner = QwenCaptioner(tiny_qwen_dir, min_pixels=SMALL_FRAMES, max_pixels=SMALL_FRAMES)
    assert len(record["clips"]) == 2
    for clip in record["clips"]:
        written = caption_request(record, clip, tmp_path / "out")
        from_source = caption_request(record, {**clip, "clip_path": None}, tmp_path / "out")
        assert written.address is None and from_source.clip_path is None
        want, got = captioner.video_input(written), captioner.video_input(from_source)
        assert got.grid_thw == want.grid_thw
        np.testing.assert_array_equal(got.pixel_values, want.pixel_values)
