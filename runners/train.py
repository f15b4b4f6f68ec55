"""The training loop every runner shares: phases, early stopping, budget, checkpoint and exact resume.

A runner describes *what* trains (a ``TrainingJob``: the module, its phases, how each phase freezes
and builds its optimizer, the batches); ``fit`` does the rest. At the end of every epoch a resumable
state (model, optimizer, scheduler, position, best-so-far, early-stopping counter, curves, RNG states)
is written atomically, so an interrupt (Ctrl-C or SIGTERM) loses at most the epoch in progress.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tl_advise.runners import checkpoint
from tl_advise.runners.freezing import set_train_mode
from tl_advise.runners.mixing import BatchMixer, training_loss
from tl_advise.runners.optim import make_scheduler
from tl_advise.runners.tracking import EpochRecord, RunLogger
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import EpochLog

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
EpochCallback = Callable[[str, int], None]  # (strategy, epochs completed) after each saved epoch

STATE_FORMAT = 1
MIN_IMPROVEMENT = 1e-4  # val loss must drop by this much to count as better


@dataclass
class PhasePlan:
    name: str  # "head", "finetune" or "from_scratch"
    epochs: int
    train_stages: list[str]  # backbone stages that train; empty = head only


@dataclass
class PreparedPhase:
    optimizer: torch.optim.Optimizer
    frozen_bn: list[nn.Module]  # kept in inference mode while the model trains
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # None: cosine over the phase


@dataclass
class TrainingJob:
    strategy: str
    model: nn.Module  # what trains and what the best state is taken from
    phases: list[PhasePlan]
    prepare_phase: Callable[[PhasePlan], PreparedPhase]  # freezes and builds the optimizer: idempotent
    train_batches: Callable[[int], Iterable[Batch]]  # epoch number (1-based) -> shuffled batches
    n_train_batches: int
    val_batches: Callable[[], Iterable[Batch]]
    device: torch.device
    state_path: Path
    fingerprint: str  # what the state must have been made with to be resumed
    label_smoothing: float = 0.0
    patience: int | None = 3  # None: no early stopping
    mix_batch: BatchMixer | None = None  # mixup / cutmix: soft targets, trained with SoftTargetCrossEntropy
    time_budget_s: float | None = None
    resume: bool = False
    progress: bool = True
    epoch_callback: EpochCallback | None = None
    epoch_logger: RunLogger | None = None  # experiment tracking (TensorBoard, MLflow): one call per epoch


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    curves: list[EpochLog]
    stopped_by_budget: bool
    train_time_s: float
    images_seen: int


@dataclass
class _Progress:
    """Where the run is: the next (phase, epoch in phase) to run and everything early stopping needs."""

    phase_index: int = 0
    epoch_in_phase: int = 0
    epochs_run: int = 0
    best_loss: float = float("inf")
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    curves: list[EpochLog] = field(default_factory=list)
    elapsed_s: float = 0.0
    images_seen: int = 0
    stopped_by_budget: bool = False


# --------------------------------------------------------------------------- device helpers


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (bf16 where supported, else fp16); full precision on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """While training, SIGTERM (a job scheduler, ``kill``) stops like Ctrl-C; the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- evaluation


