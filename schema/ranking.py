"""The typed result of ``tl-advise rank-backbones``: which candidate backbone transfers best to the data, at
what cost, and the advice for the one recommended.

Machine values only; ``advisor/report/ranking.py`` renders them (text, Markdown, JSON, an HTML fragment).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tl_advise.schema.models import (
    BackboneInfo,
    DatasetSummary,
    Recommendation,
    SimilarityReport,
    StrategyId,
    _Model,
)

RANKING_SCHEMA_VERSION = "1.0"
ScoreName = Literal["logreg_accuracy", "knn_accuracy", "logme"]
SCORE_NAMES: tuple[ScoreName, ...] = ("logreg_accuracy", "knn_accuracy", "logme")


class TransferScores(_Model):
    """How well the candidate's frozen features separate the sample's labels (cross-validated, same folds for
    every candidate), and LogME (You et al., 2021): the log evidence of a linear model on them."""

    n_images: int
    n_folds: int
    chance: float = Field(description="the majority class's share of the sample")
    knn_accuracy: float = Field(description="k-NN (cosine, k=5) accuracy, cross-validated")
    logreg_accuracy: float = Field(description="logistic regression on the top 32 principal components, "
                                   "cross-validated")
    logme: float


class BackboneCost(_Model):
    parameters: int = Field(description="parameters of the backbone without its source classifier")
    gflops: float | None = Field(description="forward FLOPs of one image at the input size, in 1e9 "
                                 "(multiply-adds count 2); None when they could not be counted")
    input_size: int
    images_per_second: float | None = Field(
        description="measured here: the sample's forward pass with decoding, divided by its time; None when every "
                    "image came from the cache")
    throughput_engine: str | None = Field(default=None, description="what ran that forward pass, on what device")


class RankedBackbone(_Model):
    rank: int = Field(ge=1, description="1 = the highest score")
    spec: str = Field(description="the candidate as named on the command line")
    backbone: BackboneInfo
    scores: TransferScores
    cost: BackboneCost
    score: float = Field(description="the ranking score (RankingResult.score_name) of this candidate")
    gap_to_best: float = Field(description="best score - this score (0 for the best)")
    gap_se: float | None = Field(
        description="standard error of that gap, paired image by image over the cross-validated predictions "
                    "(accuracy scores only; None for LogME or the best itself)")
    within_noise: bool = Field(description="the gap is at most one standard error: tied with the best")
    pareto: bool = Field(description="no other candidate scores at least as high for fewer FLOPs")
    strategy: StrategyId = Field(description="the strategy the rules advise with this backbone")
    unfreeze: list[str] = Field(description="its stages that strategy trains")
    unfreeze_summary: str
    seconds: float = Field(description="time spent measuring this candidate (load, embed, scores, cost)")
    from_cache: bool


class RankingChoice(_Model):
    spec: str
    reason: str
    recommendation: Recommendation = Field(description="the full advice for it, mapped onto its stages")


class RankingResult(_Model):
    schema_version: str = RANKING_SCHEMA_VERSION
    tool_version: str
    dataset: DatasetSummary
    probe: BackboneInfo = Field(description="the backbone that measured the similarity (the calibrated probe)")
    similarity: SimilarityReport
    sample_images: int
    seed: int
    score_name: ScoreName = Field(description="what the candidates are ranked by")
    candidates: list[RankedBackbone] = Field(description="best first")
    recommended: RankingChoice
    notes: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(description="seconds: advice (probe), each candidate, total")
