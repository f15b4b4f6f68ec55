"""Typed results of the text modality: what a text dataset holds (its scan) and how far it sits from a text
backbone's source domain (its similarity signals).

Like every result model (``schema.models``) these refuse unknown fields and keep every string printable;
the texts themselves never live here (they are the advisor's ``TextDataset``), only counts, shares and a
few short, escaped examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from tl_advise.schema.models import AdviceWarning, EpochLog, Metrics, RunStatus, SkippedFile, VerdictStatus, _Model

TextSourceKind = Literal["manifest", "split_files", "class_folders"]
LengthUnit = Literal["tokens", "words"]
TextBackboneSource = Literal["embedded", "huggingface", "folder"]
TEXT_SCHEMA_VERSION = "text-1.0"


# --------------------------------------------------------------------------- input


class TextSource(_Model):
    """Where a text dataset's rows came from and which columns were read."""

    kind: TextSourceKind = Field(description="'manifest': one table; 'split_files': train/validation/test "
                                             "tables in a folder (the Hugging Face layout); 'class_folders': "
                                             "root/[split/]<class>/<file>.txt (scikit-learn's load_files)")
    root: str = Field(description="the file or folder given")
    files: list[str] = Field(description="the tables read (empty for class folders)")
    text_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None
    encoding: str = Field(default="utf-8", description="how the bytes were decoded")


# --------------------------------------------------------------------------- scan


class TextDatasetSummary(_Model):
    n_texts: int
    classes: list[str]
    class_counts: dict[str, int] = Field(description="texts per class over every split")
    split_counts: dict[str, dict[str, int]] = Field(description="split -> class -> texts; one split 'all' "
                                                                "when the input names none")
    train_split: str = Field(description="the split whose counts drive the size axis")
    texts_per_class: float = Field(description="median texts per class in the training split")
    min_texts_per_class: int
    imbalance_ratio: float = Field(description="largest / smallest class in the training split")
    train_cap: int | None = Field(
        default=None, description="--max-train-per-class: runs train at most this many texts per class, so the "
                                  "size axis (texts_per_class, min, imbalance) counts at most this many")


class LengthSummary(_Model):
    """Text lengths, in the backbone tokenizer's tokens (special tokens included, as the model sees them) or,
    without a tokenizer, in whitespace-separated words."""

    unit: LengthUnit
    tokenizer: str | None = Field(default=None, description="the backbone whose tokenizer counted them")
    mean: float
    median: float
    p95: float
    max: int
    max_length: int | None = Field(default=None, description="the longest input the backbone takes, in tokens")
    n_over_max: int = Field(default=0, description="texts the backbone would truncate")
    share_over_max: float = 0.0


class DuplicateTexts(_Model):
    """One text (compared after trimming and collapsing whitespace) found more than once."""

    text: str = Field(description="the text, shortened for display")
    count: int
    splits: list[str]
    classes: list[str]
    cross_split: bool = Field(description="in more than one split: train/test leakage")

    @property
    def label_conflict(self) -> bool:
        return len(self.classes) > 1


class ScriptSummary(_Model):
    """The writing systems of the letters (Unicode script from the character name: LATIN, CYRILLIC, CJK, …)."""

    n_letters: int
    shares: dict[str, float] = Field(description="script -> share of the letters, largest first (top 5)")
    non_latin_share: float


class TextFinding(_Model):
    """A data problem worth hearing about: never fatal, counted, with a few examples and the fix."""

    code: Literal["empty", "duplicates", "duplicate_conflict", "cross_split_duplicates", "too_long",
                  "undecodable", "control_characters", "non_latin_script", "skipped", "imbalance", "few_texts",
                  "classes_without_training_texts"]
    message: str
    count: int
    examples: list[str] = Field(default_factory=list, description="where (file and line) or the text itself")


class TextScan(_Model):
    """What a text dataset holds, as the advice reads it."""

    source: TextSource
    summary: TextDatasetSummary
    lengths: LengthSummary
    n_empty: int
    n_undecodable: int = Field(description="texts holding bytes that are not valid UTF-8 (read as U+FFFD)")
    n_control: int = Field(description="texts holding control characters other than tab and newline")
    duplicates: list[DuplicateTexts] = Field(description="the largest groups first (at most 20)")
    n_duplicate_texts: int = Field(description="texts that repeat an earlier one")
    scripts: ScriptSummary
    findings: list[TextFinding]
    skipped: list[SkippedFile]
    seconds: float


