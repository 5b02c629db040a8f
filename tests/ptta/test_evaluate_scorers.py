"""The model scorers on tiny random-weight checkpoints saved to and loaded from disk, and the parts of
their input that must match the reference implementations (prompts, frame choice, patches)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from ptta.evaluate.scorers import ClipScoreScorer, DecodedVideo, ScorerError, VideoScore2Scorer, VideoScoreScorer
from ptta.models.qwen_vl import QwenVisionLayout, patchify, sample_frame_indices, smart_resize
from ptta.evaluate.scorers.videoscore import videoscore_frame_indices, videoscore_query
from ptta.evaluate.scorers.videoscore2 import parse_vs2_answer, vs2_query
from ptta.models.tiny_scorers import save_tiny_clip, save_tiny_videoscore, save_tiny_videoscore2

PROMPT = "anime girl, reading books, desk, gentle action, soft gaze, solo, full body, anime style"

# The reference query (TIGER-AI-Lab/VideoScore examples/run_videoscore.py), typed out independently.
EXPECTED_QUERY_HEAD = (
    "\nSuppose you are an expert in judging and evaluating the quality of AI-generated videos,\n"
    "please watch the following frames of a given video and see the text prompt for generating the video,\n"
    "then give scores from 5 different dimensions:\n"
    "(1) visual quality: the quality of the video in terms of clearness, resolution, brightness, and color\n"
    "(2) temporal consistency, both the consistency of objects or humans and the smoothness of motion or movements\n"
    "(3) dynamic degree, the degree of dynamic changes\n"
    "(4) text-to-video alignment, the alignment between the text prompt and the video content\n"
    "(5) factual consistency, the consistency of the video content with the common-sense and factual knowledge\n"
    "\n"
    "for each dimension, output a float number from 1.0 to 4.0,\n"
    "the higher the number is, the better the video performs in that sub-score, \n"
    "the lowest 1.0 means Bad, the highest 4.0 means Perfect/Real (the video is like a real video)\n"
    "Here is an output example:\n"
    "visual quality: 3.2\n"
    "temporal consistency: 2.7\n"
    "dynamic degree: 4.0\n"
    "text-to-video alignment: 2.3\n"
    "factual consistency: 1.8\n"
    "\n"
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scorer_checkpoints")
    return {"videoscore": save_tiny_videoscore(root / "videoscore"),
            "videoscore2": save_tiny_videoscore2(root / "videoscore2"),
            "clip": save_tiny_clip(root / "clip")}


@pytest.fixture
def video() -> DecodedVideo:
    rng = np.random.default_rng(0)
    return DecodedVideo(Path("clip.mp4"), rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8), 8.0)


def test_videoscore_query_is_the_reference_prompt_plus_one_image_token_per_frame():
    query = videoscore_query(PROMPT, 3)
    assert query == EXPECTED_QUERY_HEAD + f'For this video, the text prompt is "{PROMPT}",\n' \
        "all the frames of video are as follows:\n" + "<image> <image> <image> "


def test_videoscore_frames_are_every_nth_for_long_clips_and_all_for_short_ones():
    # examples/run_videoscore.py: np.arange(0, n, n / k).astype(int), so frame n - 1 is never taken.
    assert videoscore_frame_indices(100, 16).tolist() == [0, 6, 12, 18, 25, 31, 37, 43, 50, 56, 62, 68, 75, 81, 87, 93]
    assert videoscore_frame_indices(10, 16).tolist() == list(range(10))
    hunyuan = videoscore_frame_indices(129, 48)  # 129 frames: step 129 / 48 = 2.6875
    assert len(hunyuan) == 48 and hunyuan[:4].tolist() == [0, 2, 5, 8] and hunyuan[-1] == 126


def test_videoscore_loads_the_checkpoint_layout_and_scores_in_documented_order(checkpoints, video):
    import torch
    from safetensors.torch import load_file
    from transformers import Idefics2Config, Idefics2Model

    scorer = VideoScoreScorer(checkpoints["videoscore"], variant="v1", device="cpu")
    scorer.load()
    result = scorer.checked_score(video, PROMPT)
    assert list(result.values) == ["vs_visual_quality", "vs_temporal_consistency", "vs_dynamic_degree",
                                   "vs_text_alignment", "vs_factual_consistency"]
    assert all(math.isfinite(v) for v in result.values.values())
    assert result.details["frame_indices"] == videoscore_frame_indices(20, 16).tolist()

    # The same numbers from the raw checkpoint tensors: "model.*" is the backbone, "score.*" the head
    # applied to the last token's hidden state; the perceiver normalises with the text epsilon, as
    # mantis' Idefics2 does.
    tensors = load_file(str(checkpoints["videoscore"] / "model.safetensors"))
    config = Idefics2Config.from_pretrained(checkpoints["videoscore"])
    config.perceiver_config.rms_norm_eps = config.text_config.rms_norm_eps
    backbone = Idefics2Model(config).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    from PIL import Image
    images = [Image.fromarray(video.frames[i]) for i in result.details["frame_indices"]]
    inputs = scorer.processor(text=videoscore_query(PROMPT, len(images)), images=images, return_tensors="pt")
    with torch.no_grad():
        last = backbone(**inputs).last_hidden_state[0, -1]
    expected = tensors["score.weight"] @ last + tensors["score.bias"]
    assert np.allclose(list(result.values.values()), expected.tolist(), atol=1e-5)
    scorer.close()


def test_videoscore_reads_a_sharded_checkpoint_like_the_published_one(tmp_path, checkpoints, video):
    # The published checkpoints are 4 safetensors shards plus model.safetensors.index.json.
    import json
    import shutil

    from safetensors.torch import load_file, save_file
    sharded = tmp_path / "sharded"
    shutil.copytree(checkpoints["videoscore"], sharded)
    tensors = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(sharded / file))
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    whole, split = (VideoScoreScorer(d, variant="v1", device="cpu") for d in (checkpoints["videoscore"], sharded))
    whole.load()
    split.load()
    assert split.checked_score(video, PROMPT).values == whole.checked_score(video, PROMPT).values


def test_videoscore_rejects_checkpoints_that_are_not_videoscore(tmp_path, checkpoints):
    with pytest.raises(ScorerError, match="no config.json"):
        VideoScoreScorer(tmp_path)
    with pytest.raises(ScorerError, match="variant"):
        VideoScoreScorer(checkpoints["videoscore"], variant="v2")
    # A checkpoint without the regression head (e.g. the Mantis base model) is refused by name.
    import shutil

    from safetensors.torch import load_file, save_file
    broken = tmp_path / "no_head"
    shutil.copytree(checkpoints["videoscore"], broken)
    tensors = {k: v for k, v in load_file(str(broken / "model.safetensors")).items() if not k.startswith("score.")}
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ScorerError, match="score.weight"):
        VideoScoreScorer(broken, device="cpu").load()


def test_vs2_query_is_the_reference_template():
    # TIGER-AI-Lab/VideoScore2 vs2_inference.py: a Template indented by 4 spaces inside main().
    assert vs2_query("a cat") == (
        "\n"
        "    You are an expert for evaluating AI-generated videos from three dimensions:\n"
        "    (1) visual quality \u2013 clarity, smoothness, artifacts;\n"
        "    (2) text-to-video alignment \u2013 fidelity to the prompt;\n"
        "    (3) physical/common-sense consistency \u2013 naturalness and physics plausibility.\n"
        "\n"
        "    Video prompt: a cat\n"
        "\n"
        "    Please output in this format:\n"
        "    visual quality: <v_score>; \n"
        "    text-to-video alignment: <t_score>, \n"
        "    physical/common-sense consistency: <p_score>\n"
        "    "
    )


@pytest.mark.parametrize("text, expected", [
    ("visual quality: 4;\ntext-to-video alignment: 3,\nphysical/common-sense consistency: 2", (4, 3, 2)),
    ("<think>the scale runs from visual quality: 1 to 5 ...</think>\n**Visual Quality**: 3\n"
     "**Text-to-Video Alignment** = 4/5\nPhysical consistency - 2.5", (3, 4, 2.5)),
    ("visual quality: 9; t2v alignment: 2; common-sense consistency: 5", (None, 2, 5)),
    ("I cannot judge this video.", (None, None, None)),
])
def test_vs2_answers_are_parsed_per_aspect_with_the_last_valid_mention_winning(text, expected):
    assert tuple(parse_vs2_answer(text).values()) == expected


def test_qwen_frame_sampling_follows_qwen_vl_utils_at_2_fps():
    assert sample_frame_indices(16, 8.0) == [0, 5, 10, 15]  # 2 s -> 4 frames
    assert len(sample_frame_indices(240, 24.0)) == 20  # 10 s -> 20 frames
    assert sample_frame_indices(3, 24.0) == [0, 2]  # fewer than 4 frames: the even count that fits
    with pytest.raises(ValueError, match="at least 2 frames"):
        sample_frame_indices(1, 24.0)


def test_qwen_patches_match_transformers_image_processor_on_a_still_frame():
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    layout = QwenVisionLayout()
    rng = np.random.default_rng(1)
    height, width = smart_resize(60, 90, layout.factor, 56 * 56, 28 * 28 * 64)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mean, std = np.array(layout.mean)[:, None, None], np.array(layout.std)[:, None, None]
    normalised = (image.transpose(2, 0, 1) / 255.0 - mean) / std
    # A still image is a one-frame video; patchify pads it to a whole temporal patch like the processor does.
    ours, grid = patchify(normalised[None].astype(np.float32), layout)
    reference = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 64)(
        images=[Image.fromarray(image)], return_tensors="np")
    assert tuple(reference["image_grid_thw"][0]) == grid
    assert np.allclose(ours, reference["pixel_values"], atol=1e-4)


def test_videoscore2_scores_in_documented_order_and_forces_unparsable_aspects(checkpoints, video):
    scorer = VideoScore2Scorer(checkpoints["videoscore2"], device="cpu", max_new_tokens=4, min_pixels=56 * 56,
                               max_pixels=56 * 56)
    scorer.load()
    modality_ids = []
    original = scorer.model.model.get_rope_index

    def recording_rope_index(*args, **kwargs):
        modality_ids.append(kwargs.get("mm_token_type_ids"))
        return original(*args, **kwargs)

    scorer.model.model.get_rope_index = recording_rope_index
    result = scorer.checked_score(video, PROMPT)
    # The generation and every forced aspect gave the video tokens 3-D positions, which
    # transformers builds only from the modality ids (2 = video).
    assert len(modality_ids) >= 4 and all(ids is not None and bool((ids == 2).any()) for ids in modality_ids)
    assert list(result.values) == ["vs2_visual_quality", "vs2_text_alignment", "vs2_physical_consistency"]
    # Random weights never write the answer format, so every aspect is the expected digit in [1, 5].
    assert result.details["forced"] == sorted(result.values)
    assert all(1.0 <= v <= 5.0 for v in result.values.values())
    assert result.details["frame_indices"] == sample_frame_indices(20, 8.0)
    scorer.close()


def test_videoscore2_refuses_a_directory_of_another_model(checkpoints):
    with pytest.raises(ScorerError, match="qwen2_5_vl"):
        VideoScore2Scorer(checkpoints["videoscore"], device="cpu").load()


def test_clip_score_is_finite_and_non_negative(checkpoints, video):
    scorer = ClipScoreScorer(checkpoints["clip"], num_frames=4, device="cpu")
    scorer.load()
    result = scorer.checked_score(video, PROMPT)
    assert list(result.values) == ["clip_score"] and 0 <= result.values["clip_score"] <= 100
    assert result.details["frame_indices"] == [0, 6, 13, 19]
