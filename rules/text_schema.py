"""Typed, validated model of the text rules (``text_rules.toml``): similarity profiles, size bands, the decision
table, the strategies' recipes and the confidence thresholds for text classifiers.

Like the image rules (``rules.schema``) every table forbids unknown keys, every referenced strategy must be
defined and every (size band x close/far) cell must be matched by exactly one row; ``load_text_rules`` turns
every problem into one ``RulesError`` naming the file and the place.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tl_advise.rules.schema import (
    MeasuredEvidence,
    SimilarityProfile,
    SimilarityProfiles,
    SizeBand,
    SizeBands,
    WeightedSignal,
    _format_validation_error,
    _no_typed_figures,
    _Strict,
)
from tl_advise.schema.errors import RulesError
from tl_advise.schema.models import ConfidenceLevel
from tl_advise.schema.text import (
    TEXT_STRATEGY_IDS,
    TextSignalName,
    TextSimilarityLabel,
    TextStrategyId,
    TextStrategyKind,
)

TEXT_RULES_FILE = "text_rules.toml"
_PACKAGE = __name__.rpartition(".")[0]
TEXT_LABELS: tuple[TextSimilarityLabel, ...] = ("close", "far")
TextSimilarityMatch = Literal["close", "far", "any"]


# --------------------------------------------------------------------------- similarity


class TextSignalRule(WeightedSignal):
    """A linear ramp: score 1 at ``close_at``, 0 at ``far_at``, clipped to [0, 1]."""

    close_at: float
    far_at: float

    @model_validator(mode="after")
    def _anchors_differ(self) -> TextSignalRule:
        if self.close_at == self.far_at:
            raise ValueError("close_at and far_at must differ (the ramp needs a slope)")
        return self

    def score(self, value: float) -> float:
        return min(1.0, max(0.0, (value - self.far_at) / (self.close_at - self.far_at)))


class TextBackboneProfile(SimilarityProfile[TextSignalName, TextSignalRule]):
    """A text backbone's similarity signals."""


class TextSimilarityRules(SimilarityProfiles[TextBackboneProfile]):
    """The text rules' similarity section."""



# --------------------------------------------------------------------------- table


class TextAlternativeRule(_Strict):
    strategy: TextStrategyId
    reason: str = Field(min_length=1)


class TextCellEvidence(MeasuredEvidence[TextStrategyId]):
    """What benchmarks/text_advice_quality.py measured for a text rule (:class:`MeasuredEvidence`, text ids)."""


