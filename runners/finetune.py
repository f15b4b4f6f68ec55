"""Image-level training: two-phase fine-tuning (head first, then exactly the recommended stages) and
training from scratch (same architecture, random weights, everything trains from the start).

The model, phases, optimizers, schedules, transforms and batch mixing come from ``runners.blocks``, the
public building blocks, so a user's own loop built from them trains what this runner trains."""

from __future__ import annotations

import logging

import torch

from tl_advise.advisor.scan import ImageRecord
from tl_advise.runners.blocks import from_recipe
from tl_advise.runners.context import MODEL_FILE, STATE_FILE, StrategyContext
from tl_advise.runners.data import ImageRecordDataset, epoch_generator, eval_transform, make_loader
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob, fit, predict_batches
from tl_advise.runners.trained_model import save_model
from tl_advise.schema.models import Metrics, StrategyRun

logger = logging.getLogger(__name__)


def _image_loader(ctx: StrategyContext, records: list[ImageRecord], *, batch_size: int = 64
                  ) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    pre = ctx.preprocessing
    dataset = ImageRecordDataset(records, eval_transform(pre), draft_size=pre.resize_size)
    return make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=ctx.num_workers,
                       generator=torch.Generator().manual_seed(0), pin_memory=ctx.device.type == "cuda")


def run(ctx: StrategyContext) -> StrategyRun:
    recipe, options, device = ctx.recipe, ctx.options, ctx.device
    # The runner is a client of the public building blocks: what it trains is what they give a user's loop.
    parts = from_recipe(recipe, ctx.session.backbone, ctx.class_names, seed=options.seed)
    backbone, head = parts.backbone, parts.head
    model = parts.model.to(device)
    # The memory format is set explicitly, never inherited: the session's backbone is channels_last after a
    # cold advice embedded with it (and contiguous after a warm one), and the two round differently, so a
    # seeded run would depend on whether the cache was warm.
    model = model.to(memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)

    pre = parts.preprocessing
    augment = parts.train_transform
    train_data = ImageRecordDataset(ctx.splits.train, augment, draft_size=pre.resize_size)

    def train_batches(epoch: int) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
        return make_loader(train_data, batch_size=recipe.batch_size, shuffle=True, num_workers=ctx.num_workers,
                           generator=epoch_generator(options.seed, epoch), pin_memory=device.type == "cuda")

    def prepare(phase: PhasePlan) -> PreparedPhase:
        return parts.setup_phase(phase).prepared()

    job = TrainingJob(
        strategy=recipe.strategy, model=model, phases=parts.phases, prepare_phase=prepare,
        train_batches=train_batches, n_train_batches=max(1, len(train_data) // recipe.batch_size),
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
        logits, labels = predict_batches(model, _image_loader(ctx, records), device)
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return classification_metrics(labels.numpy(), logits.argmax(1).numpy(), ctx.class_names, loss=loss)

    model_path = ctx.folder / MODEL_FILE
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
