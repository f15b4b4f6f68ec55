"""One batched forward pass over a sample: embeddings, source-head signals and BN-input statistics.

Everything the similarity signals need comes out of the same pass. Per-image results are cached by
backbone + preprocessing + file identity (path, size, mtime); the BN statistics, which describe the
sample as a whole, are cached per sample. A warm run does no forward pass at all.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tl_advise.advisor.backbones import Backbone
from tl_advise.advisor.cache import ArrayCache, digest, file_identity
from tl_advise.advisor.imaging import PIXEL_BASELINE_SIZE, eval_transform, open_rgb, pixel_baseline
from tl_advise.advisor.scan import ImageRecord, display_name
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.models import SkippedFile

logger = logging.getLogger(__name__)

_PIXELS = PIXEL_BASELINE_SIZE * PIXEL_BASELINE_SIZE
SUBSAMPLE_FROM_PX = 28  # BN-input maps this large or larger are summarised on a stride-2 grid


@dataclass
class BNStatistics:
    """Per BN layer: the target's per-channel mean and variance of the layer's input."""

    layers: list[str]
    mean: list[np.ndarray]
    var: list[np.ndarray]


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

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)


def backbone_key(backbone: Backbone) -> str:
    """Identity of what produces the numbers: architecture, weights and preprocessing."""
    info = backbone.info
    weights_identity: object = info.weights
    if info.source == "file":
        path = Path(info.weights.removeprefix("file:"))
        stat = path.stat()
        weights_identity = (info.weights, stat.st_size, stat.st_mtime_ns)
    return digest(info.name, weights_identity, info.preprocessing.model_dump(), info.feature_dim)


class _ImageDataset(Dataset[tuple[torch.Tensor, np.ndarray, int, str]]):
    """Decodes one image in a worker: the network input, the pixel baseline, and any decode error."""

    def __init__(self, paths: Sequence[Path], backbone: Backbone) -> None:
        self.paths = list(paths)
        pre = backbone.preprocessing
        self.transform = eval_transform(pre)
        self.draft_size = pre.resize_size
        self.input_size = pre.input_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray, int, str]:
        try:
            img = open_rgb(str(self.paths[index]), draft_size=self.draft_size)
            return self.transform(img), pixel_baseline(img), index, ""
        except Exception as exc:  # a file whose header read fine but whose data does not decode
            blank = torch.zeros(3, self.input_size, self.input_size)
            return blank, np.zeros(_PIXELS, np.uint8), index, f"cannot decode image ({exc})"


class _BNRecorder:
    """Forward pre-hooks that sum each BN layer's per-channel input mean and mean square per image."""

    def __init__(self, layers: list[tuple[str, nn.modules.batchnorm._BatchNorm]]) -> None:
        self.names = [name for name, _ in layers]
        self.sum_mean = [torch.zeros(m.num_features, dtype=torch.float64) for _, m in layers]
        self.sum_sq = [torch.zeros(m.num_features, dtype=torch.float64) for _, m in layers]
        self.count = 0
        self.keep: torch.Tensor | None = None  # which rows of the current batch to count
        self.handles = [m.register_forward_pre_hook(self._hook(i)) for i, (_, m) in enumerate(layers)]

    def _hook(self, i: int):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].float()
            if self.keep is not None:
                x = x[self.keep]
            if x.dim() == 4 and min(x.shape[2:]) >= SUBSAMPLE_FROM_PX:
                # Every other row and column: the hooks cost as much as the forward pass on the large
                # early maps otherwise, and thousands of positions per image still pin the moments down.
                x = x[:, :, ::2, ::2]
            dims = tuple(range(2, x.dim()))
            self.sum_mean[i] += x.mean(dim=dims).sum(0).double().cpu()
            self.sum_sq[i] += (x * x).mean(dim=dims).sum(0).double().cpu()

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"layers": np.array(self.names), "count": np.array(self.count)}
        for i in range(len(self.names)):
            out[f"mean_{i}"] = self.sum_mean[i].numpy()
            out[f"sq_{i}"] = self.sum_sq[i].numpy()
        return out


