"""MLflow tracking for ``--run``: one parent run per ``--run``, one nested run per strategy.

The tracking store is MLflow's own choice: ``MLFLOW_TRACKING_URI`` (e.g. ``sqlite:///mlflow.db``, an
``http://`` server), else MLflow's default. Experiment: ``--mlflow-experiment`` (default ``tl-advise``).

- parent run: the advice and the run options as params; the verdict as tags; ``metrics.json`` (the
  advice JSON with the run filled in), ``report.md``, ``report.html`` and the learning curves as artifacts;
- nested run per strategy: its recipe as params; train/val loss, val accuracy, the LR of every param
  group and the phase per epoch; the best model's final metrics; ``model.pt`` and ``run.json``.

The run ids are kept in ``<output_dir>/mlflow.json`` so that ``--resume`` continues the same runs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from tl_advise.runners.checkpoint import atomic_write_text
from tl_advise.runners.tracking import (
    AnyResult,
    AnyStrategyRun,
    EndStatus,
    EpochRecord,
    RunLogger,
    dataset_root,
    epoch_scalars,
    final_scalars,
    flat_params,
)

logger = logging.getLogger(__name__)

STATE_FILE = "mlflow.json"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
BATCH = 100  # MLflow accepts at most 100 params per log_batch call
STRATEGY_FILES = ("model.pt", "run.json")


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(key[:250], text[:MAX_PARAM_LENGTH]) for key, text in flat_params(values).items()]


class MlflowLogger(RunLogger):
    name = "MLflow"

    def __init__(self, output_dir: Path, *, experiment: str, resume: bool) -> None:
        self.client = MlflowClient()
        self.output_dir = output_dir
        self.experiment = experiment
        self.resume = resume
        self.parent_id: str | None = None
        self._experiment_id = ""
        self.children: dict[str, str] = {}  # strategy -> nested run id
        self._created_now: set[str] = set()
        self._epochs_logged: dict[str, int] = {}
        self._open: set[str] = set()

    # ------------------------------------------------------------------ run ids kept for --resume

    def _saved(self) -> dict[str, Any]:
        path = self.output_dir / STATE_FILE
        if not (self.resume and path.is_file()):
            return {}
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if saved.get("tracking_uri") != self.client.tracking_uri or saved.get("experiment") != self.experiment:
            return {}  # another store or experiment: start new runs there
        return saved if isinstance(saved, dict) else {}

    def _save(self) -> None:
        atomic_write_text(json.dumps({"tracking_uri": self.client.tracking_uri, "experiment": self.experiment,
                                      "parent_run_id": self.parent_id, "strategy_run_ids": self.children},
                                     indent=2), self.output_dir / STATE_FILE)

    def _reopen(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            self.client.update_run(run_id, status="RUNNING")
        except MlflowException:
            return False
        self._open.add(run_id)
        return True

    def _log_params(self, run_id: str, values: dict[str, Any]) -> None:
        params = _params(values)
        for start in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[start:start + BATCH])

    def _log_metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def _log_files(self, run_id: str, folder: Path, names: list[str]) -> None:
        for name in names:
            path = folder / name
            if path.is_file():
                artifact_dir = str(Path(name).parent) if Path(name).parent != Path(".") else None
                self.client.log_artifact(run_id, str(path), artifact_path=artifact_dir)

    # ------------------------------------------------------------------ hooks

    def start_run(self, result: AnyResult, params: dict[str, Any]) -> None:
        saved = self._saved()
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        if self._reopen(saved.get("parent_run_id")):
            self.parent_id = saved["parent_run_id"]
            self.children = dict(saved.get("strategy_run_ids") or {})
            logger.info("MLflow: continuing run %s", self.parent_id)
        else:
            rec = result.recommendation
            run = self.client.create_run(
                experiment_id, run_name=f"{Path(dataset_root(result)).name}: {rec.strategy}",
                tags={"tl_advise.dataset": dataset_root(result), "tl_advise.recommended": rec.strategy,
                      "tl_advise.rule": rec.rule_id, "tl_advise.backbone": result.backbone.name,
                      "tl_advise.version": result.tool_version})
            self.parent_id = run.info.run_id
            self._open.add(self.parent_id)
            self._log_params(self.parent_id, params)
            logger.info("MLflow: tracking this run as %s in experiment %r (%s)", self.parent_id, self.experiment,
                        self.client.tracking_uri)
        self._experiment_id = experiment_id
        self._save()

    def start_strategy(self, strategy: str, params: dict[str, Any]) -> None:
        if self._reopen(self.children.get(strategy)):
            return
        run = self.client.create_run(self._experiment_id, run_name=strategy,
                                     tags={"mlflow.parentRunId": self.parent_id or "",
                                           "tl_advise.strategy": strategy})
        run_id = run.info.run_id
        self.children[strategy] = run_id
        self._created_now.add(strategy)
        self._open.add(run_id)
        self._log_params(run_id, params)
        self._save()

    def log_epoch(self, record: EpochRecord) -> None:
        run_id = self.children.get(record.strategy)
        if run_id is None:
            return
        self._log_metrics(run_id, epoch_scalars(record), record.log.epoch)
        self._epochs_logged[record.strategy] = self._epochs_logged.get(record.strategy, 0) + 1

    def end_strategy(self, run: AnyStrategyRun, folder: Path) -> None:
        run_id = self.children.get(run.strategy)
        if run_id is None:
            return
        if run.strategy in self._created_now and not self._epochs_logged.get(run.strategy):
            # Read back from an earlier, untracked run: its curve still belongs to this run (no LRs).
            for log in run.curves:
                self._log_metrics(run_id, {"loss/train": log.train_loss, "loss/val": log.val_loss,
                                           "accuracy/val": log.val_accuracy}, log.epoch)
        self._log_metrics(run_id, final_scalars(run), run.best_epoch or run.epochs_run)
        self.client.set_tag(run_id, "tl_advise.status", run.status)
        if run.error:
            self.client.set_tag(run_id, "tl_advise.error", run.error[:5000])
        self._log_files(run_id, folder, list(STRATEGY_FILES))
        self.client.set_terminated(run_id, "FAILED" if run.status == "failed" else "FINISHED")
        self._open.discard(run_id)

    def finish(self, result: AnyResult, output_dir: Path) -> None:
        if self.parent_id is None or result.run is None:
            return
        report = result.run
        self.client.set_tag(self.parent_id, "tl_advise.verdict", report.verdict.status)
        self.client.set_tag(self.parent_id, "tl_advise.verdict_message", report.verdict.message[:5000])
        if report.verdict.gap is not None:
            self._log_metrics(self.parent_id, {"verdict_gap": report.verdict.gap}, 0)
        reports = [name for key, name in report.files.items() if not key.startswith("model:")]
        self._log_files(self.parent_id, output_dir, reports)

    def close(self, status: EndStatus) -> None:
        children_first = sorted(self._open, key=lambda run_id: run_id == self.parent_id)
        for run_id in children_first:
            self.client.set_terminated(run_id, status)
        self._open.clear()
