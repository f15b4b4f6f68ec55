"""Typed, validated model of a rules file (``default_rules.toml`` or a user's override).

Every section forbids unknown keys, so a typo fails loudly instead of being ignored.
``load_rules`` turns every problem (missing file, TOML syntax, validation) into one
``RulesError`` that names the file and the location of each problem.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from tl_advise.rules import statistics
from tl_advise.rules.warnings import REGISTRY as WARNINGS
from tl_advise.rules.warnings import WarningRule, template_fields
from tl_advise.schema.errors import RulesError
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import (
    BATCHNORM_HELP,
    Augmentation,
    BatchNormMode,
    ConfidenceLevel,
    LRSchedule,
    Regularization,
    SimilarityLabel,
    StrategyId,
)
from tl_advise.schema.ranking import ScoreName

DEFAULT_RULES_FILE = "default_rules.toml"
_PACKAGE = __name__.rpartition(".")[0]

SizeBand = Literal["few", "tiny", "small", "medium", "large"]
SIZE_BANDS: tuple[SizeBand, ...] = ("few", "tiny", "small", "medium", "large")
SIMILARITY_LABELS: tuple[SimilarityLabel, ...] = ("similar", "different")
SimilarityMatch = Literal["similar", "different", "any"]
ShiftLevel = Literal["none", "input", "semantic", "input_and_semantic", "unknown"]

SignalName = Literal[
    "bn_shift_early",
    "bn_shift_middle",
    "bn_shift_late",
    "head_max_prob",
    "head_entropy",
    "knn_gain",
    "logreg_gain",
    "logme",
    "logme_gain",
]
SIGNAL_NAMES: tuple[SignalName, ...] = get_args(SignalName)
DEFAULT_PROFILE = "default"


class _Strict(BaseModel):
    # inf/nan are valid TOML floats but never a sensible threshold.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def normalise_backbone_name(name: str) -> str:
    """``EfficientNet-Lite0`` and ``efficientnet_lite0`` name the same profile."""
    return name.strip().lower().replace("-", "_")


# --------------------------------------------------------------------------- similarity


class WeightedSignal(_Strict):
    """A signal's vote in a similarity profile; the ramp's anchors are the modality's own."""

    weight: float = Field(ge=0)


class SignalRule(WeightedSignal):
    """A linear ramp: score 1 at ``similar_at``, 0 at ``different_at``, clipped to [0, 1]."""

    similar_at: float
    different_at: float

    @model_validator(mode="after")
    def _anchors_differ(self) -> SignalRule:
        if self.similar_at == self.different_at:
            raise ValueError("similar_at and different_at must differ (the ramp needs a slope)")
        return self


SignalT = TypeVar("SignalT", bound=str)
SignalRuleT = TypeVar("SignalRuleT", bound=WeightedSignal)


class SimilarityProfile(_Strict, Generic[SignalT, SignalRuleT]):
    """One backbone's similarity signals (image or text): their ramps and weights, calibrated or not."""

    calibrated: bool
    threshold: float | None = Field(default=None, ge=0, le=1, description="overrides [similarity].threshold")
    signals: dict[SignalT, SignalRuleT]

    @model_validator(mode="after")
    def _some_signal_votes(self) -> SimilarityProfile[SignalT, SignalRuleT]:
        if not any(rule.weight > 0 for rule in self.signals.values()):
            raise ValueError("at least one signal needs a weight above 0")
        return self


class BackboneSimilarity(SimilarityProfile[SignalName, SignalRule]):
    early_shift_at: float = Field(ge=0, description="bn_shift_early above this -> input-level shift")
    late_shift_at: float = Field(ge=0, description="bn_shift_late above this -> semantic shift")


ProfileT = TypeVar("ProfileT", bound=SimilarityProfile[Any, Any])


