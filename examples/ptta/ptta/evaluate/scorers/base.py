"""The scorer interface (a decoded video + its prompt -> named scores) and the metric catalogue.

A scorer is built from its settings without touching any weights; `load()` is called only when at
least one video still needs its scores, so a rerun whose scores are all stored loads no model.
`signature` names everything that changes the numbers (scorer, variant, frames, weights
directory): a stored score is reused only under the same signature.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DecodedVideo:
    """Every frame of one video, (N, H, W, 3) uint8 RGB, and its frame rate."""

    path: Path
    frames: np.ndarray
    fps: float

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps


@dataclass
class ScoreResult:
    """Scores of one video by one scorer: `values` keyed by metric name, plus free-form details
    (raw model text, how each value was read) kept next to the numbers in the per-video JSONL."""

    values: dict[str, float]
    details: dict = field(default_factory=dict)


class ScorerError(RuntimeError):
    """A scorer cannot be built or loaded with the settings it was given."""


def check_checkpoint_dir(model_dir: Path, what: str) -> None:
    """ScorerError unless `model_dir` is a folder with a config.json, saying which of the three it is not."""
    expected = f"expected a local {what} checkpoint directory (the folder holding its config.json)"
    if not model_dir.exists():
        raise ScorerError(f"{model_dir}: does not exist; {expected}")
    if not model_dir.is_dir():
        raise ScorerError(f"{model_dir}: is a file, not a directory; {expected}")
    if not (model_dir / "config.json").is_file():
        raise ScorerError(f"{model_dir}: no config.json; {expected}")


class Scorer(ABC):
    """Scores videos against their prompts. Subclasses set `name` and `metrics` (the documented
    output order) and implement `score`; `load`/`close` bracket the use of model weights."""

    name: str = ""
    metrics: tuple[str, ...] = ()
    # Bumped when a code change alters a scorer's numbers, so scores stored before are not reused.
    revision: int = 1

    @property
    def versioned_name(self) -> str:
        """The name, with the revision from 2 on (revision-1 signatures stay as they were stored)."""
        return self.name if self.revision == 1 else f"{self.name}.r{self.revision}"

    @property
    def signature(self) -> str:
        return self.versioned_name

    def load(self) -> None:
        """Load weights; called once, before the first `score`."""

    def close(self) -> None:
        """Release weights (GPU memory) once every video is scored."""

    @abstractmethod
    def score(self, video: DecodedVideo, prompt: str) -> ScoreResult:
        """Score one video; raise on failure (the runner records the error and moves on)."""

    def checked_score(self, video: DecodedVideo, prompt: str) -> ScoreResult:
        """`score`, then insist on exactly the documented metrics, all finite."""
        result = self.score(video, prompt)
        if list(result.values) != list(self.metrics):
            raise ScorerError(f"{self.name}: returned metrics {list(result.values)}, expected {list(self.metrics)}")
        bad = {k: v for k, v in result.values.items() if not math.isfinite(v)}
        if bad:
            raise ScorerError(f"{self.name}: non-finite scores {bad}")
        return result


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is labelled in tables and plots."""

    label: str  # long name
    short: str  # table header (the paper's abbreviations for VideoScore)
    family: str  # "videoscore" | "videoscore2" | "weight-free" | "clip"
    scale: str  # nominal range, for the docs and the HTML page
    higher_is_better: bool = True
    # the values the metric can take (None: unbounded on that side); intervals are clipped to them
    bounds: tuple[float | None, float | None] = (None, None)


METRICS: dict[str, MetricInfo] = {
    "vs_visual_quality": MetricInfo("VideoScore visual quality", "VSVQ", "videoscore", "1-4, unclamped"),
    "vs_temporal_consistency": MetricInfo("VideoScore temporal consistency", "VSTC", "videoscore", "1-4, unclamped"),
    "vs_dynamic_degree": MetricInfo("VideoScore dynamic degree", "VSDD", "videoscore", "1-4, unclamped"),
    "vs_text_alignment": MetricInfo("VideoScore text-to-video alignment", "VSTVA", "videoscore", "1-4, unclamped"),
    "vs_factual_consistency": MetricInfo("VideoScore factual consistency", "VSFC", "videoscore", "1-4, unclamped"),
    "vs2_visual_quality": MetricInfo("VideoScore2 visual quality", "VS2-VQ", "videoscore2", "1-5", bounds=(1, 5)),
    "vs2_text_alignment": MetricInfo("VideoScore2 text-to-video alignment", "VS2-TVA", "videoscore2", "1-5",
                                     bounds=(1, 5)),
    "vs2_physical_consistency": MetricInfo("VideoScore2 physical/common-sense consistency", "VS2-PC",
                                           "videoscore2", "1-5", bounds=(1, 5)),
    "dynamic_degree": MetricInfo("Dynamic degree (VBench rule, Farneback flow)", "DD-flow", "weight-free", "0 or 1",
                                 bounds=(0, 1)),
    "motion_magnitude": MetricInfo("Motion magnitude (top-5% flow, px at 256 short side)", "Motion",
                                   "weight-free", ">= 0", bounds=(0, None)),
    "temporal_flickering": MetricInfo("Temporal flickering ((255 - mean |frame diff|) / 255)", "Flicker",
                                      "weight-free", "0-1", bounds=(0, 1)),
    "warp_consistency": MetricInfo("Flow-warped frame consistency", "WarpCons", "weight-free", "0-1",
                                   bounds=(0, 1)),
    "clip_score": MetricInfo("CLIPScore (100 x max(cos, 0), mean over frames)", "CLIP", "clip", "0-100",
                             bounds=(0, 100)),
}

# The four VideoScore aspects the paper reports (Tables 1 and 2), in its column order; it leaves out
# factual consistency because animation is not meant to be factual.
PAPER_METRICS: tuple[str, ...] = ("vs_visual_quality", "vs_temporal_consistency", "vs_dynamic_degree",
                                  "vs_text_alignment")
