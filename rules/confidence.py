"""How sure a recommendation is: the weakest of its measured margins (``[confidence]`` in the rules).

- similarity: how far the score is from the threshold, when the advice for the other label differs (absent
  where the label decides nothing);
- size: how far images per class are from the nearest band edge whose neighbouring band advises otherwise
  (what would advise is ``decide``'s answer there: the table's cell or the pixel-baseline rule);
- pixels: how far the frozen features' gain over raw pixels is from the pixel-baseline rule's cut-off, in
  standard errors, when the advice on the other side differs (absent where the rule cannot change it);
- evidence: what the benchmark measured for the rule that decided (``evidence`` of its table row); only a
  choice that holds with each dataset left out counts as out of sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from tl_advise.rules import statistics
from tl_advise.rules.decision import decide, logreg_gain, pixels_as_good
from tl_advise.rules.margins import below_measured, graded, nearest_edge_that_matters, threshold_margin
from tl_advise.rules.schema import CellEvidence, MeasuredEvidence, RuleSet, SizeBand
from tl_advise.rules.warnings import PixelsAsGoodWarning
from tl_advise.schema.formatting import counted, per_class
from tl_advise.schema.models import (
    Confidence,
    ConfidenceLevel,
    DatasetSummary,
    SimilarityLabel,
    SimilarityReport,
    StrategyId,
)

LEVELS: tuple[ConfidenceLevel, ...] = ("low", "medium", "high")


@dataclass(frozen=True)
class Component:
    level: ConfidenceLevel
    reason: str
    runner_up: StrategyId | None = None  # what the advice would be on the other side of this margin


def similarity_component(rules: RuleSet, band: SizeBand, similarity: SimilarityReport,
                         strategy: StrategyId, backbone: str | None = None) -> Component | None:
    """None where the label decides nothing: a margin that cannot change the advice is no reason. ``backbone``
    (here and below): the one advised for, whose own cells the advice across a margin reads too."""
    other_label: SimilarityLabel = "different" if similarity.label == "similar" else "similar"
    other = decide(rules, band, other_label, logreg_gain(similarity), backbone).strategy
    if other == strategy:
        return None
    c = rules.confidence
    m = threshold_margin(similarity.score, similarity.threshold, c.similarity_margin_low, c.similarity_margin_high)
    return Component(m.level, f"similarity {similarity.score:.2f} is {m.distance:.2f} from the "
                              f"{similarity.threshold:.2f} threshold ({m.closeness} it); as '{other_label}' the "
                              f"advice would be {other}", other)


def size_component(rules: RuleSet, band: SizeBand, dataset: DatasetSummary, similarity: SimilarityReport,
                   strategy: StrategyId, backbone: str | None = None) -> Component:
    ipc = dataset.images_per_class
    if ipc < rules.confidence.measured_from_per_class:
        return Component("low", below_measured(ipc, rules.confidence.measured_from_per_class, "image"))
    nearest = nearest_edge_that_matters(
        rules.size_bands.edges(), band, ipc, strategy=strategy,
        advice_in=lambda neighbour: decide(rules, neighbour, similarity.label, logreg_gain(similarity),
                                           backbone).strategy)
    if nearest is None:
        return Component("high", f"{per_class(ipc, 'image')}: the neighbouring size bands advise the same")
    c = rules.confidence
    level = graded(nearest.ratio, c.size_ratio_low, c.size_ratio_high)
    return Component(level, f"{per_class(ipc, 'image')} is x{nearest.ratio:.2f} from the {nearest.edge:.0f} "
                            f"edge of the {nearest.neighbour} band, which advises {nearest.advice}", nearest.advice)


def pixel_component(rules: RuleSet, band: SizeBand, similarity: SimilarityReport,
                    strategy: StrategyId, backbone: str | None = None) -> Component | None:
    """The pixel-baseline rule's cut-off as a margin. In its bands: the gain's distance from the cut-off in
    standard errors (the gain is a difference of two cross-validated accuracies on the sample), when the
    advice across it differs. Outside them, where raw pixels do as well: low, as nothing measured the table
    on such data."""
    pixel, sep = rules.pixel_baseline, similarity.separability
    if not pixel.enabled or sep is None:
        return None
    fires = pixels_as_good(rules, sep.logreg_gain)
    if band not in pixel.bands:
        if not fires:
            return None
        pixel_strategy = pixel.strategy_for(backbone, pixel.strategy)
        return Component("low", f"raw pixels do as well as frozen features here (gain {sep.logreg_gain:+z.3f}), "
                                f"and rule {pixel.id} was measured in the {', '.join(pixel.bands)} bands only: "
                                f"the {band} band's cell was never judged on such data",
                         pixel_strategy if pixel_strategy != strategy else None)
    row = rules.row_for(band, similarity.label)
    other = row.strategy_for(backbone, row.strategy) if fires else pixel.strategy_for(backbone, pixel.strategy)
    if other == strategy:
        return None
    cutoff = rules.warnings.get(PixelsAsGoodWarning).max_logreg_gain
    se = statistics.unpaired(sep.logreg_accuracy, sep.pixel_logreg_accuracy, sep.n_images).se
    distance = abs(sep.logreg_gain - cutoff) / se
    c = rules.confidence
    level = graded(distance, c.pixel_gain_se_low, c.pixel_gain_se_high)
    side = "at or below" if fires else "above"
    return Component(level, f"frozen features gain {sep.logreg_gain:+z.3f} over raw pixels, {side} rule {pixel.id}'s "
                            f"{cutoff:.2f} cut-off by {distance:.1f} s.e. ({se:.3f} on {sep.n_images} sample "
                            f"images); on the other side the advice would be {other}", other)


class EvidenceLevels(Protocol):
    """The ``[confidence]`` levels the evidence component reads (the image and the text rules have them all)."""

    @property
    def unmeasured(self) -> ConfidenceLevel: ...
    @property
    def tied(self) -> ConfidenceLevel: ...
    @property
    def in_sample(self) -> ConfidenceLevel: ...
    @property
    def single_dataset(self) -> ConfidenceLevel: ...
    @property
    def early_stopping_split(self) -> ConfidenceLevel: ...
    @property
    def evidence_backbone(self) -> str: ...
    @property
    def other_backbone(self) -> ConfidenceLevel: ...


S = TypeVar("S", bound=str)


def evidence_verdict(levels: EvidenceLevels, rule_id: str, evidence: MeasuredEvidence[S] | None,
                     strategy: S, backbone: str | None = None) -> tuple[ConfidenceLevel, str, S | None]:
    """:func:`measured_verdict`, capped at ``levels.other_backbone`` when the advice is for a ``backbone`` (its
    profile key) other than the one the evidence trained (its ``backbone``, else ``levels.evidence_backbone``):
    its margins are that backbone's."""
    level, reason, runner_up = measured_verdict(levels, rule_id, evidence, strategy)
    trained = (evidence.backbone if evidence is not None else None) or levels.evidence_backbone
    if evidence is None or backbone is None or backbone == trained:
        return level, reason, runner_up
    if LEVELS.index(levels.other_backbone) < LEVELS.index(level):
        level = levels.other_backbone
    return level, (f"{reason}; trained with {trained}, not {backbone}: how the rule carries over "
                   "to another backbone is measured apart (benchmarks/README.md)"), runner_up