class SimilarityProfiles(_Strict, Generic[ProfileT]):
    """The similarity section of a rules file (image or text): the threshold and a profile per backbone, with an
    uncalibrated ``default`` for every other backbone."""

    threshold: float = Field(ge=0, le=1)
    score_when_no_signals: float = Field(ge=0, le=1)
    backbones: dict[str, ProfileT]
    shares: dict[str, str] = Field(
        default_factory=dict,
        description="backbone -> the profile it uses: one measured to label its signals as that profile labels "
                    "its own backbone's (the measurement in the rules file's comment)")

    @field_validator("backbones")
    @classmethod
    def _has_uncalibrated_default(cls, value: dict[str, ProfileT]) -> dict[str, ProfileT]:
        if DEFAULT_PROFILE not in value:
            raise ValueError(f"a '{DEFAULT_PROFILE}' profile is required (the fallback for other backbones)")
        if value[DEFAULT_PROFILE].calibrated:
            raise ValueError(f"the '{DEFAULT_PROFILE}' fallback profile cannot be calibrated = true")
        normalised = [normalise_backbone_name(name) for name in value]
        if len(set(normalised)) != len(normalised):
            raise ValueError("two backbone profiles differ only in case or '-' vs '_'")
        return value

    @model_validator(mode="after")
    def _shares_a_calibrated_profile(self) -> SimilarityProfiles[ProfileT]:
        for backbone, profile in self.shares.items():
            if profile not in self.backbones or profile == DEFAULT_PROFILE:
                raise ValueError(f"shares: {backbone} uses {profile!r}, which is not a backbone profile here")
            if normalise_backbone_name(backbone) in {normalise_backbone_name(name) for name in self.backbones}:
                raise ValueError(f"shares: {backbone} has a profile of its own")
        return self

    def profile_name_for(self, backbone_name: str) -> str:
        """The profile used for a backbone, most specific first: ``arch:WEIGHTS`` (signals depend on the
        weights they were measured with), then ``arch`` — each its own profile or the one it ``shares`` — else
        ``default``."""
        # A backbone's own profile and a shared one never have the same name (_shares_a_calibrated_profile).
        by_name = {**{normalise_backbone_name(name): profile for name, profile in self.shares.items()},
                   **{normalise_backbone_name(name): name for name in self.backbones}}
        for wanted in (backbone_name, backbone_name.split(":", 1)[0]):
            if (found := by_name.get(normalise_backbone_name(wanted))) is not None:
                return found
        return DEFAULT_PROFILE

    def profile_for(self, backbone_name: str) -> ProfileT:
        return self.backbones[self.profile_name_for(backbone_name)]

    def is_calibrated(self, backbone_name: str) -> bool:
        return self.profile_name_for(backbone_name) != DEFAULT_PROFILE and self.profile_for(
            backbone_name
        ).calibrated

    def threshold_for(self, backbone_name: str) -> float:
        own = self.profile_for(backbone_name).threshold
        return self.threshold if own is None else own


class SimilarityRules(SimilarityProfiles[BackboneSimilarity]):
    """The image rules' similarity section."""


# --------------------------------------------------------------------------- size and table


class SizeBands(_Strict):
    """Images per class (median, training split):
    few < few_below <= tiny < tiny_below <= small < small_below <= medium <= large_above < large.

    ``few_below = 0`` or ``tiny_below = 0`` (the defaults for files that do not name them) means there is
    no such band.
    """

    few_below: float = Field(default=0.0, ge=0)
    tiny_below: float = Field(default=0.0, ge=0)
    small_below: float = Field(gt=0)
    large_above: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> SizeBands:
        if self.small_below > self.large_above:
            raise ValueError("small_below must not exceed large_above")
        if self.tiny_below > self.small_below:
            raise ValueError("tiny_below must not exceed small_below")
        if self.few_below > (self.tiny_below or self.small_below):
            raise ValueError("few_below must not exceed tiny_below (or small_below without a tiny band)")
        return self

    @property
    def _upper_edges(self) -> dict[SizeBand, float]:
        return {"few": self.few_below, "tiny": self.tiny_below, "small": self.small_below,
                "medium": self.large_above}

    @property
    def bands(self) -> tuple[SizeBand, ...]:
        """The bands in use: a few or tiny band only when its upper edge is set (the large band is open)."""
        return tuple(b for b in SIZE_BANDS if self._upper_edges.get(b, math.inf) > 0)

    def edges(self) -> list[tuple[float, SizeBand, SizeBand]]:
        """(images per class at the edge, band below it, band above it) for every edge in use, ascending."""
        upper = self._upper_edges
        return [(float(upper[below]), below, above) for below, above in itertools.pairwise(self.bands)]

    def range_of(self, band: SizeBand) -> tuple[float | None, float | None]:
        """The band's (lower, upper) edge in images per class; None where it is open."""
        edges = self.edges()
        lower = next((e for e, _, above in edges if above == band), None)
        upper = next((e for e, below, _ in edges if below == band), None)
        return lower, upper

    def band_for(self, images_per_class: float) -> SizeBand:
        if images_per_class < self.few_below:
            return "few"
        if images_per_class < self.tiny_below:
            return "tiny"
        if images_per_class < self.small_below:
            return "small"
        if images_per_class > self.large_above:
            return "large"
        return "medium"


# A measured figure typed into prose ("2.3 pp", "94.6 %", "22 points"): the rules quote measurements only from
# their generated evidence tables, so that no figure drifts from the results file behind it.
_TYPED_FIGURE = re.compile(r"\d[\d.,]*\s*(?:pp\b|%|points?\b|pts\b)")