# --------------------------------------------------------------------------- backbone


class TextBackboneInfo(_Model):
    name: str
    weights: str = Field(description="what the weights are: the package and file, a Hugging Face id, a folder")
    source: TextBackboneSource
    architecture: str = Field(description="the transformers model type, e.g. bert")
    hidden_size: int
    n_layers: int
    max_length: int = Field(description="texts are truncated to this many tokens")
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = Field(description="whether embeddings are L2-normalised after pooling")
    lowercase: bool | None = Field(default=None, description="whether the tokenizer lower-cases")
    calibrated: bool = Field(default=False, description="whether rules/ holds similarity thresholds measured "
                                                        "for it")


# --------------------------------------------------------------------------- similarity signals


class TokenizerStats(_Model):
    """How well the backbone's vocabulary covers the texts: unfamiliar words are split into many pieces."""

    n_texts: int
    n_words: int = Field(description="pre-tokenised words holding a letter or digit")
    fertility: float = Field(description="word pieces per word")
    split_share: float = Field(description="share of words split into two or more pieces")
    unk_rate: float = Field(description="share of word pieces that are the unknown token")
    chars_lost: float = Field(description="share of non-space characters the tokenizer's normalisation deletes "
                                          "(an uncased BERT strips combining marks)")
    chars_changed: float = Field(description="share of characters changed beyond lower-casing (accents stripped)")


class LayerShift(_Model):
    layer: int = Field(description="0 = the embedding layer, then one per transformer layer")
    w2: float = Field(description="per-dimension normalised W2 distance of token states from the reference, "
                                  "averaged over dimensions")


class HiddenStateShift(_Model):
    """Token hidden states per layer against reference moments from a general-English sample."""

    reference: str = Field(description="what the reference moments were computed from")
    early: float
    middle: float
    late: float
    profile: list[LayerShift]
    centroid_cosine: float = Field(description="cosine between the mean sentence embedding and the reference's")
    n_tokens: int


class TextSeparability(_Model):
    """Frozen embeddings against the TF-IDF bar: a linear model on word and bigram TF-IDF (any strategy must
    clear it)."""

    n_texts: int
    n_folds: int
    chance: float
    logreg_accuracy: float
    knn_accuracy: float
    logme: float
    tfidf_accuracy: float
    logreg_gain: float = Field(description="logreg_accuracy - tfidf_accuracy")
    knn_gain: float = Field(description="knn_accuracy - tfidf_accuracy")


class TextSimilaritySignals(_Model):
    """Every candidate signal of a text sample's distance from the backbone's source domain, raw (the rules
    will turn them into a score once they are calibrated)."""

    backbone: str
    n_texts: int
    seed: int
    tokenizer: TokenizerStats
    hidden: HiddenStateShift | None = Field(default=None, description="None without reference moments "
                                                                      "for this backbone")
    separability: TextSeparability | None = Field(default=None, description="None when a class has fewer "
                                                                            "than 2 texts in the sample")
    seconds: dict[str, float] = Field(default_factory=dict)


# --------------------------------------------------------------------------- advice
# The text advice (``advisor.text_api.advise_text``) and what ``--run`` trains for it
# (``runners.text.run_text_advice``). Text strategies are their own ids: they train other things than the
# image strategies (an encoder's transformer layers, or TF-IDF features) and never mix with them.

TextStrategyId = Literal["text_feature_extraction", "text_finetune_top", "text_full_finetune", "tfidf_linear"]
TEXT_STRATEGY_IDS: tuple[TextStrategyId, ...] = get_args(TextStrategyId)
TextSimilarityLabel = Literal["close", "far"]
TextStrategyKind = Literal["embedding_head", "encoder", "tfidf"]
TextSignalName = Literal["centroid_cosine", "knn_gain", "logreg_gain", "logreg_accuracy", "hidden_early_w2",
                         "hidden_middle_w2", "hidden_late_w2", "fertility", "split_share"]
TEXT_SIGNAL_NAMES: tuple[TextSignalName, ...] = get_args(TextSignalName)


class TextSignalScore(_Model):
    """One signal's raw value, its score on the rules' ramp (1 close, 0 far) and its vote."""

    name: TextSignalName
    value: float
    score: float = Field(description="1 at the ramp's close anchor, 0 at its far anchor, clipped to [0, 1]")
    weight: float = Field(description="its share of the vote (0: reported, not voting)")
    close_at: float
    far_at: float


