"""Video scorers behind one interface (`Scorer`: decoded video + prompt -> named scores).

Model-free imports only here; each scorer imports torch/transformers when it loads.
"""

from ptta.evaluate.scorers.base import (
    METRICS,
    PAPER_METRICS,
    DecodedVideo,
    MetricInfo,
    Scorer,
    ScorerError,
    ScoreResult,
)
from ptta.evaluate.scorers.clipscore import ClipScoreScorer
from ptta.evaluate.scorers.videoscore import VideoScoreScorer
from ptta.evaluate.scorers.videoscore2 import VideoScore2Scorer
from ptta.evaluate.scorers.weightfree import WeightFreeScorer

__all__ = [
    "METRICS", "PAPER_METRICS", "ClipScoreScorer", "DecodedVideo", "MetricInfo", "Scorer", "ScorerError",
    "ScoreResult", "VideoScore2Scorer", "VideoScoreScorer", "WeightFreeScorer",
]
