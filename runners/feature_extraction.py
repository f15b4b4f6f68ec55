"""``feature_extraction``: the backbone stays frozen, so every image is embedded ONCE (through the advisor's
cache) and only the head trains, on the stored features. The backbone never runs during head epochs."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import numpy as np
import torch

from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.advisor.measure.images.backbones import Backbone
from tl_advise.advisor.measure.images.embed import EmbeddingSet, embed, store_embeddings
from tl_advise.runners import distributed
from tl_advise.runners.blocks import head_param_groups, new_head, phase_optimizer, phase_plans, phase_scheduler
from tl_advise.runners.context import MODEL_FILE, STATE_FILE, StrategyContext
from tl_advise.runners.data import epoch_generator
from tl_advise.runners.distributed import BatchSplit
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.train import Batch, PhasePlan, PreparedPhase, TrainingJob, fit, predict_batches
from tl_advise.runners.trained_model import save_model
from tl_advise.schema.errors import ConfigError, DatasetError
from tl_advise.schema.models import Augmentation, Metrics, StrategyRun

logger = logging.getLogger(__name__)


def embedding_backbone(ctx: StrategyContext) -> Backbone:
    """The session's backbone, at the run's input size (its own cache key, since preprocessing is in it)."""
    backbone = ctx.session.backbone
    if ctx.preprocessing == backbone.preprocessing:
        return backbone
    return dataclasses.replace(backbone, info=backbone.info.model_copy(update={"preprocessing": ctx.preprocessing}))


def embed_split(ctx: StrategyContext, backbone: Backbone, records: list[ImageRecord]) -> EmbeddingSet:
    """Every record's embedding. In a distributed run each rank embeds its shard and all are gathered;
    only rank 0 writes the cache (every rank reads it)."""
    here = distributed.world()
    root, cache = ctx.session.scan.root, ctx.session.cache
    mine = distributed.shard(records)
    part = embed(backbone, mine, root=root, device=ctx.device, cache=cache if here.is_main else cache.read_only(),
                 collect_bn=False, num_workers=ctx.num_workers, progress=ctx.options.progress and here.is_main)
    if not here.distributed:
        return part
    whole = merged_shards(records, distributed.gather(part))
    if here.is_main:
        store_embeddings(backbone, whole, root=root, cache=cache)
    return whole


def merged_shards(records: list[ImageRecord], parts: list[EmbeddingSet]) -> EmbeddingSet:
    """One set in ``records``' order from every rank's set of its shard (``distributed.shard``)."""
    position = {r.path: i for i, r in enumerate(records)}
    rows = sorted((position[rec.path], p, j) for p, part in enumerate(parts) for j, rec in enumerate(part.records))

    def stacked(name: str) -> np.ndarray:
        arrays = [getattr(parts[p], name)[j] for _, p, j in rows]
        return np.stack(arrays) if arrays else np.zeros((0,))

    failed = sorted((f for part in parts for f in part.failed), key=lambda f: f.path)
    return EmbeddingSet(
        records=[parts[p].records[j] for _, p, j in rows], features=stacked("features"),
        max_prob=stacked("max_prob"), entropy=stacked("entropy"), top1=stacked("top1"), pixels=stacked("pixels"),
        bn=None, cache_hits=sum(p.cache_hits for p in parts), forward_passes=sum(p.forward_passes for p in parts),
        failed=failed)


def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    generator: torch.Generator | None = None, *, order: torch.Tensor | None = None
                    ) -> Iterator[Batch]:
    """Batches in ``order`` (default: shuffled by ``generator``, else as stored). A training order (a
    generator or an explicit ``order``) never ends on a batch of one: it is folded into the one before."""
    training = generator is not None or order is not None
    if order is None:
        order = torch.randperm(len(labels), generator=generator) if generator is not None else torch.arange(len(labels))
    n = len(order)
    starts = list(range(0, n, batch_size))
    if training and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        idx = order[start:end]
        yield features[idx], labels[idx]


def train_feature_batches(features: torch.Tensor, labels: torch.Tensor, batch: BatchSplit, seed: int,
                          epoch: int) -> Iterator[Batch]:
    """One epoch's shuffled batches; in a distributed run this rank's share of the one-process batches."""
    if not distributed.world().distributed:
        return feature_batches(features, labels, batch.per_rank, epoch_generator(seed, epoch))
    n = len(labels)
    sampler = distributed.ShardedShuffle(n, lambda e: torch.randperm(n, generator=epoch_generator(seed, e)).tolist())
    sampler.set_epoch(epoch)
    return feature_batches(features, labels, batch.per_rank, order=torch.tensor(list(sampler), dtype=torch.long))


def _tensors(embedded: EmbeddingSet) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(embedded.features)), torch.from_numpy(embedded.labels)


def _shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows (all of them in one process): what it evaluates before the gather."""
    here = distributed.world()
    return x[here.rank::here.size], y[here.rank::here.size]


