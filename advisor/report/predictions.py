"""What ``tl-advise predict`` reports: one typed result per modality, rendered as CSV or JSON.

Kept free of torch so that ``tl-advise schema predictions`` and consumers of the JSON need no model code.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from enum import StrEnum
from typing import Literal

from pydantic import Field

# The result models' base: unknown fields refused, and every string escaped as the advice escapes it (class and
# file names may hold any byte: '\udcff' cannot be encoded, a newline would break a CSV row), so no format fails.
from tl_advise.schema.models import SCHEMA_VERSION, _Model


class ImagePrediction(_Model):
    path: str = Field(description="the image as given, or found inside a given folder (escaped: a byte that is "
                                   "not UTF-8 as \\xff, a newline as \\n)")
    prediction: str | None = Field(description="the most probable class; None when the image could not be read")
    confidence: float | None = Field(description="the probability of the predicted class")
    top_k: list[str] = Field(default_factory=list, description="the most probable classes, most probable first "
                                                               "(--top-k); empty when the image could not be read")
    probabilities: dict[str, float] = Field(description="class -> softmax probability, in the model's class order")
    error: str | None = Field(default=None, description="why the image could not be read")


class PredictionReport(_Model):
    schema_version: str = SCHEMA_VERSION
    model: str = Field(description="the model file (model.pt written by `tl-advise --run`)")
    strategy: str
    backbone: str
    image_size: int
    classes: list[str] = Field(description="the model's classes, escaped as in the advice (a byte that is not UTF-8 "
                                           "as \\xff, a newline as \\n); the keys of every row's probabilities")
    predictions: list[ImagePrediction]

    @property
    def failed(self) -> list[ImagePrediction]:
        return [p for p in self.predictions if p.error is not None]


class TextPrediction(_Model):
    index: int = Field(description="the text's position in the input (0-based)")
    text: str = Field(description="the text as given, shortened to 200 characters (control characters and bytes "
                                   "that are not UTF-8 escaped)")
    prediction: str = Field(description="the most probable class")
    confidence: float = Field(description="the probability of the predicted class")
    top_k: list[str] = Field(description="the most probable classes, most probable first (--top-k)")
    probabilities: dict[str, float] = Field(description="class -> probability, in the model's class order")


class TextPredictionReport(_Model):
    schema_version: str = SCHEMA_VERSION
    modality: Literal["text"] = "text"
    model: str = Field(description="the model file (model.pt written by `tl-advise DATA --run` on a text dataset)")
    strategy: str
    backbone: str = Field(description="the text encoder, or 'tfidf' for tfidf_linear")
    max_length: int | None = Field(description="texts are cut to this many tokens; None for tfidf_linear")
    classes: list[str]
    predictions: list[TextPrediction]


AnyPredictionReport = PredictionReport | TextPredictionReport


class PredictionFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def to_csv(report: AnyPredictionReport) -> str:
    """One row per image: path, prediction, confidence, the top classes (``a;b;c``), one ``prob_<class>`` column
    per class, error; per text: index, text, prediction, confidence, the top classes, one ``prob_<class>`` column
    per class."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if isinstance(report, TextPredictionReport):
        writer.writerow(["index", "text", "prediction", "confidence", "top_k", *(f"prob_{c}" for c in report.classes)])
        for t in report.predictions:
            writer.writerow([t.index, t.text, t.prediction, f"{t.confidence:.6f}", ";".join(t.top_k),
                             *(f"{t.probabilities[c]:.6f}" for c in report.classes)])
        return out.getvalue()
    writer.writerow(["path", "prediction", "confidence", "top_k", *(f"prob_{c}" for c in report.classes), "error"])
    for p in report.predictions:
        probs = [f"{p.probabilities[c]:.6f}" if c in p.probabilities else "" for c in report.classes]
        confidence = f"{p.confidence:.6f}" if p.confidence is not None else ""
        writer.writerow([p.path, p.prediction or "", confidence, ";".join(p.top_k), *probs, p.error or ""])
    return out.getvalue()


def to_json(report: AnyPredictionReport) -> str:
    return report.model_dump_json(indent=2) + "\n"


FORMATTERS: dict[PredictionFormat, Callable[[AnyPredictionReport], str]] = {
    PredictionFormat.CSV: to_csv,
    PredictionFormat.JSON: to_json,
}


def render_predictions(report: AnyPredictionReport, fmt: PredictionFormat | str = PredictionFormat.CSV) -> str:
    return FORMATTERS[PredictionFormat(fmt)](report)
