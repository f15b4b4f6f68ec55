"""Typed results: the one schema that every output format (text, JSON, Markdown) renders.

The JSON output is ``AdviceResult.model_dump_json()``; ``schema_version`` changes whenever a
field is renamed or removed (adding optional fields keeps it).
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal, NamedTuple, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "2.0"

StrategyId = Literal[
    "feature_extraction",
    "feature_extraction_top_layers",
    "finetune_last_layers",
    "finetune_more_layers",
    "full_finetune",
    "from_scratch",
]
STRATEGY_IDS: tuple[StrategyId, ...] = get_args(StrategyId)

SimilarityLabel = Literal["similar", "different"]
BatchNormMode = Literal["inference", "train"]
BATCHNORM_HELP = ("how the pretrained backbone's batch-norm layers run while it trains: 'inference' keeps "
                  "their ImageNet statistics in every stage, unfrozen ones too; 'train' re-estimates them "
                  "from the batches")


# Characters that cannot be written as they are: control characters (a newline in a file name would break a
# line-per-file list), line/paragraph separators, and lone surrogates (how Python spells file-name bytes that
# are not UTF-8; no encoder accepts them).
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` safe to print, write and serialise: file-name bytes that are not UTF-8 become ``\\xff``
    (as ``os.fsencode`` would give them back), control characters ``\\n``, ``\\x1b``, ``\\u2028``.
    Printable text is returned unchanged, so applying it twice changes nothing."""
    if text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        if unicodedata.category(char) not in _UNPRINTABLE_CATEGORIES:
            out.append(char)
        elif char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # surrogateescape: the original byte
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def _printable_values(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list | tuple):
        return type(value)(_printable_values(v) for v in value)
    if isinstance(value, dict):
        return {_printable_values(k): _printable_values(v) for k, v in value.items()}
    return value


