"""VideoScore v1 / v1.1 (He et al., arXiv 2406.15252) from a local directory, without `mantis`.

The published checkpoints (TIGER-Lab/VideoScore, TIGER-Lab/VideoScore-v1.1) were saved from
`mantis.models.idefics2.Idefics2ForSequenceClassification` (TIGER-AI-Lab/Mantis,
`mantis/models/idefics2/modeling_idefics2.py`), which is

    self.model = Idefics2Model(config)                       # weights "model.vision_model.*",
                                                             # "model.connector.*", "model.text_model.*"
    self.score = nn.Linear(text_hidden_size, num_labels)     # weights "score.weight", "score.bias"

and regresses on the hidden state of the last non-padding token. Here the backbone is
transformers' own `Idefics2Model` (it takes the "model." weights, dropping the prefix as for any
base model), and the head is read from the same safetensors files by name. `mantis` pins an old
transformers; this needs none of it. One difference between the two Idefics2 implementations is
undone at load time: mantis normalises the perceiver with the *text* model's RMSNorm epsilon
(1e-5 for the Mistral backbone), current transformers with `perceiver_config.rms_norm_eps`, which
defaults to 1e-6 in a config saved before that key existed.

Query and frames follow the reference inference (TIGER-AI-Lab/VideoScore `examples/run_videoscore.py`,
the same code as the model cards): the regression prompt below with the text prompt filled in, then
one "<image> " per frame; frames picked uniformly, `np.arange(0, n, n / k).astype(int)` when the
clip has more than k frames (k = 16 for v1, 48 for v1.1), else every frame. The images go through
the checkpoint's own Idefics2 processor, PIL backend as in the transformers the reference ran on.
Outputs, in order: visual quality, temporal consistency, dynamic degree, text-to-video alignment,
factual consistency, nominally 1-4 but not clamped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ptta.evaluate.scorers.base import DecodedVideo, Scorer, ScorerError, ScoreResult, check_checkpoint_dir
from ptta.models.scorer_prompts import VIDEOSCORE_PROMPT
from ptta.torch_runtime import quiet_transformers, resolve_device, resolve_dtype

VARIANT_FRAMES = {"v1": 16, "v1.1": 48}
HEAD_PREFIX = "score."


def videoscore_frame_indices(total: int, max_frames: int) -> np.ndarray:
    """Indices of the frames VideoScore sees: uniform over the clip, every frame of a short one."""
    if total < 1:
        raise ValueError("the video has no frames")
    if total > max_frames:
        # The reference expression, float step included: frame 0, then every n/k-th frame, so the last
        # frame is not among them (`benchmark/eval_videoscore.py` uses linspace(0, n - 1, k) instead).
        return np.arange(0, total, total / max_frames).astype(int)
    return np.arange(total)


def videoscore_query(prompt: str, num_frames: int) -> str:
    """The text VideoScore reads: the regression prompt, then one image placeholder per frame."""
    return VIDEOSCORE_PROMPT.format(text_prompt=prompt) + "<image> " * num_frames


def mantis_idefics2_config(model_dir: Path):
    """The checkpoint's Idefics2 config with the perceiver sized and normalised as in mantis, which
    trained and published VideoScore: its perceiver takes `hidden_size` and `rms_norm_eps` from the
    text config, whatever `perceiver_config` says."""
    from transformers import Idefics2Config

    config = Idefics2Config.from_pretrained(model_dir)
    config.perceiver_config.hidden_size = config.text_config.hidden_size
    config.perceiver_config.rms_norm_eps = config.text_config.rms_norm_eps
    return config


def _head_tensors(model_dir: Path) -> dict:
    """The regression head's tensors ("score.weight", optional "score.bias") from the checkpoint."""
    from safetensors import safe_open

    index_file = model_dir / "model.safetensors.index.json"
    if index_file.is_file():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        files = {name: model_dir / file for name, file in weight_map.items() if name.startswith(HEAD_PREFIX)}
    elif (model_dir / "model.safetensors").is_file():
        with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
            files = {name: model_dir / "model.safetensors" for name in handle.keys() if name.startswith(HEAD_PREFIX)}
    else:
        raise ScorerError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    if f"{HEAD_PREFIX}weight" not in files:
        raise ScorerError(f"{model_dir}: no '{HEAD_PREFIX}weight' tensor: not a VideoScore regression checkpoint")
    tensors = {}
    for name, file in files.items():
        with safe_open(str(file), framework="pt") as handle:
            tensors[name[len(HEAD_PREFIX):]] = handle.get_tensor(name)
    return tensors


