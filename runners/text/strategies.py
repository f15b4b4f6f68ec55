"""Each text strategy trained from its recipe (``schema.text.TextRecipe``, from ``rules.text_engine.text_recipe``).

- ``embedding_head`` (text_feature_extraction): every text embedded ONCE by the frozen encoder (through the
  advisor's cache, at the recipe's max_length), then the head trains on the stored embeddings.
- ``encoder`` (text_finetune_top, text_full_finetune): phase 1 is exactly that head job; phase 2 puts the best
  head on a copy of the encoder, unfreezes the tuned layer groups and trains them with the head under AdamW
  with layer-wise LR decay and a per-step linear warm-up and decay.
- ``tfidf`` (tfidf_linear): TF-IDF of words and n-grams with a logistic regression (scikit-learn).

The head, the encoder copy, the phases, optimizers, schedules, token batches and the TF-IDF pipeline come from
``runners.text.blocks``, the public building blocks, so a user's own loop built from them trains what this
runner trains. Both torch jobs run through ``runners.train.fit``, the loop the image runners share: early
stopping on the validation loss, a time budget, a checkpoint after every epoch and exact resume. Its batches
are tensors; text batches are packed into one (``runners.text.model``), so nothing in it changed.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss

from tl_advise.advisor.measure.cache import ArrayCache, digest
from tl_advise.advisor.measure.text.backbone import TextBackbone, text_hash
from tl_advise.runners.data import epoch_generator
from tl_advise.runners.feature_extraction import feature_batches
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.text.blocks import (
    embed_texts,
    from_recipe,
    head_param_groups,
    new_head,
    phase_optimizer,
    phase_plans,
    phase_scheduler,
    steps_per_epoch,
    tfidf_pipeline,
)
from tl_advise.runners.text.model import (
    TextHead,
    eval_batches,
    group_rates,
    restore_order,
    train_batches,
    trainable_groups,
)
from tl_advise.runners.text.splits import TextSplit, TextSplits
from tl_advise.runners.text.trained_model import save_encoder_model, save_tfidf_model
from tl_advise.runners.tracking import EpochRecord, OffsetLogger, RunLogger
from tl_advise.runners.train import EpochCallback, PhasePlan, PreparedPhase, TrainingJob, fit, predict_batches
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import EpochLog, Metrics
from tl_advise.schema.text import TextRecipe, TextRunSettings, TextStrategyRun

logger = logging.getLogger(__name__)

HEAD_STATE_FILE = "head_state.pt"
STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
EVAL_BATCH = 64


@dataclass
class TextJob:
    """What one strategy's runner needs."""

    recipe: TextRecipe
    backbone: TextBackbone
    splits: TextSplits
    folder: Path  # <output_dir>/<strategy>
    output_dir: Path
    device: torch.device
    seed: int
    patience: int | None
    time_budget_s: float | None
    resume: bool
    progress: bool
    cache: ArrayCache
    namespace: str
    epoch_callback: EpochCallback | None = None
    epoch_logger: RunLogger | None = None  # experiment tracking: one call per epoch, numbered over the strategy

    def fingerprint(self, *extra: object) -> str:
        """Everything that changes the numbers: the backbone, the recipe, the exact texts and labels, the seed
        and the early stopping."""
        def rows(split: TextSplit) -> list[tuple[str, int]]:
            return [(text_hash(t), y) for t, y in zip(split.texts, split.labels, strict=True)]

        return digest(self.backbone.cache_key, self.recipe.model_dump(mode="json"), rows(self.splits.train),
                      rows(self.splits.val), self.seed, self.patience, *extra)

    def settings(self, *, trainable: dict[str, list[str]] | None = None,
                 optimizer_groups: dict[str, dict[str, float]] | None = None) -> TextRunSettings:
        return TextRunSettings(**dict(self.recipe), n_train=len(self.splits.train), n_val=len(self.splits.val),
                               trainable_groups=trainable or {}, optimizer_groups=optimizer_groups or {})

    def relative(self, path: Path) -> str:
        return path.relative_to(self.output_dir).as_posix()