def run(ctx: StrategyContext) -> StrategyRun:
    recipe, options = ctx.recipe, ctx.options
    if (recipe.augmentation != Augmentation() or recipe.regularization.drop_path_rate or recipe.unfreeze
            or recipe.lr_schedule.warmup_epochs):
        # The rules refuse such a recipe for a frozen backbone; a hand-built one is refused here, never skipped.
        raise ConfigError("feature_extraction trains a head on features embedded once: it cannot augment images, "
                          "drop paths, warm up or unfreeze stages; use another strategy for that recipe")
    started = time.perf_counter()
    backbone = embedding_backbone(ctx)
    train_set = embed_split(ctx, backbone, ctx.splits.train)
    val_set = embed_split(ctx, backbone, ctx.splits.val)
    test_set = embed_split(ctx, backbone, ctx.splits.test) if ctx.splits.test else None
    embed_seconds = time.perf_counter() - started
    if len(train_set.records) < 2 or len(val_set.records) == 0:
        raise DatasetError("too few decodable images to train and validate a head")
    logger.info("feature_extraction: %d train / %d val images embedded in %.1fs (%d from the cache)",
                len(train_set.records), len(val_set.records), embed_seconds,
                train_set.cache_hits + val_set.cache_hits)

    train_x, train_y = _tensors(train_set)
    val_x, val_y = _tensors(val_set)
    # Seeded here, after embedding: a cold cache runs a DataLoader that draws from the global RNG.
    torch.manual_seed(options.seed)
    head = new_head(recipe, backbone.info.feature_dim, len(ctx.class_names)).to(ctx.device)
    distributed.whole_batch_layers(head)

    def prepare(phase: PhasePlan) -> PreparedPhase:
        # The blocks' head phase, on the head alone: the body never runs, so nothing in it to freeze.
        optimizer = phase_optimizer(recipe, head_param_groups(recipe, head))
        return PreparedPhase(optimizer, [], phase_scheduler(recipe, optimizer, phase))

    batch = ctx.batch_split
    job = TrainingJob(
        strategy=recipe.strategy, model=head,
        phases=phase_plans(recipe, backbone), prepare_phase=prepare,
        train_batches=lambda epoch: train_feature_batches(train_x, train_y, batch, options.seed, epoch),
        n_train_batches=max(1, len(train_y) // batch.effective),
        val_batches=lambda: feature_batches(*_shard(val_x, val_y), 256),
        device=ctx.device, state_path=ctx.folder / STATE_FILE, fingerprint=ctx.fingerprint(),
        label_smoothing=recipe.regularization.label_smoothing, patience=ctx.patience,
        time_budget_s=options.time_budget_s, resume=options.resume, progress=options.progress,
        epoch_callback=ctx.epoch_callback, epoch_logger=ctx.epoch_logger,
    )
    result = fit(job)
    head.load_state_dict(result.best_state)

    def metrics_of(x: torch.Tensor, y: torch.Tensor) -> Metrics:
        logits, labels = predict_batches(head, feature_batches(*_shard(x, y), 256), ctx.device, gather=True)
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return classification_metrics(labels.numpy(), logits.argmax(1).numpy(), ctx.class_names, loss=loss)

    model_path = ctx.folder / MODEL_FILE
    if distributed.world().is_main:
        save_model(model_path, body=ctx.session.backbone.body, head=head, class_names=ctx.class_names,
                   backbone_name=backbone.name, weights=backbone.info.weights, preprocessing=ctx.preprocessing,
                   strategy=recipe.strategy)
    train_time = result.train_time_s + embed_seconds
    return StrategyRun(
        strategy=recipe.strategy, status="stopped_by_budget" if result.stopped_by_budget else "completed",
        settings=ctx.settings(train_transform=[]),  # no images: the head trains on embedded features
        epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        val=metrics_of(val_x, val_y), test=metrics_of(*_tensors(test_set)) if test_set else None,
        train_time_s=round(train_time, 3),
        images_per_s=round(result.images_seen / train_time, 1) if train_time > 0 else 0.0,
        checkpoint=ctx.relative(model_path), curves=result.curves,
    )
