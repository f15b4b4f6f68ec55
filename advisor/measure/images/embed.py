"""``embed``: a sample through an eager PyTorch backbone, for callers that hold one (the runners).

The forward pass, the caching and the signals are ``advisor.measure.images.embedding``'s; this is its PyTorch face.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.images.backbones import Backbone
from tl_advise.advisor.measure.images.embedding import (
    BNStatistics,
    EmbeddingSet,
    bn_statistics_from,
    default_workers,
    embed_sample,
    store_rows,
)
from tl_advise.advisor.measure.images.engines.torch_engine import TorchEngine, backbone_key

__all__ = ["BNStatistics", "EmbeddingSet", "backbone_key", "bn_statistics_from", "default_workers", "embed",
           "store_embeddings"]


def embed(backbone: Backbone, records: Sequence[ImageRecord], *, root: Path, device: torch.device,
          cache: ArrayCache | None = None, collect_bn: bool = True, batch_size: int = 32,
          num_workers: int | None = None, progress: bool = False) -> EmbeddingSet:
    """Embed ``records`` (in order) with ``backbone``; with ``collect_bn`` also the sample's BN statistics."""
    return embed_sample(TorchEngine(backbone, device), records, root=root, cache=cache, collect_bn=collect_bn,
                        batch_size=batch_size, num_workers=num_workers, progress=progress)


def store_embeddings(backbone: Backbone, embedded: EmbeddingSet, *, root: Path, cache: ArrayCache) -> None:
    """Add ``embedded``'s per-image rows to the cache, as ``embed`` does after its forward pass: for a set
    computed elsewhere (gathered from the processes of a distributed run)."""
    store_rows(backbone_key(backbone), embedded, root=root, cache=cache)
