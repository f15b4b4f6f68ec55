"""One batched forward pass over a sample, whatever engine runs it: embeddings, source-head signals and
BN-input statistics, cached. Free of torch: the ONNX Runtime engine and the PyTorch engine both plug in.

Everything the similarity signals need comes out of the same pass. Per-image results are cached by
engine + backbone + preprocessing + file identity (path, size, mtime); the BN statistics, which
describe the sample as a whole, are cached per sample. A warm run does no forward pass at all.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from tl_advise.advisor.data.images.scan import ImageRecord, display_name
from tl_advise.advisor.defaults import BN_STATS_KIND, EMBEDDINGS_KIND
from tl_advise.advisor.measure.cache import ArrayCache, digest, file_identity
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.models import BackboneInfo, SkippedFile

logger = logging.getLogger(__name__)

# BN-input maps this large or larger are summarised on a stride-2 grid: the statistics cost as much as
# the forward pass on the large early maps otherwise, and thousands of positions per image still pin
# the moments down. Both engines follow it, so their signals agree.
SUBSAMPLE_FROM_PX = 28
ROW_FIELDS = ("features", "max_prob", "entropy", "top1", "pixels")


@dataclass
class BNStatistics:
    """Per BN layer: the target's per-channel mean and variance of the layer's input."""

    layers: list[str]
    mean: list[np.ndarray]
    var: list[np.ndarray]


@dataclass
class BNReference:
    """Per BN layer, in forward order: the source statistics (running mean and variance) and eps."""

    layers: list[str]
    running_mean: list[np.ndarray]
    running_var: list[np.ndarray]
    eps: list[float]

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"layers": np.array(self.layers), "eps": np.array(self.eps)}
        for i in range(len(self.layers)):
            out[f"mean_{i}"] = self.running_mean[i]
            out[f"var_{i}"] = self.running_var[i]
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BNReference:
        layers = [str(name) for name in arrays["layers"]]
        return cls(layers=layers, running_mean=[arrays[f"mean_{i}"] for i in range(len(layers))],
                   running_var=[arrays[f"var_{i}"] for i in range(len(layers))],
                   eps=[float(e) for e in arrays["eps"]])


@dataclass
class EmbeddingSet:
    records: list[ImageRecord]
    features: np.ndarray  # (n, feature_dim) float32, pre-logits
    max_prob: np.ndarray  # (n,) source-head max softmax probability
    entropy: np.ndarray  # (n,) source-head softmax entropy / log(n_classes)
    top1: np.ndarray  # (n,) source-head argmax
    pixels: np.ndarray  # (n, 32*32) uint8 greyscale baseline
    bn: BNStatistics | None
    cache_hits: int = 0
    forward_passes: int = 0
    failed: list[SkippedFile] = field(default_factory=list)
    # (images, seconds) of each batch's forward pass through the body, in order, where the engine timed it
    body_times: list[tuple[int, float]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)


@dataclass
class Batch:
    """One forward batch from an engine. ``errors[i]`` is empty when image ``index[i]`` decoded; the
    rows of undecodable images are placeholders and never used. ``bn_mean[l]``/``bn_sq[l]`` are (n, C):
    each image's per-channel mean and mean square of BN layer ``l``'s input (empty without BN)."""

    index: np.ndarray
    errors: list[str]
    features: np.ndarray
    logits: np.ndarray
    pixels: np.ndarray
    bn_mean: list[np.ndarray]
    bn_sq: list[np.ndarray]
    # wall seconds of the body's forward pass on this batch alone (no decoding, no head, no BN taps), where the
    # engine times it: the PyTorch engine without BN statistics (the ranking's images/s)
    body_seconds: float | None = None


class EmbeddingEngine(Protocol):
    """What runs the forward pass: PyTorch (``engines.torch_engine``) or ONNX Runtime (``engines.onnx_engine``)."""

    name: str  # "torch" or "onnxruntime"
    default_batch_size: int
    info: BackboneInfo
    categories: list[str] | None

    @property
    def cache_key(self) -> str:
        """Identity of what produces the numbers: engine, architecture, weights, preprocessing."""
        ...

    @property
    def device(self) -> str:
        """Where it runs, for the report: ``cpu (onnxruntime 1.20, 2 threads)``."""
        ...

    def bn_reference(self) -> BNReference | None:
        """The source statistics of the BN layers the batches report on; None without BN."""
        ...

    def batches(self, paths: Sequence[Path], *, batch_size: int, num_workers: int,
                collect_bn: bool) -> Iterator[Batch]:
        ...


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def head_rows(logits: np.ndarray) -> dict[str, np.ndarray]:
    """The source head's softmax summarised per image: max probability, normalised entropy, argmax."""
    z = logits.astype(np.float32)
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1) / math.log(probs.shape[1])
    return {"max_prob": probs.max(axis=1), "entropy": entropy.astype(np.float32),
            "top1": probs.argmax(axis=1).astype(np.int32)}