def predict_batches(model: nn.Module, batches: Iterable[Batch], device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of every batch, in eval mode."""
    model.eval()
    all_logits, all_labels = [], []
    with torch.inference_mode():
        for x, y in batches:
            with autocast(device):
                logits = model(to_device(x, device))
            all_logits.append(logits.float().cpu())
            all_labels.append(y)
    if not all_logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if labels.numel() == 0:
        return float("nan"), 0.0
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


# --------------------------------------------------------------------------- state


def _state_dict_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _save_state(job: TrainingJob, progress: _Progress, prepared: PreparedPhase,
                scheduler: torch.optim.lr_scheduler.LRScheduler, finished: bool) -> None:
    checkpoint.atomic_save({
        "format": STATE_FORMAT,
        "fingerprint": job.fingerprint,
        "finished": finished,
        "model": _state_dict_copy(job.model),
        "optimizer": prepared.optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "phase_index": progress.phase_index,
        "epoch_in_phase": progress.epoch_in_phase,
        "epochs_run": progress.epochs_run,
        "best_loss": progress.best_loss,
        "best_epoch": progress.best_epoch,
        "best_state": progress.best_state,
        "bad_epochs": progress.bad_epochs,
        "curves": [c.model_dump() for c in progress.curves],
        "elapsed_s": progress.elapsed_s,
        "images_seen": progress.images_seen,
        "stopped_by_budget": progress.stopped_by_budget,
        "rng": checkpoint.rng_states(),
    }, job.state_path)


def _load_state(job: TrainingJob) -> dict[str, Any] | None:
    if not (job.resume and job.state_path.is_file()):
        return None
    state = checkpoint.load(job.state_path)
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != job.fingerprint:
        raise ConfigError(
            f"{job.state_path} was written by a run with other settings (data, recipe or options), so it "
            "cannot be resumed. Run again without --resume, or with the original settings, or use "
            "another output folder."
        )
    logger.info("%s: resuming after epoch %d", job.strategy, state["epochs_run"])
    return state


def _progress_from(state: dict[str, Any]) -> _Progress:
    return _Progress(
        phase_index=state["phase_index"], epoch_in_phase=state["epoch_in_phase"],
        epochs_run=state["epochs_run"], best_loss=state["best_loss"], best_epoch=state["best_epoch"],
        best_state=state["best_state"], bad_epochs=state["bad_epochs"],
        curves=[EpochLog.model_validate(c) for c in state["curves"]], elapsed_s=state["elapsed_s"],
        images_seen=state["images_seen"], stopped_by_budget=state["stopped_by_budget"],
    )


# --------------------------------------------------------------------------- the loop


def _group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {str(group.get("name", f"group{i}")): float(group["lr"]) for i, group in enumerate(optimizer.param_groups)}


def _train_epoch(job: TrainingJob, prepared: PreparedPhase, loss_fn: nn.Module,
                 scaler: torch.amp.GradScaler, progress: _Progress, phase: PhasePlan, started: float
                 ) -> tuple[float, int, bool]:
    """One pass over the training batches: (mean loss, images, whether the time budget ran out)."""
    set_train_mode(job.model, prepared.frozen_bn)
    total_loss, n_images, out_of_time = 0.0, 0, False
    desc = f"{job.strategy} {phase.name} epoch {progress.epochs_run + 1}"
    with tqdm(total=job.n_train_batches, desc=desc, unit="batch", leave=False,
              disable=not job.progress) as bar:
        for x, y in job.train_batches(progress.epochs_run + 1):
            if len(y) < 2:
                continue  # batch norm cannot train on a single image
            x, y = to_device(x, job.device), y.to(job.device)
            if job.mix_batch is not None:
                x, y = job.mix_batch(x, y)
            prepared.optimizer.zero_grad(set_to_none=True)
            with autocast(job.device):
                loss = loss_fn(job.model(x), y)
            scaler.scale(loss).backward()
            scaler.step(prepared.optimizer)
            scaler.update()
            total_loss += loss.item() * len(y)
            n_images += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / n_images:.3f}")
            if job.time_budget_s is not None and \
                    progress.elapsed_s + time.perf_counter() - started > job.time_budget_s:
                out_of_time = True
                break
    return (total_loss / n_images if n_images else float("nan")), n_images, out_of_time


def fit(job: TrainingJob) -> FitResult:
    """Train ``job`` phase by phase; resumes from ``job.state_path`` when asked and the state fits."""
    state = _load_state(job)
    progress = _progress_from(state) if state is not None else _Progress()
    resumed_position = (progress.phase_index, progress.epoch_in_phase) if state is not None else None
    if state is not None:
        job.model.load_state_dict(state["model"])
        checkpoint.restore_rng_states(state["rng"])
    finished = state is not None and state["finished"]
    loss_fn = training_loss(label_smoothing=job.label_smoothing, mixes_batches=job.mix_batch is not None)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(job.device))

    with sigterm_as_keyboard_interrupt():
        while not finished and progress.phase_index < len(job.phases):
            phase = job.phases[progress.phase_index]
            if phase.epochs <= 0:  # a phase of 0 epochs hands over at once (it used to spin forever)
                progress.phase_index += 1
                progress.epoch_in_phase = 0
                continue
            # Freezing is re-applied from the plan at every phase start, resumed or not.
            prepared = job.prepare_phase(phase)
            scheduler = prepared.scheduler or make_scheduler(prepared.optimizer, epochs=phase.epochs)
            mid_phase_resume = resumed_position == (progress.phase_index, progress.epoch_in_phase) \
                and progress.epoch_in_phase > 0
            if mid_phase_resume and state is not None:
                prepared.optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            elif progress.epoch_in_phase == 0 and progress.best_state is not None:
                # A new phase starts from the best weights so far (e.g. the best head), not the last.
                job.model.load_state_dict(progress.best_state)
            if not mid_phase_resume:
                progress.bad_epochs = 0
            resumed_position = None

            end_phase = False
            phase_index = progress.phase_index  # progress moves on at the phase's last epoch
            while progress.epoch_in_phase < phase.epochs and not end_phase:
                started = time.perf_counter()
                train_loss, n_images, out_of_time = _train_epoch(job, prepared, loss_fn, scaler, progress,
                                                                 phase, started)
                learning_rates = _group_learning_rates(prepared.optimizer)  # what this epoch trained at
                scheduler.step()
                val_loss, val_accuracy = loss_and_accuracy(*predict_batches(job.model, job.val_batches(),
                                                                            job.device))
                seconds = time.perf_counter() - started
                progress.elapsed_s += seconds
                progress.images_seen += n_images
                progress.epochs_run += 1
                progress.epoch_in_phase += 1
                progress.curves.append(EpochLog(
                    phase=phase.name, epoch=progress.epochs_run, train_loss=round(train_loss, 6),
                    val_loss=round(val_loss, 6), val_accuracy=round(val_accuracy, 6), seconds=round(seconds, 3)))
                if val_loss < progress.best_loss - MIN_IMPROVEMENT or progress.best_state is None:
                    progress.best_loss, progress.best_epoch = val_loss, progress.epochs_run
                    progress.best_state = _state_dict_copy(job.model)
                    progress.bad_epochs = 0
                else:
                    progress.bad_epochs += 1
                logger.info("%s %s epoch %d (%d/%d): train loss %.4f, val loss %.4f, val accuracy %.3f, "
                            "%.1fs%s", job.strategy, phase.name, progress.epochs_run, progress.epoch_in_phase,
                            phase.epochs, train_loss, val_loss, val_accuracy, seconds,
                            " (best)" if progress.best_epoch == progress.epochs_run else "")
                if out_of_time:
                    progress.stopped_by_budget = True
                    finished = True
                    logger.info("%s: time budget of %.0fs spent; keeping the best epoch (%d)",
                                job.strategy, job.time_budget_s or 0.0, progress.best_epoch)
                elif job.patience is not None and progress.bad_epochs >= job.patience:
                    logger.info("%s: early stop in phase %s, no val-loss improvement for %d epochs",
                                job.strategy, phase.name, progress.bad_epochs)
                    end_phase = True
                if end_phase or progress.epoch_in_phase >= phase.epochs:
                    progress.phase_index += 1
                    progress.epoch_in_phase = 0
                    end_phase = True
                finished = finished or progress.phase_index >= len(job.phases)
                _save_state(job, progress, prepared, scheduler, finished)
                if job.epoch_logger is not None:
                    job.epoch_logger.log_epoch(EpochRecord(job.strategy, progress.curves[-1], phase_index,
                                                           learning_rates))
                if job.epoch_callback is not None:
                    job.epoch_callback(job.strategy, progress.epochs_run)
                if finished:
                    break

    if progress.best_state is None:
        raise ConfigError(f"{job.strategy}: no epoch was trained (every phase has 0 epochs)")
    return FitResult(
        best_state=progress.best_state, best_epoch=progress.best_epoch, epochs_run=progress.epochs_run,
        curves=progress.curves, stopped_by_budget=progress.stopped_by_budget,
        train_time_s=round(progress.elapsed_s, 3), images_seen=progress.images_seen,
    )