def _no_typed_figures(text: str) -> str:
    figure = _TYPED_FIGURE.search(text)
    if figure:
        raise ValueError(f"'{figure.group(0)}' is a measured figure typed by hand: the advice quotes measurements "
                         "from the rule's evidence table (generated by benchmarks/advice_quality.py), so say it in "
                         "words here and let the evidence give the number")
    return text


class AlternativeRule(_Strict):
    strategy: StrategyId
    reason: str = Field(min_length=1)
    when: SimilarityMatch = "any"

    @field_validator("reason")
    @classmethod
    def _reason_quotes_no_figures(cls, reason: str) -> str:
        return _no_typed_figures(reason)


EvidenceStrategy = TypeVar("EvidenceStrategy", bound=str)


class MeasuredEvidence(_Strict, Generic[EvidenceStrategy]):
    """What an advice-quality benchmark measured for a rule: its strategy against the best other one.

    One model for every modality, parametrised by its strategy ids (``CellEvidence`` for images,
    ``text_schema.TextCellEvidence`` for text): the fields, the words of :meth:`summary` and :meth:`gap_note`
    and what counts as separated are the same. Generated by the benchmark (``--report`` prints it as TOML,
    ``--write-evidence`` writes it into the rules file); a rule without it is the guide's, unmeasured, and the
    advice says so.
    """

    source: str = Field(min_length=1, description="the results file")
    cases: int = Field(ge=1, description="cases (dataset x level) measured in this cell")
    datasets: list[str] = Field(min_length=1)
    seeds: int = Field(ge=1, description="the fewest seeds any of those cases has")
    mean_regret_pp: float = Field(ge=0, description="seed-averaged regret of the rule's strategy")
    runner_up: EvidenceStrategy = Field(description="the best other strategy, seed- and case-averaged")
    margin_pp: float = Field(description="the rule's strategy minus the runner-up (negative: runner-up higher), "
                                         "each dataset counted once")
    se_pp: float = Field(ge=0, description="one standard error of that margin (tl_advise.rules.statistics)")
    held_out_folds: int = Field(0, ge=0, description="datasets left out in turn when choosing the cell's strategy "
                                                     "on the others (0: one dataset, nothing to hold out)")
    held_out_agree: int = Field(0, ge=0, description="folds in which the other datasets chose this strategy too")
    held_out_regret_pp: float | None = Field(
        None, description="mean regret, on each left-out dataset, of what the other datasets chose")
    gaps_pp: dict[EvidenceStrategy, float] = Field(
        default_factory=dict, description="the rule's strategy minus each other strategy measured in its cases "
                                          "(each dataset counted once): what the alternatives' reasons quote")
    judged_on: Literal["val", "test", "mixed"] = Field(
        "val", description="the split that judged the cases: test (held out from early stopping) or val")
    backbone: str | None = Field(
        None, description="the backbone every strategy trained (its profile key, e.g. mobilenet_v2:IMAGENET1K_V1); "
                          "None: the benchmark's own, [confidence].evidence_backbone")

    @property
    def trained_words(self) -> str:
        """`` training <backbone>`` for another backbone's evidence, else nothing: what "measured" is followed by."""
        return f" training {self.backbone}" if self.backbone else ""

    @property
    def judged_on_words(self) -> str:
        return {"test": "held-out test splits", "val": "validation splits",
                "mixed": "test or validation splits"}[self.judged_on]

    @property
    def seeds_words(self) -> str:
        """``1+ seed``, ``3+ seeds``: the fewest seeds any of the rule's cases had."""
        return "1+ seed" if self.seeds == 1 else f"{self.seeds}+ seeds"

    def summary(self, strategy: EvidenceStrategy) -> str:
        """The evidence in words, every figure from this table: what the rule's why ends with."""
        outcome = statistics.compare(self.margin_pp, self.se_pp)
        versus = {"ahead": "ahead of", "tie": "tied with", "behind": "behind"}[outcome]
        held = (f"; with each dataset left out in turn the others chose it in {self.held_out_agree} of "
                f"{self.held_out_folds} folds" if self.held_out_folds else "; one dataset: nothing to hold out")
        return (f"measured{self.trained_words} on {counted(self.cases, 'case')} from "
                f"{counted(len(self.datasets), 'dataset')} ({self.seeds_words}, judged on {self.judged_on_words}): "
                f"{strategy} {versus} the runner-up, {self.runner_up}, by {self.margin_pp:+z.1f} ± {self.se_pp:.1f} pp "
                "(each dataset counted once), mean regret "
                f"{self.mean_regret_pp:.1f} pp{held}")

    def gap_note(self, strategy: EvidenceStrategy, other: EvidenceStrategy) -> str | None:
        """How ``other`` fared against the rule's ``strategy`` in the rule's cases, or None if not measured."""
        gap = self.gaps_pp.get(other)
        if gap is None:
            return None
        return (f"{abs(gap):.1f} pp {'behind' if gap >= 0 else 'ahead of'} {strategy} over the rule's "
                f"{counted(self.cases, 'measured case')}")

    @property
    def beyond_noise(self) -> bool:
        """The rule's strategy beat the runner-up by more than the noise, on the cases it was chosen on."""
        return statistics.compare(self.margin_pp, self.se_pp) == "ahead"

    @property
    def held_out(self) -> bool:
        """Chosen again whichever dataset is left out: the choice does not rest on any one dataset."""
        return self.held_out_folds >= 2 and self.held_out_agree == self.held_out_folds

    @property
    def separated(self) -> bool:
        """Beyond noise and held out: the only evidence that counts as out of sample."""
        return self.beyond_noise and self.held_out


