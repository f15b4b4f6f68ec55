"""The engine: reads a ``RuleSet`` and turns measurements into a similarity verdict and a recommendation.

Pure functions: all numbers come from the rules, all facts from the typed inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tl_advise.rules.confidence import assess
from tl_advise.rules.decision import decide, logreg_gain, pixels_as_good
from tl_advise.rules.schema import (
    DEFAULT_PROFILE,
    SIGNAL_NAMES,
    BackboneSimilarity,
    BatchRules,
    CellEvidence,
    DecisionRow,
    LayerRules,
    MeasuredEvidence,
    RuleSet,
    ShiftLevel,
    SizeBand,
    SizeBands,
    StrategyRule,
    normalise_backbone_name,
)
from tl_advise.rules.warnings import AdviceContext, evaluate_warnings
from tl_advise.schema.formatting import counted, fmt_count, fmt_lr
from tl_advise.schema.models import (
    Alternative,
    BackboneInfo,
    BNShift,
    DatasetSummary,
    HeadSignals,
    LearningRates,
    Phase,
    PixelBaseline,
    Recommendation,
    Separability,
    SignalScore,
    SimilarityLabel,
    SimilarityReport,
    StrategyId,
)

S = TypeVar("S", bound=str)  # a strategy id, image or text

SIGNAL_LABELS: dict[str, str] = {
    "bn_shift_early": "early-layer BN shift",
    "bn_shift_middle": "middle-layer BN shift",
    "bn_shift_late": "late-layer BN shift",
    "head_max_prob": "ImageNet-head max probability",
    "head_entropy": "ImageNet-head entropy",
    "knn_gain": "k-NN gain over pixels",
    "logreg_gain": "logistic-regression gain over pixels",
    "logme": "LogME",
    "logme_gain": "LogME gain over pixels",
}

# --------------------------------------------------------------------------- number formatting


def fmt_number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def fmt_against(value: float, threshold: float, digits: int = 2) -> tuple[str, str]:
    """Format a measurement and its threshold with enough digits that equal-looking means equal."""
    for d in range(digits, 7):
        shown_value, shown_threshold = fmt_number(value, d), fmt_number(threshold, d)
        if (shown_value == shown_threshold) == (value == threshold):
            return shown_value, shown_threshold
    return repr(value), repr(threshold)


# --------------------------------------------------------------------------- similarity


@dataclass(frozen=True)
class SimilarityVerdict:
    score: float
    label: SimilarityLabel
    threshold: float
    components: list[SignalScore]
    shift_level: ShiftLevel
    calibrated: bool
    notes: list[str] = field(default_factory=list)


def ramp_score(value: float, similar_at: float, different_at: float) -> float:
    """1 at ``similar_at``, 0 at ``different_at``, linear between, clipped to [0, 1] (either direction)."""
    position = (value - different_at) / (similar_at - different_at)
    return min(1.0, max(0.0, position))


def _is_measured(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def shift_level_for(profile: BackboneSimilarity, early: float | None, late: float | None) -> ShiftLevel:
    """Where the shift is: early BN layers -> input level, late BN layers -> semantic level."""
    if not (_is_measured(early) and _is_measured(late)):
        return "unknown"
    assert early is not None and late is not None
    input_shift = early > profile.early_shift_at
    semantic_shift = late > profile.late_shift_at
    if input_shift and semantic_shift:
        return "input_and_semantic"
    if input_shift:
        return "input"
    return "semantic" if semantic_shift else "none"


def score_similarity(
    rules: RuleSet, backbone_name: str, signals: Mapping[str, float | None]
) -> SimilarityVerdict:
    """Combine the measured signals into one score with the backbone's profile (or the default)."""
    sim = rules.similarity
    profile_name = sim.profile_name_for(backbone_name)
    profile = sim.backbones[profile_name]
    calibrated = sim.is_calibrated(backbone_name)
    threshold = sim.threshold_for(backbone_name)
    notes: list[str] = []
    placeholder = "" if calibrated else ", an uncalibrated placeholder"
    if profile_name == DEFAULT_PROFILE:
        notes.append(f"no similarity profile for '{backbone_name}': the default profile's thresholds "
                     "were used")
    elif normalise_backbone_name(profile_name) != normalise_backbone_name(backbone_name):
        notes.append(f"'{backbone_name}' uses the '{profile_name}' similarity profile{placeholder}")
    elif not calibrated:
        notes.append(f"the similarity profile for '{backbone_name}' is an uncalibrated placeholder")

    ignored = sorted(set(signals) - set(profile.signals))
    if ignored:
        notes.append(f"signal(s) without a rule for this backbone, not scored: {', '.join(ignored)}")

    components: list[SignalScore] = []
    missing_voters: list[str] = []
    for name, rule in profile.signals.items():
        value = signals.get(name)
        if not _is_measured(value):
            if rule.weight > 0:
                missing_voters.append(name)
            continue
        assert value is not None
        components.append(SignalScore(
            signal=name, value=float(value), score=ramp_score(value, rule.similar_at, rule.different_at),
            weight=rule.weight, similar_at=rule.similar_at, different_at=rule.different_at,
        ))
    if missing_voters:
        notes.append(f"not measured: {', '.join(missing_voters)}; "
                     "the other signals' weights were renormalised")

    total_weight = sum(c.weight for c in components)
    if total_weight > 0:
        score = sum(c.weight * c.score for c in components) / total_weight
    else:
        score = sim.score_when_no_signals
        notes.append(f"no weighted signal was measured: similarity set to {score:.2f}")

    level = shift_level_for(profile, signals.get("bn_shift_early"), signals.get("bn_shift_late"))
    label: SimilarityLabel = "similar" if score >= threshold else "different"
    return SimilarityVerdict(score, label, threshold, components, level, calibrated, notes)


