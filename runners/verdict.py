"""Does the measurement confirm the advice? The recommended strategy against the best one that ran."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from tl_advise.schema.models import StrategyId, StrategyRun, Verdict

_TOLERANCE = 1e-9  # float noise must not turn "exactly at the margin" into "refuted"

Margin = float | Literal["auto"]


def _points(x: float) -> str:
    return f"{100 * x:.1f} pts"


def noise_margin(accuracy: float, n_images: int) -> float:
    """One binomial standard error of ``accuracy`` measured on ``n_images``, never below one image (1/n):
    a gap smaller than this is within the noise of the validation set."""
    if n_images <= 0:
        return 0.0
    p = min(1.0, max(0.0, accuracy))
    return max(math.sqrt(p * (1.0 - p) / n_images), 1.0 / n_images)


def decide(recommended: StrategyId, runs: Sequence[StrategyRun], margin: Margin,
           pixel_baseline: float | None = None) -> Verdict:
    """Confirmed when the recommended strategy's val accuracy is the best or within ``margin`` of it.

    ``margin="auto"``: one binomial s.e. of the best strategy's val accuracy (:func:`noise_margin`).
    ``pixel_baseline``: the raw-pixel model's accuracy; the verdict says when no strategy beat it.
    """
    verdict = _decide(recommended, runs, margin)
    scored = [r.val.accuracy for r in runs if r.status != "failed" and r.val is not None]
    if pixel_baseline is None or not scored:
        return verdict
    beaten = max(scored) > pixel_baseline
    note = ("" if beaten else f"; no strategy beat the raw-pixel baseline ({pixel_baseline:.3f}, a linear model "
            "on 32x32 pixels cross-validated on the advice sample): consider a pixel model or a small network")
    return verdict.model_copy(update={"pixel_baseline": pixel_baseline, "beat_pixel_baseline": beaten,
                                      "message": verdict.message + note})


def _decide(recommended: StrategyId, runs: Sequence[StrategyRun], margin: Margin) -> Verdict:
    scored = [r for r in runs if r.status != "failed" and r.val is not None]
    mine = next((r for r in scored if r.strategy == recommended), None)
    if mine is None or mine.val is None:
        return Verdict(status="not_compared", recommended=recommended, best=None, margin=0.0 if margin == "auto"
                       else margin, margin_rule=_margin_rule(margin, None), gap=None,
                       message=f"the recommended strategy {recommended} was not trained (or failed): no verdict")
    # Ties go to the recommended strategy: it needs no evidence to keep its place.
    best = max(scored, key=lambda r: (r.val.accuracy if r.val else 0.0, r.strategy == recommended))
    assert best.val is not None
    rule = _margin_rule(margin, best)
    allowed = round(noise_margin(best.val.accuracy, best.val.n_images), 6) if margin == "auto" else margin
    gap = round(best.val.accuracy - mine.val.accuracy, 6)
    if len(scored) == 1:
        return Verdict(status="not_compared", recommended=recommended, best=recommended, margin=allowed,
                       margin_rule=rule, gap=0.0,
                       message=f"only {recommended} ran: val accuracy {mine.val.accuracy:.3f}; "
                               "nothing to compare it with (use --compare)")
    others = len(scored) - 1
    if best.strategy == recommended:
        return Verdict(status="confirmed", recommended=recommended, best=recommended, margin=allowed,
                       margin_rule=rule, gap=0.0,
                       message=f"{recommended} has the best val accuracy ({mine.val.accuracy:.3f}) "
                               f"of the {others + 1} strategies trained")
    if gap <= allowed + _TOLERANCE:
        return Verdict(status="confirmed", recommended=recommended, best=best.strategy, margin=allowed,
                       margin_rule=rule, gap=gap,
                       message=f"{recommended} ({mine.val.accuracy:.3f}) is within the "
                               f"{_points(allowed)} margin of the best, {best.strategy} ({best.val.accuracy:.3f})")
    return Verdict(status="refuted", recommended=recommended, best=best.strategy, margin=allowed,
                   margin_rule=rule, gap=gap,
                   message=f"{best.strategy} beat the recommended {recommended} by {_points(gap)} of "
                           f"val accuracy ({best.val.accuracy:.3f} vs {mine.val.accuracy:.3f}), more than "
                           f"the {_points(allowed)} margin{_resolution(mine)}")


def _resolution(run: StrategyRun) -> str:
    """How coarse the evidence is: on a small validation set one image is worth several points."""
    n = run.val.n_images if run.val else 0
    return f" (with {n} validation images one image is {_points(1 / n)})" if n else ""


def _margin_rule(margin: Margin, best: StrategyRun | None) -> str:
    if margin != "auto":
        return "fixed (--margin)"
    n = best.val.n_images if best is not None and best.val is not None else 0
    return f"auto: one binomial s.e. of the best val accuracy ({n} validation images), at least one image"