class CellEvidence(MeasuredEvidence[StrategyId]):
    """What benchmarks/advice_quality.py measured for an image rule (:class:`MeasuredEvidence`, image ids)."""

    strategy: StrategyId | None = Field(
        None, description="another backbone's own cell (backbone_evidence only): the strategy that backbone's cases "
                          "chose instead of the rule's, which the figures are for. The benchmark moves it only where "
                          "the rule's strategy trailed the runner-up beyond noise and no dataset left out chose it")


class MeasuredRule(_Strict):
    """A rule with benchmark evidence: the default backbone's, and other backbones' where measured."""

    evidence: CellEvidence | None = Field(default=None, description="absent: the guide's cell, not measured")
    backbone_evidence: dict[str, CellEvidence] = Field(
        default_factory=dict, description="the same rule measured training another backbone (advice_quality.py "
                                          "--for KEY), keyed by that backbone's profile key: an advice for it "
                                          "reads this instead of `evidence`")

    @field_validator("evidence")
    @classmethod
    def _the_rules_own(cls, evidence: CellEvidence | None) -> CellEvidence | None:
        if evidence is not None and evidence.strategy is not None:
            raise ValueError("strategy: only another backbone's evidence (backbone_evidence) moves a rule's strategy")
        return evidence

    @field_validator("backbone_evidence")
    @classmethod
    def _keyed(cls, evidence: dict[str, CellEvidence]) -> dict[str, CellEvidence]:
        """Each table names the backbone it is keyed by (filled in where the file leaves it out)."""
        for key, table in evidence.items():
            if table.backbone not in (None, key):
                raise ValueError(f"backbone_evidence.{key!r} says it trained {table.backbone!r}")
        return {key: table.model_copy(update={"backbone": key}) for key, table in evidence.items()}

    def evidence_for(self, backbone: str | None) -> CellEvidence | None:
        """The evidence an advice for ``backbone`` (a profile key) reads: that backbone's own where measured,
        else the benchmark backbone's."""
        return self.backbone_evidence.get(backbone or "", self.evidence)

    def strategy_for(self, backbone: str | None, rule_strategy: StrategyId) -> StrategyId:
        """The strategy an advice for ``backbone`` gets: the one its own cases chose where they moved it, else
        the rule's."""
        own = self.backbone_evidence.get(backbone or "")
        return own.strategy if own is not None and own.strategy is not None else rule_strategy


class DecisionRow(MeasuredRule):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    size: SizeBand
    similarity: SimilarityMatch
    strategy: StrategyId
    why: str = Field(min_length=1, description="the reason in words; the evidence's figures are appended to it")

    @field_validator("why")
    @classmethod
    def _why_quotes_no_figures(cls, why: str) -> str:
        return _no_typed_figures(why)
    alternatives: list[AlternativeRule] = Field(default_factory=list)

    def matches(self, band: SizeBand, label: SimilarityLabel) -> bool:
        return self.size == band and self.similarity in (label, "any")

    @model_validator(mode="after")
    def _alternatives_are_other_strategies(self) -> DecisionRow:
        seen: set[str] = set()
        for alt in self.alternatives:
            if alt.strategy == self.strategy:
                raise ValueError(f"alternative {alt.strategy!r} is the row's own strategy")
            if alt.strategy in seen:
                raise ValueError(f"alternative {alt.strategy!r} is listed twice")
            seen.add(alt.strategy)
        return self