class TextSimilarity(_Model):
    """How close the texts are to the backbone's source domain: the raw signals, each one's score, and the
    weighted score against the profile's threshold."""

    signals: TextSimilaritySignals
    scores: list[TextSignalScore]
    score: float = Field(description="weighted mean of the voting signals' scores, in [0, 1]")
    threshold: float
    label: TextSimilarityLabel
    profile: str = Field(description="the rules' profile that scored it ('default' for an unknown backbone)")
    calibrated: bool = Field(description="whether the profile's anchors were fitted against measured regret; "
                                         "false: set from a few datasets labelled close/far by a person")


class TfidfBar(_Model):
    """The bar every strategy must clear: word and bigram TF-IDF with a logistic regression, cross-validated
    on the advice sample, beside the same folds' logistic regression on the frozen embeddings."""

    accuracy: float
    embedding_accuracy: float
    gain: float = Field(description="embedding_accuracy - accuracy: what the frozen encoder adds")
    n_texts: int
    n_folds: int
    embeddings_clear_it: bool = Field(description="the frozen embeddings beat the bar by more than the rules' "
                                                  "min_gain")


class TextRecipe(_Model):
    """What one text strategy trains with, every number as it trains (the advice prints it, ``--run`` trains
    it, the run record is it). Layer groups are named ``embeddings``, ``layer.0`` … ``layer.{n-1}`` (the
    transformer layers, bottom to top) and ``head``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: TextStrategyId
    kind: TextStrategyKind = Field(description="'embedding_head': a head on cached frozen embeddings; 'encoder': "
                                               "the head first, then encoder layers; 'tfidf': TF-IDF + logistic "
                                               "regression, no encoder")
    max_length: int = Field(description="texts are truncated to this many tokens (special tokens included)")
    tuned_layers: list[str] = Field(description="encoder layer groups that train in the fine-tuning phase")
    frozen_layers: list[str] = Field(description="encoder layer groups that never train")
    head_lr: float | None = Field(description="the head's rate in the head phase (AdamW); None for tfidf")
    encoder_lr: float | None = Field(description="the top tuned layer's rate; None when the encoder is frozen")
    layer_decay: float | None = Field(description="layer-wise LR decay: each group below the top gets this "
                                                  "factor more (Sun et al. 2019)")
    per_group_lr: dict[str, float] = Field(default_factory=dict, description="fine-tuning phase: layer group -> LR "
                                           "(the head at the top layer's rate), exactly the optimizer's groups")
    warmup_share: float = Field(description="share of the fine-tuning steps with a linear warm-up, then linear "
                                            "decay to 0")
    weight_decay: float
    dropout: float = Field(description="before the head (and the encoder's own dropout while it trains)")
    head_epochs: int
    finetune_epochs: int
    batch_size: int
    patience: int | None = Field(description="epochs without a validation-loss improvement before a phase stops")
    optimizer: Literal["adamw"] = "adamw"
    tfidf_ngram_max: int | None = Field(default=None, description="tfidf: words up to n-grams of this length")
    tfidf_c: float | None = Field(default=None, description="tfidf: inverse L2 penalty of the logistic regression")

    @property
    def trains_encoder(self) -> bool:
        return bool(self.tuned_layers)


class TextPhase(_Model):
    name: Literal["head", "finetune", "fit"]
    epochs: int
    trains: list[str] = Field(description="'head' and/or layer groups; 'tfidf' for the TF-IDF model")
    learning_rate: float | None = Field(description="the top rate in this phase (None: a closed-form fit)")


class TextAlternative(_Model):
    strategy: TextStrategyId
    rule_id: str
    reason: str


class TextConfidence(_Model):
    level: Literal["high", "medium", "low"]
    reasons: list[str]
    weakest: str = Field(description="the margin that set the level")
    runner_up: TextStrategyId | None
    suggestion: str | None = None


class TextRecommendation(_Model):
    strategy: TextStrategyId
    title: str
    rule_id: str
    why: list[str]
    confidence: TextConfidence
    recipe: TextRecipe
    schedule: list[TextPhase]
    sources: list[str] = Field(description="where the recipe's numbers come from")
    tfidf_bar: TfidfBar | None = Field(description="the reference every strategy must clear")
    warnings: list[AdviceWarning]
    alternatives: list[TextAlternative]


class TextSampleInfo(_Model):
    n_texts: int
    seed: int
    cache_hits: int = 0


class TextAdviceResult(_Model):
    schema_version: str = TEXT_SCHEMA_VERSION
    modality: Literal["text"] = "text"
    tool_version: str
    device: str
    dataset: TextDatasetSummary
    source: TextSource
    lengths: LengthSummary
    findings: list[TextFinding] = Field(description="what the scan found in the data (never fatal)")
    backbone: TextBackboneInfo
    sample: TextSampleInfo
    similarity: TextSimilarity
    recommendation: TextRecommendation
    timings: dict[str, float]
    run: TextRunReport | None = None


# --------------------------------------------------------------------------- runs


class TextRunSettings(TextRecipe):
    """The recipe a strategy trained with, and what the runner built from it (read off the model and optimizer)."""

    n_train: int
    n_val: int
    trainable_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="phase -> the layer groups whose parameters had requires_grad")
    optimizer_groups: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="phase -> layer group -> peak LR, from the optimizer's param groups")


class TextStrategyRun(_Model):
    strategy: TextStrategyId
    status: RunStatus
    error: str | None = None
    settings: TextRunSettings | None = None
    epochs_run: int = 0
    best_epoch: int | None = None
    val: Metrics | None = None
    test: Metrics | None = None
    train_time_s: float = 0.0
    texts_per_s: float = 0.0
    checkpoint: str | None = None
    curves: list[EpochLog] = Field(default_factory=list)


class TextVerdict(_Model):
    """``runners.verdict.decide``'s judgement of text strategies, with the TF-IDF bar beside it."""

    status: VerdictStatus
    recommended: TextStrategyId
    best: TextStrategyId | None
    margin: float
    margin_rule: str
    gap: float | None
    message: str
    judged_on: Literal["test", "val"]
    n_judged: int | None = None
    se: float | None = None
    p_value: float | None = None
    tfidf_bar: float | None = Field(default=None, description="the TF-IDF model's accuracy on the judging split "
                                    "when it trained, else its cross-validated accuracy on the advice sample")
    beat_tfidf_bar: bool | None = None


