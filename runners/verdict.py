"""Does the measurement confirm the advice? The recommended strategy against the best one that ran."""

from __future__ import annotations

from collections.abc import Sequence

from tl_advise.advisor.models import StrategyId, StrategyRun, Verdict

_TOLERANCE = 1e-9  # float noise must not turn "exactly at the margin" into "refuted"


def _points(x: float) -> str:
    return f"{100 * x:.1f} pts"


def decide(recommended: StrategyId, runs: Sequence[StrategyRun], margin: float) -> Verdict:
    """Confirmed when the recommended strategy's val accuracy is the best or within ``margin`` of it."""
    scored = [r for r in runs if r.status != "failed" and r.val is not None]
    mine = next((r for r in scored if r.strategy == recommended), None)
    if mine is None or mine.val is None:
        return Verdict(status="not_compared", recommended=recommended, best=None, margin=margin, gap=None,
                       message=f"the recommended strategy {recommended} was not trained (or failed): no verdict")
    # Ties go to the recommended strategy: it needs no evidence to keep its place.
    best = max(scored, key=lambda r: (r.val.accuracy if r.val else 0.0, r.strategy == recommended))
    assert best.val is not None
    gap = round(best.val.accuracy - mine.val.accuracy, 6)
    if len(scored) == 1:
        return Verdict(status="not_compared", recommended=recommended, best=recommended, margin=margin, gap=0.0,
                       message=f"only {recommended} ran: val accuracy {mine.val.accuracy:.3f}; "
                               "nothing to compare it with (use --compare)")
    others = len(scored) - 1
    if best.strategy == recommended:
        return Verdict(status="confirmed", recommended=recommended, best=recommended, margin=margin, gap=0.0,
                       message=f"{recommended} has the best val accuracy ({mine.val.accuracy:.3f}) "
                               f"of the {others + 1} strategies trained")
    if gap <= margin + _TOLERANCE:
        return Verdict(status="confirmed", recommended=recommended, best=best.strategy, margin=margin, gap=gap,
                       message=f"{recommended} ({mine.val.accuracy:.3f}) is within the "
                               f"{_points(margin)} margin of the best, {best.strategy} ({best.val.accuracy:.3f})")
    return Verdict(status="refuted", recommended=recommended, best=best.strategy, margin=margin, gap=gap,
                   message=f"{best.strategy} beat the recommended {recommended} by {_points(gap)} of "
                           f"val accuracy ({best.val.accuracy:.3f} vs {mine.val.accuracy:.3f}), more than "
                           f"the {_points(margin)} margin{_resolution(mine)}")


def _resolution(run: StrategyRun) -> str:
    """How coarse the evidence is: on a small validation set one image is worth several points."""
    n = run.val.n_images if run.val else 0
    return f" (with {n} validation images one image is {_points(1 / n)})" if n else ""
