"""What ``tl-advise predict`` reports: one typed result, rendered as CSV or JSON.

Kept free of torch so that ``tl-advise schema predictions`` and consumers of the JSON need no model code.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tl_advise.schema.models import SCHEMA_VERSION


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImagePrediction(_Model):
    path: str = Field(description="the image as given, or found inside a given folder")
    prediction: str | None = Field(description="the most probable class; None when the image could not be read")
    confidence: float | None = Field(description="the probability of the predicted class")
    probabilities: dict[str, float] = Field(description="class -> softmax probability, in the model's class order")
    error: str | None = Field(default=None, description="why the image could not be read")


class PredictionReport(_Model):
    schema_version: str = SCHEMA_VERSION
    model: str = Field(description="the model file (model.pt written by `tl-advise --run`)")
    strategy: str
    backbone: str
    image_size: int
    classes: list[str]
    predictions: list[ImagePrediction]

    @property
    def failed(self) -> list[ImagePrediction]:
        return [p for p in self.predictions if p.error is not None]


class PredictionFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def to_csv(report: PredictionReport) -> str:
    """One row per image: path, prediction, confidence, one ``prob_<class>`` column per class, error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "prediction", "confidence", *(f"prob_{c}" for c in report.classes), "error"])
    for p in report.predictions:
        probs = [f"{p.probabilities[c]:.6f}" if c in p.probabilities else "" for c in report.classes]
        confidence = f"{p.confidence:.6f}" if p.confidence is not None else ""
        writer.writerow([p.path, p.prediction or "", confidence, *probs, p.error or ""])
    return out.getvalue()


def to_json(report: PredictionReport) -> str:
    return report.model_dump_json(indent=2) + "\n"


FORMATTERS: dict[PredictionFormat, Callable[[PredictionReport], str]] = {
    PredictionFormat.CSV: to_csv,
    PredictionFormat.JSON: to_json,
}


def render_predictions(report: PredictionReport, fmt: PredictionFormat | str = PredictionFormat.CSV) -> str:
    return FORMATTERS[PredictionFormat(fmt)](report)
