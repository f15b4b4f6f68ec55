"""The margins a confidence is made of, shared by the image and the text advice: how a distance grades into a
level, and which size-band edge is the nearest one across which the advice would change."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tl_advise.schema.formatting import per_class
from tl_advise.schema.models import ConfidenceLevel

Band = TypeVar("Band", bound=str)
Strategy = TypeVar("Strategy", bound=str)


def graded(value: float, low: float, high: float) -> ConfidenceLevel:
    """``low`` below ``low``, ``high`` at or above ``high``, ``medium`` between."""
    return "low" if value < low else "medium" if value < high else "high"


def below_measured(per_class_count: float, measured_from: float, noun: str) -> str:
    """The size reason where a dataset is smaller than anything the benchmark trained: no band margin means
    anything there."""
    return (f"{per_class(per_class_count, noun)}: below the {measured_from:g} per class the benchmark trained at "
            "its smallest, so nothing measured speaks for this size; with so few, which strategy trains best is "
            "mostly the draw of the examples")


@dataclass(frozen=True)
class BandEdge(Generic[Band, Strategy]):
    ratio: float  # how far the count is from the edge, as a factor (>= 1)
    edge: float
    neighbour: Band  # the band on the other side
    advice: Strategy  # what it advises


def nearest_edge_that_matters(edges: Iterable[tuple[float, Band, Band]], band: Band, count: float,
                              advice_in: Callable[[Band], Strategy], strategy: Strategy
                              ) -> BandEdge[Band, Strategy] | None:
    """The nearest edge of ``band`` whose neighbouring band advises other than ``strategy`` (None: every
    neighbour advises the same). ``edges`` are (edge, band below, band above); ``advice_in(band)`` what a band
    would advise for this dataset."""
    relevant: list[BandEdge[Band, Strategy]] = []
    for edge, below, above in edges:
        if band not in (below, above):
            continue
        neighbour = above if band == below else below
        other = advice_in(neighbour)
        if other != strategy:
            ratio = max(count / edge, edge / count) if count > 0 else math.inf
            relevant.append(BandEdge(ratio, edge, neighbour, other))
    return min(relevant, key=lambda e: (e.ratio, e.edge), default=None)


@dataclass(frozen=True)
class ThresholdMargin:
    distance: float  # |score - threshold|
    level: ConfidenceLevel
    closeness: str  # "close to", "near" or "clear of"


def threshold_margin(score: float, threshold: float, low: float, high: float) -> ThresholdMargin:
    """How far a similarity score sits from the threshold that changes its label, graded and in words."""
    distance = abs(score - threshold)
    level = graded(distance, low, high)
    return ThresholdMargin(distance, level, {"low": "close to", "medium": "near", "high": "clear of"}[level])
