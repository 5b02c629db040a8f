"""The scorers against the formats of the published checkpoints and their reference inference code:
VideoScore's weight names and old-transformers config (TIGER-AI-Lab/Mantis
`mantis/models/idefics2/modeling_idefics2.py`), VideoScore2's video timing and chat template
(TIGER-AI-Lab/VideoScore2 `vs2_inference.py`). All on tiny random checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from ptta.evaluate.scorers import DecodedVideo, ScorerError, VideoScore2Scorer, VideoScoreScorer
from ptta.evaluate.scorers.videoscore2 import _chat_template
from ptta.models.tiny_scorers import save_tiny_videoscore, save_tiny_videoscore2

PROMPT = "anime girl, reading books, desk, gentle action, soft gaze, solo, full body, anime style"


def mantis_videoscore_keys(vision_layers: int, perceiver_layers: int, text_layers: int) -> set[str]:
    """Tensor names of `Idefics2ForSequenceClassification` as mantis defines its modules, typed out
    from its source rather than taken from any transformers model."""
    keys = {"model.vision_model.embeddings.patch_embedding.weight",
            "model.vision_model.embeddings.patch_embedding.bias",
            "model.vision_model.embeddings.position_embedding.weight",
            "model.vision_model.post_layernorm.weight", "model.vision_model.post_layernorm.bias",
            "model.connector.perceiver_resampler.latents", "model.connector.perceiver_resampler.norm.weight",
            "model.text_model.embed_tokens.weight", "model.text_model.norm.weight", "score.weight", "score.bias"}
    keys |= {f"model.connector.modality_projection.{p}_proj.weight" for p in ("gate", "up", "down")}
    for i in range(vision_layers):
        layer = f"model.vision_model.encoder.layers.{i}"
        for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                       "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"{layer}.{module}.weight", f"{layer}.{module}.bias"}
    for i in range(perceiver_layers):
        layer = f"model.connector.perceiver_resampler.layers.{i}"
        keys |= {f"{layer}.{module}.weight" for module in (
            "input_latents_norm", "input_context_norm", "post_attention_layernorm", "self_attn.q_proj",
            "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
            "mlp.down_proj")}
    for i in range(text_layers):
        layer = f"model.text_model.layers.{i}"
        keys |= {f"{layer}.{module}.weight" for module in (
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")}
    return keys


def as_old_transformers_config(directory: Path) -> None:
    """Rewrite config.json the way transformers 4.40 (mantis' pin) saved the published VideoScore:
    no `hidden_size`/`rms_norm_eps` in perceiver_config, sub-config model_type "idefics2",
    `rope_theta` instead of `rope_parameters`, and the legacy generation keys of every sub-config."""
    config = json.loads((directory / "config.json").read_text())
    legacy = {"_name_or_path": "", "add_cross_attention": False, "bad_words_ids": None, "torch_dtype": None,
              "use_bfloat16": False, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}}
    perceiver = config["perceiver_config"]
    del perceiver["rms_norm_eps"]
    perceiver.update(legacy, model_type="idefics2")
    text = config["text_config"]
    text["rope_theta"] = text.pop("rope_parameters")["rope_theta"]
    text["torch_dtype"] = "bfloat16"
    config["vision_config"].update(legacy, model_type="idefics2", _flash_attn_2_enabled=True)
    config.update(_name_or_path="TIGER-Lab/Mantis-8B-Idefics2", torch_dtype="bfloat16",
                  transformers_version="4.40.0.dev0", problem_type="regression")
    (directory / "config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reference_checkpoints")
    return {"videoscore": save_tiny_videoscore(root / "videoscore"),
            "videoscore2": save_tiny_videoscore2(root / "videoscore2")}


@pytest.fixture
def video() -> DecodedVideo:
    rng = np.random.default_rng(0)
    return DecodedVideo(Path("clip.mp4"), rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8), 8.0)


def test_tiny_videoscore_holds_exactly_the_mantis_weight_names(checkpoints):
    from safetensors import safe_open

    with safe_open(str(checkpoints["videoscore"] / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == mantis_videoscore_keys(vision_layers=1, perceiver_layers=1, text_layers=1)


def test_videoscore_loads_an_old_transformers_config_with_the_mantis_perceiver_epsilon(tmp_path, checkpoints, video):
    legacy = tmp_path / "legacy"
    shutil.copytree(checkpoints["videoscore"], legacy)
    as_old_transformers_config(legacy)
    scorer = VideoScoreScorer(legacy, variant="v1", device="cpu")
    scorer.load()
    # mantis normalises the perceiver with the text model's epsilon (1e-5), not transformers' 1e-6 default.
    resampler = scorer.backbone.connector.perceiver_resampler
    epsilons = {m.variance_epsilon for m in resampler.modules() if hasattr(m, "variance_epsilon")}
    assert epsilons == {1e-5}
    assert scorer.checked_score(video, PROMPT).values  # five finite scores


def test_videoscore2_times_temporal_patches_at_the_requested_fps(checkpoints, video):
    # 20 frames at 8 fps, 2 fps asked: 4 frames are sampled (1.6 fps), but the reference processor
    # is told fps=2, so each 2-frame temporal patch spans 2 / 2 = 1 s.
    scorer = VideoScore2Scorer(checkpoints["videoscore2"], device="cpu", min_pixels=56 * 56, max_pixels=56 * 56)
    scorer.load()
    inputs, frame_indices = scorer._inputs(video, PROMPT)
    assert len(frame_indices) == 4
    assert inputs["second_per_grid_ts"].tolist() == [1.0]


def test_videoscore2_reads_the_newer_qwen2_5_vl_key_layout_too(tmp_path, checkpoints, video):
    # transformers >= 4.52 may save "model.visual.*" / "model.language_model.*" where older versions
    # (and the tiny checkpoint) write "visual.*" / "model.*"; both must give the same model.
    from safetensors.torch import load_file, save_file

    def newer_name(key: str) -> str:
        if key.startswith("visual."):
            return "model." + key
        return "model.language_model." + key[len("model."):] if key.startswith("model.") else key

    newer = tmp_path / "newer"
    shutil.copytree(checkpoints["videoscore2"], newer)
    tensors = load_file(str(newer / "model.safetensors"))
    assert any(k.startswith("visual.") for k in tensors)
    save_file({newer_name(k): v for k, v in tensors.items()}, str(newer / "model.safetensors"),
              metadata={"format": "pt"})
    scores = []
    for directory in (checkpoints["videoscore2"], newer):
        scorer = VideoScore2Scorer(directory, device="cpu", max_new_tokens=2, min_pixels=56 * 56, max_pixels=56 * 56)
        scorer.load()
        scores.append(scorer.checked_score(video, PROMPT).values)
    assert scores[0] == scores[1]


def test_videoscore2_refuses_a_checkpoint_with_missing_weights(tmp_path, checkpoints):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "no_merger"
    shutil.copytree(checkpoints["videoscore2"], broken)
    tensors = {k: v for k, v in load_file(str(broken / "model.safetensors")).items() if ".merger." not in k}
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ScorerError, match="no_merger.*merger"):
        VideoScore2Scorer(broken, device="cpu").load()


def test_videoscore2_prefers_the_processor_chat_template_like_the_reference(tmp_path, checkpoints):
    from transformers import AutoTokenizer

    directory = tmp_path / "templates"
    shutil.copytree(checkpoints["videoscore2"], directory)
    tokenizer_template = (directory / "chat_template.jinja").read_text()
    (directory / "chat_template.jinja").unlink()
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config,
                                                                 "chat_template": tokenizer_template}))
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": "processor {{ messages }}"}))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.chat_template == tokenizer_template
    assert _chat_template(directory, tokenizer) == "processor {{ messages }}"