class _BNAccumulator:
    """Sums each image's BN-input moments over the decoded images of the sample (float64)."""

    def __init__(self, layers: list[str]) -> None:
        self.layers = layers
        self.sum_mean: list[np.ndarray] = []
        self.sum_sq: list[np.ndarray] = []
        self.count = 0

    def add(self, batch: Batch, ok: np.ndarray) -> None:
        if not self.sum_mean:
            self.sum_mean = [np.zeros(m.shape[1]) for m in batch.bn_mean]
            self.sum_sq = [np.zeros(m.shape[1]) for m in batch.bn_sq]
        for i, (mean, sq) in enumerate(zip(batch.bn_mean, batch.bn_sq, strict=True)):
            self.sum_mean[i] += mean[ok].astype(np.float64).sum(axis=0)
            self.sum_sq[i] += sq[ok].astype(np.float64).sum(axis=0)
        self.count += int(ok.sum())

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"layers": np.array(self.layers), "count": np.array(self.count)}
        for i in range(len(self.layers)):
            out[f"mean_{i}"] = self.sum_mean[i] if self.sum_mean else np.zeros(0)
            out[f"sq_{i}"] = self.sum_sq[i] if self.sum_sq else np.zeros(0)
        return out


def bn_statistics_from(arrays: dict[str, np.ndarray]) -> BNStatistics:
    n = max(int(arrays["count"]), 1)
    layers = [str(name) for name in arrays["layers"]]
    means = [arrays[f"mean_{i}"] / n for i in range(len(layers))]
    # Across images each image contributes equally (all share the input size), so E[x²] − E[x]² holds.
    variances = [np.maximum(arrays[f"sq_{i}"] / n - means[i] ** 2, 0.0) for i in range(len(layers))]
    return BNStatistics(layers=layers, mean=means, var=variances)


def _forward(engine: EmbeddingEngine, paths: list[Path], *, batch_size: int, num_workers: int,
             bn: _BNAccumulator | None, progress: bool, body_times: list[tuple[int, float]] | None = None
             ) -> tuple[dict[str, np.ndarray], list[tuple[int, str]]]:
    n = len(paths)
    rows: dict[str, np.ndarray] = {}
    failures: list[tuple[int, str]] = []
    with tqdm(total=n, desc="embedding", unit="img", disable=not progress, leave=False) as bar:
        for batch in engine.batches(paths, batch_size=batch_size, num_workers=num_workers,
                                    collect_bn=bn is not None):
            ok = np.array([not e for e in batch.errors])
            failures.extend((int(i), e) for i, e in zip(batch.index, batch.errors, strict=True) if e)
            if bn is not None:
                bn.add(batch, ok)
            if body_times is not None and batch.body_seconds is not None:
                body_times.append((len(batch.index), batch.body_seconds))
            values = {"features": batch.features.astype(np.float32), "pixels": batch.pixels,
                      **head_rows(batch.logits)}
            for name in ROW_FIELDS:
                if name not in rows:
                    rows[name] = np.zeros((n, *values[name].shape[1:]), values[name].dtype)
                rows[name][batch.index] = values[name]
            bar.update(len(batch.index))
    return rows, failures


