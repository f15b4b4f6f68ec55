"""Pure scoring and calibration helpers of ``advice_quality.py`` (no torch, no I/O): unit-tested on numbers.

Vocabulary: a *case* is one dataset at one images-per-class level. ``accuracy`` maps strategy -> validation
accuracy in [0, 1]; ``n_judged`` is the number of validation images, which sets the standard error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from _quality_levels import DATASETS

from tl_advise.rules import statistics

STRATEGIES: tuple[str, ...] = (
    "feature_extraction", "feature_extraction_top_layers", "finetune_last_layers",
    "finetune_more_layers", "full_finetune", "from_scratch",
)


def source_of(dataset: str) -> str:
    """The source ``dataset`` was drawn from (``DATASETS``' ``source``; itself where none is given): datasets of
    one source are left out together and clustered as one."""
    return str(DATASETS.get(dataset, {}).get("source", dataset))


def held_name(dataset: str, level: str) -> str:
    """A held-out case's name within its source's fold: the level, led by the dataset where the source has
    several."""
    return level if source_of(dataset) == dataset else f"{dataset}@{level}"


def std_error(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` images: sqrt(p(1-p)/n)."""
    if n <= 0:
        return float("nan")
    p = min(1.0, max(0.0, p))
    return math.sqrt(p * (1.0 - p) / n)


def best_strategy(accuracy: Mapping[str, float], strategies: Sequence[str] = STRATEGIES) -> str:
    """The empirically best strategy; ties go to the earlier (cheaper) one in ``strategies`` order (the image
    ``STRATEGIES`` by default; the text benchmark passes its own)."""
    order = {s: i for i, s in enumerate(strategies)}
    return min(accuracy, key=lambda s: (-accuracy[s], order.get(s, len(order))))


def regret_pp(accuracy: Mapping[str, float], recommended: str) -> float:
    """Best accuracy minus the recommended strategy's, in percentage points (>= 0)."""
    return 100.0 * (max(accuracy.values()) - accuracy[recommended])


Runs = Mapping[str, Mapping[str, Any]]  # strategy -> recorded run (accuracy, n_judged, correct where recorded)


def _accuracy(runs: Runs) -> dict[str, float]:
    return {s: float(v["accuracy"]) for s, v in runs.items()}


def agrees(runs: Runs, recommended: str) -> bool:
    """The recommendation counts as right when the best strategy is not ahead of it beyond noise: the gap is
    a "tie" of :mod:`tl_advise.rules.statistics` (paired image by image where per-image results exist)."""
    best = best_strategy(_accuracy(runs))
    return best == recommended or statistics.between(runs[best], runs[recommended]).outcome != "ahead"


def tied_best(runs: Runs) -> list[str]:
    """Every strategy tied with the best (in ``STRATEGIES`` order)."""
    return [s for s in STRATEGIES if s in runs and agrees(runs, s)]


def cost_ratio(advice_s: float, train_s: Sequence[float]) -> float:
    """Advice time / time of trying every strategy (the sum of their training times)."""
    total = float(sum(train_s))
    return advice_s / total if total > 0 else float("nan")


@dataclass(frozen=True)
class LRCheck:
    best_lr: float
    best_accuracy: float
    ratio: float  # advised / best (raw)
    within_3x: bool  # raw: the advised rate within a factor of 3 of the raw best one
    within_3x_tied: bool  # the advised rate within x3 of SOME rate whose accuracy ties the best (one s.e.)


# The sweep trains rates rounded to this many significant digits (advised ÷3 = 1e-3 / 3 is run as 0.000333).
LR_DIGITS = 3


def sweep_rate(advised: float, factor: float) -> float:
    """The rate the sweep trains for ``advised`` x ``factor``: rounded to ``LR_DIGITS`` significant digits."""
    return float(f"{advised * factor:.{LR_DIGITS}g}")


def lr_check(advised: float, sweep: Mapping[float, float], n_judged: int, factor: float = 3.0) -> LRCheck:
    """Is ``advised`` within ``factor`` of the sweep's best rate? ``sweep`` maps rate -> accuracy.

    The raw best is the highest accuracy (ties: the rate closest to the advised one); the tie-aware check
    accepts the advised rate when any rate tied with the best (unpaired: the sweep keeps no per-image results)
    is within the factor of it.
    """
    tol = 1.0 + 0.5 * 10 ** (1 - LR_DIGITS)  # the rounding of sweep_rate: the ÷3 point is 3.003x away

    def close(rate: float) -> bool:
        return max(rate / advised, advised / rate) <= factor * tol

    top = max(sweep.values())
    best_lr = min((r for r, a in sweep.items() if a == top), key=lambda r: abs(math.log(r / advised)))
    tied = [r for r, a in sweep.items() if statistics.unpaired(top, a, n_judged).outcome != "ahead"]
    return LRCheck(best_lr=best_lr, best_accuracy=top, ratio=advised / best_lr, within_3x=close(best_lr),
                   within_3x_tied=any(close(r) for r in tied))


# The sweep's factors around the advised rate (image and text benchmarks alike): the target reads the x3
# points, the ÷10 and x10 ones show which side the best rate lies on.
LR_FACTORS: tuple[float, ...] = (0.1, 1 / 3, 1.0, 3.0, 10.0)


def judged_sweep(sweep: Mapping[str, Any], n_judged: int) -> dict[str, Any]:
    """``sweep`` (``param``, ``advised`` rate, ``points`` of ``lr`` and ``accuracy``) with the LR check's verdict;
    recorded sweeps are judged again whenever the outputs are written, so the verdicts follow the current check."""
    check = lr_check(sweep["advised"], {p["lr"]: p["accuracy"] for p in sweep["points"]}, n_judged)
    return {**sweep, "best_lr": check.best_lr, "ratio": check.ratio, "within_3x": check.within_3x,
            "within_3x_tied": check.within_3x_tied}


# --------------------------------------------------------------------------- calibration


def ramp(value: float, similar_at: float, different_at: float) -> float:
    """The rules engine's per-signal ramp: 1 at ``similar_at``, 0 at ``different_at``, clipped."""
    return min(1.0, max(0.0, (value - different_at) / (similar_at - different_at)))


Weighting = Mapping[str, tuple[float, float, float]]  # signal -> (weight, similar_at, different_at)


def combined_score(signals: Mapping[str, float | None], weighting: Weighting, when_none: float = 0.0) -> float:
    """Weighted mean of the ramps of the measured signals (unmeasured ones drop out), as the engine does."""
    total = num = 0.0
    for name, (weight, similar_at, different_at) in weighting.items():
        value = signals.get(name)
        if weight <= 0 or value is None or not math.isfinite(value):
            continue
        total += weight
        num += weight * ramp(value, similar_at, different_at)
    return num / total if total > 0 else when_none


@dataclass(frozen=True)
class Case:
    """What calibration needs of one measured case."""

    dataset: str
    level: str
    band: str  # size band of the advice
    signals: Mapping[str, float | None]
    accuracy: Mapping[str, float]
    n_judged: int


# (band, label) -> strategy: the decision table's cells.
Table = Mapping[tuple[str, str], str]


def case_regret(case: Case, score: float, threshold: float, table: Table) -> float:
    label = "similar" if score >= threshold else "different"
    return regret_pp(case.accuracy, table[(case.band, label)])


def candidate_thresholds(scores: Sequence[float]) -> list[float]:
    """Midpoints between consecutive distinct scores, plus one below the lowest and one above the highest."""
    distinct = sorted(set(round(s, 6) for s in scores))
    if not distinct:
        return [0.5]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(distinct)]
    return [max(0.0, distinct[0] - 0.05), *mids, min(1.0, distinct[-1] + 0.05) + 1e-6]


