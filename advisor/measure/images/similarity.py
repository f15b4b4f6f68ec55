"""Raw similarity signals, all from the one forward pass (see ``embed``).

- BN statistics shift: per channel ``sqrt((mu_t - mu_s)^2 + (sd_t - sd_s)^2) / sd_s`` of each BN layer's
  input against its stored running statistics (which describe ImageNet), averaged over channels, then
  over the early / middle / late third of the layers. W2 rather than KL: KL explodes on greyscale input
  (similarity notes, point 2).
- Source-head signals: mean max probability and normalised entropy of the ImageNet head.
- Separability: cross-validated k-NN and logistic-regression accuracy and LogME of the frozen features,
  each also as a gain over the same classifier on raw 32×32 greyscale pixels (point 5: the pixel
  baseline is cheaper and more informative than random weights).

The rules turn these into the combined score (``rules.engine.score_similarity``).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from threadpoolctl import threadpool_limits

from tl_advise.advisor.measure.images.embedding import BNReference, BNStatistics, EmbeddingSet
from tl_advise.advisor.measure.logme import logme
from tl_advise.schema.models import BNLayerShift, BNShift, HeadSignals, Separability

logger = logging.getLogger(__name__)

MAX_FOLDS = 5
KNN_NEIGHBOURS = 5
# Logistic regression runs on the top principal components: on 1024 raw pixels lbfgs needs ~30 s to
# converge on 300 images, on 32 components well under a second, for the same or better accuracy.
LOGREG_COMPONENTS = 32


def bn_shift(reference: BNReference, stats: BNStatistics) -> BNShift:
    """The target's BN-input statistics against the source's running statistics, layer by layer."""
    index = {name: i for i, name in enumerate(reference.layers)}
    profile: list[BNLayerShift] = []
    n = len(stats.layers)
    for i, name in enumerate(stats.layers):
        j = index[name]
        eps = reference.eps[j]
        mu_s = reference.running_mean[j]
        sd_s = np.sqrt(reference.running_var[j] + eps)
        mu_t, sd_t = stats.mean[i], np.sqrt(stats.var[i] + eps)
        w2 = np.sqrt((mu_t - mu_s) ** 2 + (sd_t - sd_s) ** 2) / sd_s
        profile.append(BNLayerShift(layer=name, depth=i / max(n - 1, 1), w2=float(w2.mean())))
    values = np.array([p.w2 for p in profile])
    early, middle, late = (float(band.mean()) for band in np.array_split(values, 3))
    return BNShift(early=early, middle=middle, late=late, n_layers=n, profile=profile)


def head_signals(embeddings: EmbeddingSet, categories: list[str] | None, top: int = 3) -> HeadSignals:
    counts = Counter(int(c) for c in embeddings.top1)
    total = max(len(embeddings.top1), 1)
    top_classes = [
        (categories[c] if categories and c < len(categories) else str(c), n / total)
        for c, n in counts.most_common(top)
    ]
    return HeadSignals(
        mean_max_prob=float(embeddings.max_prob.mean()),
        mean_entropy=float(embeddings.entropy.mean()),
        top_classes=top_classes,
    )


def _cv_accuracy(model: object, x: np.ndarray, y: np.ndarray, folds: StratifiedKFold) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Constant inputs (blank images) give PCA a zero total variance: the ratio it reports is NaN, which
        # nothing here reads; the accuracy is still measured, and would be chance.
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        return float(cross_val_score(model, x, y, cv=folds, scoring="accuracy").mean())


def separability(embeddings: EmbeddingSet, *, seed: int = 0) -> Separability | None:
    """Cross-validated accuracies and LogME; None when a class has fewer than 2 sampled images."""
    y = embeddings.labels
    counts = np.bincount(y)
    counts = counts[counts > 0]
    n_folds = int(min(MAX_FOLDS, counts.min())) if counts.size >= 2 else 0
    if n_folds < 2:
        return None
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    smallest_train = int(counts.sum() - np.ceil(counts.sum() / n_folds))
    k = max(1, min(KNN_NEIGHBOURS, smallest_train))

    def knn() -> object:
        return make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=k))

    components = max(1, min(LOGREG_COMPONENTS, smallest_train - 1, embeddings.features.shape[1],
                             embeddings.pixels.shape[1]))

    def logreg() -> object:
        return make_pipeline(StandardScaler(), PCA(components, random_state=seed),
                             LogisticRegression(max_iter=1000))

    features = embeddings.features.astype(np.float64)
    pixels = embeddings.pixels.astype(np.float64) / 255.0
    # These matrices are tiny: a multi-threaded BLAS only spins on them (18 s instead of 1 s measured
    # on a loaded 2-core machine), so the cross-validation runs single-threaded.
    with threadpool_limits(limits=1):
        scores = {
            "knn_accuracy": _cv_accuracy(knn(), features, y, folds),
            "logreg_accuracy": _cv_accuracy(logreg(), features, y, folds),
            "logme": logme(features, y),
            "pixel_knn_accuracy": _cv_accuracy(knn(), pixels, y, folds),
            "pixel_logreg_accuracy": _cv_accuracy(logreg(), pixels, y, folds),
            "pixel_logme": logme(pixels, y),
        }
    return Separability(
        n_images=len(y), n_folds=n_folds, chance=float(counts.max() / counts.sum()),
        knn_gain=scores["knn_accuracy"] - scores["pixel_knn_accuracy"],
        logreg_gain=scores["logreg_accuracy"] - scores["pixel_logreg_accuracy"],
        logme_gain=scores["logme"] - scores["pixel_logme"],
        **scores,
    )