def embed_sample(engine: EmbeddingEngine, records: Sequence[ImageRecord], *, root: Path,
                 cache: ArrayCache | None = None, collect_bn: bool = True, batch_size: int | None = None,
                 num_workers: int | None = None, progress: bool = False) -> EmbeddingSet:
    """Embed ``records`` (in order) with ``engine``; with ``collect_bn`` also the sample's BN statistics.
    ``batch_size`` None: the engine's own."""
    cache = cache or ArrayCache(None)
    records = list(records)
    key = engine.cache_key
    shard_key = digest(key, str(root.resolve()))
    ids = [file_identity(r, root) for r in records]

    reference = engine.bn_reference() if collect_bn else None
    cached_rows = _cached_rows(cache, shard_key)
    bn_key = digest(key, sorted(ids))
    bn = cache.read(BN_STATS_KIND, bn_key, bn_statistics_from) if reference is not None else None
    needs_bn = reference is not None and bn is None
    todo = list(range(len(records))) if needs_bn else [i for i, k in enumerate(ids) if k not in cached_rows]

    failures: list[tuple[int, str]] = []
    body_times: list[tuple[int, float]] = []
    if todo:
        logger.info("embedding %d images with %s (%s) on %s", len(todo), engine.info.name, engine.name,
                    engine.device)
        accumulator = _BNAccumulator(reference.layers) if needs_bn and reference is not None else None
        computed, failures = _forward(
            engine, [records[i].path for i in todo], batch_size=batch_size or engine.default_batch_size,
            num_workers=default_workers() if num_workers is None else num_workers,
            bn=accumulator, progress=progress, body_times=body_times)
        if accumulator is not None:
            bn_arrays = accumulator.arrays()
            cache.save(BN_STATS_KIND, bn_key, bn_arrays)
            bn = bn_statistics_from(bn_arrays)
        failures = [(todo[i], reason) for i, reason in failures]
        failed_local = {i for i, _ in failures}
        decoded = [j for j in range(len(todo)) if todo[j] not in failed_local]
        _check_finite(engine, computed, decoded)
        cached_rows.update({ids[todo[j]]: {name: arr[j] for name, arr in computed.items()} for j in decoded})
        _save_rows(cache, shard_key, cached_rows)

    failed_idx = {i for i, _ in failures}
    keep = [i for i in range(len(records)) if i not in failed_idx]
    stacked = {name: np.stack([cached_rows[ids[i]][name] for i in keep]) if keep else np.zeros((0,))
               for name in ROW_FIELDS}
    return EmbeddingSet(
        records=[records[i] for i in keep],
        features=stacked["features"], max_prob=stacked["max_prob"], entropy=stacked["entropy"],
        top1=stacked["top1"], pixels=stacked["pixels"],
        bn=bn,
        cache_hits=len(records) - len(todo), forward_passes=len(todo),
        failed=[SkippedFile(path=display_name(records[i].path, root), reason=reason)
                for i, reason in failures],
        body_times=body_times,
    )


def store_rows(cache_key: str, embedded: EmbeddingSet, *, root: Path, cache: ArrayCache) -> None:
    """Add ``embedded``'s per-image rows to the cache under ``cache_key``, as ``embed_sample`` does after
    its forward pass: for a set computed elsewhere (gathered from the processes of a distributed run)."""
    shard_key = digest(cache_key, str(root.resolve()))
    rows = _cached_rows(cache, shard_key)
    for i, record in enumerate(embedded.records):
        rows[file_identity(record, root)] = {
            "features": embedded.features[i], "max_prob": embedded.max_prob[i], "entropy": embedded.entropy[i],
            "top1": embedded.top1[i], "pixels": embedded.pixels[i]}
    _save_rows(cache, shard_key, rows)


def _check_finite(engine: EmbeddingEngine, computed: dict[str, np.ndarray], decoded: list[int]) -> None:
    """NaN or infinite features (broken weights, an fp16 overflow) would fail deep inside the similarity
    measures; refuse them here, once, before they reach the cache."""
    if not decoded:
        return
    features = computed["features"][decoded]
    bad = int((~np.isfinite(features).all(axis=1)).sum())
    if bad:
        raise BackboneError(
            f"{engine.info.name} ({engine.info.weights}) produced NaN or infinite features for {bad} of "
            f"{len(decoded)} images: its weights (or its numerics on this device) are broken")


def _cached_rows(cache: ArrayCache, shard_key: str) -> dict[str, dict[str, np.ndarray]]:
    """All rows of the shard (so that saving keeps them), indexed by file identity."""
    return cache.read(EMBEDDINGS_KIND, shard_key, _rows_of) or {}


def _rows_of(shard: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    # Exactly the fields a row has now: a shard without one of them is a miss (KeyError, see
    # ArrayCache.read), and a field no longer computed would make the next save's rows uneven.
    ids = shard["ids"]
    if any(len(shard[n]) != len(ids) for n in ROW_FIELDS):
        raise ValueError(f"{len(ids)} ids but arrays of other lengths")
    return {str(k): {n: shard[n][i] for n in ROW_FIELDS} for i, k in enumerate(ids)}


def _save_rows(cache: ArrayCache, shard_key: str, rows: dict[str, dict[str, np.ndarray]]) -> None:
    if not cache.enabled or not rows:
        return
    ids = sorted(rows)
    names = list(next(iter(rows.values())))
    arrays = {n: np.stack([rows[k][n] for k in ids]) for n in names}
    cache.save(EMBEDDINGS_KIND, shard_key, {"ids": np.array(ids), **arrays})