@dataclass(frozen=True)
class Fit:
    weighting_name: str
    threshold: float
    mean_regret_pp: float


def fit_threshold(cases: Sequence[Case], weightings: Mapping[str, Weighting], table: Table,
                  prior_threshold: float = 0.5) -> Fit:
    """(weighting, threshold) with the least mean regret on ``cases``.

    Ties (common with few cases) go to the weighting listed first (the current rules come first) and then
    to the threshold closest to ``prior_threshold``: the evidence moves the rules only as far as it must.
    """
    best: tuple[float, int, float, str, float] | None = None
    for rank, (name, weighting) in enumerate(weightings.items()):
        scores = [combined_score(c.signals, weighting) for c in cases]
        for t in candidate_thresholds(scores):
            mean = sum(case_regret(c, s, t, table) for c, s in zip(cases, scores, strict=True)) / max(len(cases), 1)
            key = (round(mean, 9), rank, abs(t - prior_threshold), name, t)
            if best is None or key < best:
                best = key
    assert best is not None
    return Fit(weighting_name=best[3], threshold=best[4], mean_regret_pp=best[0])


@dataclass(frozen=True)
class LODOResult:
    dataset: str
    fit: Fit
    held_out_regret_pp: dict[str, float]  # level -> regret of the held-out dataset's cases


