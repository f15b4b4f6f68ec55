"""The text rules engine: similarity signals -> a close/far label, the dataset's size band x that label -> a
table row, the row's strategy -> its recipe for this dataset and backbone, and the confidence.

Pure functions over typed inputs (no torch, no I/O): ``advisor.text_api`` measures, this decides, and the
text runners train from :func:`text_recipe`, the same function the advice prints from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tl_advise.rules.confidence import evidence_verdict
from tl_advise.rules.engine import runner_up_reason, with_evidence, with_gap
from tl_advise.rules.margins import below_measured, graded, nearest_edge_that_matters, threshold_margin
from tl_advise.rules.schema import SizeBand
from tl_advise.rules.text_schema import TextCellEvidence, TextDecisionRow, TextRuleSet, TextStrategyRule
from tl_advise.schema.formatting import fmt_lr, per_class
from tl_advise.schema.models import AdviceWarning, ConfidenceLevel
from tl_advise.schema.text import (
    LengthSummary,
    TextAlternative,
    TextBackboneInfo,
    TextConfidence,
    TextDatasetSummary,
    TextPhase,
    TextRecipe,
    TextRecommendation,
    TextSignalName,
    TextSignalScore,
    TextSimilarity,
    TextSimilarityLabel,
    TextSimilaritySignals,
    TextStrategyId,
    TfidfBar,
)

LEVELS: tuple[ConfidenceLevel, ...] = ("low", "medium", "high")
EMBEDDINGS_GROUP = "embeddings"
HEAD_GROUP = "head"


# --------------------------------------------------------------------------- layer groups


def layer_names(n_layers: int) -> list[str]:
    """The encoder's layer groups, bottom to top: ``embeddings``, ``layer.0`` … ``layer.{n-1}``."""
    return [EMBEDDINGS_GROUP, *(f"layer.{i}" for i in range(n_layers))]


def tuned_layers(rule: TextStrategyRule, n_layers: int) -> list[str]:
    """The layer groups a strategy tunes, bottom to top: the top ``ceil(fraction x n)`` transformer layers (at
    least one when the fraction is above 0), and the embeddings when ``tune_embeddings``."""
    if rule.tune_top_fraction <= 0:
        return []
    k = min(n_layers, max(1, math.ceil(round(rule.tune_top_fraction * n_layers, 6))))
    layers = [f"layer.{i}" for i in range(n_layers - k, n_layers)]
    return [EMBEDDINGS_GROUP, *layers] if rule.tune_embeddings else layers


def per_group_lr(tuned: list[str], encoder_lr: float, decay: float) -> dict[str, float]:
    """Layer-wise LR decay (Sun et al. 2019): the head and the top tuned group at ``encoder_lr``, each group
    below one more factor of ``decay``; keys from the head down."""
    rates = {HEAD_GROUP: encoder_lr}
    for depth, name in enumerate(reversed(tuned)):
        rates[name] = float(f"{encoder_lr * decay ** depth:.6g}")
    return rates


def recipe_max_length(rules: TextRuleSet, rule: TextStrategyRule, lengths: LengthSummary | None,
                      backbone_max: int) -> int:
    """The texts' 95th percentile length in tokens rounded up (at least ``minimum``), at most the strategy's
    ``max_length`` and the backbone's limit. Without token lengths: the strategy's."""
    cap = min(rule.max_length, backbone_max)
    if lengths is None or lengths.unit != "tokens":
        return cap
    m = rules.max_length
    rounded = int(math.ceil(lengths.p95 / m.round_to) * m.round_to)
    return max(min(m.minimum, cap), min(cap, rounded))


def n_training_texts(summary: TextDatasetSummary) -> int:
    return sum(summary.split_counts.get(summary.train_split, {}).values())


def encoder_rate(rules: TextRuleSet, strategy: TextStrategyId, row: TextDecisionRow) -> float | None:
    """The top tuned layer's rate of ``strategy`` in the cell of ``row``: the cell's own rate for the strategy it
    advises, where it sets one, else the strategy's."""
    if row.encoder_lr is not None and strategy == row.strategy:
        return row.encoder_lr
    return rules.strategies[strategy].encoder_lr


