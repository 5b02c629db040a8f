"""Aesthetic scorers: RGB uint8 frames in, one score per frame out (nominally 0-10).

* `ImageStatisticsProxyScorer` ("proxy", the default) needs no weights. It is NOT a model of human
  taste: it averages four image statistics (sharpness, exposure, colourfulness, contrast), each
  mapped to 0-1, and scales to 0-10. It rejects what is blurry, dark, washed out or grey, and
  cannot tell a beautiful frame from a merely crisp and colourful one.
* `LaionAestheticScorer` ("laion") is the LAION improved aesthetic predictor: a CLIP ViT-L/14
  image embedding, L2-normalised, through an MLP 768-1024-128-64-16-1 trained on human ratings
  (nominal 1-10; about 5.5 is fair, 6.5 high). Both parts load from local files.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ptta.curate.settings import CurateSettings

PROXY_SHORT_SIDE = 256  # px: statistics are measured at this size so they do not depend on the source's
HEAD_HIDDEN = (1024, 128, 64, 16)  # the LAION MLP after its input layer
HEAD_LINEAR_INDICES = (0, 2, 4, 6, 7)  # nn.Sequential positions of its Linear layers (Dropouts between)


class AestheticScorer(Protocol):
    name: str

    def score(self, frames: list[np.ndarray]) -> list[float]:
        """One score per RGB uint8 frame."""


class ImageStatisticsProxyScorer:
    """Weight-free proxy: 10 x mean(sharpness, exposure, colourfulness, contrast), each in [0, 1].

    sharpness     log10(1 + variance of the Laplacian) / 3, capped at 1 (variance 1000 -> 1)
    exposure      1 - 2 |mean luma - 0.5| (mid-grey mean -> 1, black or white -> 0)
    colourfulness Hasler & Suesstrunk's M / 80, capped (M: 0 grey, 33 moderate, 82 highly colourful)
    contrast      standard deviation of luma / 64, capped (luma in 0-255)
    """

    name = "proxy"

    def score(self, frames: list[np.ndarray]) -> list[float]:
        return [10.0 * float(np.mean(self.components(frame))) for frame in frames]

    @staticmethod
    def components(frame: np.ndarray) -> tuple[float, float, float, float]:
        height, width = frame.shape[:2]
        scale = PROXY_SHORT_SIDE / min(height, width)
        if scale < 1:
            frame = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        rgb = frame.astype(np.float32)
        luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        sharpness = min(1.0, np.log10(1.0 + cv2.Laplacian(luma, cv2.CV_32F).var()) / 3.0)
        exposure = 1.0 - 2.0 * abs(luma.mean() / 255.0 - 0.5)
        rg = rgb[..., 0] - rgb[..., 1]
        yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
        colourfulness_m = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        colourfulness = min(1.0, colourfulness_m / 80.0)
        contrast = min(1.0, luma.std() / 64.0)
        return float(sharpness), float(exposure), float(colourfulness), float(contrast)


def build_aesthetic_head(input_dim: int):
    """The LAION MLP layout; its state-dict keys are layers.{0,2,4,6,7}.{weight,bias}."""
    import torch.nn as nn

    class AestheticHead(nn.Module):
        def __init__(self):
            super().__init__()
            dims = (input_dim, *HEAD_HIDDEN)
            self.layers = nn.Sequential(
                nn.Linear(dims[0], dims[1]), nn.Dropout(0.2),
                nn.Linear(dims[1], dims[2]), nn.Dropout(0.2),
                nn.Linear(dims[2], dims[3]), nn.Dropout(0.1),
                nn.Linear(dims[3], dims[4]),
                nn.Linear(dims[4], 1),
            )  # fmt: skip

        def forward(self, x):
            return self.layers(x)

    return AestheticHead()


def load_aesthetic_head(path: str | Path, expected_dim: int):
    """Load the MLP from .safetensors or .pth (torch.load with weights_only=True)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--aesthetic-head {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Loading a pickled module would run code from the file; the reference heads are state dicts.
            raise ValueError(
                f"--aesthetic-head {path}: holds pickled objects (a whole module?), not a state dict; "
                "re-save it with torch.save(model.state_dict(), path)"
            ) from None
    expected = {f"layers.{i}.{p}" for i in HEAD_LINEAR_INDICES for p in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != expected:
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"--aesthetic-head {path}: expected the LAION improved-aesthetic-predictor layout "
            f"(keys layers.{{0,2,4,6,7}}.weight/bias), found {found}"
        )
    input_dim = state["layers.0.weight"].shape[1]
    if input_dim != expected_dim:
        raise ValueError(
            f"--aesthetic-head {path} takes {input_dim}-d embeddings but the CLIP model's projection is {expected_dim}-d"
        )
    head = build_aesthetic_head(input_dim)
    head.load_state_dict(state)
    return head.eval()


def load_clip_vision(clip_dir: Path):
    """CLIP's vision tower and projection from a CLIP folder (full CLIPModel or vision-only).

    In a full folder the projection size is the top-level projection_dim: openai's and LAION's
    folders leave it out of vision_config, whose default (512) would not fit ViT-L/14's 768.
    """
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    config = AutoConfig.from_pretrained(clip_dir)
    if config.model_type == "clip":
        vision_config = config.vision_config
        vision_config.projection_dim = config.projection_dim
    elif config.model_type == "clip_vision_model":
        vision_config = config
    else:
        raise ValueError(f"--aesthetic-clip {clip_dir}: model_type {config.model_type!r}, expected a CLIP folder "
                         "('clip' or 'clip_vision_model')")
    return CLIPVisionModelWithProjection.from_pretrained(clip_dir, config=vision_config)


def clip_preprocessor(clip_dir: Path, image_size: int):
    """The folder's CLIP image processor with the PIL backend, or the reference transform without one.

    The reference (`clip.load`'s preprocess) resizes the short side bicubically with PIL, centre-crops
    and normalises with CLIP's mean/std; the PIL backend gives the same pixels, torchvision's differs.
    """
    from transformers import AutoImageProcessor, CLIPImageProcessorPil

    if (clip_dir / "preprocessor_config.json").is_file():
        return AutoImageProcessor.from_pretrained(clip_dir, backend="pil")
    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size})


class LaionAestheticScorer:
    name = "laion"

    def __init__(self, clip_dir: str | Path, head_path: str | Path, device: str = "cpu"):
        import torch

        clip_dir = Path(clip_dir)
        if not (clip_dir / "config.json").is_file():
            raise FileNotFoundError(f"--aesthetic-clip {clip_dir}: not a model directory (no config.json)")
        self._torch = torch
        self._device = torch.device(device)
        self._clip = load_clip_vision(clip_dir).to(self._device).eval()
        self._processor = clip_preprocessor(clip_dir, self._clip.config.image_size)
        self._head = load_aesthetic_head(head_path, self._clip.config.projection_dim).to(self._device)

    def score(self, frames: list[np.ndarray]) -> list[float]:
        inputs = self._processor(images=list(frames), return_tensors="pt").to(self._device)
        with self._torch.no_grad():
            embeddings = self._clip(pixel_values=inputs["pixel_values"]).image_embeds
            embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
            return self._head(embeddings.float()).squeeze(-1).tolist()


def make_aesthetic_scorer(settings: CurateSettings) -> AestheticScorer:
    if settings.aesthetic == "laion":
        return LaionAestheticScorer(settings.aesthetic_clip, settings.aesthetic_head, settings.device)
    return ImageStatisticsProxyScorer()
