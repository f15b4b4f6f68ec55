"""The training loop every runner shares: phases, early stopping, budget, checkpoint and exact resume.

A runner describes *what* trains (a ``TrainingJob``: the module, its phases, how each phase freezes
and builds its optimizer, the batches); ``fit`` does the rest. At the end of every epoch a resumable
state (model, optimizer, scheduler, position, best-so-far, early-stopping counter, curves, RNG states)
is written atomically, so an interrupt (Ctrl-C or SIGTERM) loses at most the epoch in progress.

An epoch is a sequence of named steps — ``_train_epoch``, ``_evaluate``, ``_record_epoch``,
``_decide_next`` (budget, early stop, phase end), ``_checkpoint``, ``_announce`` — over one
``LoopState``. Under torchrun the same loop runs on every rank (``runners.distributed``): the model
trains through DistributedDataParallel, validation is gathered, and rank 0 writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tl_advise.runners import checkpoint, distributed
from tl_advise.runners.freezing import set_train_mode
from tl_advise.runners.mixing import BatchMixer, training_loss
from tl_advise.runners.optim import make_scheduler
from tl_advise.runners.tracking import EpochRecord, RunLogger
from tl_advise.schema.errors import ConfigError, StaleCheckpointError
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
class LoopState:
    """Where the run is: the next (phase, epoch in phase) to run and everything early stopping needs.

    Saved whole into every checkpoint and read back whole (``to_checkpoint`` / ``from_checkpoint``).
    """

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
    finished: bool = False

    def to_checkpoint(self) -> dict[str, Any]:
        # Shallow (no deep copy of the best weights); the curves as plain dicts for weights_only loading.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**values, "curves": [c.model_dump() for c in self.curves]}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> LoopState:
        values = {f.name: state[f.name] for f in fields(cls) if f.name in state}
        return cls(**{**values, "curves": [EpochLog.model_validate(c) for c in state["curves"]]})

    def next_phase(self, n_phases: int) -> None:
        self.phase_index += 1
        self.epoch_in_phase = 0
        self.finished = self.finished or self.phase_index >= n_phases


@dataclass
class _ActivePhase:
    """A phase being trained: its plan, optimizer and schedule, and the module that trains (DDP or not)."""

    index: int
    plan: PhasePlan
    prepared: PreparedPhase
    scheduler: torch.optim.lr_scheduler.LRScheduler
    trainable: nn.Module


@dataclass
class _EpochOutcome:
    train_loss: float
    n_images: int
    out_of_time: bool
    val_loss: float = float("nan")
    val_accuracy: float = 0.0
    seconds: float = 0.0
    learning_rates: dict[str, float] = field(default_factory=dict)


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


def predict_batches(model: nn.Module, batches: Iterable[Batch], device: torch.device, *, gather: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of every batch, in eval mode. With ``gather``, ``batches`` are this rank's shard
    (``distributed.shard``) and the result is every rank's, in the unsharded order."""
    model.eval()
    all_logits, all_labels = [], []
    with torch.inference_mode():
        for x, y in batches:
            with autocast(device):
                logits = model(to_device(x, device))
            all_logits.append(logits.float().cpu())
            all_labels.append(y)
    logits = torch.cat(all_logits) if all_logits else torch.zeros(0, 0)
    labels = torch.cat(all_labels) if all_labels else torch.zeros(0, dtype=torch.long)
    if gather:
        logits, labels = distributed.gather_rows(logits), distributed.gather_rows(labels)
    return logits, labels


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if labels.numel() == 0:
        return float("nan"), 0.0
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy


# --------------------------------------------------------------------------- state


def _state_dict_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _checkpoint(job: TrainingJob, loop: LoopState, phase: _ActivePhase) -> None:
    """The resumable state after an epoch, written atomically by rank 0 (with every rank's RNG states)."""
    rng_by_rank = distributed.gather(checkpoint.rng_states())
    if not distributed.world().is_main:
        return
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "fingerprint": job.fingerprint,
        "model": _state_dict_copy(job.model),
        "optimizer": phase.prepared.optimizer.state_dict(),
        "scheduler": phase.scheduler.state_dict(),
        "rng": rng_by_rank[0],
        **loop.to_checkpoint(),
    }
    if len(rng_by_rank) > 1:
        state["rng_by_rank"] = rng_by_rank
    checkpoint.atomic_save(state, job.state_path)


def _read_state(job: TrainingJob) -> dict[str, Any] | None:
    if not (job.resume and job.state_path.is_file()):
        return None
    state = checkpoint.load(job.state_path)
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != job.fingerprint:
        raise StaleCheckpointError(
            f"{job.state_path} was written by a run with other settings (data, recipe or options), so it "
            "cannot be resumed. Run again without --resume, or with the original settings, or use "
            "another output folder."
        )
    logger.info("%s: resuming after epoch %d", job.strategy, state["epochs_run"])
    return state


