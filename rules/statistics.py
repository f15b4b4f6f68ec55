"""One notion of noise for every comparison of two strategies: the verdict of ``--run``, the confidence of the
advice and the advice-quality benchmark all read a difference of accuracies through this module.

A :class:`Difference` is ``a - b`` in accuracy (a fraction) with one standard error:

- on one split, image by image (:func:`paired`): the two strategies saw the same images, so only the images
  on which they disagree carry information (McNemar); an exact two-sided McNemar p-value comes with it;
- from two accuracies alone (:func:`unpaired`), when per-image results were not recorded: as if the two
  had been measured on independent images, which overstates the noise of a paired comparison;
- over seeds (:func:`over_seeds`): the mean of the per-seed differences; when every seed judged the same
  images, their sampling noise is shared and does not average out;
- over the cases of several datasets (:func:`clustered`): levels of one dataset are not independent, so
  each dataset counts once.

:func:`compare` says what a difference means — ``ahead``, ``tie`` or ``behind`` — and that meaning is the same
everywhere: more than :data:`NOISE_SE` standard errors from zero is beyond noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

# "Beyond noise" is more than this many standard errors of the difference: the benchmark's targets ("within
# one s.e. of the best"), the verdict's --margin auto and the confidence's "separated" all mean one s.e.
NOISE_SE = 1.0
_TOLERANCE = 1e-9  # float noise must not move a difference that is exactly at the margin

Outcome = Literal["ahead", "tie", "behind"]


@dataclass(frozen=True)
class Difference:
    """``a - b`` in accuracy with one standard error, and what it rests on."""

    mean: float
    se: float
    n_images: int  # images per seed that judged it (the smallest)
    seeds: int = 1
    datasets: int = 1
    paired: bool = False  # computed image by image
    a_only: int | None = None  # images a got right and b wrong (paired, one seed)
    b_only: int | None = None
    p_value: float | None = None  # exact two-sided McNemar (paired, one seed)

    @property
    def outcome(self) -> Outcome:
        return compare(self.mean, self.se)


def compare(mean: float, se: float) -> Outcome:
    """``ahead`` when ``mean`` is more than :data:`NOISE_SE` standard errors above zero, ``behind`` below, else
    ``tie``."""
    margin = NOISE_SE * se + _TOLERANCE
    return "ahead" if mean > margin else "behind" if mean < -margin else "tie"


def resolution(n_images: int) -> float:
    """One image's worth of accuracy: no s.e. is ever below it (two strategies one image apart are tied)."""
    return 1.0 / n_images if n_images > 0 else math.nan


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: under no difference each discordant image is a fair coin."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, float(2 * Fraction(tail, 2**n)))


def paired(correct_a: str, correct_b: str) -> Difference:
    """``a - b`` from per-image results on the same images (``'1'`` right, ``'0'`` wrong, in one order).

    The s.e. is that of the mean of the per-image differences d = a - b (each -1, 0 or 1), never below one
    image.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(f"paired results need the same images: {len(correct_a)} vs {len(correct_b)}")
    n = len(correct_a)
    if n == 0:
        return Difference(math.nan, math.nan, 0, paired=True)
    a_only = sum(1 for x, y in zip(correct_a, correct_b, strict=True) if x == "1" and y == "0")
    b_only = sum(1 for x, y in zip(correct_a, correct_b, strict=True) if x == "0" and y == "1")
    mean = (a_only - b_only) / n
    variance = (a_only + b_only) / n - mean**2  # of d over the images
    sample_variance = variance * n / (n - 1) if n > 1 else 0.0
    se = max(math.sqrt(max(sample_variance, 0.0) / n), resolution(n))
    return Difference(mean, se, n, paired=True, a_only=a_only, b_only=b_only, p_value=mcnemar_p(a_only, b_only))


def unpaired(accuracy_a: float, accuracy_b: float, n_images: int) -> Difference:
    """``a - b`` from two accuracies on ``n_images`` each, without per-image results: the binomial s.e. of a
    difference of independent proportions, never below one image (conservative for a paired comparison)."""
    if n_images <= 0:
        return Difference(math.nan, math.nan, 0)
    pa, pb = (min(1.0, max(0.0, p)) for p in (accuracy_a, accuracy_b))
    se = max(math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n_images), resolution(n_images))
    return Difference(accuracy_a - accuracy_b, se, n_images)


def between(a: Mapping[str, object], b: Mapping[str, object]) -> Difference:
    """``a - b`` of two recorded runs (``accuracy``, ``n_judged`` and, where recorded, ``correct``): paired
    when both have per-image results on the same number of images, else unpaired."""
    ca, cb = a.get("correct"), b.get("correct")
    if isinstance(ca, str) and isinstance(cb, str) and ca and len(ca) == len(cb):
        return paired(ca, cb)
    n = min(int(a["n_judged"]), int(b["n_judged"]))  # type: ignore[call-overload]
    return unpaired(float(a["accuracy"]), float(b["accuracy"]), n)  # type: ignore[arg-type]


def _sample_sd(values: Sequence[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def over_seeds(per_seed: Sequence[Difference], *, same_images: bool) -> Difference:
    """The mean of per-seed differences (each seed its own subsample and training run) and its s.e.

    ``same_images``: every seed was judged on the same images (a dataset's own test split), so their
    sampling noise is shared: the image part of the s.e. is one seed's (it does not shrink with seeds) and
    the spread across seeds adds the training noise. Otherwise the seeds are independent draws and the s.e.
    is the larger of the propagated one and the spread across seeds.
    """
    k = len(per_seed)
    if k == 0:
        return Difference(math.nan, math.nan, 0, seeds=0)
    if k == 1:
        return per_seed[0]
    means = [d.mean for d in per_seed]
    mean = sum(means) / k
    spread = _sample_sd(means) / math.sqrt(k)
    if same_images:
        image = sum(d.se for d in per_seed) / k
        se = math.sqrt(image**2 + spread**2)
    else:
        se = max(math.sqrt(sum(d.se**2 for d in per_seed)) / k, spread)
    return Difference(mean, se, min(d.n_images for d in per_seed), seeds=min(d.seeds for d in per_seed),
                      paired=all(d.paired for d in per_seed))


def clustered(by_dataset: Mapping[str, Sequence[Difference]]) -> Difference:
    """The mean difference over datasets, each dataset counted once, and its s.e.

    A dataset's cases (its levels) share its images and its domain: their mean counts as one estimate whose
    s.e. is their mean s.e. (as if fully correlated). Across datasets the s.e. is the larger of the
    propagated one and the spread of the dataset means.
    """
    datasets = {name: list(ds) for name, ds in by_dataset.items() if ds}
    if not datasets:
        return Difference(math.nan, math.nan, 0, seeds=0, datasets=0)
    means = [sum(d.mean for d in ds) / len(ds) for ds in datasets.values()]
    ses = [sum(d.se for d in ds) / len(ds) for ds in datasets.values()]
    k = len(means)
    mean = sum(means) / k
    se = math.sqrt(sum(s**2 for s in ses)) / k
    if k > 1:
        se = max(se, _sample_sd(means) / math.sqrt(k))
    every = [d for ds in datasets.values() for d in ds]
    return Difference(mean, se, min(d.n_images for d in every), seeds=min(d.seeds for d in every), datasets=k,
                      paired=all(d.paired for d in every))