def measured_verdict(levels: EvidenceLevels, rule_id: str, evidence: MeasuredEvidence[S] | None,
                     strategy: S) -> tuple[ConfidenceLevel, str, S | None]:
    """(level, reason, runner-up) of a rule's benchmark evidence, for images and text alike: unmeasured at
    ``levels.unmeasured``; the runner-up ahead beyond noise: low; otherwise high when beyond noise (else
    ``tied``), capped at ``single_dataset`` on one dataset, at ``in_sample`` unless the choice holds with
    each dataset left out, and at ``early_stopping_split`` unless a held-out test split judged it."""
    if evidence is None:
        return levels.unmeasured, f"rule {rule_id} has no benchmark evidence: the guide's cell, not measured", None
    where = (f"measured{evidence.trained_words} on {counted(evidence.cases, 'case')} from "
             f"{', '.join(evidence.datasets)} ({evidence.seeds_words} each, judged on {evidence.judged_on_words}, "
             f"{evidence.source})")
    # The competitor by name: the headline's runner-up comes from the weakest component and may be another.
    diff = f"{evidence.margin_pp:+z.1f} ± {evidence.se_pp:.1f} pp"
    if evidence.margin_pp < -evidence.se_pp:
        return ("low", f"{where}: {evidence.runner_up} scored higher than {strategy} ({diff}); the rule stands until "
                       "more datasets judge it out of sample", evidence.runner_up)
    level: ConfidenceLevel = "high" if evidence.beyond_noise else levels.tied
    found = (f"{strategy} beat {evidence.runner_up} beyond noise ({diff})" if evidence.beyond_noise
             else f"{strategy} tied {evidence.runner_up} within noise ({diff})")
    if len(evidence.datasets) < 2 and LEVELS.index(levels.single_dataset) < LEVELS.index(level):
        level, found = levels.single_dataset, f"{found}, on one dataset only: not yet judged on another"
    elif not evidence.held_out and LEVELS.index(levels.in_sample) < LEVELS.index(level):
        regret = (f", {evidence.held_out_regret_pp:.1f} pp mean regret on the dataset left out"
                  if evidence.held_out_regret_pp is not None else "")
        level, found = levels.in_sample, (f"{found}, in-sample: chosen on these cases; with each dataset left out "
                                          f"in turn the others chose it in {evidence.held_out_agree} of "
                                          f"{evidence.held_out_folds} folds{regret}")
    elif evidence.judged_on != "test" and LEVELS.index(levels.early_stopping_split) < LEVELS.index(level):
        level = levels.early_stopping_split
        found = f"{found}; optimistic: those splits also chose each run's best epoch"
    return level, f"{where}: {found}", evidence.runner_up


