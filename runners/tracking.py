"""Experiment tracking for ``--run``: one small logger interface, TensorBoard and MLflow behind it.

The shape follows Lightning's loggers: the training loop calls ``log_epoch`` after every epoch and
knows nothing else; ``run_advice`` opens the loggers, starts and ends each strategy and hands over
the finished files. Neither backend is imported unless it is used: ``open_loggers`` decides from the
run options (and ``MLFLOW_TRACKING_URI``) and only then imports ``tensorboard_logger`` or
``mlflow_logger``.

A tracker that fails mid-run (a server gone away, a full disk) logs one warning and is switched off;
training goes on — the run's own files are the record that matters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import AdviceResult, EpochLog, StrategyRun
from tl_advise.schema.text import TextAdviceResult, TextStrategyRun

logger = logging.getLogger(__name__)

EndStatus = Literal["FINISHED", "FAILED", "KILLED"]
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
# Both modalities are tracked alike: the hooks take an image or a text result, and read only what both carry.
AnyResult = AdviceResult | TextAdviceResult
AnyStrategyRun = StrategyRun | TextStrategyRun
INSTALL_HINT = {"tensorboard": "pip install 'tl-advise[tensorboard]'", "mlflow": "pip install 'tl-advise[mlflow]'"}


@dataclass(frozen=True)
class EpochRecord:
    """What the loop knows after one epoch: the curve point, its phase and each param group's LR."""

    strategy: str
    log: EpochLog
    phase_index: int  # 0 = the first phase (the head, or from scratch), 1 = fine-tuning
    learning_rates: dict[str, float]  # param-group name -> the LR it trained at during this epoch


class RunLogger:
    """One tracking backend. Every hook is optional; the default does nothing."""

    name = "logger"

    def start_run(self, result: AnyResult, params: dict[str, Any]) -> None:
        """Before the first strategy: the advice and the run's settings."""

    def start_strategy(self, strategy: str, params: dict[str, Any]) -> None:
        """Before a strategy trains (or is read back on resume): its recipe."""

    def log_epoch(self, record: EpochRecord) -> None:
        """After every epoch of the training loop."""

    def end_strategy(self, run: AnyStrategyRun, folder: Path) -> None:
        """After a strategy: its final metrics, its files (in ``folder``)."""

    def finish(self, result: AnyResult, output_dir: Path) -> None:
        """After the run's files are written (``result.run.files``, relative to ``output_dir``)."""

    def close(self, status: EndStatus) -> None:
        """Always called last, also when the run fails or is interrupted."""


class LoggerGroup(RunLogger):
    """Fans every call out to the active loggers; a logger that raises is warned about once and dropped."""

    name = "loggers"

    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = list(loggers)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, hook: str, *args: Any) -> None:
        for tracker in list(self.loggers):
            try:
                getattr(tracker, hook)(*args)
            except Exception as exc:  # tracking must never stop training
                logger.warning("%s tracking failed in %s (%s: %s); the run goes on without it",
                               tracker.name, hook, type(exc).__name__, exc)
                self.loggers.remove(tracker)
                if hook != "close":
                    self._close_quietly(tracker)

    @staticmethod
    def _close_quietly(tracker: RunLogger) -> None:
        try:
            tracker.close("FAILED")
        except Exception:
            logger.debug("closing %s after its failure failed too", tracker.name, exc_info=True)

    def start_run(self, result: AnyResult, params: dict[str, Any]) -> None:
        self._each("start_run", result, params)

    def start_strategy(self, strategy: str, params: dict[str, Any]) -> None:
        self._each("start_strategy", strategy, params)

    def log_epoch(self, record: EpochRecord) -> None:
        self._each("log_epoch", record)

    def end_strategy(self, run: AnyStrategyRun, folder: Path) -> None:
        self._each("end_strategy", run, folder)

    def finish(self, result: AnyResult, output_dir: Path) -> None:
        self._each("finish", result, output_dir)

    def close(self, status: EndStatus) -> None:
        self._each("close", status)


class OffsetLogger(RunLogger):
    """Hands ``inner`` every epoch record renumbered: ``epoch_offset`` added to the epoch, the phase set to
    ``phase_index``. For a loop that trains one phase of a strategy whose earlier phase another loop ran (the text
    fine-tuning after its head): the tracker then sees one curve numbered over the whole strategy."""

    def __init__(self, inner: RunLogger, *, epoch_offset: int, phase_index: int) -> None:
        self.inner, self.epoch_offset, self.phase_index = inner, epoch_offset, phase_index
        self.name = inner.name

    def log_epoch(self, record: EpochRecord) -> None:
        log = record.log.model_copy(update={"epoch": record.log.epoch + self.epoch_offset})
        self.inner.log_epoch(EpochRecord(record.strategy, log, self.phase_index, record.learning_rates))


def dataset_root(result: AnyResult) -> str:
    """The dataset as given (an image folder or manifest, a text table or folder)."""
    return result.source.root if isinstance(result, TextAdviceResult) else result.dataset.root


@contextlib.contextmanager
def tracking(trackers: LoggerGroup) -> Iterator[LoggerGroup]:
    """The trackers for the block, closed however it ends: FINISHED, KILLED (Ctrl-C) or FAILED (an error)."""
    status: EndStatus = "FAILED"
    try:
        yield trackers
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        trackers.close(status)