def leave_one_dataset_out(cases: Sequence[Case], weightings: Mapping[str, Weighting], table: Table,
                          prior_threshold: float = 0.5,
                          fitter: Callable[..., Fit] = fit_threshold) -> list[LODOResult]:
    """For each dataset: fit on the others' cases, judge its own cases with that fit."""
    results = []
    for dataset in sorted({source_of(c.dataset) for c in cases}):
        train = [c for c in cases if source_of(c.dataset) != dataset]
        test = [c for c in cases if source_of(c.dataset) == dataset]
        fit = fitter(train, weightings, table, prior_threshold) if train else \
            Fit(next(iter(weightings)), prior_threshold, float("nan"))
        weighting = weightings[fit.weighting_name]
        scores = [combined_score(c.signals, weighting) for c in test]
        held = {held_name(c.dataset, c.level): case_regret(c, score, fit.threshold, table)
                for c, score in zip(test, scores, strict=True)}
        results.append(LODOResult(dataset=dataset, fit=fit, held_out_regret_pp=held))
    return results


def mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


# --------------------------------------------------------------------------- repeat seeds


@dataclass(frozen=True)
class SeedAverage:
    """One dataset x level over its seeds: what the grid's judgement rests on."""

    dataset: str
    level: str
    band: str
    label: str
    recommended: str
    seeds: tuple[int, ...]
    n_judged: int  # judging images per seed (the smallest)
    accuracy: dict[str, float]  # strategy -> mean over the seeds that trained it
    spread: dict[str, tuple[float, float]]  # strategy -> (min, max) over seeds
    per_seed: dict[int, dict[str, float]]  # seed -> strategy -> accuracy
    runs: dict[int, dict[str, Mapping[str, Any]]]  # seed -> strategy -> recorded run
    same_images: bool  # every seed judged on the same images (the dataset's own split)
    judged_on: str  # the split that judged: "test", "val", or "mixed" across seeds
    strategies: tuple[str, ...] = STRATEGIES  # the modality's strategies, cheapest first: ties go to the earlier

    def difference(self, a: str, b: str) -> statistics.Difference:
        """``a - b`` over the seeds that trained both (:func:`tl_advise.rules.statistics.over_seeds`)."""
        per_seed = [statistics.between(r[a], r[b]) for r in self.runs.values() if a in r and b in r]
        return statistics.over_seeds(per_seed, same_images=self.same_images)


def _same_images(case: Mapping[str, Any]) -> bool:
    """Whether a case's seeds share their judging images: a dataset's own split does; a seeded hold-out does not.
    Cases recorded before the flag judged on the dataset's own val/ where it had one (not recorded: assumed
    not, the wider s.e.)."""
    return bool(case.get("test_is_source_split", False))


def _one(splits: set[str]) -> str:
    return next(iter(splits)) if len(splits) == 1 else "mixed"


