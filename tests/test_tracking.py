"""Experiment tracking for ``--run``: TensorBoard event files and a real local MLflow store (SQLite), the
training loop's logger hook, and the messages when a tracking package is missing."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tl_advise.cli.commands import main
from tl_advise.runners.tracking import (
    INSTALL_HINT,
    EpochRecord,
    LoggerGroup,
    RunLogger,
    check_available,
    check_tracking_store,
    open_loggers,
)
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob, fit
from tl_advise.schema.errors import ConfigError

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "no_tracking_environment")

HEAD_LR, STAGE_LR = 0.1, 0.01


class _Recorder(RunLogger):
    """Keeps what the loop hands over, to check the hook itself (the real backends are tested below)."""

    name = "recorder"

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []

    def log_epoch(self, record: EpochRecord) -> None:
        self.records.append(record)


def _tiny_job(tmp_path: Path, epoch_logger: RunLogger) -> TrainingJob:
    """Two phases on a linear model: the 'head' alone, then 'head' + 'stage' at their own LRs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    x, y = torch.randn(32, 4), (torch.arange(32) % 2)

    def prepare(phase: PhasePlan) -> PreparedPhase:
        groups = [{"params": list(model[1].parameters()), "lr": HEAD_LR, "name": "head"}]
        if phase.train_stages:
            groups.append({"params": list(model[0].parameters()), "lr": STAGE_LR, "name": "stage"})
        return PreparedPhase(torch.optim.SGD(groups), [])

    return TrainingJob(
        strategy="tiny", model=model, phases=[PhasePlan("head", 2, []), PhasePlan("finetune", 3, ["stage"])],
        prepare_phase=prepare, train_batches=lambda epoch: [(x[:16], y[:16]), (x[16:], y[16:])], n_train_batches=2,
        val_batches=lambda: [(x, y)], device=torch.device("cpu"), state_path=tmp_path / "state.pt",
        fingerprint="tiny", patience=10, progress=False, epoch_logger=epoch_logger,
    )


def _cosine(base: float, step: int, total: int) -> float:
    return base * (1 + math.cos(math.pi * step / total)) / 2


def test_the_loop_hands_every_epoch_its_phase_and_learning_rates(tmp_path: Path) -> None:
    recorder = _Recorder()
    result = fit(_tiny_job(tmp_path, recorder))
    assert [r.log for r in recorder.records] == result.curves
    assert [r.phase_index for r in recorder.records] == [0, 0, 1, 1, 1]
    # The LR each epoch trained at (before the cosine step), per named param group.
    assert [r.learning_rates.keys() for r in recorder.records] == [{"head"}] * 2 + [{"head", "stage"}] * 3
    for record, step in zip(recorder.records[2:], range(3), strict=True):
        assert record.learning_rates["stage"] == pytest.approx(_cosine(STAGE_LR, step, 3))
        assert record.learning_rates["head"] == pytest.approx(_cosine(HEAD_LR, step, 3))
    assert recorder.records[1].learning_rates["head"] == pytest.approx(_cosine(HEAD_LR, 1, 2))


class _Broken(RunLogger):
    name = "Broken"

    def __init__(self) -> None:
        self.closed_with: list[str] = []

    def log_epoch(self, record: EpochRecord) -> None:
        raise OSError("disk full")

    def close(self, status: str) -> None:  # type: ignore[override]
        self.closed_with.append(status)


def test_a_failing_tracker_is_dropped_with_one_warning_and_training_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken, recorder = _Broken(), _Recorder()
    group = LoggerGroup([broken, recorder])
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        result = fit(_tiny_job(tmp_path, group))
    assert result.epochs_run == 5 and len(recorder.records) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Broken tracking failed in log_epoch (OSError: disk full)" in warnings[0]
    assert group.loggers == [recorder] and broken.closed_with == ["FAILED"]


# --------------------------------------------------------------------------- missing packages