def signals_from_measurements(
    bn_shift: BNShift | None, head: HeadSignals | None, separability: Separability | None
) -> dict[str, float | None]:
    """The signal dict ``score_similarity`` expects, from the measured report parts (None = not measured)."""
    signals: dict[str, float | None] = dict.fromkeys(SIGNAL_NAMES)
    if bn_shift is not None:
        signals.update(bn_shift_early=bn_shift.early, bn_shift_middle=bn_shift.middle,
                       bn_shift_late=bn_shift.late)
    if head is not None:
        signals.update(head_max_prob=head.mean_max_prob, head_entropy=head.mean_entropy)
    if separability is not None:
        signals.update(knn_gain=separability.knn_gain, logreg_gain=separability.logreg_gain,
                       logme=separability.logme, logme_gain=separability.logme_gain)
    return signals


# --------------------------------------------------------------------------- which stages


def top_stages_to_unfreeze(strategy: StrategyRule, stages: list[str]) -> list[str]:
    """The LAST stages (stages run input -> head), as many as the strategy's fraction and minimum ask."""
    if not strategy.trains_backbone or not stages:
        return []
    # The epsilon keeps 0.15 x 20 = 3.0000000000000004 from rounding up to 4.
    by_fraction = math.ceil(strategy.unfreeze_top_fraction * len(stages) - 1e-9)
    count = min(len(stages), max(by_fraction, strategy.unfreeze_min_stages))
    return stages[len(stages) - count:]


def surgical_stages(layers: LayerRules, shift_level: str, stages: list[str], top: list[str]) -> list[str]:
    """First stages to add on an input-level shift, when the strategy unfreezes some but not all stages."""
    partial = 0 < len(top) < len(stages)
    if not (layers.enabled and partial and shift_level in layers.input_shift_levels):
        return []
    return [s for s in stages[: layers.add_first_stages] if s not in top]


def describe_unfreeze(strategy: StrategyRule, stages: list[str], top: list[str], first: list[str]) -> str:
    n = len(stages)
    if not strategy.pretrained:
        return f"all {n} stages, trained from random initialisation"
    if not top:
        return "none: the backbone stays frozen" if n else "none: the backbone has no stages to unfreeze"
    if len(top) == n:
        return f"all {n} stages"
    summary = f"last {len(top)} of {n} stages"
    if first:
        summary = f"first {len(first)} and {summary} (input-level shift)"
    return summary


# --------------------------------------------------------------------------- learning rates, schedule


def backbone_lr_factor(rules: RuleSet, strategy: StrategyRule, label: SimilarityLabel) -> float:
    if strategy.backbone_lr_factor is not None:
        return strategy.backbone_lr_factor
    return rules.learning_rate.backbone_factor.for_label(label)


