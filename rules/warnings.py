"""Dataset and advice warnings, each defined in one place: its thresholds, message template and condition.

A warning is a class registered under its id (``@register("class_imbalance")``, as timm registers models
and cleanvision its issue managers). Its pydantic fields are the thresholds, with their defaults, and
``enabled``/``message``; a rules file may override any of them in a ``[warnings.<id>]`` table. Its
``check`` method is the condition: it returns the measured fields the message uses, or None.
Messages are ``str.format`` templates over the thresholds and the measured fields the class lists.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tl_advise.schema.formatting import counted
from tl_advise.schema.models import AdviceWarning, BackboneInfo, DatasetSummary, SimilarityReport, StrategyId

if TYPE_CHECKING:
    from tl_advise.rules.schema import RuleSet, StrategyRule

Fields = dict[str, Any]


@dataclass(frozen=True)
class AdviceContext:
    """Everything a warning's condition may look at."""

    rules: RuleSet
    dataset: DatasetSummary
    similarity: SimilarityReport
    backbone: BackboneInfo
    strategy_id: StrategyId
    strategy: StrategyRule
    unfreeze: list[str]


def template_fields(template: str) -> set[str]:
    """Top-level names a str.format template uses (``{a.b[0]:.2f}`` -> ``a``)."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ValueError("message placeholders must be named, e.g. {ratio}")
        names.add(field.split(".")[0].split("[")[0])
    return names


class WarningRule(BaseModel):
    """One warning: ``enabled``, the thresholds (subclass fields) and the message; ``check`` is the condition."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: ClassVar[str]
    # Fields ``check`` supplies besides the thresholds: the only other names the message may use.
    measured_fields: ClassVar[frozenset[str]] = frozenset()

    enabled: bool = True
    message: str = Field(min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        raise NotImplementedError

    def thresholds(self) -> dict[str, Any]:
        return self.model_dump(exclude={"enabled", "message"})

    def render(self, fields: Fields) -> str:
        return self.message.format(**{**self.thresholds(), **fields})

    @model_validator(mode="after")
    def _message_uses_known_fields(self) -> WarningRule:
        allowed = set(self.measured_fields) | set(self.thresholds())
        unknown = template_fields(self.message) - allowed
        if unknown:
            raise ValueError(f"message uses unknown field(s) {sorted(unknown)}; available: {sorted(allowed)}")
        return self


REGISTRY: dict[str, type[WarningRule]] = {}
W = TypeVar("W", bound=type[WarningRule])


def register(warning_id: str) -> Callable[[W], W]:
    """Class decorator: the warning under ``warning_id``, checked in registration order."""

    def add(cls: W) -> W:
        if warning_id in REGISTRY:
            raise ValueError(f"warning {warning_id!r} is registered twice")
        cls.id = warning_id
        REGISTRY[warning_id] = cls
        return cls

    return add


def evaluate_warnings(ctx: AdviceContext) -> list[AdviceWarning]:
    """Every enabled warning whose condition holds, with its rendered message."""
    warnings = []
    for warning_id, rule in ctx.rules.warnings.items():
        fields = rule.check(ctx) if rule.enabled else None
        if fields is not None:
            warnings.append(AdviceWarning(id=warning_id, message=rule.render(fields)))
    return warnings


def _train_class_counts(dataset: DatasetSummary) -> dict[str, int]:
    return dataset.split_counts.get(dataset.train_split) or dataset.class_counts


def _duplicate_fields(groups: list[Any]) -> Fields:
    return {"n_groups": len(groups), "groups": counted(len(groups), "group"),
            "n_files": sum(len(g.paths) for g in groups),
            "example": " = ".join(groups[0].paths[:2])}


@register("few_images_for_finetuning")
class FewImagesWarning(WarningRule):
    # [guide] mistake 3: below about 500 images per class fine-tuning overfits badly; silent for the
    # strategy the decision table picks at this size from measured evidence.
    measured_fields = frozenset({"images_per_class", "strategy", "n_stages", "stages"})
    below_images_per_class: float = Field(500, gt=0)
    message: str = Field(
        "only {images_per_class:.0f} images per class (median) while {strategy} trains {stages}: below about "
        "{below_images_per_class:.0f} per class fine-tuning overfits badly; use strong augmentation and early "
        "stopping, or feature extraction only", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        ipc = ctx.dataset.images_per_class
        if not ctx.unfreeze or ipc >= self.below_images_per_class:
            return None
        # Where the benchmark measured the table's strategy at this size, that evidence outranks the guide's
        # rule of thumb; the warning stays for every other fine-tuning strategy trained here.
        row = ctx.rules.row_for(ctx.rules.size_bands.band_for(ipc), ctx.similarity.label)
        key = ctx.backbone.profile_key  # the advised backbone's own cell and evidence, where it has them
        if row.strategy_for(key, row.strategy) == ctx.strategy_id and row.evidence_for(key) is not None:
            return None
        return {"images_per_class": ipc, "strategy": ctx.strategy_id, "n_stages": len(ctx.unfreeze),
                "stages": counted(len(ctx.unfreeze), "backbone stage")}


@register("class_imbalance")
class ClassImbalanceWarning(WarningRule):
    measured_fields = frozenset({"ratio", "largest_class", "largest", "smallest_class", "smallest"})
    max_ratio: float = Field(3.0, ge=1)
    message: str = Field(
        "classes are imbalanced: '{largest_class}' has {largest} training images, '{smallest_class}' "
        "{smallest} ({ratio:.1f}x, above {max_ratio:g}x); use a class-weighted loss or a balanced sampler and "
        "report balanced accuracy", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        if ctx.dataset.imbalance_ratio <= self.max_ratio:
            return None
        counts = {c: n for c, n in _train_class_counts(ctx.dataset).items() if n}
        largest = max(counts, key=lambda c: counts[c]) if counts else "?"
        smallest = min(counts, key=lambda c: counts[c]) if counts else "?"
        return {"ratio": ctx.dataset.imbalance_ratio, "largest_class": largest, "largest": counts.get(largest, 0),
                "smallest_class": smallest, "smallest": counts.get(smallest, 0)}


@register("classes_without_training_images")
class ClassesWithoutTrainingImagesWarning(WarningRule):
    measured_fields = frozenset({"n_classes", "classes", "train_split", "count"})
    message: str = Field(
        "no image in the '{train_split}' split for {count} that the other splits have ({classes}): no strategy "
        "can learn a class it never saw, and those validation images count as errors; add training images or "
        "remove those classes from the other splits", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        missing = sorted(c for c, n in _train_class_counts(ctx.dataset).items() if n == 0)
        if not missing or ctx.dataset.train_split not in ctx.dataset.split_counts:
            return None
        shown = ", ".join(f"'{c}'" for c in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return {"n_classes": len(missing), "classes": shown, "train_split": ctx.dataset.train_split,
                "count": counted(len(missing), "class", "classes")}


@register("greyscale_input")
class GreyscaleWarning(WarningRule):
    # [guide] mistake 2: use the backbone's own (RGB) preprocessing.
    measured_fields = frozenset({"share", "n_grey", "n_images", "found_modes"})
    max_share: float = Field(0.5, ge=0, le=1)
    grey_modes: list[str] = Field(["1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"], min_length=1)
    message: str = Field(
        "{share:.0%} of the images are greyscale ({found_modes}); the backbone expects RGB: replicate the "
        "channel to 3 (convert('RGB')) and keep the backbone's own normalisation", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        modes = ctx.dataset.modes
        n_images = sum(modes.values())
        grey = {mode: n for mode, n in modes.items() if mode in self.grey_modes and n > 0}
        n_grey = sum(grey.values())
        if n_images == 0 or n_grey / n_images <= self.max_share:
            return None
        found = ", ".join(f"{mode}: {n}" for mode, n in sorted(grey.items()))
        return {"share": n_grey / n_images, "n_grey": n_grey, "n_images": n_images, "found_modes": found}


@register("tiny_images")
class TinyImagesWarning(WarningRule):
    measured_fields = frozenset({"median_side", "input_size", "upscale"})
    min_side_px: int = Field(64, ge=1)
    message: str = Field(
        "the median image is {median_side:.0f} px on its shorter side (below {min_side_px} px) while the "
        "backbone expects {input_size} px: images are upsampled about {upscale:.1f}x, which reads as an "
        "input-level shift; consider tuning the first stage or a backbone made for small inputs", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        size = ctx.dataset.image_size
        median_side = min(size.median_width, size.median_height)
        if median_side <= 0 or median_side >= self.min_side_px:
            return None
        input_size = ctx.backbone.preprocessing.input_size
        return {"median_side": median_side, "input_size": input_size, "upscale": input_size / median_side}


@register("duplicates_across_splits")
class CrossSplitDuplicatesWarning(WarningRule):
    measured_fields = frozenset({"n_groups", "groups", "n_files", "example"})
    message: str = Field(
        "{groups} of byte-identical images ({n_files} files) appear in more than one split, e.g. "
        "{example}: this leaks training data into evaluation and inflates scores; keep each in one split only",
        min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        groups = [g for g in ctx.dataset.duplicates if g.cross_split]
        return _duplicate_fields(groups) if groups else None


@register("duplicates_within_split")
class WithinSplitDuplicatesWarning(WarningRule):
    measured_fields = frozenset({"n_groups", "groups", "n_files", "example"})
    min_groups: int = Field(1, ge=1)
    message: str = Field(
        "{groups} of byte-identical images ({n_files} files) within a split, e.g. {example}: "
        "duplicates weight those images twice; remove the copies", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        # Copies under different labels are a label conflict (their own warning), not copies to remove.
        groups = [g for g in ctx.dataset.duplicates if not g.cross_split and not g.label_conflict]
        return _duplicate_fields(groups) if len(groups) >= self.min_groups else None


@register("label_conflict")
class LabelConflictWarning(WarningRule):
    # Byte-identical images filed under different classes: the same picture with two labels.
    measured_fields = frozenset({"n_groups", "groups", "n_files", "example"})
    message: str = Field(
        "{groups} of byte-identical images ({n_files} files) carry different labels, e.g. {example}: "
        "a label conflict; keep each image in its one right class", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        groups = [g for g in ctx.dataset.duplicates if g.label_conflict]
        if not groups:
            return None
        return {**_duplicate_fields(groups),
                "example": " = ".join(groups[0].paths[:2]) + f" (labelled {', '.join(groups[0].classes)})"}


@register("skipped_files")
class SkippedFilesWarning(WarningRule):
    measured_fields = frozenset({"n_files", "files", "example"})
    min_files: int = Field(1, ge=1)
    # "could not be read" was wrong for a manifest's URL rows and conflicting labels: the example says why
    message: str = Field("skipped {files}, e.g. {example}", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        skipped = ctx.dataset.skipped
        if len(skipped) < self.min_files:
            return None
        return {"n_files": len(skipped), "files": counted(len(skipped), "file"),
                "example": f"{skipped[0].path} ({skipped[0].reason})"}


@register("empty_classes")
class EmptyClassesWarning(WarningRule):
    measured_fields = frozenset({"n_folders", "class_folders", "folders"})
    message: str = Field("left out {class_folders} with no readable image: {folders}", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        folders = ctx.dataset.empty_class_folders
        if not folders:
            return None
        return {"n_folders": len(folders), "class_folders": counted(len(folders), "class folder"),
                "folders": ", ".join(folders)}


@register("uncalibrated_backbone")
class UncalibratedBackboneWarning(WarningRule):
    # [notes 7] the similarity thresholds are per backbone.
    measured_fields = frozenset({"backbone"})
    message: str = Field(
        "the similarity thresholds for '{backbone}' are not calibrated (placeholder numbers were used): treat "
        "the similar/different call as rough, or calibrate with benchmarks/advice_quality.py", min_length=1)

    def check(self, ctx: AdviceContext) -> Fields | None:
        name = ctx.backbone.profile_key
        if (ctx.backbone.calibrated and ctx.backbone.has_published_weights
                and ctx.rules.similarity.is_calibrated(name)):
            return None
        if not ctx.backbone.has_published_weights:
            name = f"{name} with the weights {ctx.backbone.weights}"
        return {"backbone": name}


@register("frozen_features_no_better_than_pixels")
class PixelsAsGoodWarning(WarningRule):
    # [notes 5] when raw pixels do as well as frozen features, frozen features will not carry the task.
    # The pixel-baseline rule ([pixel_baseline] in the rules file) acts on the same condition.
    measured_fields = frozenset({"logreg_gain", "logreg_accuracy", "pixel_logreg_accuracy"})
    max_logreg_gain: float = Field(0.02, ge=-1, le=1)
    message: str = Field(
        "logistic regression on raw 32x32 greyscale pixels ({pixel_logreg_accuracy:.2f}) does as well as on the "
        "frozen features ({logreg_accuracy:.2f}; gain {logreg_gain:+z.2f}, at most {max_logreg_gain:.2f}): the "
        "pretrained features carry little of this task, and {pixel_logreg_accuracy:.2f} is the bar any "
        "strategy must clear", min_length=1)

    def holds(self, logreg_gain: float | None) -> bool:
        """Frozen features gain at most ``max_logreg_gain`` over raw pixels."""
        return logreg_gain is not None and math.isfinite(logreg_gain) and logreg_gain <= self.max_logreg_gain

    def check(self, ctx: AdviceContext) -> Fields | None:
        sep = ctx.similarity.separability
        if sep is None or not self.holds(sep.logreg_gain):
            return None
        return {"logreg_gain": sep.logreg_gain, "logreg_accuracy": sep.logreg_accuracy,
                "pixel_logreg_accuracy": sep.pixel_logreg_accuracy}