def _restore(job: TrainingJob, state: dict[str, Any]) -> None:
    """The saved weights, and this rank's RNG states (rank 0's when the run had another world size)."""
    job.model.load_state_dict(state["model"])
    here = distributed.world()
    by_rank = state.get("rng_by_rank")
    own = by_rank[here.rank] if by_rank is not None and len(by_rank) == here.size else state["rng"]
    checkpoint.restore_rng_states(own)


# --------------------------------------------------------------------------- the steps of an epoch


def _group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {str(group.get("name", f"group{i}")): float(group["lr"]) for i, group in enumerate(optimizer.param_groups)}


def _start_phase(job: TrainingJob, loop: LoopState, resumed: dict[str, Any] | None) -> _ActivePhase:
    """Freeze and build the optimizer from the plan (at every phase start, resumed or not); a phase
    resumed mid-way gets its optimizer and schedule back, a new one starts from the best weights so far."""
    plan = job.phases[loop.phase_index]
    prepared = job.prepare_phase(plan)
    scheduler = prepared.scheduler or make_scheduler(prepared.optimizer, epochs=plan.epochs)
    mid_phase_resume = resumed is not None and loop.epoch_in_phase > 0
    if mid_phase_resume and resumed is not None:
        prepared.optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
    else:
        loop.bad_epochs = 0
        if loop.epoch_in_phase == 0 and loop.best_state is not None:
            job.model.load_state_dict(loop.best_state)  # e.g. the fine-tuning starts from the best head
    return _ActivePhase(loop.phase_index, plan, prepared, scheduler, _trainable(job))


def _trainable(job: TrainingJob) -> nn.Module:
    """The module the optimizer steps through: DistributedDataParallel over the model in a distributed run
    (built after freezing, so it syncs exactly the parameters this phase trains)."""
    if not distributed.world().distributed:
        return job.model
    device_ids = [job.device.index] if job.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(job.model, device_ids=device_ids)