class _Model(BaseModel):
    """Every result model: unknown fields refused, and every string in it printable (file and class names
    come from the file system and may hold any byte), so no output format can fail on one."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _printable_strings(cls, value: Any) -> Any:
        return _printable_values(value)


# --------------------------------------------------------------------------- dataset scan


class SkippedFile(_Model):
    path: str
    reason: str


class DuplicateGroup(_Model):
    """Files with byte-identical content. ``cross_split`` marks train/val/test leakage."""

    paths: list[str]
    splits: list[str]
    classes: list[str]
    cross_split: bool

    @property
    def label_conflict(self) -> bool:
        """The same image filed under more than one class: not a copy to remove, a label to fix."""
        return len(self.classes) > 1


class ImageSizeSummary(_Model):
    min_width: int
    min_height: int
    median_width: float
    median_height: float
    max_width: int
    max_height: int


AuditMode = Literal["sample", "all"]
AUDIT_MODES: tuple[AuditMode, ...] = get_args(AuditMode)


class HeaderAudit(_Model):
    """Which image headers the scan read. Listing, byte sizes and duplicate detection always cover every
    file; reading every header is what grows with a large dataset, so by default only a seeded share is."""

    mode: AuditMode = Field(description="'all': every header was read; 'sample': a seeded share plus the "
                                        "embedded sample (and every file whose extension is not an image's)")
    n_audited: int = Field(description="files whose header was read (unreadable ones included)")
    n_not_audited: int = Field(description="files counted as images from their name and size alone")
    n_unreadable: int = Field(description="files the header read found unreadable, truncated or not images")
    seed: int = Field(description="seed that drew the audit share")


class DatasetSummary(_Model):
    root: str
    layout: Literal["flat", "splits"]
    classes: list[str]
    n_images: int
    class_counts: dict[str, int] = Field(description="images per class over every split")
    split_counts: dict[str, dict[str, int]] = Field(
        description="split -> class -> images; a flat layout has the one split 'all'"
    )
    train_split: str = Field(description="the split whose counts drive the size axis of the decision table")
    images_per_class: float = Field(description="median images per class in the training split")
    min_images_per_class: int
    imbalance_ratio: float = Field(description="largest / smallest class in the training split")
    modes: dict[str, int] = Field(description="PIL image mode -> images whose header was read "
                                              "(L, RGB, RGBA, I;16, CMYK, ...)")
    image_size: ImageSizeSummary = Field(description="over the images whose header was read")
    duplicates: list[DuplicateGroup]
    skipped: list[SkippedFile] = Field(description="files left out, each with the reason")
    empty_class_folders: list[str] = Field(default_factory=list,
                                           description="classes left out (their folder or manifest): no readable "
                                                       "image in them")
    manifests: list[str] = Field(
        default_factory=list, description="the label manifest(s) the labels came from; empty for class folders"
    )
    audit: HeaderAudit | None = Field(default=None, description="how many image headers the scan read")
    train_cap: int | None = Field(
        default=None, description="--max-train-per-class: runs train at most this many images per class, so the "
                                  "size axis (images_per_class, min, imbalance) counts at most this many; "
                                  "class_counts and split_counts stay the dataset's own")


# --------------------------------------------------------------------------- backbone


class Preprocessing(_Model):
    input_size: int
    crop_pct: float
    interpolation: Literal["bicubic", "bilinear", "nearest"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_size(self) -> int:
        return round(self.input_size / self.crop_pct)


class BackboneInfo(_Model):
    name: str
    weights: str = Field(description="the resolved weights id, e.g. MobileNet_V2_Weights.IMAGENET1K_V1")
    source: Literal["embedded", "torchvision", "timm", "file", "random"]
    feature_dim: int
    preprocessing: Preprocessing
    stages: list[str] = Field(description="ordered groups of layers, input to head; the head is not a stage")
    has_batchnorm: bool
    calibrated: bool = Field(description="whether rules/ holds similarity thresholds measured for it")

    @property
    def has_published_weights(self) -> bool:
        """Weights that calibrations can be measured with (packaged or torchvision's); a user's checkpoint
        or random weights are never calibrated, whatever the architecture's profile says."""
        return self.source in ("embedded", "torchvision")

    @property
    def profile_key(self) -> str:
        """What the rules look its similarity profile up by: ``arch:WEIGHTS`` for a torchvision weights
        enum (``mobilenet_v2:IMAGENET1K_V1``), else the architecture name."""
        if self.source == "torchvision":
            return f"{self.name}:{self.weights.rsplit('.', 1)[-1]}"
        return self.name


# --------------------------------------------------------------------------- similarity


class BNLayerShift(_Model):
    layer: str
    depth: float = Field(description="position in the network, 0 = first BN layer, 1 = last")
    w2: float


class BNShift(_Model):
    """Normalised W2 distance of the target's BN-input statistics from the stored running statistics."""

    early: float
    middle: float
    late: float
    n_layers: int
    profile: list[BNLayerShift]


class HeadSignals(_Model):
    mean_max_prob: float
    mean_entropy: float = Field(description="entropy of the source-head softmax / log(n_classes), in [0, 1]")
    top_classes: list[tuple[str, float]] = Field(
        default_factory=list, description="the source classes predicted most often, with their share"
    )


class Separability(_Model):
    """How well frozen features separate the user's labels, against a raw-pixel baseline."""

    n_images: int
    n_folds: int
    chance: float
    knn_accuracy: float
    logreg_accuracy: float
    logme: float
    pixel_knn_accuracy: float
    pixel_logreg_accuracy: float
    pixel_logme: float
    knn_gain: float
    logreg_gain: float
    logme_gain: float


class SignalScore(_Model):
    """One signal's contribution to the combined score."""

    signal: str
    value: float
    score: float = Field(description="the value mapped onto [0, 1]; 1 = like the source domain")
    weight: float
    similar_at: float
    different_at: float


class SimilarityReport(_Model):
    score: float = Field(ge=0.0, le=1.0)
    label: SimilarityLabel
    threshold: float
    shift_level: Literal["none", "input", "semantic", "input_and_semantic", "unknown"]
    bn_shift: BNShift | None
    head: HeadSignals | None
    separability: Separability | None
    components: list[SignalScore]
    notes: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- recommendation


# --------------------------------------------------------------------------- the training recipe
# One typed field list: the rules file sets it ([strategies.<id>.augmentation] ...), the advice prints
# it (the lines come from ``recipe_lines``), the runners build it and the run record keeps it.


class _RecipeModel(_Model):
    # Frozen and finite: a rules file's typo or an inf is a validation error naming the key.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RandAugment(_RecipeModel):
    """torchvision's ``RandAugment(num_ops, magnitude)``."""

    ops: int = Field(ge=1, le=14, description="operations per image (torchvision has 14)")
    magnitude: int = Field(ge=0, le=30, description="0-30 (torchvision's 31 magnitude bins)")


class Augmentation(_RecipeModel):
    """Per-image transforms (torchvision's own) and batch mixing (``timm.data.Mixup``); every default is off."""

    crop_scale: tuple[float, float] | None = Field(
        default=None, description="RandomResizedCrop area range (min, max); none: resize and centre-crop")
    hflip: bool = Field(default=False, description="RandomHorizontalFlip (a flip can change the label of text)")
    vflip: bool = Field(default=False, description="RandomVerticalFlip")
    rotation_degrees: float = Field(default=0.0, ge=0, le=180, description="RandomRotation(±degrees)")
    color_jitter: float = Field(default=0.0, ge=0, le=1,
                                description="ColorJitter strength for brightness, contrast and saturation")
    rand_augment: RandAugment | None = None
    mixup_alpha: float = Field(default=0.0, ge=0, le=10, description="timm Mixup: Beta(alpha, alpha); 0 = off")
    cutmix_alpha: float = Field(default=0.0, ge=0, le=10, description="timm Mixup's CutMix: 0 = off")

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1. Got {list(value)}")
        return value

    @property
    def mixes_batches(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


class Regularization(_RecipeModel):
    dropout: float = Field(default=0.5, ge=0, lt=1, description="in the new head, before the classifier")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1,
                                  description="stochastic depth, set when the backbone is built; 0 = off")
    early_stopping: bool = Field(default=True, description="stop a phase when val loss stops improving")


class LRSchedule(_RecipeModel):
    kind: Literal["cosine"] = Field(default="cosine", description="cosine decay over each phase, per epoch")
    warmup_epochs: int = Field(default=0, ge=0,
                               description="linear warm-up at the start of the phase that trains the backbone")


class RecipeLines(NamedTuple):
    augmentation: list[str]
    regularization: list[str]
    lr_schedule: str


class _RecipeParts(Protocol):
    @property
    def augmentation(self) -> Augmentation: ...
    @property
    def regularization(self) -> Regularization: ...
    @property
    def lr_schedule(self) -> LRSchedule: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def batchnorm(self) -> BatchNormMode: ...


def _range(low: float, high: float) -> str:
    return "-".join(f"{x:g}" if f"{x:g}" != f"{x:.0f}" else f"{x:.1f}" for x in (low, high))


def recipe_lines(recipe: _RecipeParts) -> RecipeLines:
    """The human-readable recipe, generated from the typed fields (the advice and the run record alike)."""
    aug, reg, sched = recipe.augmentation, recipe.regularization, recipe.lr_schedule
    augmentation = []
    if aug.crop_scale is not None:
        augmentation.append(f"random resized crop (scale {_range(*aug.crop_scale)})")
    if aug.hflip:
        augmentation.append("horizontal flip")
    if aug.vflip:
        augmentation.append("vertical flip")
    if aug.rotation_degrees:
        augmentation.append(f"rotation (±{aug.rotation_degrees:g}°)")
    if aug.color_jitter:
        augmentation.append(f"colour jitter {aug.color_jitter:g}")
    if aug.rand_augment is not None:
        augmentation.append(f"RandAugment ({aug.rand_augment.ops} ops, magnitude {aug.rand_augment.magnitude})")
    if aug.mixup_alpha and aug.cutmix_alpha:
        augmentation.append(f"mixup / cutmix (alpha {aug.mixup_alpha:g} / {aug.cutmix_alpha:g}), one per batch")
    elif aug.mixup_alpha:
        augmentation.append(f"mixup (alpha {aug.mixup_alpha:g})")
    elif aug.cutmix_alpha:
        augmentation.append(f"cutmix (alpha {aug.cutmix_alpha:g})")
    regularization = []
    if reg.dropout:
        regularization.append(f"dropout {reg.dropout:g} before the classifier")
    if recipe.weight_decay:
        regularization.append(f"weight decay {recipe.weight_decay:g}")
    if reg.label_smoothing:
        regularization.append(f"label smoothing {reg.label_smoothing:g}")
    if reg.drop_path_rate:
        regularization.append(f"stochastic depth (drop path {reg.drop_path_rate:g})")
    regularization.append("backbone batch norm in inference mode, unfrozen stages too"
                          if recipe.batchnorm == "inference" else "batch norm statistics re-estimated from the batches")
    if reg.early_stopping:
        regularization.append("early stopping on validation loss")
    schedule = "cosine decay within each phase"
    if sched.warmup_epochs:
        schedule = f"linear warm-up for {sched.warmup_epochs} epoch(s) at the start of fine-tuning, then {schedule}"
    return RecipeLines(augmentation, regularization, schedule)


class LearningRates(_Model):
    head: float
    backbone: float | None = Field(description="None when the backbone stays frozen")
    per_stage: dict[str, float] = Field(
        default_factory=dict, description="discriminative rates, stage -> LR, when the rules ask for them"
    )


class Phase(_Model):
    name: str
    epochs: int
    trains: list[str] = Field(description="'head' and/or stage names")
    learning_rate: float


class AdviceWarning(_Model):
    id: str
    message: str


class Alternative(_Model):
    strategy: StrategyId
    rule_id: str
    reason: str


ConfidenceLevel = Literal["high", "medium", "low"]


class Confidence(_Model):
    """How sure the recommendation is, and why: each reason is one measured input."""

    level: ConfidenceLevel
    reasons: list[str] = Field(description="one line per input: similarity margin, size margin, evidence")
    runner_up: StrategyId | None = Field(description="the strategy to compare with when unsure")
    suggestion: str | None = Field(default=None, description="what to do about low confidence")


class PixelBaseline(_Model):
    """The bar any strategy must clear: a linear model on raw 32x32 greyscale pixels."""

    accuracy: float = Field(description="5-fold CV accuracy of logistic regression on raw pixels (the sample)")
    features_accuracy: float = Field(description="the same model on the frozen backbone's features")
    beats_features: bool = Field(description="raw pixels do as well as frozen features (the rule's gain bar)")


class Recommendation(_Model):
    strategy: StrategyId
    title: str = Field(default="", description="the strategy's title in the rules (empty in reports before 0.2)")
    rule_id: str
    confidence: Confidence
    pixel_baseline: PixelBaseline | None = Field(default=None, description="the raw-pixel bar, when measured")
    why: list[str]
    unfreeze: list[str] = Field(description="stage names of the chosen backbone to train in phase 2")
    unfreeze_summary: str
    learning_rate: LearningRates
    optimizer: str
    weight_decay: float
    batchnorm: BatchNormMode = Field(description=BATCHNORM_HELP)
    schedule: list[Phase]
    batch_size: int
    augmentation: Augmentation
    regularization: Regularization
    lr_schedule: LRSchedule
    gpu_advised: bool
    warnings: list[AdviceWarning]
    alternatives: list[Alternative]


# --------------------------------------------------------------------------- whole result


class SampleInfo(_Model):
    n_images: int
    per_class_cap: int | None
    total_cap: int | None
    seed: int
    engine: str | None = Field(default=None, description="what ran the forward pass (torch, onnxruntime); "
                               "None in reports from before there were two")
    cache_hits: int
    forward_passes: int


class AdviceResult(_Model):
    schema_version: str = SCHEMA_VERSION
    tool_version: str
    device: str
    dataset: DatasetSummary
    backbone: BackboneInfo
    sample: SampleInfo
    similarity: SimilarityReport
    recommendation: Recommendation
    timings: dict[str, float] = Field(description="seconds per step: scan, embed, similarity, rules, total")
    run: RunReport | None = Field(default=None, description="what `--run` trained and measured")
    probe: BackboneInfo | None = Field(
        default=None, description="with --for: the backbone that measured the similarity; `backbone` is then the "
                                  "target the recipe is mapped onto (and --run trains)")


# --------------------------------------------------------------------------- run results
# What `tl-advise --run` trained and measured: defined after AdviceResult, which refers to RunReport
# by name (postponed annotations) and is rebuilt below.

RunStatus = Literal["completed", "stopped_by_budget", "failed"]
VerdictStatus = Literal["confirmed", "refuted", "not_compared"]


class Metrics(_Model):
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    per_class_accuracy: dict[str, float]
    confusion_matrix: list[list[int]] = Field(description="rows = true class, columns = predicted")
    n_images: int
    loss: float = Field(description="mean cross-entropy (no label smoothing)")
    correct: str | None = Field(
        default=None, description="one character per evaluated image, in the split's order: '1' right, '0' wrong. "
        "Two strategies evaluated on the same split are compared image by image (tl_advise.rules.statistics)")


class EpochLog(_Model):
    phase: str
    epoch: int = Field(description="1-based, counted over the whole run")
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float


class TrainingRecipe(_Model):
    """What one strategy trains with: the rules' recipe for this dataset and backbone after the run options'
    overrides and budget. The runners train from it and the run record (``RunSettings``) is it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategyId
    pretrained: bool
    unfreeze: list[str]
    head_lr: float
    backbone_lr: float | None
    per_stage_lr: dict[str, float]
    optimizer: str
    weight_decay: float
    batchnorm: BatchNormMode
    head_epochs: int
    finetune_epochs: int
    batch_size: int
    image_size: int
    augmentation: Augmentation
    regularization: Regularization
    lr_schedule: LRSchedule

    @property
    def trains_backbone(self) -> bool:
        return bool(self.unfreeze) or not self.pretrained

    def stage_lr(self, stage: str) -> float:
        return self.per_stage_lr.get(stage, self.backbone_lr if self.backbone_lr is not None else self.head_lr)


class RunSettings(TrainingRecipe):
    """The recipe a strategy was trained with, and what the runner built from it."""

    train_transform: list[str] = Field(
        description="the per-image training transforms as built, in order; empty when the head trains on features")
    n_train: int
    n_val: int
    world_size: int = Field(default=1, description="processes that trained it (torchrun / --nproc-per-node)")
    batch_size_per_rank: int | None = Field(default=None, description="images per process per step")
    effective_batch_size: int | None = Field(
        default=None, description="images per optimizer step over all processes (per-rank batch × world size)")
    lr_scaling: str = Field(default="none", description="how the learning rates follow the effective batch")


class StrategyRun(_Model):
    strategy: StrategyId
    status: RunStatus
    error: str | None = None
    settings: RunSettings | None = None
    epochs_run: int = 0
    best_epoch: int | None = None
    val: Metrics | None = None
    test: Metrics | None = None
    train_time_s: float = 0.0
    images_per_s: float = 0.0
    checkpoint: str | None = Field(default=None, description="the best model, relative to the output dir")
    curves: list[EpochLog] = Field(default_factory=list)


class Verdict(_Model):
    status: VerdictStatus
    recommended: StrategyId
    best: StrategyId | None
    margin: float = Field(description="a gap up to this much accuracy still counts as confirmed")
    margin_rule: str = Field(default="fixed (--margin)", description="how the margin was set")
    gap: float | None = Field(description="best accuracy minus the recommended strategy's, on the judging split")
    message: str
    judged_on: Literal["test", "val"] = Field(
        default="val", description="the split that judged: test when every strategy has one, else the validation "
        "split that also chose each strategy's best epoch")
    n_judged: int | None = Field(default=None, description="images in the judging split")
    se: float | None = Field(default=None, description="one standard error of the gap (paired image by image where "
                             "per-image results exist); 'auto' margins are this")
    p_value: float | None = Field(default=None, description="exact McNemar p-value of the gap (paired results)")
    pixel_baseline: float | None = Field(
        default=None, description="the raw-pixel baseline's accuracy (5-fold CV on the advice sample), a reference")
    beat_pixel_baseline: bool | None = Field(default=None, description="did any strategy beat that baseline?")


class RunReport(_Model):
    output_dir: str
    device: str
    validation: str = Field(description="how the validation set was made")
    budget: dict[str, float | int | bool | str | None]
    runs: list[StrategyRun]
    verdict: Verdict
    files: dict[str, str] = Field(description="what was written, relative to the output dir")


# --------------------------------------------------------------------------- the cache folder


class CacheGroup(_Model):
    """The entries of one kind in one format version of the cache folder (``<folder>/v<version>/<kind>/``)."""

    version: int
    kind: str = Field(description="embeddings, bnstats, measurements, graphs …")
    entries: int = Field(description="distinct keys (an exported graph is three files under one key)")
    bytes: int
    current: bool = Field(description="whether this tl-advise reads this format; older ones are never read")


class CacheUsage(_Model):
    folder: str
    groups: list[CacheGroup] = Field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(g.bytes for g in self.groups)


AdviceResult.model_rebuild()