def learning_rates(
    rules: RuleSet, strategy: StrategyRule, label: SimilarityLabel, top: list[str], first: list[str]
) -> LearningRates:
    if not top:
        return LearningRates(head=strategy.head_lr, backbone=None)
    backbone = _three_digits(strategy.head_lr * backbone_lr_factor(rules, strategy, label))
    per_stage: dict[str, float] = {}
    if strategy.discriminative:
        # fastai-style: the top stage at the backbone LR, each stage below it decayed, floored.
        for depth, stage in enumerate(reversed(top)):
            decay = max(strategy.discriminative_decay**depth, strategy.discriminative_floor)
            per_stage[stage] = _three_digits(backbone * decay)
    if first:
        # The first block is tuned *because* of an input-level shift, so it must not get the smallest rate.
        per_stage.update(dict.fromkeys(first, _three_digits(backbone * rules.layers.first_stage_lr_factor)))
    ordered = {s: per_stage[s] for s in [*first, *top] if s in per_stage}
    return LearningRates(head=strategy.head_lr, backbone=backbone, per_stage=ordered)


def _three_digits(rate: float) -> float:
    """1.1764899999999996e-05 -> 1.18e-05: a learning rate needs no more precision than this."""
    return float(f"{rate:.3g}")


def build_schedule(strategy: StrategyRule, rates: LearningRates, unfreeze: list[str]) -> list[Phase]:
    if not strategy.pretrained:
        lr = rates.backbone if rates.backbone is not None else rates.head
        return [Phase(name="from_scratch", epochs=strategy.finetune_epochs, trains=["head", *unfreeze],
                      learning_rate=lr)]
    phases = []
    if strategy.head_epochs > 0:
        phases.append(Phase(name="head", epochs=strategy.head_epochs, trains=["head"],
                            learning_rate=rates.head))
    if unfreeze and rates.backbone is not None and strategy.finetune_epochs > 0:
        phases.append(Phase(name="finetune", epochs=strategy.finetune_epochs, trains=["head", *unfreeze],
                            learning_rate=rates.backbone))
    return phases


def training_images(dataset: DatasetSummary) -> int:
    """The images of the training split, at most ``train_cap`` per class where runs cap them."""
    counts = dataset.split_counts.get(dataset.train_split) or dataset.class_counts
    cap = dataset.train_cap
    return sum(n if cap is None else min(n, cap) for n in counts.values())


def batch_size_for(batch: BatchRules, strategy: StrategyRule, n_train: int) -> int:
    """The strategy's batch size, capped so an epoch still has ``min_batches_per_epoch`` batches.

    A capped size is rounded down to a power of two, the sizes kernels and people expect.
    """
    cap = n_train // batch.min_batches_per_epoch
    if strategy.batch_size <= cap:
        return strategy.batch_size
    return 1 << max(0, cap.bit_length() - 1) if cap >= 1 else 1


# --------------------------------------------------------------------------- why


def why_size(bands: SizeBands, dataset: DatasetSummary, band: SizeBand) -> str:
    ipc = dataset.images_per_class
    where = "all images" if dataset.layout == "flat" else f"{dataset.train_split} split"
    measured = f"images per class {fmt_count(ipc)} (median, {where})"
    lower, upper = bands.range_of(band)
    if lower is None:
        return f"{measured} is below {fmt_count(upper or 0)} → {band}"
    if upper is None:
        return f"{measured} is above {fmt_count(lower)} → {band}"
    return f"{measured} is within {fmt_count(lower)}–{fmt_count(upper)} → {band}"


def why_similarity(similarity: SimilarityReport) -> str:
    score, threshold = fmt_against(similarity.score, similarity.threshold)
    if similarity.label == "similar":
        return f"similarity {score} is at or above the {threshold} needed for 'similar' → similar"
    return f"similarity {score} is below the {threshold} needed for 'similar' → different"


def why_components(components: list[SignalScore]) -> list[str]:
    """One sentence per voting signal: value against its anchors, the score it earned, its weight."""
    sentences = []
    for c in components:
        if c.weight <= 0:
            continue
        name = SIGNAL_LABELS.get(c.signal, c.signal)
        sentences.append(
            f"{name} {fmt_number(c.value)} (similar at {fmt_number(c.similar_at)}, different at "
            f"{fmt_number(c.different_at)}) → signal score {fmt_number(c.score)}, "
            f"weight {fmt_number(c.weight)}"
        )
    return sentences