def _metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Metrics:
    loss = torch.nn.functional.cross_entropy(logits, labels).item() if len(labels) else float("nan")
    return classification_metrics(labels.numpy(), logits.argmax(1).numpy(), classes, loss=loss)


# --------------------------------------------------------------------------- the head on cached embeddings


def embed_split(job: TextJob, split: TextSplit) -> torch.Tensor:
    return embed_texts(job.backbone, job.recipe, split.texts, cache=job.cache, namespace=job.namespace,
                       progress=job.progress)


@dataclass
class HeadResult:
    head: TextHead
    curves: list[EpochLog]
    epochs_run: int
    best_epoch: int
    stopped_by_budget: bool
    train_time_s: float
    texts_seen: int
    optimizer_groups: dict[str, float]


def train_head(job: TextJob, head: TextHead, plan: PhasePlan, train_x: torch.Tensor, val_x: torch.Tensor,
               state_path: Path) -> HeadResult:
    """The blocks' head phase on the stored embeddings, through ``fit``: early stopping on the validation loss;
    ``head`` ends with its best weights."""
    recipe = job.recipe
    train_y = torch.tensor(job.splits.train.labels, dtype=torch.long)
    val_y = torch.tensor(job.splits.val.labels, dtype=torch.long)
    seen: dict[str, float] = {}

    def prepare(phase: PhasePlan) -> PreparedPhase:
        # The blocks' head phase on the head alone: the encoder never runs (the texts were embedded once with it
        # in inference mode), so nothing is left to freeze or keep in inference mode.
        optimizer = phase_optimizer(recipe, head_param_groups(recipe, head))
        seen.update(group_rates(optimizer))
        steps = steps_per_epoch(len(train_y), recipe.batch_size)
        return PreparedPhase(optimizer, [], phase_scheduler(recipe, optimizer, phase, steps_per_epoch=steps))

    fit_job = TrainingJob(
        strategy=recipe.strategy, model=head, phases=[plan], prepare_phase=prepare,
        train_batches=lambda epoch: feature_batches(train_x, train_y, recipe.batch_size,
                                                    epoch_generator(job.seed, epoch)),
        n_train_batches=max(1, len(train_y) // recipe.batch_size),
        val_batches=lambda: feature_batches(val_x, val_y, 256), device=job.device, state_path=state_path,
        fingerprint=job.fingerprint("head"), patience=job.patience, time_budget_s=job.time_budget_s,
        resume=job.resume, progress=job.progress, epoch_callback=job.epoch_callback, epoch_logger=job.epoch_logger)
    result = fit(fit_job)
    head.load_state_dict(result.best_state)
    return HeadResult(head=head, curves=result.curves, epochs_run=result.epochs_run, best_epoch=result.best_epoch,
                      stopped_by_budget=result.stopped_by_budget, train_time_s=result.train_time_s,
                      texts_seen=result.images_seen, optimizer_groups=dict(seen))


def run_feature_extraction(job: TextJob) -> TextStrategyRun:
    recipe = job.recipe
    if recipe.tuned_layers or recipe.kind != "embedding_head":
        raise ConfigError(f"{recipe.strategy}: a head on frozen embeddings tunes no encoder layer")
    started = time.perf_counter()
    train_x, val_x = embed_split(job, job.splits.train), embed_split(job, job.splits.val)
    test_x = embed_split(job, job.splits.test) if job.splits.test else None
    embed_s = time.perf_counter() - started
    # The blocks' head, seeded as they seed it; no copy of the encoder: it never trains here.
    head = new_head(recipe, train_x, len(job.splits.classes), seed=job.seed).to(job.device)
    result = train_head(job, head, phase_plans(recipe)[0], train_x, val_x, job.folder / STATE_FILE)

    def metrics(x: torch.Tensor, labels: list[int]) -> Metrics:
        y = torch.tensor(labels, dtype=torch.long)
        logits, y = predict_batches(head, feature_batches(x, y, 256), job.device)
        return _metrics(logits, y, job.splits.classes)

    model_path = job.folder / MODEL_FILE
    save_encoder_model(model_path, strategy=recipe.strategy, class_names=job.splits.classes,
                       max_length=recipe.max_length, backbone=job.backbone, encoder=job.backbone.model, head=head)
    total = result.train_time_s + embed_s
    return TextStrategyRun(
        strategy=recipe.strategy, status="stopped_by_budget" if result.stopped_by_budget else "completed",
        settings=job.settings(trainable={"head": ["head"]}, optimizer_groups={"head": result.optimizer_groups}),
        epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        val=metrics(val_x, job.splits.val.labels),
        test=metrics(test_x, job.splits.test.labels) if test_x is not None and job.splits.test else None,
        train_time_s=round(total, 3), texts_per_s=round(result.texts_seen / total, 1) if total > 0 else 0.0,
        checkpoint=job.relative(model_path), curves=result.curves)


# --------------------------------------------------------------------------- fine-tuning the encoder


def run_finetune(job: TextJob) -> TextStrategyRun:
    recipe = job.recipe
    if not recipe.tuned_layers or recipe.kind != "encoder":
        raise ConfigError(f"{recipe.strategy}: fine-tuning needs tuned layer groups")
    started = time.perf_counter()
    train_x, val_x = embed_split(job, job.splits.train), embed_split(job, job.splits.val)
    embed_s = time.perf_counter() - started
    # The runner is a client of the public building blocks: the seeded head on a copy of the encoder, its
    # phases, their optimizers and schedules and the token batches are what they give a user's loop.
    parts = from_recipe(recipe, job.backbone, job.splits.classes, train_x, seed=job.seed)
    model = parts.model.to(job.device)
    head_result = train_head(job, parts.head, parts.phase("head"), train_x, val_x, job.folder / HEAD_STATE_FILE)

    pad = parts.collate.pad_id
    train_ids = parts.tokenize(job.splits.train.texts)
    val_ids = parts.tokenize(job.splits.val.texts)
    train_y = torch.tensor(job.splits.train.labels, dtype=torch.long)
    val_y = torch.tensor(job.splits.val.labels, dtype=torch.long)
    torch.manual_seed(job.seed + 1)  # the fine-tuning's dropout, whatever the head phase drew
    n_batches = parts.steps_per_epoch
    built: dict[str, dict[str, float]] = {}
    trainable: dict[str, list[str]] = {"head": ["head"]}

    def prepare(phase: PhasePlan) -> PreparedPhase:
        setup = parts.setup_phase(phase)  # freezing re-applied at every (resumed) phase start
        built["finetune"] = group_rates(setup.optimizer)
        trainable["finetune"] = trainable_groups(model)
        return setup.prepared()

    fit_job = TrainingJob(
        strategy=recipe.strategy, model=model, phases=[parts.phase("finetune")], prepare_phase=prepare,
        train_batches=lambda epoch: train_batches(train_ids, train_y, recipe.batch_size, seed=job.seed, epoch=epoch,
                                                  pad_id=pad),
        n_train_batches=n_batches,
        val_batches=lambda: eval_batches(val_ids, val_y, EVAL_BATCH, pad_id=pad), device=job.device,
        state_path=job.folder / STATE_FILE, fingerprint=job.fingerprint("finetune"), patience=job.patience,
        time_budget_s=job.time_budget_s, resume=job.resume, progress=job.progress,
        epoch_callback=job.epoch_callback,
        epoch_logger=OffsetLogger(job.epoch_logger, epoch_offset=head_result.epochs_run, phase_index=1)
        if job.epoch_logger is not None else None)
    result = fit(fit_job)
    model.load_state_dict(result.best_state)

    def metrics(split: TextSplit) -> Metrics:
        ids = parts.tokenize(split.texts)
        y = torch.tensor(split.labels, dtype=torch.long)
        logits, labels = predict_batches(model, eval_batches(ids, y, EVAL_BATCH, pad_id=pad), job.device)
        return _metrics(restore_order(logits, ids), restore_order(labels, ids), job.splits.classes)

    model_path = job.folder / MODEL_FILE
    save_encoder_model(model_path, strategy=recipe.strategy, class_names=job.splits.classes,
                       max_length=recipe.max_length, backbone=job.backbone, encoder=model.encoder, head=model.head)
    # Epochs are numbered over the whole run: the fine-tuning's follow the head's.
    offset = head_result.epochs_run
    curves = [*head_result.curves, *(c.model_copy(update={"epoch": c.epoch + offset}) for c in result.curves)]
    total = head_result.train_time_s + result.train_time_s + embed_s
    seen = head_result.texts_seen + result.images_seen
    return TextStrategyRun(
        strategy=recipe.strategy,
        status="stopped_by_budget" if result.stopped_by_budget or head_result.stopped_by_budget else "completed",
        settings=job.settings(trainable=trainable, optimizer_groups={"head": head_result.optimizer_groups, **built}),
        epochs_run=offset + result.epochs_run, best_epoch=offset + result.best_epoch,
        val=metrics(job.splits.val), test=metrics(job.splits.test) if job.splits.test else None,
        train_time_s=round(total, 3), texts_per_s=round(seen / total, 1) if total > 0 else 0.0,
        checkpoint=job.relative(model_path), curves=curves)


# --------------------------------------------------------------------------- TF-IDF


def run_tfidf(job: TextJob) -> TextStrategyRun:
    recipe = job.recipe
    started = time.perf_counter()
    pipeline = tfidf_pipeline(recipe, seed=job.seed)  # the blocks' pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(job.splits.train.texts, job.splits.train.labels)
    vectorizer, model = pipeline.named_steps["tfidf"], pipeline.named_steps["logreg"]
    seconds = time.perf_counter() - started
    labels = list(range(len(job.splits.classes)))

    def metrics(split: TextSplit) -> Metrics:
        proba = np.zeros((len(split), len(labels)))
        proba[:, model.classes_] = model.predict_proba(vectorizer.transform(split.texts))
        loss = log_loss(split.labels, np.clip(proba, 1e-12, 1), labels=labels) if len(split) else float("nan")
        return classification_metrics(split.labels, proba.argmax(1), job.splits.classes, loss=float(loss))

    val = metrics(job.splits.val)
    curve = EpochLog(phase="fit", epoch=1, train_loss=round(float(metrics(job.splits.train).loss), 6),
                     val_loss=val.loss, val_accuracy=val.accuracy, seconds=round(seconds, 3))
    if job.epoch_logger is not None:  # one closed-form fit: its one point of the curve
        job.epoch_logger.log_epoch(EpochRecord(recipe.strategy, curve, 0, {}))
    model_path = job.folder / MODEL_FILE
    save_tfidf_model(model_path, strategy=recipe.strategy, class_names=job.splits.classes, vectorizer=vectorizer,
                     model=model)
    return TextStrategyRun(
        strategy=recipe.strategy, status="completed", settings=job.settings(trainable={"fit": ["tfidf"]}),
        checkpoint=job.relative(model_path),
        epochs_run=1, best_epoch=1, val=val, test=metrics(job.splits.test) if job.splits.test else None,
        train_time_s=round(seconds, 3), texts_per_s=round(len(job.splits.train) / seconds, 1) if seconds > 0 else 0.0,
        curves=[curve])


def run_strategy(job: TextJob) -> TextStrategyRun:
    kind = job.recipe.kind
    if kind == "tfidf":
        return run_tfidf(job)
    if kind == "embedding_head":
        return run_feature_extraction(job)
    return run_finetune(job)