def _check_table_coverage(rows: list[DecisionRow], bands: tuple[SizeBand, ...]) -> None:
    """Every (size band x similarity label) cell is matched by exactly one row."""
    ids = [row.id for row in rows]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"duplicate row id(s): {', '.join(duplicated)}")
    problems = []
    unused = sorted({row.id for row in rows if row.size not in bands})
    if unused:
        problems.append(f"row(s) {', '.join(unused)} use a size band this file does not define "
                        "(set size_bands.few_below or tiny_below)")
    for band in bands:
        for label in SIMILARITY_LABELS:
            matching = [row.id for row in rows if row.matches(band, label)]
            if not matching:
                problems.append(f"cell (size={band}, similarity={label}) is not covered by any row")
            elif len(matching) > 1:
                problems.append(f"cell (size={band}, similarity={label}) is covered by {len(matching)} rows: "
                                f"{', '.join(matching)}")
    if problems:
        raise ValueError("; ".join(problems))


# --------------------------------------------------------------------------- learning rates, strategies


class BackboneFactor(_Strict):
    """Backbone LR = head LR x factor; the guide puts fine-tuning 10-100x below the head's LR."""

    similar: float = Field(gt=0, le=1)
    different: float = Field(gt=0, le=1)

    def for_label(self, label: SimilarityLabel) -> float:
        return self.similar if label == "similar" else self.different


class LearningRateRules(_Strict):
    backbone_factor: BackboneFactor


class StrategyRule(_Strict):
    title: str = Field(min_length=1)
    pretrained: bool = True
    unfreeze_top_fraction: float = Field(ge=0, le=1)
    unfreeze_min_stages: int = Field(ge=0)
    head_lr: float = Field(gt=0)
    backbone_lr_factor: float | None = Field(
        default=None, gt=0, le=1, description="overrides [learning_rate.backbone_factor]"
    )
    discriminative: bool
    discriminative_decay: float = Field(default=0.5, gt=0, le=1)
    discriminative_floor: float = Field(default=0.1, gt=0, le=1)
    optimizer: Literal["adam", "adamw", "sgd"]
    weight_decay: float = Field(ge=0)
    batchnorm: BatchNormMode = Field(description=BATCHNORM_HELP)
    head_epochs: int = Field(ge=0)
    finetune_epochs: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    augmentation: Augmentation = Field(default_factory=Augmentation, description="every default is off")
    regularization: Regularization = Field(default_factory=Regularization)
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule)
    gpu_advised: bool

    @property
    def trains_backbone(self) -> bool:
        return self.unfreeze_top_fraction > 0 or self.unfreeze_min_stages > 0

    @model_validator(mode="after")
    def _epochs_match_what_trains(self) -> StrategyRule:
        if self.trains_backbone and self.finetune_epochs == 0:
            raise ValueError("a strategy that unfreezes stages needs finetune_epochs > 0")
        if not self.trains_backbone and self.finetune_epochs > 0:
            raise ValueError("finetune_epochs must be 0 when no stage is unfrozen")
        if not self.trains_backbone and self.head_epochs == 0:
            raise ValueError("head_epochs must be > 0 when the backbone stays frozen")
        if not self.pretrained and (self.unfreeze_top_fraction < 1 or self.head_epochs > 0):
            raise ValueError("pretrained = false trains every stage from the start: "
                             "unfreeze_top_fraction = 1.0 and head_epochs = 0")
        if not self.pretrained and self.batchnorm == "inference":
            raise ValueError('pretrained = false needs batchnorm = "train": a random backbone has no '
                             "statistics to keep")
        return self

    @model_validator(mode="after")
    def _recipe_fits_what_trains(self) -> StrategyRule:
        """Refuse what the runners cannot do rather than skip it: a frozen backbone's head trains on features
        embedded once, so it has no images to augment, no blocks to drop and no fine-tuning to warm up."""
        if not self.trains_backbone:
            frozen = "the backbone stays frozen, so the head trains on features embedded once"
            if self.augmentation != Augmentation():
                raise ValueError(f"augmentation: {frozen} and no image is augmented; remove the augmentation "
                                 "table (or unfreeze stages)")
            if self.regularization.drop_path_rate > 0:
                raise ValueError(f"regularization.drop_path_rate: {frozen}; stochastic depth needs a backbone "
                                 "that trains")
            if self.lr_schedule.warmup_epochs > 0:
                raise ValueError(f"lr_schedule.warmup_epochs: {frozen}; warm-up applies to the phase that trains "
                                 "the backbone")
        if self.lr_schedule.warmup_epochs >= max(self.finetune_epochs, 1) and self.lr_schedule.warmup_epochs:
            raise ValueError(f"lr_schedule.warmup_epochs ({self.lr_schedule.warmup_epochs}) must be below "
                             f"finetune_epochs ({self.finetune_epochs}): cosine decay follows the warm-up")
        return self