def text_recipe(rules: TextRuleSet, strategy: TextStrategyId, *, summary: TextDatasetSummary,
                lengths: LengthSummary | None, backbone: TextBackboneInfo,
                similarity: TextSimilarityLabel) -> TextRecipe:
    """The recipe of ``strategy`` on this dataset and backbone, in the cell its size and ``similarity`` label
    fall in: what the advice prints and what trains."""
    rule = rules.strategies[strategy]
    encoder_lr = encoder_rate(rules, strategy, rules.row_for(size_band(rules, summary), similarity))
    tuned = tuned_layers(rule, backbone.n_layers)
    frozen = [] if rule.kind == "tfidf" else [g for g in layer_names(backbone.n_layers) if g not in tuned]
    finetune_epochs, batch_size = rule.finetune_epochs, rule.batch_size
    small = rules.small_data
    if rule.kind == "encoder" and n_training_texts(summary) < small.max_train_texts:
        finetune_epochs, batch_size = max(finetune_epochs, small.finetune_epochs), min(batch_size, small.batch_size)
    rates = per_group_lr(tuned, encoder_lr, rule.layer_decay) if (
        tuned and encoder_lr is not None and rule.layer_decay is not None) else {}
    return TextRecipe(
        strategy=strategy, kind=rule.kind, max_length=recipe_max_length(rules, rule, lengths, backbone.max_length),
        tuned_layers=tuned, frozen_layers=frozen, head_lr=rule.head_lr,
        encoder_lr=encoder_lr if tuned else None, layer_decay=rule.layer_decay if tuned else None,
        per_group_lr=rates, warmup_share=rule.warmup_share, weight_decay=rule.weight_decay, dropout=rule.dropout,
        head_epochs=rule.head_epochs, finetune_epochs=finetune_epochs if tuned else 0, batch_size=batch_size,
        patience=rule.patience, tfidf_ngram_max=rule.tfidf_ngram_max, tfidf_c=rule.tfidf_c)


def schedule(recipe: TextRecipe) -> list[TextPhase]:
    if recipe.kind == "tfidf":
        return [TextPhase(name="fit", epochs=0, trains=["tfidf"], learning_rate=None)]
    phases = [TextPhase(name="head", epochs=recipe.head_epochs, trains=[HEAD_GROUP], learning_rate=recipe.head_lr)]
    if recipe.tuned_layers:
        phases.append(TextPhase(name="finetune", epochs=recipe.finetune_epochs,
                                trains=[HEAD_GROUP, *reversed(recipe.tuned_layers)], learning_rate=recipe.encoder_lr))
    return phases


# --------------------------------------------------------------------------- similarity


def signal_values(signals: TextSimilaritySignals) -> dict[TextSignalName, float]:
    """Every measured signal by its rules name (absent when it could not be measured)."""
    values: dict[TextSignalName, float] = {"fertility": signals.tokenizer.fertility,
                                           "split_share": signals.tokenizer.split_share}
    if signals.hidden is not None:
        hidden = signals.hidden
        values["centroid_cosine"] = hidden.centroid_cosine
        values["hidden_early_w2"], values["hidden_middle_w2"], values["hidden_late_w2"] = (
            hidden.early, hidden.middle, hidden.late)
    if signals.separability is not None:
        sep = signals.separability
        values["knn_gain"], values["logreg_gain"], values["logreg_accuracy"] = (
            sep.knn_gain, sep.logreg_gain, sep.logreg_accuracy)
    return values


@dataclass(frozen=True)
class TextVerdict:
    """The close/far verdict of measured signal values under one profile."""

    profile: str
    scores: list[TextSignalScore]
    score: float
    threshold: float
    label: TextSimilarityLabel


def judge_signal_values(rules: TextRuleSet, backbone: str, values: Mapping[TextSignalName, float]) -> TextVerdict:
    """Score signal values (by their rules names; absent ones drop out, the weights renormalised) with the
    backbone's profile: what the advice does, and what the benchmark's ``--report`` re-runs on recorded cases."""
    sim = rules.similarity
    profile_name = sim.profile_name_for(backbone)
    profile = sim.backbones[profile_name]
    scores = [TextSignalScore(name=name, value=values[name], score=round(rule.score(values[name]), 4),
                              weight=rule.weight, close_at=rule.close_at, far_at=rule.far_at)
              for name, rule in profile.signals.items() if name in values]
    voting = [s for s in scores if s.weight > 0]
    total = sum(s.weight for s in voting)
    score = sum(s.weight * s.score for s in voting) / total if total > 0 else sim.score_when_no_signals
    threshold = sim.threshold_for(backbone)
    return TextVerdict(profile=profile_name, scores=scores, score=round(score, 4), threshold=threshold,
                       label="close" if score >= threshold else "far")


def score_text_similarity(rules: TextRuleSet, signals: TextSimilaritySignals) -> TextSimilarity:
    verdict = judge_signal_values(rules, signals.backbone, signal_values(signals))
    profile = rules.similarity.backbones[verdict.profile]
    return TextSimilarity(signals=signals, scores=verdict.scores, score=verdict.score, threshold=verdict.threshold,
                          label=verdict.label, profile=verdict.profile,
                          calibrated=profile.calibrated and verdict.profile != "default")