class TextRunReport(_Model):
    output_dir: str
    device: str
    validation: str
    budget: dict[str, float | int | bool | str | None]
    runs: list[TextStrategyRun]
    verdict: TextVerdict
    files: dict[str, str]


class TextRunOptions(BaseModel):
    """What ``run_text_advice`` trains and under which budget; None means: as the recipe says."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    compare: bool = False
    strategies: list[TextStrategyId] | None = None
    max_epochs: int | None = Field(default=None, ge=1, description="caps each phase's epochs")
    max_finetune_epochs: int | None = Field(default=None, ge=1, description="caps the fine-tuning phase only (the "
                                            "head phases train on cached embeddings: cheap)")
    time_budget_s: float | None = Field(default=None, gt=0, description="per strategy")
    head_epochs: int | None = Field(default=None, ge=0)
    finetune_epochs: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=8)
    batch_size: int | None = Field(default=None, ge=2)
    # Rate overrides (the advice-quality benchmark's LR sweep); each applies to the strategies that have the
    # number and is ignored by the others, as max_length is by tfidf_linear.
    head_lr: float | None = Field(default=None, gt=0, description="the head phase's LR (every strategy with a head)")
    encoder_lr: float | None = Field(default=None, gt=0, description="the top tuned layer's LR in the fine-tuning "
                                     "phase; the layers below keep the recipe's layer-wise decay")
    tfidf_c: float | None = Field(default=None, gt=0, description="tfidf_linear's inverse L2 penalty")
    max_train_per_class: int | None = Field(default=None, ge=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    patience: int | None = Field(default=None, ge=1, description="None: the recipe's")
    margin: float | Literal["auto"] = "auto"
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    progress: bool = False
    tensorboard: bool | None = Field(default=None, description="None: when the tensorboard package is installed")
    mlflow: bool | None = Field(default=None, description="None: when MLFLOW_TRACKING_URI is set")
    mlflow_experiment: str = Field(default="tl-advise", min_length=1)

    def budget(self) -> dict[str, float | int | bool | str | None]:
        return {k: v for k, v in self.model_dump(mode="json").items()
                if k not in ("output_dir", "compare", "strategies", "device", "resume", "progress", "tensorboard",
                             "mlflow", "mlflow_experiment")}


TextAdviceResult.model_rebuild()