def seed_averages(cases: Sequence[Mapping], strategies: Sequence[str] = STRATEGIES,
                  same_images: Callable[[Mapping[str, Any]], bool] = _same_images) -> list[SeedAverage]:
    """Group recorded cases (one per dataset x level x seed) into seed averages, in the given order.

    A case needs ``dataset``, ``level``, ``seed``, ``size_band``, ``advice`` (``label``, ``strategy``),
    ``n_judged`` and ``runs`` (strategy -> ``accuracy``, ``n_judged``, ``correct`` where recorded);
    ``strategies`` orders them (ties go to the earlier); ``same_images`` says whether a case's seeds share their
    judging images."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for c in cases:
        groups.setdefault((c["dataset"], c["level"]), []).append(c)
    out = []
    for (dataset, level), members in groups.items():
        runs = {int(c.get("seed", 0)): dict(c["runs"]) for c in members}
        per_seed = {seed: {s: v["accuracy"] for s, v in r.items()} for seed, r in runs.items()}
        trained = [s for s in strategies if any(s in acc for acc in per_seed.values())]
        accuracy = {s: sum(a[s] for a in per_seed.values() if s in a) / sum(s in a for a in per_seed.values())
                    for s in trained}
        spread = {s: (min(a[s] for a in per_seed.values() if s in a), max(a[s] for a in per_seed.values() if s in a))
                  for s in trained}
        first = members[0]
        out.append(SeedAverage(dataset=dataset, level=level, band=first["size_band"], label=first["advice"]["label"],
                               recommended=first["advice"]["strategy"], seeds=tuple(sorted(per_seed)),
                               n_judged=min(c["n_judged"] for c in members), accuracy=accuracy, spread=spread,
                               per_seed=per_seed, runs=runs, same_images=all(same_images(c) for c in members),
                               judged_on=_one({c.get("judged_on", "val") for c in members}),
                               strategies=tuple(strategies)))
    return out


@dataclass(frozen=True)
class Judgement:
    best: str
    regret_pp: float
    se_pp: float  # one s.e. of best - recommended
    tie: bool  # the best is not ahead of the recommendation beyond noise


def judge(avg: SeedAverage, recommended: str | None = None) -> Judgement:
    """Seed-averaged regret of ``recommended`` (default: the recorded advice), and whether it ties the best."""
    rec = recommended or avg.recommended
    best = best_strategy(avg.accuracy, avg.strategies)
    if rec not in avg.accuracy:
        return Judgement(best, float("nan"), float("nan"), False)
    regret = 100.0 * (avg.accuracy[best] - avg.accuracy[rec])
    if best == rec:
        return Judgement(best, regret, 0.0, True)
    gap = avg.difference(best, rec)
    return Judgement(best, regret, 100.0 * gap.se, gap.outcome != "ahead")


@dataclass(frozen=True)
class Evidence:
    """What the grid says of one rule: its strategy against the best other one, over the rule's cases, and
    whether the rule's choice holds when each dataset is left out of choosing it."""

    cases: int
    datasets: list[str]
    seeds: int
    mean_regret_pp: float
    runner_up: str
    margin_pp: float  # clustered by dataset (each dataset counts once)
    se_pp: float
    held_out_folds: int  # datasets left out in turn (0: one dataset, nothing to hold out)
    held_out_agree: int  # folds in which the other datasets chose the rule's strategy too
    held_out_regret_pp: float  # mean regret, on each left-out dataset, of what the others chose
    gaps_pp: dict[str, float]  # the rule's strategy minus each other strategy, clustered by dataset
    judged_on: str  # "test", "val" or "mixed"


def _choice(members: Sequence[SeedAverage], options: Sequence[str], strategy: str) -> str:
    """The option with the least mean regret over ``members`` (ties: the rule's own strategy, then the cheaper):
    what the cell would advise if it were chosen on these cases alone. The order of ``options`` breaks the
    remaining ties (cheapest first)."""
    order = {s: i for i, s in enumerate(options)}
    return min(options, key=lambda s: (round(sum(judge(m, s).regret_pp for m in members) / len(members), 9),
                                       s != strategy, order[s]))


def clustered_difference(members: Sequence[SeedAverage], a: str, b: str) -> statistics.Difference:
    """``a - b`` over ``members``, each source counted once (:func:`tl_advise.rules.statistics.clustered`)."""
    by_source: dict[str, list[statistics.Difference]] = {}
    for m in members:
        by_source.setdefault(source_of(m.dataset), []).append(m.difference(a, b))
    return statistics.clustered(by_source)