def installed(package: str) -> bool:
    """Whether ``package`` can be imported, without importing it (no import cost when it is off)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def mlflow_requested(mlflow: bool | None) -> bool:
    """``--mlflow`` asks for it; ``--no-mlflow`` forbids it; otherwise ``MLFLOW_TRACKING_URI`` decides."""
    return bool(os.environ.get(MLFLOW_URI_ENV)) if mlflow is None else mlflow


def check_available(*, tensorboard: bool | None, mlflow: bool | None) -> None:
    """Raise ``ConfigError`` (exit 2) when a tracker was asked for explicitly and its package is missing.

    Called before any work, so a missing package costs no advice or training time.
    """
    for package, asked in (("tensorboard", tensorboard), ("mlflow", mlflow)):
        if asked and not installed(package):
            raise ConfigError(f"--{package} needs the {package} package, which is not installed: "
                              f"{INSTALL_HINT[package]} (or leave --{package} out)")


FILE_STORE_FIXES = ("set MLFLOW_TRACKING_URI=sqlite:///mlflow.db (a local database; `mlflow migrate-filestore` "
                    "moves existing runs into it), or MLFLOW_ALLOW_FILE_STORE=true to keep the file store, or "
                    "--no-mlflow to train without tracking")


def check_tracking_store(*, mlflow: bool | None) -> None:
    """Raise ``ConfigError`` (exit 2) when MLflow is asked for and refuses its tracking store.

    Opens the store as the run will (``MlflowClient()``, which reads ``MLFLOW_TRACKING_URI``), before anything
    trains: MLflow 3 refuses the file store (``file:./mlruns``, a bare path) unless ``MLFLOW_ALLOW_FILE_STORE``
    is true, and any scheme it does not know. A remote server is not contacted here; if it fails later, the
    run goes on untracked with one warning.
    """
    if not mlflow_requested(mlflow) or not installed("mlflow"):
        return
    from mlflow import MlflowClient

    uri = os.environ.get(MLFLOW_URI_ENV)
    shown = f"{MLFLOW_URI_ENV}={uri}" if uri else "MLflow's default tracking store"
    try:
        MlflowClient()
    except Exception as exc:  # MlflowException and whatever a store's constructor raises: never exit 3
        reason = " ".join(str(exc).split())
        if "filesystem tracking backend" in reason or "MLFLOW_ALLOW_FILE_STORE" in reason:
            raise ConfigError(f"{shown}: MLflow refuses its file store (it is in maintenance mode): "
                              f"{FILE_STORE_FIXES}") from None
        raise ConfigError(f"{shown}: MLflow cannot open this tracking store ({type(exc).__name__}: "
                          f"{reason[:300]}); use sqlite:///mlflow.db or an http(s):// server, or --no-mlflow") from None


def open_loggers(*, output_dir: Path, tensorboard: bool | None, mlflow: bool | None,
                 mlflow_experiment: str, resume: bool) -> LoggerGroup:
    """The loggers this run asked for: TensorBoard when installed (unless switched off), MLflow when
    ``--mlflow`` or ``MLFLOW_TRACKING_URI`` says so. A missing package asked for explicitly is an
    error; one only implied (installed-or-not, the environment variable) is a log line."""
    check_available(tensorboard=tensorboard, mlflow=mlflow)
    check_tracking_store(mlflow=mlflow)
    loggers: list[RunLogger] = []
    if tensorboard is not False:
        if installed("tensorboard"):
            from tl_advise.runners.tensorboard_logger import TensorBoardLogger

            loggers.append(TensorBoardLogger(output_dir / "tensorboard"))
        else:
            logger.debug("TensorBoard logging off: the tensorboard package is not installed (%s)",
                         INSTALL_HINT["tensorboard"])
    if mlflow_requested(mlflow):
        if installed("mlflow"):
            from tl_advise.runners.mlflow_logger import MlflowLogger

            loggers.append(MlflowLogger(output_dir, experiment=mlflow_experiment, resume=resume))
        else:
            logger.warning("%s is set but the mlflow package is not installed, so this run is not tracked "
                           "in MLflow: %s", MLFLOW_URI_ENV, INSTALL_HINT["mlflow"])
    return LoggerGroup(loggers)


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as flat ``a.b`` -> text (what trackers store as parameters); ``None`` left out."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = ", ".join(str(v) for v in value) or "none"
        else:
            out[name] = str(value)
    return out


def epoch_scalars(record: EpochRecord) -> dict[str, float]:
    """The per-epoch numbers every tracker records, under the same names."""
    log = record.log
    scalars = {"loss/train": log.train_loss, "loss/val": log.val_loss, "accuracy/val": log.val_accuracy,
               "phase": float(record.phase_index), "epoch_seconds": log.seconds}
    scalars.update({f"lr/{group}": lr for group, lr in record.learning_rates.items()})
    return scalars


def final_scalars(run: AnyStrategyRun) -> dict[str, float]:
    """A finished strategy's summary numbers (validation, and test when the dataset has one)."""
    throughput = {"texts_per_s": run.texts_per_s} if isinstance(run, TextStrategyRun) else \
        {"images_per_s": run.images_per_s}
    out: dict[str, float] = {"train_time_s": run.train_time_s, **throughput, "epochs_run": float(run.epochs_run)}
    if run.best_epoch is not None:
        out["best_epoch"] = float(run.best_epoch)
    for split, metrics in (("val", run.val), ("test", run.test)):
        if metrics is not None:
            out.update({f"{split}_accuracy": metrics.accuracy, f"{split}_balanced_accuracy": metrics.balanced_accuracy,
                        f"{split}_macro_f1": metrics.macro_f1, f"{split}_loss": metrics.loss})
    return out