def why_shift_level(profile: BackboneSimilarity, similarity: SimilarityReport) -> list[str]:
    bn = similarity.bn_shift
    if bn is None:
        return [f"no batch-norm statistics were measured → shift level '{similarity.shift_level}'"]
    early, early_at = fmt_against(bn.early, profile.early_shift_at)
    late, late_at = fmt_against(bn.late, profile.late_shift_at)
    early_says = (f"is above {early_at} → input-level shift" if bn.early > profile.early_shift_at
                  else f"is at or below {early_at} → no input-level shift")
    late_says = (f"is above {late_at} → semantic shift" if bn.late > profile.late_shift_at
                 else f"is at or below {late_at} → no semantic shift")
    return [f"early-layer BN shift {early} {early_says}", f"late-layer BN shift {late} {late_says}",
            f"shift level: {similarity.shift_level}"]


def why_unfreeze(strategy: StrategyRule, stages: list[str], top: list[str], summary: str) -> str:
    if not strategy.pretrained:
        return f"train {summary}"
    if not top:
        return f"unfreeze {summary}"
    which = f"all {len(stages)}" if len(top) == len(stages) else f"the last {len(top)} of {len(stages)}"
    rule = f"top fraction {fmt_number(strategy.unfreeze_top_fraction)}"
    if strategy.unfreeze_min_stages:
        rule += f", at least {strategy.unfreeze_min_stages}"
    return f"unfreeze {which} stages ({rule}): {', '.join(top)}"


def why_learning_rate(
    rules: RuleSet, strategy: StrategyRule, rates: LearningRates, label: SimilarityLabel
) -> str:
    if rates.backbone is None:
        return f"head LR {fmt_lr(rates.head)} ({strategy.optimizer}); the backbone stays frozen"
    if not strategy.pretrained:
        return f"LR {fmt_lr(rates.backbone)} for every layer: nothing pretrained to protect"
    factor = backbone_lr_factor(rules, strategy, label)
    source = "the strategy's own factor" if strategy.backbone_lr_factor is not None else f"{label} domain"
    sentence = (f"backbone LR {fmt_lr(rates.backbone)} = head LR {fmt_lr(rates.head)} / {1 / factor:.0f} "
                f"({source}): a normal LR destroys pretrained weights, fine-tuning belongs 10–100× lower")
    if rates.per_stage and strategy.discriminative:
        highest, lowest = max(rates.per_stage.values()), min(rates.per_stage.values())
        sentence += (f"; discriminative rates from {fmt_lr(highest)} down to {fmt_lr(lowest)} "
                     f"(×{strategy.discriminative_decay:g} per stage)")
    return sentence


# --------------------------------------------------------------------------- recommend


@dataclass(frozen=True)
class StrategyRecipe:
    """What one strategy trains with on one dataset and backbone: the recipe the advice prints and ``--run``
    trains (``runners.recipes.build_recipe`` starts from it), so the two cannot drift."""

    strategy_id: StrategyId
    rule: StrategyRule
    top: list[str]  # the last stages, by the strategy's fraction and minimum
    first: list[str]  # first stages added for an input-level shift
    unfreeze: list[str]  # both, in stage order
    unfreeze_summary: str
    learning_rate: LearningRates
    schedule: list[Phase]
    batch_size: int


def strategy_recipe(rules: RuleSet, strategy_id: StrategyId, dataset: DatasetSummary, similarity: SimilarityReport,
                    backbone: BackboneInfo) -> StrategyRecipe:
    """The rules' recipe for ``strategy_id`` on this dataset and backbone, whichever row picks it."""
    strategy = rules.strategies[strategy_id]
    stages = list(backbone.stages)
    top = top_stages_to_unfreeze(strategy, stages)
    first = surgical_stages(rules.layers, similarity.shift_level, stages, top) if strategy.pretrained else []
    unfreeze = [s for s in stages if s in top or s in first]
    rates = learning_rates(rules, strategy, similarity.label, top, first)
    return StrategyRecipe(
        strategy_id=strategy_id, rule=strategy, top=top, first=first, unfreeze=unfreeze,
        unfreeze_summary=describe_unfreeze(strategy, stages, top, first), learning_rate=rates,
        schedule=build_schedule(strategy, rates, unfreeze),
        batch_size=batch_size_for(rules.batch, strategy, training_images(dataset)),
    )