class TextDecisionRow(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    size: SizeBand
    similarity: TextSimilarityMatch
    strategy: TextStrategyId
    why: str = Field(min_length=1)
    alternatives: list[TextAlternativeRule] = Field(default_factory=list)
    evidence: TextCellEvidence | None = Field(default=None, description="absent: the guide's cell, not measured")
    encoder_lr: float | None = Field(default=None, gt=0, le=1e-4, description="this cell's encoder rate for its "
                                     "strategy, in place of the strategy's own encoder_lr (from the LR sweeps of "
                                     "the cases the cell decides); absent: the strategy's")
    encoder_lr_why: str | None = Field(default=None, min_length=1, description="why the cell's rate, in words")

    def matches(self, band: SizeBand, label: TextSimilarityLabel) -> bool:
        return self.size == band and self.similarity in (label, "any")

    @field_validator("why", "encoder_lr_why")
    @classmethod
    def _prose_quotes_no_figures(cls, text: str | None) -> str | None:
        return None if text is None else _no_typed_figures(text)

    @model_validator(mode="after")
    def _alternatives_are_other_strategies(self) -> TextDecisionRow:
        names = [a.strategy for a in self.alternatives]
        if self.strategy in names:
            raise ValueError(f"alternative {self.strategy!r} is the row's own strategy")
        if len(set(names)) != len(names):
            raise ValueError("an alternative is listed twice")
        if (self.encoder_lr is None) != (self.encoder_lr_why is None):
            raise ValueError("encoder_lr and encoder_lr_why go together: the rate and why this cell has its own")
        return self


# --------------------------------------------------------------------------- strategies


class TextStrategyRule(_Strict):
    """One strategy's recipe. LRs are for AdamW; the fine-tuning phase has a linear warm-up over
    ``warmup_share`` of its steps, then linear decay to 0, stepped every batch."""

    title: str = Field(min_length=1)
    kind: TextStrategyKind
    tune_top_fraction: float = Field(ge=0, le=1, description="share of the transformer layers tuned, from the top "
                                                             "(rounded up, at least one when above 0)")
    tune_embeddings: bool = Field(description="the embedding layer trains too (full fine-tuning)")
    max_length: int = Field(ge=8, description="the longest input in tokens (the data may ask for less)")
    head_lr: float | None = Field(default=None, gt=0)
    encoder_lr: float | None = Field(default=None, gt=0, le=1e-4, description="the guide's mistake 1: a normal "
                                     "LR (1e-3) destroys pretrained weights; fine-tuning belongs in 1e-5 … 1e-4")
    layer_decay: float | None = Field(default=None, gt=0, le=1)
    warmup_share: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    dropout: float = Field(ge=0, lt=1)
    head_epochs: int = Field(ge=0)
    finetune_epochs: int = Field(ge=0)
    batch_size: int = Field(ge=2)
    patience: int | None = Field(default=None, ge=1)
    tfidf_ngram_max: int | None = Field(default=None, ge=1, le=3)
    tfidf_c: float | None = Field(default=None, gt=0)
    sources: list[str] = Field(default_factory=list, description="keys of [sources] behind the numbers")

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> TextStrategyRule:
        tunes = self.tune_top_fraction > 0 or self.tune_embeddings
        if self.kind == "encoder":
            if not tunes:
                raise ValueError("an 'encoder' strategy tunes layers: tune_top_fraction > 0")
            missing = [n for n in ("head_lr", "encoder_lr", "layer_decay") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"an 'encoder' strategy needs {', '.join(missing)}")
            if self.finetune_epochs == 0:
                raise ValueError("an 'encoder' strategy needs finetune_epochs > 0")
            if self.tune_embeddings and self.tune_top_fraction < 1:
                raise ValueError("tune_embeddings needs tune_top_fraction = 1 (layers are tuned from the top)")
        else:
            if tunes:
                raise ValueError(f"a '{self.kind}' strategy keeps the encoder frozen: tune_top_fraction = 0 and "
                                 "tune_embeddings = false")
            if self.finetune_epochs or self.warmup_share:
                raise ValueError(f"a '{self.kind}' strategy has no fine-tuning phase: finetune_epochs = 0 and "
                                 "warmup_share = 0")
        if self.kind == "embedding_head" and (self.head_lr is None or self.head_epochs == 0):
            raise ValueError("an 'embedding_head' strategy needs head_lr and head_epochs > 0")
        if self.kind == "tfidf" and (self.tfidf_ngram_max is None or self.tfidf_c is None):
            raise ValueError("a 'tfidf' strategy needs tfidf_ngram_max and tfidf_c")
        return self


class TfidfBarRule(_Strict):
    min_gain: float = Field(ge=-1, le=1, description="frozen embeddings must beat the TF-IDF bar by more than this "
                                                     "(cross-validated accuracy on the sample)")


class TextConfidenceRules(_Strict):
    similarity_margin_low: float = Field(ge=0, le=1)
    similarity_margin_high: float = Field(ge=0, le=1)
    size_ratio_low: float = Field(gt=1)
    size_ratio_high: float = Field(gt=1)
    measured_from_per_class: float = Field(16, gt=0)  # the text benchmark's smallest level: below it, low
    unmeasured: ConfidenceLevel
    tied: ConfidenceLevel
    in_sample: ConfidenceLevel
    single_dataset: ConfidenceLevel
    early_stopping_split: ConfidenceLevel = "medium"
    evidence_backbone: str = "all-minilm-l6-v2"  # the text benchmark's encoder: the evidence's margins are its
    other_backbone: ConfidenceLevel = "medium"  # the best a measured rule can be for another encoder

    @model_validator(mode="after")
    def _ordered(self) -> TextConfidenceRules:
        if self.similarity_margin_low > self.similarity_margin_high or self.size_ratio_low > self.size_ratio_high:
            raise ValueError("each *_low must not exceed its *_high")
        return self


class SmallDataRule(_Strict):
    max_train_texts: int = Field(ge=1, description="below this many training texts (all classes) the rule applies")
    finetune_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)