def tfidf_bar(rules: TextRuleSet, signals: TextSimilaritySignals) -> TfidfBar | None:
    sep = signals.separability
    if sep is None:
        return None
    return TfidfBar(accuracy=sep.tfidf_accuracy, embedding_accuracy=sep.logreg_accuracy, gain=sep.logreg_gain,
                    n_texts=sep.n_texts, n_folds=sep.n_folds,
                    embeddings_clear_it=sep.logreg_gain > rules.tfidf_bar.min_gain)


# --------------------------------------------------------------------------- confidence


@dataclass(frozen=True)
class Component:
    name: str
    level: ConfidenceLevel
    reason: str
    runner_up: TextStrategyId | None = None


def similarity_component(rules: TextRuleSet, band: SizeBand, similarity: TextSimilarity,
                         strategy: TextStrategyId) -> Component | None:
    other_label: TextSimilarityLabel = "far" if similarity.label == "close" else "close"
    other = rules.row_for(band, other_label).strategy
    if other == strategy:
        return None
    c = rules.confidence
    m = threshold_margin(similarity.score, similarity.threshold, c.similarity_margin_low, c.similarity_margin_high)
    calibrated = "" if similarity.calibrated else "; the profile is not calibrated"
    return Component("similarity", m.level, f"similarity {similarity.score:.2f} is {m.distance:.2f} from the "
                     f"{similarity.threshold:.2f} threshold ({m.closeness} it{calibrated}); as '{other_label}' the "
                     f"advice would be {other}", other)


def size_component(rules: TextRuleSet, band: SizeBand, summary: TextDatasetSummary, label: TextSimilarityLabel,
                   strategy: TextStrategyId) -> Component:
    tpc = summary.texts_per_class
    if tpc < rules.confidence.measured_from_per_class:
        return Component("size", "low", below_measured(tpc, rules.confidence.measured_from_per_class, "text"))
    nearest = nearest_edge_that_matters(rules.size_bands.edges(), band, tpc, strategy=strategy,
                                        advice_in=lambda neighbour: rules.row_for(neighbour, label).strategy)
    if nearest is None:
        return Component("size", "high", f"{per_class(tpc, 'text')}: the neighbouring size bands advise "
                                         "the same")
    c = rules.confidence
    level = graded(nearest.ratio, c.size_ratio_low, c.size_ratio_high)
    return Component("size", level, f"{per_class(tpc, 'text')} is x{nearest.ratio:.2f} from the "
                     f"{nearest.edge:.0f} edge of the {nearest.neighbour} band, which advises {nearest.advice}",
                     nearest.advice)


def bar_component(bar: TfidfBar | None, recipe: TextRecipe, min_gain: float) -> Component | None:
    if bar is None or recipe.kind == "tfidf" or bar.embeddings_clear_it:
        return None
    return Component("tfidf_bar", "low", f"frozen embeddings reach {bar.embedding_accuracy:.3f} against the TF-IDF "
                     f"bar's {bar.accuracy:.3f} (gain {bar.gain:+z.3f}, needs above {min_gain:+z.2f}; "
                     f"{bar.n_folds}-fold CV on {bar.n_texts} sample texts): the encoder may not carry this task",
                     "tfidf_linear")


def evidence_component(rules: TextRuleSet, rule_id: str, evidence: TextCellEvidence | None,
                       strategy: TextStrategyId, backbone: str | None = None) -> Component:
    """The image confidence's evidence component (:func:`tl_advise.rules.confidence.evidence_verdict`): not
    measured, runner-up ahead (low), in-sample, one dataset, held out, or another backbone's."""
    return Component("evidence", *evidence_verdict(rules.confidence, rule_id, evidence, strategy, backbone))


def assess(rules: TextRuleSet, band: SizeBand, summary: TextDatasetSummary, similarity: TextSimilarity,
           recipe: TextRecipe, rule_id: str, evidence: TextCellEvidence | None, bar: TfidfBar | None,
           fallback_runner_up: TextStrategyId | None, backbone: str | None = None) -> TextConfidence:
    strategy = recipe.strategy
    parts = [p for p in (similarity_component(rules, band, similarity, strategy),
                         size_component(rules, band, summary, similarity.label, strategy),
                         bar_component(bar, recipe, rules.tfidf_bar.min_gain),
                         evidence_component(rules, rule_id, evidence, strategy, backbone)) if p is not None]
    level = min((p.level for p in parts), key=LEVELS.index)
    weakest = [p for p in parts if p.level == level]
    runner_up = next((p.runner_up for p in weakest if p.runner_up and p.runner_up != strategy), fallback_runner_up)
    suggestion = None
    if level == "low" and runner_up is not None:
        suggestion = f"measure it before committing: train {strategy} and {runner_up} under the same budget"
    return TextConfidence(level=level, reasons=[p.reason for p in parts], weakest=weakest[0].name,
                          runner_up=runner_up, suggestion=suggestion)