def _train_epoch(job: TrainingJob, phase: _ActivePhase, loss_fn: nn.Module, scaler: torch.amp.GradScaler,
                 loop: LoopState, started: float) -> _EpochOutcome:
    """One pass over the training batches (this rank's share of them): the mean loss over every rank's
    images, their number, and whether the time budget ran out (decided for all ranks at once)."""
    set_train_mode(job.model, phase.prepared.frozen_bn)
    optimizer = phase.prepared.optimizer
    total_loss, n_images, out_of_time = 0.0, 0, False
    desc = f"{job.strategy} {phase.plan.name} epoch {loop.epochs_run + 1}"
    with tqdm(total=job.n_train_batches, desc=desc, unit="batch", leave=False,
              disable=not (job.progress and distributed.world().is_main)) as bar:
        for x, y in job.train_batches(loop.epochs_run + 1):
            if len(y) < 2:
                continue  # batch norm cannot train on a single image (equal shards: every rank skips it)
            x, y = to_device(x, job.device), y.to(job.device)
            if job.mix_batch is not None:
                x, y = job.mix_batch(x, y)  # in a distributed run: within this rank's share of the batch
            optimizer.zero_grad(set_to_none=True)
            with autocast(job.device):
                loss = loss_fn(phase.trainable(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(y)
            n_images += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / n_images:.3f}")
            if job.time_budget_s is not None and distributed.any_rank(
                    loop.elapsed_s + time.perf_counter() - started > job.time_budget_s):
                out_of_time = True
                break
    totals = distributed.gather((total_loss, n_images))
    total_loss, n_images = sum(t for t, _ in totals), sum(n for _, n in totals)
    return _EpochOutcome(train_loss=total_loss / n_images if n_images else float("nan"), n_images=n_images,
                         out_of_time=out_of_time, learning_rates=_group_learning_rates(optimizer))


def _evaluate(job: TrainingJob) -> tuple[float, float]:
    """Validation loss and accuracy over every validation image (each rank predicts its shard)."""
    distributed.sync_buffers(job.model)  # batch-norm statistics as rank 0 has them, on every rank
    return loss_and_accuracy(*predict_batches(job.model, job.val_batches(), job.device, gather=True))


def _record_epoch(job: TrainingJob, loop: LoopState, phase: _ActivePhase, outcome: _EpochOutcome) -> None:
    """The epoch into the curves and the position; a better validation loss becomes the best state."""
    loop.elapsed_s += outcome.seconds
    loop.images_seen += outcome.n_images
    loop.epochs_run += 1
    loop.epoch_in_phase += 1
    loop.curves.append(EpochLog(
        phase=phase.plan.name, epoch=loop.epochs_run, train_loss=round(outcome.train_loss, 6),
        val_loss=round(outcome.val_loss, 6), val_accuracy=round(outcome.val_accuracy, 6),
        seconds=round(outcome.seconds, 3)))
    if outcome.val_loss < loop.best_loss - MIN_IMPROVEMENT or loop.best_state is None:
        loop.best_loss, loop.best_epoch = outcome.val_loss, loop.epochs_run
        loop.best_state = _state_dict_copy(job.model)
        loop.bad_epochs = 0
    else:
        loop.bad_epochs += 1
    logger.info("%s %s epoch %d (%d/%d): train loss %.4f, val loss %.4f, val accuracy %.3f, %.1fs%s",
                job.strategy, phase.plan.name, loop.epochs_run, loop.epoch_in_phase, phase.plan.epochs,
                outcome.train_loss, outcome.val_loss, outcome.val_accuracy, outcome.seconds,
                " (best)" if loop.best_epoch == loop.epochs_run else "")


def _decide_next(job: TrainingJob, loop: LoopState, phase: _ActivePhase, out_of_time: bool) -> None:
    """After an epoch: the budget ends the run; patience or the phase's last epoch ends the phase."""
    if out_of_time:
        loop.stopped_by_budget = loop.finished = True
        logger.info("%s: time budget of %.0fs spent; keeping the best epoch (%d)",
                    job.strategy, job.time_budget_s or 0.0, loop.best_epoch)
    early_stop = not out_of_time and job.patience is not None and loop.bad_epochs >= job.patience
    if early_stop:
        logger.info("%s: early stop in phase %s, no val-loss improvement for %d epochs",
                    job.strategy, phase.plan.name, loop.bad_epochs)
    if early_stop or loop.epoch_in_phase >= phase.plan.epochs:
        loop.next_phase(len(job.phases))


def _announce(job: TrainingJob, loop: LoopState, phase: _ActivePhase, outcome: _EpochOutcome) -> None:
    """After the checkpoint is on disk: experiment tracking, then the caller's callback."""
    if job.epoch_logger is not None:
        job.epoch_logger.log_epoch(EpochRecord(job.strategy, loop.curves[-1], phase.index, outcome.learning_rates))
    if job.epoch_callback is not None:
        job.epoch_callback(job.strategy, loop.epochs_run)


# --------------------------------------------------------------------------- the loop


def _run_phase(job: TrainingJob, loop: LoopState, phase: _ActivePhase, loss_fn: nn.Module,
               scaler: torch.amp.GradScaler) -> None:
    while loop.phase_index == phase.index and not loop.finished:
        started = time.perf_counter()
        outcome = _train_epoch(job, phase, loss_fn, scaler, loop, started)
        phase.scheduler.step()
        outcome.val_loss, outcome.val_accuracy = _evaluate(job)
        outcome.seconds = time.perf_counter() - started
        _record_epoch(job, loop, phase, outcome)
        _decide_next(job, loop, phase, outcome.out_of_time)
        _checkpoint(job, loop, phase)
        _announce(job, loop, phase, outcome)


def fit(job: TrainingJob) -> FitResult:
    """Train ``job`` phase by phase; resumes from ``job.state_path`` when asked and the state fits.

    In a distributed run (``runners.distributed``) every rank calls ``fit`` with its own share of the
    batches; rank 0 reads and writes the checkpoint, and every decision (early stopping, the budget)
    is taken on numbers all ranks share.
    """
    resumed = distributed.from_main(lambda: _read_state(job))
    loop = LoopState.from_checkpoint(resumed) if resumed is not None else LoopState()
    if resumed is not None:
        _restore(job, resumed)
    loss_fn = training_loss(label_smoothing=job.label_smoothing, mixes_batches=job.mix_batch is not None)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(job.device))

    with sigterm_as_keyboard_interrupt():
        while not loop.finished and loop.phase_index < len(job.phases):
            if job.phases[loop.phase_index].epochs <= 0:  # a phase of 0 epochs hands over at once
                loop.next_phase(len(job.phases))
                continue
            phase = _start_phase(job, loop, resumed)
            resumed = None  # only the first phase started can be a resumed one
            _run_phase(job, loop, phase, loss_fn, scaler)

    if loop.best_state is None:
        raise ConfigError(f"{job.strategy}: no epoch was trained (every phase has 0 epochs)")
    return FitResult(
        best_state=loop.best_state, best_epoch=loop.best_epoch, epochs_run=loop.epochs_run,
        curves=loop.curves, stopped_by_budget=loop.stopped_by_budget,
        train_time_s=round(loop.elapsed_s, 3), images_seen=loop.images_seen,
    )