class MaxLengthRule(_Strict):
    """The texts' 95th percentile length in tokens, rounded up to ``round_to``, at least ``minimum``."""

    round_to: int = Field(ge=1)
    minimum: int = Field(ge=8)


class TextRuleSet(_Strict):
    schema_version: Literal[1]
    similarity: TextSimilarityRules
    size_bands: SizeBands
    decision: list[TextDecisionRow] = Field(min_length=1)
    tfidf_bar: TfidfBarRule
    confidence: TextConfidenceRules
    small_data: SmallDataRule
    max_length: MaxLengthRule
    sources: dict[str, str] = Field(default_factory=dict, description="citation key -> what it says")
    strategies: dict[TextStrategyId, TextStrategyRule]

    @model_validator(mode="after")
    def _table_covers_every_cell_once(self) -> TextRuleSet:
        ids = [row.id for row in self.decision]
        problems = [f"duplicate row id {i!r}" for i in sorted({i for i in ids if ids.count(i) > 1})]
        bands = self.size_bands.bands
        problems += [f"row {row.id!r} uses the size band {row.size!r}, which this file does not define"
                     for row in self.decision if row.size not in bands]
        for band in bands:
            for label in TEXT_LABELS:
                matching = [row.id for row in self.decision if row.matches(band, label)]
                if len(matching) != 1:
                    problems.append(f"cell (size={band}, similarity={label}) is covered by {len(matching)} rows"
                                    + (f": {', '.join(matching)}" if matching else ""))
        for row in self.decision:
            problems += [f"row {row.id!r}: {s!r} has no [strategies.{s}] table"
                         for s in (row.strategy, *(a.strategy for a in row.alternatives)) if s not in self.strategies]
        problems += [f"row {row.id!r}: encoder_lr is a rate of an encoder strategy, and {row.strategy!r} is "
                     f"{self.strategies[row.strategy].kind!r}" for row in self.decision
                     if row.encoder_lr is not None and row.strategy in self.strategies
                     and self.strategies[row.strategy].kind != "encoder"]
        problems += [f"strategies.{sid}.sources: {key!r} is not in [sources]"
                     for sid, rule in self.strategies.items() for key in rule.sources if key not in self.sources]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def row_for(self, band: SizeBand, label: TextSimilarityLabel) -> TextDecisionRow:
        return next(row for row in self.decision if row.matches(band, label))


# --------------------------------------------------------------------------- loading


def default_text_rules_text() -> str:
    return resources.files(_PACKAGE).joinpath(TEXT_RULES_FILE).read_text(encoding="utf-8")


def load_text_rules(path: str | Path | None = None) -> TextRuleSet:
    """Read and validate a text rules file; None reads the packaged ``text_rules.toml``."""
    if path is None:
        source, text = TEXT_RULES_FILE, default_text_rules_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RulesError(f"{path}: rules file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{path}: cannot read rules file: {exc}") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: TOML syntax error: {exc}") from None
    return text_rules_from_mapping(data, source)


def is_text_rules_file(path: str | Path) -> bool:
    """Whether the rules file at ``path`` is a text decision table: its rows or strategies name text strategies.
    Unreadable or not TOML: False (the image loader then reports the problem)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    rows = data.get("decision", [])
    named = {row.get("strategy") for row in rows if isinstance(row, dict)} if isinstance(rows, list) else set()
    strategies = data.get("strategies", {})
    named |= set(strategies) if isinstance(strategies, dict) else set()
    return bool(named & set(TEXT_STRATEGY_IDS))


def text_rules_from_mapping(data: dict[str, Any], source: str = "<text rules>") -> TextRuleSet:
    try:
        return TextRuleSet.model_validate(data)
    except ValidationError as exc:
        raise RulesError(_format_validation_error(exc, source, data)) from None