# --------------------------------------------------------------------------- the recommendation


def size_band(rules: TextRuleSet, summary: TextDatasetSummary) -> SizeBand:
    return rules.size_bands.band_for(summary.texts_per_class)


def recommend_text(rules: TextRuleSet, *, summary: TextDatasetSummary, lengths: LengthSummary | None,
                   similarity: TextSimilarity, backbone: TextBackboneInfo) -> TextRecommendation:
    band = size_band(rules, summary)
    row = rules.row_for(band, similarity.label)
    rule = rules.strategies[row.strategy]
    recipe = text_recipe(rules, row.strategy, summary=summary, lengths=lengths, backbone=backbone,
                         similarity=similarity.label)
    bar = tfidf_bar(rules, similarity.signals)
    lo, hi = rules.size_bands.range_of(band)
    span = (f"{lo:.0f}" if lo is not None else "0") + (f"-{hi:.0f}" if hi is not None else "+")
    why = [f"{summary.texts_per_class:.0f} texts per class in {summary.train_split} -> the {band} band ({span} per "
           f"class)",
           f"similarity {similarity.score:.2f} {'>=' if similarity.label == 'close' else '<'} "
           f"{similarity.threshold:.2f} -> {similarity.label} (profile {similarity.profile}"
           f"{'' if similarity.calibrated else ', not calibrated'})",
           f"rule {row.id}: {with_evidence(row.why, row.strategy, row.evidence)}"]
    if row.encoder_lr is not None and rule.encoder_lr is not None:
        why.append(f"rule {row.id}: the top layer's rate {fmt_lr(row.encoder_lr)} in this cell, not the strategy's "
                   f"{fmt_lr(rule.encoder_lr)}: {row.encoder_lr_why}")
    if recipe.kind == "encoder" and recipe.finetune_epochs != rule.finetune_epochs:
        why.append(f"fewer than {rules.small_data.max_train_texts} training texts: {recipe.finetune_epochs} "
                   f"fine-tuning epochs in batches of {recipe.batch_size} (small data needs longer, Mosbach et al. "
                   "2021)")
    warnings: list[AdviceWarning] = []
    if bar is not None and not bar.embeddings_clear_it:
        warnings.append(AdviceWarning(
            id="embeddings_no_better_than_tfidf",
            message=f"frozen embeddings ({bar.embedding_accuracy:.3f}) do not beat the TF-IDF bar ({bar.accuracy:.3f}) "
                    f"by more than {rules.tfidf_bar.min_gain:+z.2f} on the sample: compare with tfidf_linear"))
    if lengths is not None and lengths.unit == "tokens" and lengths.p95 > recipe.max_length and recipe.kind != "tfidf":
        warnings.append(AdviceWarning(
            id="texts_truncated",
            # p95 above the cut means 5% or more are cut; "longer than p95" would be false where p95 is the max
            message=f"5% of the texts or more are longer than the {recipe.max_length} tokens training keeps (95% "
                    f"are up to {lengths.p95:.0f}): their ends are cut off"))
    if not similarity.calibrated:
        warnings.append(AdviceWarning(
            id="similarity_not_calibrated",
            message=f"the close/far label comes from the {similarity.profile} profile, set on five text sets "
                    "labelled by a person and not yet calibrated against measured regret"))
    alternatives = [TextAlternative(strategy=a.strategy, rule_id=row.id,
                                    reason=with_gap(a.reason, row.evidence, row.strategy, a.strategy))
                    for a in row.alternatives]
    if recipe.kind != "tfidf" and "tfidf_linear" not in {a.strategy for a in alternatives}:
        alternatives.append(TextAlternative(strategy="tfidf_linear", rule_id=row.id,
                                            reason=with_gap("the bar", row.evidence, row.strategy, "tfidf_linear")))
    evidence = row.evidence
    if evidence is not None and evidence.runner_up != row.strategy \
            and all(a.strategy != evidence.runner_up for a in alternatives):  # --compare must train it too
        alternatives.append(TextAlternative(strategy=evidence.runner_up, rule_id=row.id,
                                            reason=runner_up_reason(row.id, evidence, row.strategy)))
    confidence = assess(rules, band, summary, similarity, recipe, row.id, row.evidence, bar,
                        alternatives[0].strategy if alternatives else None, backbone.name)
    if confidence.runner_up is not None:  # the runner-up first, as the image advice lists them
        alternatives.sort(key=lambda a: a.strategy != confidence.runner_up)
    return TextRecommendation(
        strategy=row.strategy, title=rule.title, rule_id=row.id, why=why, confidence=confidence, recipe=recipe,
        schedule=schedule(recipe), sources=[f"[{k}] {rules.sources[k]}" for k in rule.sources], tfidf_bar=bar,
        warnings=warnings, alternatives=alternatives)
