"""Each text strategy trained from its recipe (``schema.text.TextRecipe``, from ``rules.text_engine.text_recipe``).

- ``embedding_head`` (text_feature_extraction): every text embedded ONCE by the frozen encoder (through the
  advisor's cache, at the recipe's max_length), then the head trains on the stored embeddings.
- ``encoder`` (text_finetune_top, text_full_finetune): phase 1 is exactly that head job; phase 2 puts the best
  head on a copy of the encoder, unfreezes the tuned layer groups and trains them with the head under AdamW
  with layer-wise LR decay and a per-step linear warm-up and decay.
- ``tfidf`` (tfidf_linear): TF-IDF of words and n-grams with a logistic regression (scikit-learn).

Both torch jobs run through ``runners.train.fit``, the loop the image runners share: early stopping on the
validation loss, a time budget, a checkpoint after every epoch and exact resume. Its batches are tensors;
text batches are packed into one (``runners.text.model``), so nothing in it changed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from tl_advise.advisor.measure.cache import ArrayCache, digest
from tl_advise.advisor.measure.text.backbone import TextBackbone, text_hash
from tl_advise.runners.data import epoch_generator
from tl_advise.runners.feature_extraction import feature_batches
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.optim import make_optimizer
from tl_advise.runners.text.model import (
    PerStepWarmupDecay,
    TextClassifier,
    TextHead,
    eval_batches,
    freeze_for,
    group_rates,
    param_groups,
    restore_order,
    tokenize,
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


def embedding_backbone(job: TextJob) -> TextBackbone:
    """The backbone truncating at the recipe's max_length (its own cache key: max_length is in it)."""
    backbone = job.backbone
    if backbone.info.max_length == job.recipe.max_length:
        return backbone
    return dataclasses.replace(backbone, info=backbone.info.model_copy(update={"max_length": job.recipe.max_length}))


def embed_split(job: TextJob, split: TextSplit) -> torch.Tensor:
    backbone = embedding_backbone(job)
    array = backbone.embed(split.texts, cache=job.cache, namespace=job.namespace, progress=job.progress)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


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


def train_head(job: TextJob, train_x: torch.Tensor, val_x: torch.Tensor, state_path: Path) -> HeadResult:
    """The head on the stored embeddings: AdamW at the recipe's head LR, cosine over the head epochs, early
    stopping on the validation loss, through ``fit``."""
    recipe = job.recipe
    assert recipe.head_lr is not None
    train_y = torch.tensor(job.splits.train.labels, dtype=torch.long)
    val_y = torch.tensor(job.splits.val.labels, dtype=torch.long)
    torch.manual_seed(job.seed)
    head = TextHead(train_x.shape[1], len(job.splits.classes), dropout=recipe.dropout, mean=train_x.mean(0),
                    std=train_x.std(0) if len(train_x) > 1 else None).to(job.device)
    seen: dict[str, float] = {}

    def prepare(phase: PhasePlan) -> PreparedPhase:
        decay = [p for n, p in head.named_parameters() if not n.endswith("bias")]
        bias = [p for n, p in head.named_parameters() if n.endswith("bias")]
        optimizer = make_optimizer("adamw", [
            {"params": decay, "lr": recipe.head_lr, "name": "head", "weight_decay": recipe.weight_decay},
            {"params": bias, "lr": recipe.head_lr, "name": "head:no_decay", "weight_decay": 0.0}],
            weight_decay=recipe.weight_decay)
        seen.update(group_rates(optimizer))
        return PreparedPhase(optimizer, [])

    fit_job = TrainingJob(
        strategy=recipe.strategy, model=head, phases=[PhasePlan("head", recipe.head_epochs, [])],
        prepare_phase=prepare,
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
    result = train_head(job, train_x, val_x, job.folder / STATE_FILE)
    head = result.head

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


def build_finetune(job: TextJob, head: TextHead) -> tuple[TextClassifier, list[torch.nn.Module]]:
    """A copy of the encoder (the session's stays pretrained for the next strategy) under the trained head,
    frozen but for the recipe's tuned layer groups."""
    info = job.backbone.info
    model = TextClassifier(copy.deepcopy(job.backbone.model), copy.deepcopy(head), pooling=info.pooling,
                           normalize=info.normalize).to(job.device)
    frozen = freeze_for(model, job.recipe.tuned_layers)
    return model, frozen


def finetune_optimizer(job: TextJob, model: TextClassifier, steps: int) -> tuple[torch.optim.Optimizer,
                                                                                   PerStepWarmupDecay]:
    recipe = job.recipe
    optimizer = make_optimizer("adamw", param_groups(model, recipe.per_group_lr, weight_decay=recipe.weight_decay),
                               weight_decay=recipe.weight_decay)
    return optimizer, PerStepWarmupDecay(optimizer, total_steps=steps, warmup_share=recipe.warmup_share)


def run_finetune(job: TextJob) -> TextStrategyRun:
    recipe = job.recipe
    if not recipe.tuned_layers or recipe.kind != "encoder":
        raise ConfigError(f"{recipe.strategy}: fine-tuning needs tuned layer groups")
    started = time.perf_counter()
    train_x, val_x = embed_split(job, job.splits.train), embed_split(job, job.splits.val)
    embed_s = time.perf_counter() - started
    head_result = train_head(job, train_x, val_x, job.folder / HEAD_STATE_FILE)

    tokenizer = job.backbone.tokenizer
    pad = int(tokenizer.pad_token_id or 0)
    train_ids = tokenize(tokenizer, job.splits.train.texts, recipe.max_length)
    val_ids = tokenize(tokenizer, job.splits.val.texts, recipe.max_length)
    train_y = torch.tensor(job.splits.train.labels, dtype=torch.long)
    val_y = torch.tensor(job.splits.val.labels, dtype=torch.long)
    torch.manual_seed(job.seed + 1)
    model, _ = build_finetune(job, head_result.head)
    n_batches = max(1, len(train_ids) // recipe.batch_size)
    built: dict[str, dict[str, float]] = {}
    trainable: dict[str, list[str]] = {"head": ["head"]}

    def prepare(phase: PhasePlan) -> PreparedPhase:
        frozen_now = freeze_for(model, recipe.tuned_layers)  # re-applied at every (resumed) phase start
        optimizer, scheduler = finetune_optimizer(job, model, steps=n_batches * phase.epochs)
        built["finetune"] = group_rates(optimizer)
        trainable["finetune"] = trainable_groups(model)
        return PreparedPhase(optimizer, frozen_now, scheduler)

    fit_job = TrainingJob(
        strategy=recipe.strategy, model=model, phases=[PhasePlan("finetune", recipe.finetune_epochs,
                                                                 list(recipe.tuned_layers))],
        prepare_phase=prepare,
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
        ids = tokenize(tokenizer, split.texts, recipe.max_length)
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
    assert recipe.tfidf_ngram_max is not None and recipe.tfidf_c is not None
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, recipe.tfidf_ngram_max), sublinear_tf=True)
    model = LogisticRegression(C=recipe.tfidf_c, max_iter=2000, random_state=job.seed)
    x = vectorizer.fit_transform(job.splits.train.texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, job.splits.train.labels)
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