def recommend(
    rules: RuleSet, dataset: DatasetSummary, similarity: SimilarityReport, backbone: BackboneInfo
) -> Recommendation:
    """Apply the decision table and the strategy's recipe to one dataset/backbone pair."""
    band = rules.size_bands.band_for(dataset.images_per_class)
    row = rules.row_for(band, similarity.label)
    decision = decide(rules, band, similarity.label, logreg_gain(similarity), backbone.profile_key)
    recipe = strategy_recipe(rules, decision.strategy, dataset, similarity, backbone)
    strategy, top, first, rates = recipe.rule, recipe.top, recipe.first, recipe.learning_rate
    stages = list(backbone.stages)
    n_train = training_images(dataset)

    ctx = AdviceContext(rules, dataset, similarity, backbone, decision.strategy, strategy, recipe.unfreeze)
    profile = rules.similarity.profile_for(backbone.profile_key)
    row_evidence = row.evidence_for(backbone.profile_key)  # the table's cell, measured for this backbone
    cell = row.strategy_for(backbone.profile_key, row.strategy)  # where this backbone's own cases moved it

    why = [why_size(rules.size_bands, dataset, band), why_similarity(similarity),
           *why_components(similarity.components), *why_shift_level(profile, similarity),
           why_rule(row.id, row.why, row.strategy, cell, row_evidence, backbone.profile_key)]
    if decision.rule_id != row.id:
        pixel = rules.pixel_baseline
        why.append(why_rule(pixel.id, pixel.why, pixel.strategy, decision.strategy, decision.evidence,
                            backbone.profile_key))
    why.append(why_unfreeze(strategy, stages, top, recipe.unfreeze_summary))
    if first:
        why.append(f"shift level '{similarity.shift_level}' → also unfreeze the first {counted(len(first), 'stage')} "
                   f"({', '.join(first)}): {rules.layers.why}")
    why.append(why_learning_rate(rules, strategy, rates, similarity.label))
    if recipe.batch_size < strategy.batch_size:
        capped = "" if dataset.train_cap is None else f", at most {dataset.train_cap} per class,"
        why.append(f"batch size {recipe.batch_size} instead of {strategy.batch_size}: the "
                   f"{counted(n_train, 'image')} of the '{dataset.train_split}' split{capped} must give at least "
                   f"{rules.batch.min_batches_per_epoch} batches per epoch (fewer where a run holds some out to "
                   "validate on)")
    alternatives = [a for a in alternatives_for(row, similarity.label, row_evidence, cell)
                    if a.strategy != decision.strategy]
    if cell != row.strategy and decision.strategy != row.strategy:  # the benchmark backbone's cell, as a runner-up
        table = Alternative(strategy=row.strategy, rule_id=row.id, reason=with_gap(
            f"rule {row.id}'s strategy on the benchmark backbone; this backbone's own cases chose {cell}",
            row_evidence, cell, row.strategy))
        alternatives = [table, *(a for a in alternatives if a.strategy != row.strategy)]
    if decision.rule_id != row.id and cell != decision.strategy:  # the pixel rule replaced the table's cell
        pixel = rules.pixel_baseline
        overridden = Alternative(strategy=cell, rule_id=row.id, reason=with_gap(
            pixel.table_reason.format(rule_id=row.id), decision.evidence, decision.strategy, cell))
        alternatives = [overridden, *(a for a in alternatives if a.strategy != cell)]
    confidence = assess(rules, band, dataset, similarity, decision.strategy, decision.rule_id, decision.evidence,
                        alternatives[0].strategy if alternatives else None, backbone.profile_key)
    alternatives = with_runners_up(alternatives, decision.strategy, decision.rule_id, decision.evidence,
                                   confidence.runner_up)

    return Recommendation(
        strategy=decision.strategy,
        title=strategy.title,
        rule_id=decision.rule_id,
        confidence=confidence,
        pixel_baseline=pixel_baseline(rules, similarity),
        why=why,
        warnings=evaluate_warnings(ctx),
        alternatives=alternatives,
        **recommended_recipe(recipe),
    )


