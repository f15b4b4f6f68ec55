"""Image-level training: two-phase fine-tuning (head first, then exactly the recommended stages) and
training from scratch (same architecture, random weights, everything trains from the start).

The model, phases, optimizers, schedules, transforms and batch mixing come from ``runners.blocks``, the
public building blocks, so a user's own loop built from them trains what this runner trains."""

from __future__ import annotations

import logging
from typing import Any

import torch

from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.runners import distributed
from tl_advise.runners.blocks import from_recipe
from tl_advise.runners.context import MODEL_FILE, STATE_FILE, StrategyContext
from tl_advise.runners.data import ImageRecordDataset, epoch_generator, eval_transform, make_loader, seed_worker
from tl_advise.runners.distributed import BatchSplit
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob, fit, predict_batches
from tl_advise.runners.trained_model import save_model
from tl_advise.schema.models import Metrics, StrategyRun

logger = logging.getLogger(__name__)


def _image_loader(ctx: StrategyContext, records: list[ImageRecord], *, batch_size: int = 64
                  ) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    """Evaluation batches of this rank's shard of ``records`` (all of them in one process)."""
    pre = ctx.preprocessing
    dataset = ImageRecordDataset(distributed.shard(records), eval_transform(pre), draft_size=pre.resize_size)
    return make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=ctx.num_workers,
                       generator=torch.Generator().manual_seed(0), pin_memory=ctx.device.type == "cuda")


def one_process_order(seed: int, epoch: int, n: int) -> list[int]:
    """The order ``make_loader(shuffle=True, generator=epoch_generator(seed, epoch))`` visits ``n`` images
    in: the DataLoader draws its workers' base seed from the generator, then the permutation. A test
    holds this against the loader itself."""
    generator = epoch_generator(seed, epoch)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(n, generator=generator).tolist()


class SeededAugmentation(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Image ``i`` of epoch ``e`` augmented with random numbers drawn from its own seed (seed, e, i), in a
    forked RNG: the same crop and flips whichever process or DataLoader worker decodes it, and the
    model's own random numbers (dropout) are left to the seeded stream of the run."""

    def __init__(self, dataset: ImageRecordDataset, seed: int, epoch: int) -> None:
        self.dataset, self.base = dataset, (seed * 1_000_003 + epoch) * 1_000_033

    @property
    def transform(self) -> Any:
        """The wrapped dataset's augmentation (what each image goes through)."""
        return self.dataset.transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.base + index) % 2**63)
            return self.dataset[index]


def sharded_train_loader(ctx: StrategyContext, dataset: SeededAugmentation, batch: BatchSplit, epoch: int
                         ) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    """This rank's batches of one epoch: its share of the one-process run's batches of that epoch."""
    n, seed, rank = len(dataset), ctx.options.seed, distributed.world().rank
    sampler = distributed.ShardedShuffle(n, lambda e: one_process_order(seed, e, n))
    sampler.set_epoch(epoch)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch.per_rank, sampler=sampler, num_workers=ctx.num_workers,
        worker_init_fn=seed_worker, generator=epoch_generator(seed + rank, epoch),  # workers' augmentation seeds
        pin_memory=ctx.device.type == "cuda",
        drop_last=sampler.num_samples % batch.per_rank == 1)  # equal shards: every rank drops alike


def run(ctx: StrategyContext) -> StrategyRun:
    recipe, options, device = ctx.recipe, ctx.options, ctx.device
    # The runner is a client of the public building blocks: what it trains is what they give a user's loop.
    parts = from_recipe(recipe, ctx.session.backbone, ctx.class_names, seed=options.seed)
    backbone, head = parts.backbone, parts.head
    model = distributed.whole_batch_layers(parts.model.to(device))
    # The memory format is set explicitly, never inherited: the session's backbone is channels_last after a
    # cold advice embedded with it (and contiguous after a warm one), and the two round differently, so a
    # seeded run would depend on whether the cache was warm.
    model = model.to(memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)

    pre = parts.preprocessing
    augment = parts.train_transform
    train_data = ImageRecordDataset(ctx.splits.train, augment, draft_size=pre.resize_size)

    batch = ctx.batch_split

    def train_batches(epoch: int) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
        augmented = SeededAugmentation(train_data, options.seed, epoch)
        if batch.world_size > 1:
            return sharded_train_loader(ctx, augmented, batch, epoch)
        return make_loader(augmented, batch_size=recipe.batch_size, shuffle=True, num_workers=ctx.num_workers,
                           generator=epoch_generator(options.seed, epoch), pin_memory=device.type == "cuda")

    def prepare(phase: PhasePlan) -> PreparedPhase:
        return parts.setup_phase(phase).prepared()

    job = TrainingJob(
        strategy=recipe.strategy, model=model, phases=parts.phases, prepare_phase=prepare,
        train_batches=train_batches, n_train_batches=max(1, len(train_data) // batch.effective),
        val_batches=lambda: _image_loader(ctx, ctx.splits.val),
        device=device, state_path=ctx.folder / STATE_FILE, fingerprint=ctx.fingerprint(),
        label_smoothing=recipe.regularization.label_smoothing, patience=ctx.patience,
        mix_batch=parts.mixup,
        time_budget_s=options.time_budget_s, resume=options.resume, progress=options.progress,
        epoch_callback=ctx.epoch_callback, epoch_logger=ctx.epoch_logger,
    )
    result = fit(job)
    model.load_state_dict(result.best_state)

    def metrics_of(records: list[ImageRecord]) -> Metrics:
        logits, labels = predict_batches(model, _image_loader(ctx, records), device, gather=True)
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return classification_metrics(labels.numpy(), logits.argmax(1).numpy(), ctx.class_names, loss=loss)

    model_path = ctx.folder / MODEL_FILE
    if distributed.world().is_main:
        save_model(model_path, body=backbone.body, head=head, class_names=ctx.class_names,
                   backbone_name=backbone.name, weights=backbone.info.weights, preprocessing=pre,
                   strategy=recipe.strategy)
    return StrategyRun(
        strategy=recipe.strategy, status="stopped_by_budget" if result.stopped_by_budget else "completed",
        settings=ctx.settings(train_transform=[repr(t) for t in augment.transforms]),
        epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        val=metrics_of(ctx.splits.val), test=metrics_of(ctx.splits.test) if ctx.splits.test else None,
        train_time_s=result.train_time_s,
        images_per_s=round(result.images_seen / result.train_time_s, 1) if result.train_time_s > 0 else 0.0,
        checkpoint=ctx.relative(model_path), curves=result.curves,
    )