class VideoScoreScorer(Scorer):
    """VideoScore v1 (16 frames) or v1.1 (48 frames): an Idefics2 backbone and a linear head."""

    name = "videoscore"
    revision = 2  # 2: the reference's frame choice and perceiver epsilon, the PIL image processor
    metrics = ("vs_visual_quality", "vs_temporal_consistency", "vs_dynamic_degree", "vs_text_alignment",
               "vs_factual_consistency")

    def __init__(self, model_dir: str | Path, variant: str = "v1.1", device: str = "auto", dtype: str = "auto"):
        self.model_dir = Path(model_dir)
        if variant not in VARIANT_FRAMES:
            raise ScorerError(f"videoscore variant: expected one of {sorted(VARIANT_FRAMES)}, got {variant!r}")
        check_checkpoint_dir(self.model_dir, "VideoScore")
        self.variant = variant
        self.max_frames = VARIANT_FRAMES[variant]
        self.device_name, self.dtype_name = device, dtype
        self.processor = self.backbone = self.head = None

    @property
    def signature(self) -> str:
        return f"{self.versioned_name}:{self.variant}:{self.max_frames}f:{self.model_dir.resolve()}"

    def load(self) -> None:
        import torch
        from transformers import AutoProcessor, Idefics2Model

        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name, device)
        model_type = json.loads((self.model_dir / "config.json").read_text()).get("model_type")
        if model_type != "idefics2":
            raise ScorerError(f"{self.model_dir}/config.json: model_type {model_type!r}, VideoScore v1/v1.1 is "
                              "'idefics2' (VideoScore-Qwen2-VL is not supported)")
        # The reference ran transformers 4.40, whose Idefics2 image processor resized with PIL.
        self.processor = AutoProcessor.from_pretrained(self.model_dir, backend="pil")
        with quiet_transformers():
            config = mantis_idefics2_config(self.model_dir)
            backbone, info = Idefics2Model.from_pretrained(self.model_dir, config=config, dtype=dtype,
                                                           output_loading_info=True)
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ScorerError(f"{self.model_dir}: backbone weights missing from the checkpoint: "
                              f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        tensors = _head_tensors(self.model_dir)
        out_features, in_features = tensors["weight"].shape
        if out_features != len(self.metrics):
            raise ScorerError(f"{self.model_dir}: regression head has {out_features} outputs, "
                              f"VideoScore has {len(self.metrics)}")
        # The head runs in float32: it is one small matrix, and bfloat16 would round the scores.
        head = torch.nn.Linear(in_features, out_features, bias="bias" in tensors)
        head.load_state_dict({k: v.float() for k, v in tensors.items()})
        self.backbone = backbone.to(device).eval()
        self.head = head.to(device).eval()

    def close(self) -> None:
        self.processor = self.backbone = self.head = None

    def score(self, video: DecodedVideo, prompt: str) -> ScoreResult:
        import torch
        from PIL import Image

        if self.backbone is None:
            raise ScorerError("VideoScoreScorer.score called before load()")
        indices = videoscore_frame_indices(len(video.frames), self.max_frames)
        images = [Image.fromarray(video.frames[i]) for i in indices]
        inputs = self.processor(text=videoscore_query(prompt, len(images)), images=images, return_tensors="pt")
        device = self.head.weight.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.backbone.dtype)
        with torch.no_grad():
            hidden = self.backbone(**inputs).last_hidden_state
            # One unpadded sequence: the last token carries the regression (as in the reference head).
            last = int(inputs["attention_mask"][0].sum()) - 1
            logits = self.head(hidden[0, last].float())
        values = dict(zip(self.metrics, (float(v) for v in logits.tolist()), strict=True))
        return ScoreResult(values, {"frame_indices": indices.tolist()})