def bn_statistics_from(arrays: dict[str, np.ndarray]) -> BNStatistics:
    n = max(int(arrays["count"]), 1)
    layers = [str(name) for name in arrays["layers"]]
    means = [arrays[f"mean_{i}"] / n for i in range(len(layers))]
    # Across images each image contributes equally (all share the input size), so E[x²] − E[x]² holds.
    variances = [np.maximum(arrays[f"sq_{i}"] / n - means[i] ** 2, 0.0) for i in range(len(layers))]
    return BNStatistics(layers=layers, mean=means, var=variances)


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _forward(backbone: Backbone, paths: list[Path], *, device: torch.device, batch_size: int,
             num_workers: int, recorder: _BNRecorder | None, progress: bool
             ) -> tuple[dict[str, np.ndarray], list[tuple[int, str]]]:
    n = len(paths)
    features = np.zeros((n, backbone.info.feature_dim), np.float32)
    max_prob = np.zeros(n, np.float32)
    entropy = np.zeros(n, np.float32)
    top1 = np.zeros(n, np.int32)
    pixels = np.zeros((n, _PIXELS), np.uint8)
    failures: list[tuple[int, str]] = []
    loader = DataLoader(
        _ImageDataset(paths, backbone), batch_size=batch_size, shuffle=False,
        num_workers=num_workers if n > batch_size else 0, pin_memory=device.type == "cuda",
        # Its own generator: embedding never draws from the global RNG, so a seeded run that follows
        # sees the same random numbers whether the embeddings came from the cache or not.
        generator=torch.Generator().manual_seed(0),
    )
    n_classes = None
    use_amp = device.type == "cuda"
    with torch.inference_mode(), tqdm(total=n, desc="embedding", unit="img", disable=not progress,
                                      leave=False) as bar:
        for images, pix, index, errors in loader:
            ok = torch.tensor([not e for e in errors])
            failures.extend((int(i), e) for i, e in zip(index, errors, strict=True) if e)
            if recorder is not None:
                recorder.keep = ok.to(device) if not bool(ok.all()) else None
                recorder.count += int(ok.sum())
            x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=use_amp):
                feats = backbone.body(x)
                logits = backbone.head(feats)
            probs = logits.float().softmax(-1)
            n_classes = probs.shape[-1]
            idx = index.numpy()
            features[idx] = feats.float().cpu().numpy()
            max_prob[idx] = probs.max(-1).values.cpu().numpy()
            entropy[idx] = (-(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(n_classes)).cpu().numpy()
            top1[idx] = probs.argmax(-1).cpu().numpy()
            pixels[idx] = pix.numpy()
            bar.update(len(idx))
    rows = {"features": features, "max_prob": max_prob, "entropy": entropy, "top1": top1, "pixels": pixels}
    return rows, failures


def embed(backbone: Backbone, records: Sequence[ImageRecord], *, root: Path, device: torch.device,
          cache: ArrayCache | None = None, collect_bn: bool = True, batch_size: int = 32,
          num_workers: int | None = None, progress: bool = False) -> EmbeddingSet:
    """Embed ``records`` (in order) with ``backbone``; with ``collect_bn`` also the sample's BN statistics."""
    cache = cache or ArrayCache(None)
    records = list(records)
    key = backbone_key(backbone)
    shard_key = digest(key, str(root.resolve()))
    ids = [file_identity(r, root) for r in records]

    cached_rows = _cached_rows(cache, shard_key)
    bn_key = digest(key, sorted(ids))
    bn_arrays = cache.load("bnstats", bn_key) if collect_bn and backbone.batchnorm_layers() else None
    needs_bn = collect_bn and bool(backbone.batchnorm_layers()) and bn_arrays is None
    todo = list(range(len(records))) if needs_bn else [i for i, k in enumerate(ids) if k not in cached_rows]

    failures: list[tuple[int, str]] = []
    computed: dict[str, np.ndarray] = {}
    if todo:
        logger.info("embedding %d images with %s on %s", len(todo), backbone.name, device)
        backbone.eval().to(device)
        backbone.body.to(memory_format=torch.channels_last)  # ~1.7× on CPU for these networks
        recorder = _BNRecorder(backbone.batchnorm_layers()) if needs_bn else None
        try:
            computed, failures = _forward(
                backbone, [records[i].path for i in todo], device=device, batch_size=batch_size,
                num_workers=default_workers() if num_workers is None else num_workers,
                recorder=recorder, progress=progress)
        finally:
            if recorder is not None:
                recorder.remove()
        if recorder is not None:
            bn_arrays = recorder.arrays()
            cache.save("bnstats", bn_key, bn_arrays)
        failures = [(todo[i], reason) for i, reason in failures]
        failed_local = {i for i, _ in failures}
        _check_finite(backbone, computed, [j for j in range(len(todo)) if todo[j] not in failed_local])
        new_rows = {ids[todo[j]]: {name: arr[j] for name, arr in computed.items()}
                    for j in range(len(todo)) if todo[j] not in failed_local}
        cached_rows.update(new_rows)
        _save_rows(cache, shard_key, cached_rows)

    failed_idx = {i for i, _ in failures}
    keep = [i for i in range(len(records)) if i not in failed_idx]
    stacked = {name: np.stack([cached_rows[ids[i]][name] for i in keep]) if keep else np.zeros((0,))
               for name in ("features", "max_prob", "entropy", "top1", "pixels")}
    return EmbeddingSet(
        records=[records[i] for i in keep],
        features=stacked["features"], max_prob=stacked["max_prob"], entropy=stacked["entropy"],
        top1=stacked["top1"], pixels=stacked["pixels"],
        bn=bn_statistics_from(bn_arrays) if bn_arrays is not None else None,
        cache_hits=len(records) - len(todo), forward_passes=len(todo),
        failed=[SkippedFile(path=display_name(records[i].path, root), reason=reason)
                for i, reason in failures],
    )


def store_embeddings(backbone: Backbone, embedded: EmbeddingSet, *, root: Path, cache: ArrayCache) -> None:
    """Add ``embedded``'s per-image rows to the cache, as ``embed`` does after its forward pass: for a set
    computed elsewhere (gathered from the processes of a distributed run)."""
    shard_key = digest(backbone_key(backbone), str(root.resolve()))
    rows = _cached_rows(cache, shard_key)
    for i, record in enumerate(embedded.records):
        rows[file_identity(record, root)] = {
            "features": embedded.features[i], "max_prob": embedded.max_prob[i], "entropy": embedded.entropy[i],
            "top1": embedded.top1[i], "pixels": embedded.pixels[i]}
    _save_rows(cache, shard_key, rows)


def _check_finite(backbone: Backbone, computed: dict[str, np.ndarray], decoded: list[int]) -> None:
    """NaN or infinite features (broken weights, an fp16 overflow) would fail deep inside the similarity
    measures; refuse them here, once, before they reach the cache."""
    features = computed["features"][decoded]
    bad = int((~np.isfinite(features).all(axis=1)).sum()) if len(decoded) else 0
    if bad:
        raise BackboneError(
            f"{backbone.name} ({backbone.info.weights}) produced NaN or infinite features for {bad} of "
            f"{len(decoded)} images: its weights (or its numerics on this device) are broken")


def _cached_rows(cache: ArrayCache, shard_key: str) -> dict[str, dict[str, np.ndarray]]:
    """All rows of the shard (so that saving keeps them), indexed by file identity."""
    shard = cache.load("embeddings", shard_key)
    if shard is None:
        return {}
    names = [n for n in shard if n != "ids"]
    return {str(k): {n: shard[n][i] for n in names} for i, k in enumerate(shard["ids"])}


def _save_rows(cache: ArrayCache, shard_key: str, rows: dict[str, dict[str, np.ndarray]]) -> None:
    if not cache.enabled or not rows:
        return
    ids = sorted(rows)
    names = list(next(iter(rows.values())))
    arrays = {n: np.stack([rows[k][n] for k in ids]) for n in names}
    cache.save("embeddings", shard_key, {"ids": np.array(ids), **arrays})
