"""Which rule decides: the decision table's cell, unless the pixel-baseline rule applies in its band.

Below the engine and the confidence, which both ask it (the confidence: what the advice would be on the
other side of a margin).
"""

from __future__ import annotations

from dataclasses import dataclass

from tl_advise.rules.schema import CellEvidence, RuleSet, SizeBand
from tl_advise.rules.warnings import PixelsAsGoodWarning
from tl_advise.schema.models import SimilarityLabel, SimilarityReport, StrategyId


@dataclass(frozen=True)
class Decision:
    """The strategy and the rule that chose it, with that rule's benchmark evidence."""

    strategy: StrategyId
    rule_id: str
    evidence: CellEvidence | None


def pixels_as_good(rules: RuleSet, logreg_gain: float | None) -> bool:
    """Raw pixels do as well as frozen features (the logistic-regression gain of frozen features over raw
    pixels is at most the threshold of the warning that says so)."""
    return rules.warnings.get(PixelsAsGoodWarning).holds(logreg_gain)


def logreg_gain(similarity: SimilarityReport) -> float | None:
    """The frozen features' logistic-regression gain over raw pixels, where separability was measured."""
    return similarity.separability.logreg_gain if similarity.separability else None


def decide(rules: RuleSet, band: SizeBand, label: SimilarityLabel, logreg_gain: float | None,
           backbone: str | None = None) -> Decision:
    """The table's cell, unless the pixel-baseline rule applies in this band; with the evidence measured for
    ``backbone`` (a profile key) where the rules have it, else the benchmark backbone's, and the strategy that
    backbone's own cases moved the cell to, where they did."""
    pixel = rules.pixel_baseline
    if pixel.enabled and band in pixel.bands and pixels_as_good(rules, logreg_gain):
        return Decision(pixel.strategy_for(backbone, pixel.strategy), pixel.id, pixel.evidence_for(backbone))
    row = rules.row_for(band, label)
    return Decision(row.strategy_for(backbone, row.strategy), row.id, row.evidence_for(backbone))
