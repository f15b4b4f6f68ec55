"""Does the measurement confirm the advice? The recommended strategy against the best one that ran, on the
largest held-out split there is, with the noise of :mod:`tl_advise.rules.statistics` (what the benchmark and
the advice's confidence use too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tl_advise.rules import statistics
from tl_advise.schema.models import Metrics, StrategyId, StrategyRun, Verdict

Margin = float | Literal["auto"]
Split = Literal["test", "val"]


def _points(x: float) -> str:
    return f"{100 * x:.1f} pts"


def judging_split(runs: Sequence[StrategyRun]) -> Split:
    """``test`` when every scored run was evaluated on a test split, else ``val`` (which also chose each run's
    best epoch: an optimistic judge)."""
    scored = [r for r in runs if r.status != "failed" and r.val is not None]
    return "test" if scored and all(r.test is not None and r.test.n_images > 0 for r in scored) else "val"


def _judged(run: StrategyRun, split: Split) -> Metrics | None:
    return run.test if split == "test" else run.val


def difference(a: Metrics, b: Metrics) -> statistics.Difference:
    """``a - b`` on the same split: image by image when both carry per-image results, else unpaired."""
    return statistics.between({"accuracy": a.accuracy, "n_judged": a.n_images, "correct": a.correct},
                              {"accuracy": b.accuracy, "n_judged": b.n_images, "correct": b.correct})


def decide(recommended: StrategyId, runs: Sequence[StrategyRun], margin: Margin,
           pixel_baseline: float | None = None) -> Verdict:
    """Confirmed when the recommended strategy is the best on the judging split or its gap to the best is within
    ``margin``; ``"auto"``: one standard error of that gap, paired image by image (the benchmark's "tie").

    ``pixel_baseline``: the raw-pixel model's accuracy; the verdict says when no strategy beat it.
    """
    verdict = _decide(recommended, runs, margin)
    split = judging_split(runs)
    scored = [m.accuracy for r in runs if r.status != "failed" and (m := _judged(r, split)) is not None]
    if pixel_baseline is None or not scored:
        return verdict
    beaten = max(scored) > pixel_baseline
    note = ("" if beaten else f"; no strategy beat the raw-pixel baseline ({pixel_baseline:.3f}, a linear model "
            "on 32x32 pixels cross-validated on the advice sample): consider a pixel model or a small network")
    return verdict.model_copy(update={"pixel_baseline": pixel_baseline, "beat_pixel_baseline": beaten,
                                      "message": verdict.message + note})


def _decide(recommended: StrategyId, runs: Sequence[StrategyRun], margin: Margin) -> Verdict:
    split = judging_split(runs)
    scored = {r.strategy: m for r in runs if r.status != "failed" and r.val is not None
              and (m := _judged(r, split)) is not None}
    where = _where(split, scored)
    mine = scored.get(recommended)
    if mine is None:
        return Verdict(status="not_compared", recommended=recommended, best=None, margin=0.0 if margin == "auto"
                       else margin, margin_rule=_margin_rule(margin, None), gap=None, judged_on=split,
                       message=f"the recommended strategy {recommended} was not trained (or failed): no verdict")
    # Ties go to the recommended strategy: it needs no evidence to keep its place.
    best = max(scored, key=lambda s: (scored[s].accuracy, s == recommended))
    if len(scored) == 1:
        return Verdict(status="not_compared", recommended=recommended, best=recommended, margin=0.0 if margin ==
                       "auto" else margin, margin_rule=_margin_rule(margin, None), gap=0.0, judged_on=split,
                       n_judged=mine.n_images,
                       message=f"only {recommended} ran: {split} accuracy {mine.accuracy:.3f}; "
                               "nothing to compare it with (--compare trains the alternatives too, --strategies "
                               "the ones it lists)")
    gap = difference(scored[best], mine)
    allowed = statistics.NOISE_SE * gap.se if margin == "auto" else margin
    # "auto" is the statistics module's own tie (compare), not a test against the rounded margin: a gap exactly
    # one s.e. wide (2 of 60 images, 3 vs 1 discordant) is a tie in the benchmark and must be one here too.
    within = gap.outcome != "ahead" if margin == "auto" else gap.mean <= margin + 1e-9
    common = {"recommended": recommended, "best": best, "margin": round(allowed, 6),
              "margin_rule": _margin_rule(margin, gap), "gap": round(gap.mean, 6), "judged_on": split,
              "n_judged": mine.n_images, "se": round(gap.se, 6), "p_value": gap.p_value}
    others = len(scored) - 1
    if best == recommended:
        return Verdict(status="confirmed", **common,
                       message=f"{recommended} has the best {split} accuracy ({mine.accuracy:.3f}) of the "
                               f"{others + 1} strategies trained{where}")
    if within:
        return Verdict(status="confirmed", **common,
                       message=f"{recommended} ({mine.accuracy:.3f}) is within the {_points(allowed)} margin of the "
                               f"best, {best} ({scored[best].accuracy:.3f}){where}")
    return Verdict(status="refuted", **common,
                   message=f"{best} beat the recommended {recommended} by {_points(gap.mean)} of {split} accuracy "
                           f"({scored[best].accuracy:.3f} vs {mine.accuracy:.3f}), more than the {_points(allowed)} "
                           f"margin{where}{_discordant(gap)}")


def _where(split: Split, scored: dict[StrategyId, Metrics]) -> str:
    n = min((m.n_images for m in scored.values()), default=0)
    if split == "test":
        return f", judged on the test split ({n} images)"
    return (f", judged on the validation split ({n} images), which also chose each strategy's best epoch: "
            "no test split, so the figures are optimistic")


def _discordant(gap: statistics.Difference) -> str:
    if gap.a_only is None or gap.b_only is None or gap.p_value is None:
        return ""
    return (f"; the two disagree on {gap.a_only + gap.b_only} images ({gap.a_only} vs {gap.b_only}, "
            f"McNemar p = {gap.p_value:.2g})")


def _margin_rule(margin: Margin, gap: statistics.Difference | None) -> str:
    if margin != "auto":
        return "fixed (--margin)"
    if gap is None:
        return "auto: one standard error of the gap to the best"
    how = "paired image by image" if gap.paired else "unpaired: no per-image results"
    return f"auto: one standard error of the gap to the best ({how}, {gap.n_images} images), at least one image"