@pytest.mark.parametrize("package", ["mlflow", "tensorboard"])
def test_asking_for_a_missing_tracker_is_one_clear_error(package: str, without: object,
                                                         capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    without(package)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=f"--{package} needs the {package} package"):
        check_available(**{"tensorboard": None, "mlflow": None, package: True})
    data = tmp_path / "data"
    data.mkdir()
    code = main([str(data), "--run", f"--{package}", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--{package} needs the {package} package" in err and INSTALL_HINT[package] in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()  # refused before any work


def test_tracking_uri_without_mlflow_is_one_warning(without: object, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    without("mlflow")  # type: ignore[operator]
    without("tensorboard")  # type: ignore[operator]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with caplog.at_level(logging.DEBUG, logger="tl_advise"):
        group = open_loggers(output_dir=tmp_path, tensorboard=None, mlflow=None, mlflow_experiment="x",
                             resume=False)
    assert not group
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "MLFLOW_TRACKING_URI is set but the mlflow package is not installed" in warnings[0]
    assert INSTALL_HINT["mlflow"] in warnings[0]


def test_nothing_is_tracked_or_imported_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in ("mlflow", "tensorboard")]:
        monkeypatch.delitem(sys.modules, name)  # forgotten for this test: an import would bring them back
    group = open_loggers(output_dir=tmp_path, tensorboard=False, mlflow=None, mlflow_experiment="x", resume=False)
    assert not group
    assert not [m for m in sys.modules if m.split(".")[0] in ("mlflow", "tensorboard")]
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_per_epoch_and_param_group(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tl_advise.runners.tensorboard_logger import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "tensorboard")
    group = LoggerGroup([tb])
    result = fit(_tiny_job(tmp_path, group))
    group.close("FINISHED")

    events = EventAccumulator(str(tmp_path / "tensorboard" / "tiny"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/val", "lr/head", "lr/stage", "phase"} <= tags

    def series(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert series("loss/val") == [(c.epoch, pytest.approx(c.val_loss, rel=1e-6)) for c in result.curves]
    assert series("accuracy/val") == [(c.epoch, pytest.approx(c.val_accuracy, rel=1e-6)) for c in result.curves]
    assert [v for _, v in series("phase")] == [0, 0, 1, 1, 1]
    assert [s for s, _ in series("lr/stage")] == [3, 4, 5]  # the stage trains in phase 2 only
    assert series("lr/stage")[0][1] == pytest.approx(STAGE_LR)


# --------------------------------------------------------------------------- MLflow, a real local store


@pytest.mark.slow
def test_mlflow_run_leaves_recipe_metrics_and_artifacts_in_a_local_store(
        synthetic_dataset: Path, session_cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store needs sqlalchemy (the mlflow extra)")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working directory
    out = tmp_path / "runs"
    args = [str(synthetic_dataset), "--cache-dir", str(session_cache_dir), "--device", "cpu", "--run",
            "--strategies", "feature_extraction,finetune_last_layers", "--budget", "2ep", "--image-size", "32",
            "--workers", "0", "--no-tensorboard", "--output-dir", str(out), "--mlflow-experiment", "tl-test",
            "--format", "json"]
    assert main(args) == 0, capsys.readouterr().err  # MLFLOW_TRACKING_URI alone switches MLflow on
    capsys.readouterr()

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tl-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["advice.strategy"] in {"feature_extraction", "finetune_last_layers",
                                                     "feature_extraction_top_layers"}
    assert parent.data.params["run.strategies"] == "feature_extraction, finetune_last_layers"
    assert parent.data.params["run.max_epochs"] == "2"
    assert parent.data.tags["tl_advise.verdict"] in {"confirmed", "refuted", "not_compared"}
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"metrics.json", "report.md", "report.html", "learning_curves.png"} <= parent_files

    import json

    local = Path(client.download_artifacts(parent.info.run_id, "metrics.json", str(tmp_path / "dl")))
    advice = json.loads(local.read_text())
    assert advice["recommendation"]["strategy"] == parent.data.params["advice.strategy"]
    assert advice["run"]["verdict"]["status"] == parent.data.tags["tl_advise.verdict"]

    children = {r.data.tags["tl_advise.strategy"]: r for r in runs if r is not parent}
    assert set(children) == {"feature_extraction", "finetune_last_layers"}
    metrics = json.loads((out / "metrics.json").read_text())["run"]["runs"]
    for strategy_run in metrics:
        child = children[strategy_run["strategy"]]
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["batch_size"] == str(strategy_run["settings"]["batch_size"])
        assert child.data.params["head_lr"] == str(strategy_run["settings"]["head_lr"])
        history = client.get_metric_history(child.info.run_id, "loss/val")
        assert [(m.step, round(m.value, 6)) for m in history] == \
            [(c["epoch"], c["val_loss"]) for c in strategy_run["curves"]]
        assert len(client.get_metric_history(child.info.run_id, "lr/head")) == strategy_run["epochs_run"]
        assert child.data.metrics["val_accuracy"] == pytest.approx(strategy_run["val"]["accuracy"])
        assert {f.path for f in client.list_artifacts(child.info.run_id)} == {"model.pt", "run.json"}
    finetune = children["finetune_last_layers"]
    stage_lrs = [k for k in finetune.data.metrics if k.startswith("lr/") and k != "lr/head"]
    assert stage_lrs, "fine-tuning logs the LR of every unfrozen stage"

    # --resume continues the same MLflow runs instead of starting new ones.
    assert main([*args, "--resume"]) == 0
    capsys.readouterr()
    again = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in again} == {r.info.run_id for r in runs}
    assert all(r.info.status == "FINISHED" for r in again)


# --------------------------------------------------------------------------- MLflow's tracking store, checked first


@pytest.mark.slow
@pytest.mark.parametrize("store", ["file:{tmp}/mlruns", "{tmp}/mlruns"])
def test_a_file_store_mlflow_refuses_is_exit_2_before_the_advice_naming_the_fixes(
        store: str, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow's classic default, ``file:./mlruns``: MLflow 3 refuses it. That used to be exit 3 after the advice
    and the run had started; now it is exit 2 before the scan, with the two fixes MLflow itself offers."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.format(tmp=tmp_path))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    from mlflow import MlflowClient

    with pytest.raises(MlflowException, match="maintenance mode"):  # the premise: this MLflow refuses it
        MlflowClient()
    scanned: list[object] = []
    monkeypatch.setattr("tl_advise.advisor.api.scan_dataset", lambda *a, **k: scanned.append(a) or 1 / 0)
    out = tmp_path / "runs"
    code = main([str(synthetic_dataset), "--cache-dir", str(tmp_path / "cache"), "--run", "--strategies",
                 "feature_extraction", "--output-dir", str(out), "--no-tensorboard"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert f"MLFLOW_TRACKING_URI={store.format(tmp=tmp_path)}" in err
    assert "sqlite:///mlflow.db" in err and "MLFLOW_ALLOW_FILE_STORE=true" in err
    assert scanned == [] and not out.exists()  # refused before the scan: nothing measured, nothing trained


@pytest.mark.slow
def test_the_file_store_is_used_where_mlflow_allows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_tracking_store(mlflow=None)  # MLflow allows it: no error
    group = open_loggers(output_dir=tmp_path / "out", tensorboard=False, mlflow=None, mlflow_experiment="x",
                         resume=False)
    assert [t.name for t in group.loggers] == ["MLflow"]


@pytest.mark.slow
def test_an_unknown_tracking_scheme_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    with pytest.raises(ConfigError, match=r"MLFLOW_TRACKING_URI=bogus://nowhere: MLflow cannot open"):
        check_tracking_store(mlflow=None)
    check_tracking_store(mlflow=False)  # --no-mlflow: the store is not looked at


def test_no_store_is_opened_unless_mlflow_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "mlflow"]:
        monkeypatch.delitem(sys.modules, name)
    check_tracking_store(mlflow=None)  # no MLFLOW_TRACKING_URI, no --mlflow
    assert not [m for m in sys.modules if m.split(".")[0] == "mlflow"]