def with_runners_up(alternatives: list[Alternative], strategy: StrategyId, rule_id: str,
                    evidence: CellEvidence | None, runner_up: StrategyId | None) -> list[Alternative]:
    """The alternatives with every runner-up the confidence names, the confidence's own first: the report names
    one runner-up and ``--compare`` (which trains the alternatives) must train it, and the benchmark's
    runner-up that the evidence line is measured against too."""
    named: list[Alternative] = []
    if evidence is not None and evidence.runner_up != strategy:
        named.append(Alternative(strategy=evidence.runner_up, rule_id=rule_id,
                                 reason=runner_up_reason(rule_id, evidence, strategy)))
    if runner_up is not None and runner_up != strategy:
        named.append(Alternative(strategy=runner_up, rule_id=rule_id,
                                 reason="the confidence's runner-up: the advice across its weakest margin"))
    out = list(alternatives)
    for alt in named:
        if all(a.strategy != alt.strategy for a in out):
            out.append(alt)
    first = [a for a in out if a.strategy == runner_up]
    return [*first, *(a for a in out if a.strategy != runner_up)]


def runner_up_reason(rule_id: str, evidence: MeasuredEvidence[S], strategy: S) -> str:
    """Why the benchmark's runner-up is an alternative (image and text rules alike)."""
    behind = "behind" if evidence.margin_pp >= 0 else "ahead of"
    return (f"the benchmark's runner-up for rule {rule_id}: {abs(evidence.margin_pp):.1f} ± {evidence.se_pp:.1f} pp "
            f"{behind} {strategy} over {counted(evidence.cases, 'case')} ({evidence.source})")


def recommended_recipe(recipe: StrategyRecipe) -> dict[str, Any]:
    """The recipe fields of a ``Recommendation`` (the same for the advised strategy and an alternative)."""
    strategy = recipe.rule
    return {
        "unfreeze": recipe.unfreeze, "unfreeze_summary": recipe.unfreeze_summary,
        "learning_rate": recipe.learning_rate, "optimizer": strategy.optimizer,
        "weight_decay": strategy.weight_decay, "batchnorm": strategy.batchnorm, "schedule": recipe.schedule,
        "batch_size": recipe.batch_size, "augmentation": strategy.augmentation,
        "regularization": strategy.regularization, "lr_schedule": strategy.lr_schedule,
        "gpu_advised": strategy.gpu_advised,
    }


def pixel_baseline(rules: RuleSet, similarity: SimilarityReport) -> PixelBaseline | None:
    """The raw-pixel bar, whenever separability was measured."""
    sep = similarity.separability
    if sep is None:
        return None
    return PixelBaseline(accuracy=sep.pixel_logreg_accuracy, features_accuracy=sep.logreg_accuracy,
                         beats_features=pixels_as_good(rules, sep.logreg_gain))


def why_rule(rule_id: str, why: str, rule_strategy: StrategyId, strategy: StrategyId, evidence: CellEvidence | None,
             backbone: str) -> str:
    """The deciding rule's line of the why: its reason and evidence, or, where ``backbone``'s own cases moved the
    rule to ``strategy``, that move and the evidence for it."""
    if strategy == rule_strategy or evidence is None:
        return f"rule {rule_id} → {rule_strategy}: {with_evidence(why, rule_strategy, evidence)}"
    return (f"rule {rule_id} → {strategy} for {backbone}: the rule's {rule_strategy} trailed on this backbone's own "
            f"cases, which chose {strategy} (the rule: {why}); {evidence.summary(strategy)}")


def with_evidence(why: str, strategy: S, evidence: MeasuredEvidence[S] | None) -> str:
    """A rule's why, ending with its evidence in words (every figure from the evidence table); image and text
    rules alike."""
    return f"{why}; {evidence.summary(strategy)}" if evidence is not None else why


def with_gap(reason: str, evidence: MeasuredEvidence[S] | None, strategy: S, other: S) -> str:
    """An alternative's reason, with how it fared against the rule's strategy where the evidence measured it."""
    note = evidence.gap_note(strategy, other) if evidence is not None else None
    return f"{reason} ({note})" if note else reason


def alternatives_for(row: DecisionRow, label: SimilarityLabel, evidence: CellEvidence | None,
                     strategy: StrategyId | None = None) -> list[Alternative]:
    """The row's runners-up that apply to this similarity label, with their gaps as ``evidence`` (the row's, as
    measured for the advised backbone) has them against ``strategy`` (the cell's for that backbone; default: the
    row's); ``rule_id`` is the row that lists them."""
    return [Alternative(strategy=alt.strategy, rule_id=row.id,
                        reason=with_gap(alt.reason, evidence, strategy or row.strategy, alt.strategy))
            for alt in row.alternatives if alt.when in ("any", label)]
