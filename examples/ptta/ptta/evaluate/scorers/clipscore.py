"""Optional CLIPScore text-video alignment from a local CLIP directory (any `CLIPModel` checkpoint).

Per frame, 100 * max(cos(image embedding, text embedding), 0), averaged over frames picked uniformly
over the clip. Hessel et al. (2021) define CLIP-S = w * max(cos, 0) with w = 2.5, so CLIP-S is
0.025 x this value; the scale 100 is the one torchmetrics' `CLIPScore` and video benchmarks such as
EvalCrafter report (torchmetrics clamps the mean instead of each frame, which differs only when a
frame's cosine is negative). It measures whether the frames show what the prompt names; it knows
nothing of motion or time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptta.evaluate.scorers.base import DecodedVideo, Scorer, ScorerError, ScoreResult, check_checkpoint_dir
from ptta.torch_runtime import resolve_device, resolve_dtype


class ClipScoreScorer(Scorer):
    name = "clip"
    revision = 2  # 2: the PIL image processor (transformers 5 picks torchvision where installed)
    metrics = ("clip_score",)

    def __init__(self, model_dir: str | Path, num_frames: int = 8, device: str = "auto", dtype: str = "auto"):
        self.model_dir = Path(model_dir)
        check_checkpoint_dir(self.model_dir, "CLIP")
        if num_frames < 1:
            raise ScorerError(f"clip num_frames: need at least 1, got {num_frames}")
        self.num_frames = num_frames
        self.device_name, self.dtype_name = device, dtype
        self.model = self.processor = None

    @property
    def signature(self) -> str:
        return f"{self.versioned_name}:{self.num_frames}f:{self.model_dir.resolve()}"

    def load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        device = resolve_device(self.device_name)
        self.model = CLIPModel.from_pretrained(self.model_dir, dtype=resolve_dtype(self.dtype_name, device))
        self.model = self.model.to(device).eval()
        # PIL resizing, as OpenAI CLIP's own preprocessing does (not torchvision's, where installed).
        self.processor = AutoProcessor.from_pretrained(self.model_dir, backend="pil")

    def close(self) -> None:
        self.model = self.processor = None

    def score(self, video: DecodedVideo, prompt: str) -> ScoreResult:
        import torch
        from PIL import Image

        if self.model is None:
            raise ScorerError("ClipScoreScorer.score called before load()")
        indices = np.linspace(0, len(video.frames) - 1, min(self.num_frames, len(video.frames))).round().astype(int)
        inputs = self.processor(text=[prompt], images=[Image.fromarray(video.frames[i]) for i in indices],
                                return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        per_frame = (100 * (image @ text.T).squeeze(-1)).clamp(min=0)
        return ScoreResult({"clip_score": float(per_frame.mean())}, {"frame_indices": indices.tolist()})
