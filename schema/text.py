"""Typed results of the text modality: what a text dataset holds (its scan) and how far it sits from a text
backbone's source domain (its similarity signals).

Like every result model (``schema.models``) these refuse unknown fields and keep every string printable;
the texts themselves never live here (they are the advisor's ``TextDataset``), only counts, shares and a
few short, escaped examples.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tl_advise.schema.models import SkippedFile, _Model

TextSourceKind = Literal["manifest", "split_files", "class_folders"]
LengthUnit = Literal["tokens", "words"]
TextBackboneSource = Literal["embedded", "huggingface", "folder"]


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
                  "undecodable", "control_characters", "non_latin_script", "skipped", "imbalance", "few_texts"]
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
