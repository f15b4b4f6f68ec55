"""Similarity signals: LogME against an independent implementation of the paper, the BN-statistics
shift, cross-validated separability, and (slow, real data) the ordering a person would give."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset, shared_dir
from threadpoolctl import threadpool_limits

from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.advisor.measure.images.embedding import BNReference, BNStatistics, EmbeddingSet
from tl_advise.advisor.measure.images.engines.torch_engine import bn_reference
from tl_advise.advisor.measure.images.similarity import bn_shift, separability
from tl_advise.advisor.measure.logme import logme
from tl_advise.schema.models import AdviceResult


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    # Multi-threaded BLAS on the tiny matrices of the cross-validation spins for seconds on a busy 2-core
    # machine (measured 18 s against 1 s for one separability()); one thread gives the same numbers.
    with threadpool_limits(1, "blas"):
        yield


# --------------------------------------------------------------------------- LogME reference


def logme_reference(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 11, tol: float = 1e-3,
                    converge: bool = False) -> float:
    """LogME as Algorithm 1 of You et al. (ICML 2021) writes it, with explicit matrices.

    Per class (one-hot target t): start from alpha = beta = 1 and repeat
        A = alpha I + beta FᵀF,  m = beta A⁻¹ Fᵀt,  gamma = Σ beta σᵢ / (alpha + beta σᵢ)  (σ over all D),
        alpha ← gamma / mᵀm,  beta ← (n − gamma) / ‖Fm − t‖²
    then L = n/2 log beta + D/2 log alpha − n/2 log 2π − beta/2 ‖Fm − t‖² − alpha/2 mᵀm − ½ log|A|, divided
    by n. ``converge=True`` iterates to the fixed point and evaluates m there; otherwise the stopping rule of
    the published code (at most 11 steps, relative change of alpha/beta below 1e-3, 1e-5 in the updates).
    """
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    singular = np.linalg.svd(f, compute_uv=False)
    sigma = np.zeros(d)
    sigma[: singular.size] = singular**2  # σᵢ of the D×D matrix FᵀF: zero beyond the rank
    gram = f.T @ f
    eps = 1e-5
    evidences = []
    for cls in np.unique(labels):
        t = (labels == cls).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(10_000 if converge else max_iter):
            m = beta * np.linalg.solve(alpha * np.eye(d) + beta * gram, f.T @ t)
            gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
            m2, res2 = float(m @ m), float(np.sum((f @ m - t) ** 2))
            before = alpha / beta
            alpha, beta = gamma / (m2 + eps), (n - gamma) / (res2 + eps)
            if abs(alpha / beta - before) / before <= (1e-13 if converge else tol):
                break
        if converge:
            m = beta * np.linalg.solve(alpha * np.eye(d) + beta * gram, f.T @ t)
            m2, res2 = float(m @ m), float(np.sum((f @ m - t) ** 2))
        _, logdet = np.linalg.slogdet(alpha * np.eye(d) + beta * gram)
        evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                    - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def random_problem(n: int, d: int, k: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    features = rng.normal(size=(n, d))
    features[:, :k] += signal * np.eye(k)[labels]
    return features, labels


@pytest.mark.parametrize(("n", "d", "k", "seed"), [(200, 16, 3, 0), (300, 40, 4, 1), (120, 8, 2, 2),
                                                   (500, 64, 10, 3)])
@pytest.mark.slow
def test_logme_matches_the_paper_when_samples_exceed_dimensions(n: int, d: int, k: int, seed: int) -> None:
    features, labels = random_problem(n, d, k, seed)
    ours = logme(features, labels)
    assert ours == pytest.approx(logme_reference(features, labels), rel=1e-6)
    # The early stop costs almost nothing against the true maximum of the evidence.
    assert ours == pytest.approx(logme_reference(features, labels, converge=True), rel=1e-3)




@pytest.mark.parametrize(("n", "d"), [(60, 100), (30, 200)])
def test_logme_matches_the_paper_when_dimensions_exceed_samples(n: int, d: int) -> None:
    features, labels = random_problem(n, d, 3, seed=n)
    assert logme(features, labels) == pytest.approx(logme_reference(features, labels), rel=1e-6)


def test_logme_ignores_all_zero_feature_columns() -> None:
    """Dead (always-zero) channels add nothing to the evidence of a linear model."""
    features, labels = random_problem(200, 10, 3, seed=7)
    padded = np.hstack([features, np.zeros((200, 20))])
    assert logme(padded, labels) == pytest.approx(logme(features, labels), rel=1e-6)


def test_logme_prefers_features_that_encode_the_labels() -> None:
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(4), 50)
    noise = rng.normal(size=(200, 32))
    informative = noise.copy()
    informative[:, :4] += 3 * np.eye(4)[labels]  # the label, linearly, plus the same noise
    assert logme(informative, labels) > logme(noise, labels) + 0.1
    weaker = noise.copy()
    weaker[:, :4] += 1 * np.eye(4)[labels]
    assert logme(informative, labels) > logme(weaker, labels) > logme(noise, labels)


def test_logme_is_invariant_to_the_order_of_samples() -> None:
    features, labels = random_problem(150, 12, 3, seed=5)
    order = np.random.default_rng(0).permutation(150)
    assert logme(features[order], labels[order]) == pytest.approx(logme(features, labels), rel=1e-9)


# --------------------------------------------------------------------------- BN shift


@pytest.fixture(scope="module")
def lite() -> Backbone:
    return load_backbone()


@pytest.fixture(scope="module")
def reference(lite: Backbone) -> BNReference:
    ref = bn_reference(lite)
    assert ref is not None
    return ref


def running_statistics(backbone: Backbone) -> BNStatistics:
    layers = backbone.batchnorm_layers()
    return BNStatistics(
        layers=[name for name, _ in layers],
        mean=[bn.running_mean.double().numpy().copy() for _, bn in layers],
        var=[bn.running_var.double().numpy().copy() for _, bn in layers],
    )


@pytest.mark.slow
def test_bn_shift_is_zero_for_the_source_statistics(lite: Backbone, reference: BNReference) -> None:
    shift = bn_shift(reference, running_statistics(lite))
    assert shift.n_layers == 49 and len(shift.profile) == 49
    assert max(p.w2 for p in shift.profile) < 1e-9
    assert shift.early < 1e-9 and shift.middle < 1e-9 and shift.late < 1e-9
    depths = [p.depth for p in shift.profile]
    assert depths[0] == 0 and depths[-1] == 1 and depths == sorted(depths)


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0])
def test_bn_shift_of_a_mean_shift_is_its_size_in_standard_deviations(lite: Backbone, reference: BNReference,
                                                                     k: float) -> None:
    stats = running_statistics(lite)
    eps = [bn.eps for _, bn in lite.batchnorm_layers()]
    stats.mean = [m + k * np.sqrt(v + e) for m, v, e in zip(stats.mean, stats.var, eps, strict=True)]
    shift = bn_shift(reference, stats)
    assert shift.early == pytest.approx(k, rel=1e-6)
    assert shift.middle == pytest.approx(k, rel=1e-6)
    assert shift.late == pytest.approx(k, rel=1e-6)


def test_bn_shift_grows_with_the_shift_and_locates_it(lite: Backbone, reference: BNReference) -> None:
    previous = -1.0
    for k in (0.0, 0.1, 0.5, 1.5):
        stats = running_statistics(lite)
        stats.mean = [m + k for m in stats.mean]
        late = bn_shift(reference, stats).late
        assert late > previous
        previous = late
    # Doubling the spread of the last third only moves "late".
    stats = running_statistics(lite)
    n = len(stats.layers)
    for i in range(n - n // 3, n):
        stats.var[i] = stats.var[i] * 4
    shift = bn_shift(reference, stats)
    assert shift.early < 1e-9 and shift.middle < 1e-9 and shift.late > 0.5


# --------------------------------------------------------------------------- separability


def embedding_set(features: np.ndarray, pixels: np.ndarray, labels: np.ndarray) -> EmbeddingSet:
    records = [ImageRecord(path=Path(f"/data/c{y}/{i}.png"), class_name=f"c{y}", label=int(y), split="all",
                           width=32, height=32, mode="RGB", size_bytes=100, mtime_ns=1)
               for i, y in enumerate(labels)]
    n = len(labels)
    return EmbeddingSet(records=records, features=features.astype(np.float32), max_prob=np.full(n, 0.5),
                        entropy=np.full(n, 0.5), top1=np.zeros(n, np.int32), pixels=pixels, bn=None)


def test_separability_needs_two_images_per_class() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(4)
    one_each = embedding_set(rng.normal(size=(4, 16)), rng.integers(0, 256, (4, 1024), dtype=np.uint8), labels)
    assert separability(one_each) is None
    labels = np.array([0, 0, 0, 1, 1, 1, 2])  # one class with a single image is enough to refuse
    lopsided = embedding_set(rng.normal(size=(7, 16)), rng.integers(0, 256, (7, 1024), dtype=np.uint8), labels)
    assert separability(lopsided) is None


@pytest.mark.slow
def test_separability_gain_when_features_separate_and_pixels_do_not() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 12)
    centres = 3 * rng.normal(size=(3, 64))  # the classes dominate the variance in every direction
    features = centres[labels] + rng.normal(size=(36, 64))
    pixels = rng.integers(0, 256, (36, 1024), dtype=np.uint8)  # no trace of the label
    sep = separability(embedding_set(features, pixels, labels))
    assert sep is not None
    assert sep.n_images == 36 and sep.n_folds == 5 and sep.chance == pytest.approx(1 / 3)
    assert sep.knn_accuracy > 0.9 and sep.logreg_accuracy > 0.9
    assert sep.pixel_knn_accuracy < 0.6 and sep.pixel_logreg_accuracy < 0.6
    assert sep.knn_gain > 0.3 and sep.logreg_gain > 0.3
    assert sep.knn_gain == pytest.approx(sep.knn_accuracy - sep.pixel_knn_accuracy)
    assert sep.logme_gain == pytest.approx(sep.logme - sep.pixel_logme)


@pytest.mark.slow
def test_separability_no_gain_when_pixels_carry_the_label() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 10)
    features = rng.normal(size=(20, 64))  # features blind to the label
    # The label is where the bright half is (k-NN compares directions, so brightness alone would not do).
    left = np.repeat([[1] * 512 + [0] * 512], 20, axis=0)
    bright = np.where(labels[:, None] == 0, left, 1 - left)
    pixels = 40 + 170 * bright + rng.integers(0, 30, (20, 1024))
    sep = separability(embedding_set(features, pixels.astype(np.uint8), labels))
    assert sep is not None and sep.n_folds == 5
    assert sep.pixel_knn_accuracy == 1.0 and sep.pixel_logreg_accuracy == 1.0
    assert sep.knn_gain < 0 and sep.logreg_gain < 0


@pytest.mark.slow
def test_separability_is_deterministic_per_seed() -> None:
    features, labels = random_problem(40, 64, 2, seed=9, signal=1.5)
    pixels = np.random.default_rng(3).integers(0, 256, (40, 1024), dtype=np.uint8)
    data = embedding_set(features, pixels, labels)
    assert separability(data, seed=4) == separability(data, seed=4)


# --------------------------------------------------------------------------- real data (slow)

REAL = ("hymenoptera", "flowers5_small", "eurosat_small", "pneumoniamnist")
PER_CLASS = 8  # the signals are stable from ~8 per class (measured: the ordering holds at 8, 16, 32 and 64)


@pytest.fixture(scope="module")
def real_advice(session_cache_dir: Path) -> Callable[[str], AdviceResult]:
    """advise() per shared dataset, computed once (and cached on disk for the rest of the session)."""
    from tl_advise.advisor import advise

    done: dict[str, AdviceResult] = {}

    def get(name: str) -> AdviceResult:
        if name not in done:
            done[name] = advise(shared_dataset(name), per_class=PER_CLASS, cache_dir=session_cache_dir,
                                device="cpu")
        return done[name]

    return get


@pytest.mark.slow
@pytest.mark.shared
def test_real_datasets_are_ordered_as_a_person_would(real_advice: Callable[[str], AdviceResult]) -> None:
    results = {name: real_advice(name) for name in REAL}
    scores = {name: r.similarity.score for name, r in results.items()}
    labels = {name: r.similarity.label for name, r in results.items()}
    assert labels == {"hymenoptera": "similar", "flowers5_small": "similar",
                      "eurosat_small": "different", "pneumoniamnist": "different"}, scores
    natural = min(scores["hymenoptera"], scores["flowers5_small"])
    other = max(scores["eurosat_small"], scores["pneumoniamnist"])
    assert natural - other > 0.3, scores
    for r in results.values():
        assert r.backbone.name == "efficientnet_lite0" and r.backbone.calibrated
        assert 0 <= r.similarity.score <= 1 and r.similarity.bn_shift is not None


@pytest.mark.slow
@pytest.mark.shared
def test_real_datasets_bn_shift_profile(real_advice: Callable[[str], AdviceResult]) -> None:
    shift = {name: real_advice(name).similarity.bn_shift for name in REAL}
    assert all(s is not None and s.n_layers == 49 for s in shift.values())
    late = {name: s.late for name, s in shift.items() if s}
    early = {name: s.early for name, s in shift.items() if s}
    # Ants and bees are ImageNet-like all the way up; satellites and X-rays are not.
    assert late["hymenoptera"] < late["eurosat_small"] and late["hymenoptera"] < late["pneumoniamnist"], late
    # Greyscale 28 px X-rays move the first layers more than any natural photo.
    assert early["pneumoniamnist"] > max(early["hymenoptera"], early["flowers5_small"]), early
    assert early["pneumoniamnist"] > 0.4 > max(early["hymenoptera"], early["flowers5_small"]), early


@pytest.mark.slow
@pytest.mark.shared
def test_real_dataset_sample_and_source_head(real_advice: Callable[[str], AdviceResult]) -> None:
    hym = real_advice("hymenoptera")
    assert hym.sample.n_images == 2 * PER_CLASS
    assert hym.dataset.layout == "splits" and hym.dataset.classes == ["ants", "bees"]
    pneu = real_advice("pneumoniamnist")
    assert pneu.sample.n_images == 2 * PER_CLASS
    assert any(w.id == "greyscale_input" for w in pneu.recommendation.warnings)
    assert any(w.id == "duplicates_across_splits" for w in pneu.recommendation.warnings)
    # The ImageNet head is confident on insects and lost on X-rays.
    assert hym.similarity.head is not None and pneu.similarity.head is not None
    assert hym.similarity.head.mean_max_prob > pneu.similarity.head.mean_max_prob + 0.2
    assert hym.similarity.head.mean_entropy < pneu.similarity.head.mean_entropy


MOBILENET_V2 = "mobilenet_v2:IMAGENET1K_V1"


@pytest.fixture(scope="module")
def mobilenet_advice(tmp_path_factory: pytest.TempPathFactory,
                     session_cache_dir: Path) -> Iterator[Callable[[str], AdviceResult]]:
    """advise() with torchvision's MobileNetV2 (IMAGENET1K_V1), its weights from ../shared/weights."""
    import shutil

    from tl_advise.advisor import advise

    weights = shared_dir() / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent (set TL_ADVISE_SHARED to the folder holding weights/)")
    home = tmp_path_factory.mktemp("torch-home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(weights, home / "hub" / "checkpoints" / weights.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        done: dict[str, AdviceResult] = {}

        def get(name: str) -> AdviceResult:
            if name not in done:
                done[name] = advise(shared_dataset(name), backbone=MOBILENET_V2, per_class=PER_CLASS,
                                    cache_dir=session_cache_dir, device="cpu")
            return done[name]

        yield get


@pytest.mark.slow
@pytest.mark.shared
def test_mobilenet_v2_profile_is_calibrated_on_real_data(mobilenet_advice: Callable[[str], AdviceResult]
                                                        ) -> None:
    results = {name: mobilenet_advice(name) for name in (*REAL, "lfw_faces_vs_nonfaces")}
    scores = {name: r.similarity.score for name, r in results.items()}
    labels = {name: r.similarity.label for name, r in results.items()}
    assert labels == {"hymenoptera": "similar", "flowers5_small": "similar", "eurosat_small": "different",
                      "pneumoniamnist": "different", "lfw_faces_vs_nonfaces": "different"}, scores
    for r in results.values():
        assert r.backbone.profile_key == MOBILENET_V2 and r.backbone.calibrated
        assert "uncalibrated_backbone" not in {w.id for w in r.recommendation.warnings}
        assert not any("profile" in note for note in r.similarity.notes), r.similarity.notes
