"""Image-level training: two-phase fine-tuning (head first, then exactly the recommended stages) and
training from scratch (same architecture, random weights, everything trains from the start)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from tl_advise.advisor.backbones import Backbone, load_backbone
from tl_advise.advisor.backbones.registry import with_drop_path
from tl_advise.advisor.scan import ImageRecord
from tl_advise.runners import distributed
from tl_advise.runners.context import MODEL_FILE, STATE_FILE, StrategyContext
from tl_advise.runners.data import (
    ImageRecordDataset,
    epoch_generator,
    eval_transform,
    make_loader,
    seed_worker,
    train_transform,
)
from tl_advise.runners.distributed import BatchSplit
from tl_advise.runners.freezing import check_stage_names, freeze_body, frozen_batchnorm
from tl_advise.runners.heads import ClassifierHead, TransferModel
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.mixing import batch_mixer
from tl_advise.runners.optim import make_optimizer, make_scheduler
from tl_advise.runners.recipes import Recipe
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob, fit, predict_batches
from tl_advise.runners.trained_model import save_model
from tl_advise.schema.models import Metrics, StrategyRun

logger = logging.getLogger(__name__)


def backbone_for(ctx: StrategyContext) -> Backbone:
    """A private copy: training must never change the session's backbone (the advisor and the
    feature-extraction runner use its pretrained weights). Stochastic depth, when the recipe has it, is
    built in (timm sets it at creation)."""
    if ctx.recipe.pretrained:
        backbone = copy.deepcopy(ctx.session.backbone)
    else:
        backbone = load_backbone(ctx.session.backbone.name, pretrained=False)
    return with_drop_path(backbone, ctx.recipe.regularization.drop_path_rate)


def phase_plans(recipe: Recipe, backbone: Backbone) -> list[PhasePlan]:
    stage_names = [s.name for s in backbone.stages]
    if not recipe.pretrained:
        return [PhasePlan("from_scratch", recipe.finetune_epochs, stage_names)]
    plans = [PhasePlan("head", recipe.head_epochs, [])]
    if recipe.unfreeze:
        plans.append(PhasePlan("finetune", recipe.finetune_epochs, check_stage_names(backbone, recipe.unfreeze)))
    return [p for p in plans if p.epochs > 0]


def param_groups(recipe: Recipe, backbone: Backbone, head: torch.nn.Module, phase: PhasePlan
                 ) -> list[dict[str, Any]]:
    """Head at its rate; each unfrozen stage at its discriminative rate (else the backbone rate).

    Phase 2 trains the head at the fine-tuning rate too, as the recommendation's schedule says (the
    guide's recipe: the whole second phase about 100× below the head phase); from scratch uses one rate.
    """
    if phase.name == "head":
        return [{"params": list(head.parameters()), "lr": recipe.head_lr, "name": "head"}]
    phase_lr = recipe.head_lr if not recipe.pretrained else (recipe.backbone_lr or recipe.head_lr)
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": phase_lr, "name": "head"}]
    seen: set[int] = set()
    for stage in backbone.stages:
        if stage.name in phase.train_stages:
            params = [p for p in stage.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            lr = recipe.head_lr if not recipe.pretrained else recipe.stage_lr(stage.name)
            groups.append({"params": params, "lr": lr, "name": stage.name})
    # Layers outside every stage train only when the whole body does (full fine-tune, from scratch).
    rest = [p for p in backbone.body.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": phase_lr, "name": "other"})
    return groups


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
    torch.manual_seed(options.seed)  # the random backbone of from_scratch and the head's initial weights
    backbone = backbone_for(ctx)
    head = ClassifierHead(backbone.info.feature_dim, len(ctx.class_names), dropout=recipe.regularization.dropout)
    model = distributed.whole_batch_layers(TransferModel(backbone.body, head).to(device))
    # The memory format is set explicitly, never inherited: the session's backbone is channels_last after a
    # cold advice embedded with it (and contiguous after a warm one), and the two round differently, so a
    # seeded run would depend on whether the cache was warm.
    model = model.to(memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)

    pre = ctx.preprocessing
    augment = train_transform(pre, recipe.augmentation)
    train_data = ImageRecordDataset(ctx.splits.train, augment, draft_size=pre.resize_size)

    batch = ctx.batch_split

    def train_batches(epoch: int) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
        augmented = SeededAugmentation(train_data, options.seed, epoch)
        if batch.world_size > 1:
            return sharded_train_loader(ctx, augmented, batch, epoch)
        return make_loader(augmented, batch_size=recipe.batch_size, shuffle=True, num_workers=ctx.num_workers,
                           generator=epoch_generator(options.seed, epoch), pin_memory=device.type == "cuda")

    def prepare(phase: PhasePlan) -> PreparedPhase:
        training_modules = freeze_body(backbone, phase.train_stages)
        groups = param_groups(recipe, backbone, head, phase)
        optimizer = make_optimizer(recipe.optimizer, groups, weight_decay=recipe.weight_decay)
        # The warm-up belongs to the phase that trains the backbone, not to a new head's phase.
        warmup = 0 if phase.name == "head" else recipe.lr_schedule.warmup_epochs
        return PreparedPhase(optimizer, frozen_batchnorm(backbone, training_modules, mode=recipe.batchnorm),
                             make_scheduler(optimizer, epochs=phase.epochs, warmup_epochs=warmup))

    job = TrainingJob(
        strategy=recipe.strategy, model=model, phases=phase_plans(recipe, backbone), prepare_phase=prepare,
        train_batches=train_batches, n_train_batches=max(1, len(train_data) // batch.effective),
        val_batches=lambda: _image_loader(ctx, ctx.splits.val),
        device=device, state_path=ctx.folder / STATE_FILE, fingerprint=ctx.fingerprint(),
        label_smoothing=recipe.regularization.label_smoothing, patience=ctx.patience,
        mix_batch=batch_mixer(recipe.augmentation, label_smoothing=recipe.regularization.label_smoothing,
                              n_classes=len(ctx.class_names)),
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