# --------------------------------------------------------------------------- layers, batch


class LayerRules(_Strict):
    """Surgical refinement: on an input-level shift also unfreeze the first stages."""

    enabled: bool
    input_shift_levels: list[ShiftLevel]
    add_first_stages: int = Field(ge=0)
    first_stage_lr_factor: float = Field(gt=0, le=1, description="x the backbone LR")
    why: str = Field(min_length=1)


class BatchRules(_Strict):
    min_batches_per_epoch: int = Field(ge=1)


# --------------------------------------------------------------------------- warnings


R = TypeVar("R", bound=WarningRule)


class _WarningTables(_Strict):
    """One table per registered warning (tl_advise.rules.warnings), defaulting to its class's values;
    an unknown id is rejected (extra = forbid)."""

    def items(self) -> list[tuple[str, WarningRule]]:
        """(id, rule) in registration order."""
        return [(name, getattr(self, name)) for name in type(self).model_fields]

    def get(self, cls: type[R]) -> R:
        rule = getattr(self, cls.id)
        assert isinstance(rule, cls)  # each id's field has its own class
        return rule


# A model built from the registry, so a warning is declared once; type checkers see the base's methods.
if TYPE_CHECKING:
    WarningRules = _WarningTables
else:
    WarningRules = create_model("WarningRules", __base__=_WarningTables, __doc__=_WarningTables.__doc__,
                                **{warning_id: (cls, cls()) for warning_id, cls in WARNINGS.items()})


class PixelBaselineRule(MeasuredRule):
    """What to advise when raw pixels do as well as frozen features (the warning
    ``frozen_features_no_better_than_pixels`` fired): in ``bands``, where it was measured, this rule's
    strategy replaces the table's; elsewhere the table stands with the pixel bar and low confidence."""

    enabled: bool = True
    id: str = Field(default="pixel-baseline", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    bands: list[SizeBand]
    strategy: StrategyId
    why: str = Field(min_length=1)
    table_reason: str = Field(
        "the size band's own choice (rule {rule_id}) where frozen features carry the task better than raw pixels",
        min_length=1, description="the reason shown for the table's strategy, listed first among the alternatives "
                                  "when this rule replaces it; {rule_id} is the table's row")

    @field_validator("table_reason")
    @classmethod
    def _only_the_row_id(cls, template: str) -> str:
        unknown = template_fields(template) - {"rule_id"}
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join(sorted(unknown))}: only {{rule_id}} is filled in")
        return _no_typed_figures(template)

    @field_validator("why")
    @classmethod
    def _why_quotes_no_figures(cls, why: str) -> str:
        return _no_typed_figures(why)


class ConfidenceRules(_Strict):
    """How sure a recommendation is: the weakest of three measured margins."""

    similarity_margin_low: float = Field(ge=0, le=1, description="|score - threshold| below this: low")
    similarity_margin_high: float = Field(ge=0, le=1, description="at or above this: high (between: medium)")
    size_ratio_low: float = Field(gt=1, description="images per class within this factor of a band edge: low")
    size_ratio_high: float = Field(gt=1, description="at or beyond this factor: high (between: medium)")
    measured_from_per_class: float = Field(
        10, gt=0, description="the fewest images per class the advice-quality benchmark trained: below it nothing "
                              "measured speaks for the size, and the size margin is low")
    unmeasured: ConfidenceLevel = Field(description="the best a rule without benchmark evidence can be")
    tied: ConfidenceLevel = Field(description="the best a rule whose strategy tied its runner-up can be")
    in_sample: ConfidenceLevel = Field(
        "medium", description="the best a rule can be whose choice was not made again with each dataset left out: "
                              "its margin was measured on the cases it was chosen on")
    pixel_gain_se_low: float = Field(1.0, ge=0, description="the frozen features' gain over raw pixels within this "
                                     "many standard errors of the pixel-baseline rule's cut-off: low")
    pixel_gain_se_high: float = Field(2.0, ge=0, description="at or beyond this many: high (between: medium)")
    single_dataset: ConfidenceLevel = Field(
        "medium", description="the best a rule measured on one dataset only can be: nothing has judged it out of "
                              "sample (leave-one-dataset-out needs a second dataset in its cell)")
    evidence_backbone: str = Field(
        "efficientnet_lite0",
        description="the backbone the advice-quality benchmark trained: the rules' evidence is its")
    other_backbone: ConfidenceLevel = Field(
        "medium", description="the best a measured rule can be when the advice is for another backbone: the "
                              "evidence's margins are the benchmark backbone's")
    early_stopping_split: ConfidenceLevel = Field(
        "medium", description="the best a rule can be whose evidence was judged on the split that also chose each "
                              "run's best epoch (judged_on val or mixed): its figures are optimistic")

    @model_validator(mode="after")
    def _ordered(self) -> ConfidenceRules:
        if self.similarity_margin_low > self.similarity_margin_high:
            raise ValueError("similarity_margin_low must not exceed similarity_margin_high")
        if self.size_ratio_low > self.size_ratio_high:
            raise ValueError("size_ratio_low must not exceed size_ratio_high")
        return self


