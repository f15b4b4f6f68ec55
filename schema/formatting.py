"""How numbers read in every report: one formatter per kind of number, shared by all formats and layers."""

from __future__ import annotations

import math


def fmt_lr(value: float) -> str:
    """A learning rate exactly as it trains: the fewest significant digits that read back as the same float.

    ``2.5e-06`` -> ``2.5e-6``, ``0.001`` -> ``1e-3``, ``0.000333`` -> ``3.33e-4``; never rounded to one digit, so
    ``float(fmt_lr(x)) == x`` for every finite ``x``.
    """
    if value == 0 or not math.isfinite(value):
        return repr(float(value))
    for digits in range(17):
        text = f"{value:.{digits}e}"
        if float(text) == value:
            break
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def fmt_count(value: float) -> str:
    """Counts: ``122`` or ``122.5`` (a median of an even number of classes)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def per_class(value: float, noun: str) -> str:
    """A median count per class with its noun in agreement: ``1 image per class``, ``122.5 images per class``."""
    return f"{fmt_count(value)} {noun if value == 1 else noun + 's'} per class"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """A count with its noun in agreement: ``1 case``, ``3 cases``, ``1 dataset``; ``plural`` where ``s`` is not
    enough (``counted(2, "class", "classes")``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