def evidence_component(rules: RuleSet, rule_id: str, evidence: CellEvidence | None,
                       strategy: StrategyId, backbone: str | None = None) -> Component:
    return Component(*evidence_verdict(rules.confidence, rule_id, evidence, strategy, backbone))


def assess(rules: RuleSet, band: SizeBand, dataset: DatasetSummary, similarity: SimilarityReport,
           strategy: StrategyId, rule_id: str, evidence: CellEvidence | None,
           fallback_runner_up: StrategyId | None, backbone: str | None = None) -> Confidence:
    """The recommendation's confidence: the weakest component decides, and names the runner-up. ``backbone``:
    the one advised for (its profile key), when it may differ from the benchmark's."""
    measured = [similarity_component(rules, band, similarity, strategy, backbone),
                size_component(rules, band, dataset, similarity, strategy, backbone),
                pixel_component(rules, band, similarity, strategy, backbone),
                evidence_component(rules, rule_id, evidence, strategy, backbone)]
    parts = [p for p in measured if p is not None]
    level = min((p.level for p in parts), key=LEVELS.index)
    # The runner-up of the weakest margin; among equally weak ones the evidence's, which was measured (the
    # evidence component comes last in ``parts``); else the rule's first alternative.
    weakest = [p for p in reversed(parts) if p.level == level]
    runner_up = next((p.runner_up for p in weakest if p.runner_up and p.runner_up != strategy), fallback_runner_up)
    suggestion = None
    if level == "low" and runner_up is not None:
        suggestion = (f"measure it before committing: --run --strategies {strategy},{runner_up} trains both "
                      f"under the same budget (or --run --compare for every alternative)")
    return Confidence(level=level, reasons=[p.reason for p in parts], runner_up=runner_up, suggestion=suggestion)