# --------------------------------------------------------------------------- whole file


class RankingScoreEvidence(_Strict):
    """One frozen-feature score against the fine-tuned accuracy: weighted Kendall τ per dataset, over the
    datasets where it was defined (three tied scores leave it undefined)."""

    datasets: int = Field(ge=0)
    tau_mean: float | None = Field(None, ge=-1, le=1)
    tau_sd: float | None = Field(None, ge=0)
    pairs: int | None = Field(None, ge=0, description="backbone pairs the datasets compare")
    separated_pairs: int | None = Field(None, ge=0, description="pairs whose fine-tuned accuracies differ "
                                                                 "beyond one s.e. on their judging split")
    ordered_right: int | None = Field(None, ge=0, description="separated pairs the score put in the same order")

    def separated_words(self) -> str:
        """How many pairs the measurement could tell apart, and how the score ordered those ('' if not recorded)."""
        if self.pairs is None or self.separated_pairs is None or self.ordered_right is None:
            return ""
        return (f"; fine-tuning separated only {self.separated_pairs} of the {self.pairs} backbone pairs beyond "
                f"noise, and the score ordered {self.ordered_right} of those right")


class RankingEvidence(_Strict):
    """What benchmarks/backbone_ranking.py measured (``--write-evidence``, never typed): on each dataset the
    candidates ranked by their frozen-feature scores, then each fine-tuned with the advice's strategy for it and
    judged on the test split."""

    source: str = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    per_class: int = Field(gt=0, description="train images per class of each dataset's level")
    seeds: int = Field(ge=1)
    backbones: list[str] = Field(min_length=2)
    scores: dict[ScoreName, RankingScoreEvidence]


class RankingRules(_Strict):
    """How far ``rank-backbones`` may trust its order: a score predicts fine-tuned accuracy when its measured
    weighted τ reaches ``predictive_tau``."""

    predictive_tau: float = Field(0.5, gt=0, le=1)
    evidence: RankingEvidence | None = None

    def note(self, score: ScoreName, label: str) -> str:
        """What the measurement says of ranking by ``score`` (``label``: its words), for the ranking's notes."""
        e = self.evidence
        measured = e.scores.get(score) if e is not None else None
        if e is None or measured is None or measured.tau_mean is None:
            return (f"whether {label} predicts fine-tuned accuracy has not been measured (benchmarks/"
                    "backbone_ranking.py): read the order as a shortlist")
        spread = f" ± {measured.tau_sd:.2f}" if measured.tau_sd is not None else ""
        where = (f"measured on {counted(measured.datasets, 'image set')} at {e.per_class} per class "
                 f"({counted(e.seeds, 'seed')}, "
                 f"{', '.join(e.backbones)} each fine-tuned with its advised strategy, {e.source})")
        if measured.tau_mean >= self.predictive_tau:
            return (f"{label} predicted the fine-tuned order: weighted Kendall τ {measured.tau_mean:+z.2f}{spread}, "
                    f"{where}{measured.separated_words()}")
        return (f"{label} did not reliably predict the fine-tuned order: weighted Kendall τ "
                f"{measured.tau_mean:+z.2f}{spread} against the {self.predictive_tau} a predictive score reaches, "
                f"{where}{measured.separated_words()}; read the order as a shortlist and, when the choice matters, "
                "train the top candidates (tl-advise DATA --for NAME --run)")