# The decision guide's table (../shared/spec/decision-guide.md) on this tool's size bands: every band below
# 1,000 per class is the guide's "small" row. The refit of the cells starts here, not from the current rules, so
# that no judged dataset's own results sit in its starting point. The pixel-baseline cell starts from the
# guide's answer for data the pretrained features barely help with (mistake 3, the microscopy report).
GUIDE_TABLE: dict[tuple[str, str], str] = {
    **{(band, "similar"): "feature_extraction" for band in ("few", "tiny", "small")},
    **{(band, "different"): "feature_extraction_top_layers" for band in ("few", "tiny", "small")},
    ("medium", "similar"): "finetune_last_layers", ("medium", "different"): "finetune_more_layers",
    ("large", "similar"): "full_finetune", ("large", "different"): "full_finetune",
    ("pixel-baseline", "similar"): "feature_extraction", ("pixel-baseline", "different"): "feature_extraction",
}


def refit_cell(members: Sequence[SeedAverage], prior: str, *, beyond_noise: bool = True) -> str:
    """The strategy a cell holds on ``members``: ``prior`` unless the option with the least mean regret is ahead
    of it beyond noise, each source counted once (:func:`tl_advise.rules.statistics.clustered`). Evidence
    moves a cell only as far as it must: a choice by least regret alone (``beyond_noise=False``) follows the
    noise of near-ties."""
    options = [s for s in members[0].strategies if all(s in m.accuracy for m in members)]
    challenger = _choice(members, options, prior)
    if challenger == prior or prior not in options or not beyond_noise:
        return challenger
    return challenger if clustered_difference(members, challenger, prior).outcome == "ahead" else prior


def refit_table(members: Sequence[SeedAverage], cells: Sequence[tuple[str, str]], prior: Table, *,
                beyond_noise: bool = True) -> dict[tuple[str, str], str]:
    """Every cell of ``prior`` refit on the seed averages that fall in it (``cells[i]`` is ``members[i]``'s);
    cells without cases keep their prior."""
    fitted = dict(prior)
    for cell in prior:
        inside = [m for m, c in zip(members, cells, strict=True) if c == cell]
        if inside:
            fitted[cell] = refit_cell(inside, prior[cell], beyond_noise=beyond_noise)
    return fitted


def cell_evidence(members: Sequence[SeedAverage], strategy: str) -> Evidence | None:
    """The rule's strategy against the runner-up (the other strategy with the best mean over ``members``).

    The margin is the mean seed-averaged difference with each dataset counted once
    (:func:`tl_advise.rules.statistics.clustered`). Held out: each dataset in turn is left out, the cell's
    strategy is chosen on the others' cases, and that choice is judged on the left-out dataset.
    """
    members = [m for m in members if strategy in m.accuracy]
    if not members:
        return None
    options = [s for s in members[0].strategies if all(s in m.accuracy for m in members)]
    others = [s for s in options if s != strategy]
    if not others:
        return None
    runner_up = max(others, key=lambda s: sum(m.accuracy[s] for m in members))
    gap = clustered_difference(members, strategy, runner_up)
    datasets = sorted({m.dataset for m in members})
    sources = sorted({source_of(d) for d in datasets})
    folds = []
    if len(sources) > 1:
        for left_out in sources:
            chosen = _choice([m for m in members if source_of(m.dataset) != left_out], options, strategy)
            held = [judge(m, chosen).regret_pp for m in members if source_of(m.dataset) == left_out]
            folds.append((chosen == strategy, sum(held) / len(held)))
    return Evidence(cases=len(members), datasets=datasets, seeds=min(len(m.seeds) for m in members),
                    mean_regret_pp=sum(judge(m, strategy).regret_pp for m in members) / len(members),
                    runner_up=runner_up, margin_pp=100.0 * gap.mean, se_pp=100.0 * gap.se,
                    held_out_folds=len(folds), held_out_agree=sum(agree for agree, _ in folds),
                    held_out_regret_pp=sum(r for _, r in folds) / len(folds) if folds else float("nan"),
                    gaps_pp={s: 100.0 * clustered_difference(members, strategy, s).mean for s in others},
                    judged_on=_one({m.judged_on for m in members}))