class RuleSet(_Strict):
    schema_version: Literal[1]
    similarity: SimilarityRules
    size_bands: SizeBands
    decision: list[DecisionRow] = Field(min_length=1)
    learning_rate: LearningRateRules
    strategies: dict[StrategyId, StrategyRule]
    layers: LayerRules
    batch: BatchRules
    warnings: WarningRules = Field(default_factory=WarningRules)
    pixel_baseline: PixelBaselineRule
    confidence: ConfidenceRules
    ranking: RankingRules = Field(default_factory=RankingRules)

    @model_validator(mode="after")
    def _table_covers_every_cell_once(self) -> RuleSet:
        _check_table_coverage(self.decision, self.size_bands.bands)
        return self

    @model_validator(mode="after")
    def _feature_extraction_stays_frozen(self) -> RuleSet:
        rule = self.strategies.get("feature_extraction")
        if rule is not None and rule.trains_backbone:
            raise ValueError("strategies.feature_extraction: its runner trains a head on features embedded once, "
                             "so unfreeze_top_fraction and unfreeze_min_stages must be 0 (the other strategies "
                             "unfreeze stages)")
        return self

    @model_validator(mode="after")
    def _every_referenced_strategy_is_defined(self) -> RuleSet:
        missing = []
        for i, row in enumerate(self.decision):
            refs = [(f"decision.{i}.strategy", row.strategy)] + [
                (f"decision.{i}.alternatives.{j}.strategy", alt.strategy)
                for j, alt in enumerate(row.alternatives)
            ]
            missing += [f"{where}: {sid!r} has no [strategies.{sid}] table"
                        for where, sid in refs if sid not in self.strategies]
        if self.pixel_baseline.strategy not in self.strategies:
            missing.append(f"pixel_baseline.strategy: {self.pixel_baseline.strategy!r} has no "
                           f"[strategies.{self.pixel_baseline.strategy}] table")
        if missing:
            raise ValueError("; ".join(missing))
        return self

    def row_for(self, band: SizeBand, label: SimilarityLabel) -> DecisionRow:
        return next(row for row in self.decision if row.matches(band, label))


# --------------------------------------------------------------------------- loading


def default_rules_text() -> str:
    return resources.files(_PACKAGE).joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and validate a rules file; ``None`` reads the packaged default.

    A file whose first key is ``extends = "default"`` is merged over the default (tables key by
    key, arrays replaced whole). Every problem raises ``RulesError`` naming the file and location.
    """
    if path is None:
        return rules_from_mapping(_parse_toml(default_rules_text(), DEFAULT_RULES_FILE), DEFAULT_RULES_FILE)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{file}: rules file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{file}: cannot read rules file: {exc}") from None
    return rules_from_mapping(_parse_toml(text, str(file)), str(file))


def rules_from_mapping(data: Mapping[str, Any], source: str = "<rules>") -> RuleSet:
    """Validate already-parsed rules (honouring ``extends``); ``source`` names them in errors."""
    merged = dict(data)
    extends = merged.pop("extends", None)
    if extends is not None:
        if extends != "default":
            raise RulesError(f"{source}: extends: only \"default\" can be extended, got {extends!r}")
        base = _parse_toml(default_rules_text(), DEFAULT_RULES_FILE)
        merged = _deep_merge(base, merged)
    try:
        return RuleSet.model_validate(merged)
    except ValidationError as exc:
        missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and len(e["loc"]) == 1]
        if extends is None and missing and all(e["type"] == "missing" for e in exc.errors()):  # a partial file
            raise RulesError(f"{source}: a rules file is either whole or an override of the default, and this one "
                             f"lacks {', '.join(missing)}: to change only some values, put extends = \"default\" "
                             "on its first line (tables then merge key by key over the default; "
                             "`tl-advise rules show --toml` prints the whole default)") from None
        raise RulesError(_format_validation_error(exc, source, merged)) from None


def dump_rules(rules: RuleSet) -> str:
    """The effective rules, readably (JSON), for ``tl-advise rules show``."""
    return rules.model_dump_json(indent=2)


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: TOML syntax error: {exc}") from None


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(exc: ValidationError, source: str, data: Mapping[str, Any]) -> str:
    lines = [f"{source}: {counted(len(exc.errors()), 'problem')} in the rules"]
    for error in exc.errors():
        where = _location(error["loc"], data)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] not in ("missing", "value_error", "model_type", "dict_type") and _is_scalar(
            error.get("input")
        ):
            message += f". Got {error['input']!r}"
        lines.append(f"{source}: {where}{message}")
    return "\n".join(lines)


def _location(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``decision.2.strategy`` plus the row id when there is one, so it can be found in the file."""
    if not loc:
        return ""
    where = ".".join(str(part) for part in loc)
    if len(loc) >= 2 and loc[0] == "decision" and isinstance(loc[1], int):
        rows = data.get("decision")
        if isinstance(rows, list) and loc[1] < len(rows) and isinstance(rows[loc[1]], Mapping):
            row_id = rows[loc[1]].get("id")
            if row_id:
                where += f" (row id {row_id!r})"
    return where + ": "


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, bool)) and not (isinstance(value, float) and math.isnan(value))
