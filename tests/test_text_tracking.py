"""Experiment tracking for text ``--run``: the TensorBoard scalars and the MLflow runs a text run leaves (the tiny
random BERT of ``text_fixtures``, a real local SQLite store), and the up-front refusals of the text command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from text_fixtures import tiny_backbone, tiny_dataset

from tl_advise.cli.commands import main

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "no_tracking_environment")


@pytest.fixture(scope="module")
def backbone() -> Any:
    return tiny_backbone()


def _run(tmp_path: Path, backbone: Any, **options: Any) -> Any:
    from tl_advise.advisor.text_api import advise_text_session
    from tl_advise.runners.text import run_text_advice
    from tl_advise.schema.text import TextRunOptions

    session = advise_text_session(tiny_dataset(tmp_path / "data"), backbone=backbone, use_cache=False,
                                  sample_size=40)
    values = {"output_dir": tmp_path / "out", "max_length": 32, "head_epochs": 2, "finetune_epochs": 2,
              "strategies": ["text_finetune_top", "tfidf_linear"], **options}
    return run_text_advice(session, TextRunOptions(**values))


@pytest.mark.slow
def test_a_text_run_writes_tensorboard_curves_numbered_over_each_strategy(tmp_path: Path, backbone: Any) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = _run(tmp_path, backbone, tensorboard=True, mlflow=False)
    top, tfidf = report.runs
    assert top.status == tfidf.status == "completed"

    def events(strategy: str) -> Any:
        accumulator = EventAccumulator(str(tmp_path / "out" / "tensorboard" / strategy))
        accumulator.Reload()
        return accumulator

    def series(acc: Any, tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    tb = events("text_finetune_top")
    assert {"loss/train", "loss/val", "accuracy/val", "phase", "lr/head", "lr/layer.2", "final/test_accuracy",
            "final/texts_per_s"} <= set(tb.Tags()["scalars"])
    # the head's epochs, then the fine-tuning's after them: one curve, as the run records it
    assert series(tb, "loss/val") == [(c.epoch, pytest.approx(c.val_loss, rel=1e-6)) for c in top.curves]
    assert [v for _, v in series(tb, "phase")] == [0 if c.phase == "head" else 1 for c in top.curves]
    assert [s for s, _ in series(tb, "lr/layer.2")] == [c.epoch for c in top.curves if c.phase == "finetune"]
    assert series(tb, "final/test_accuracy")[0][1] == pytest.approx(top.test.accuracy, rel=1e-6)
    tf = events("tfidf_linear")  # the closed-form fit: its one point
    assert series(tf, "accuracy/val") == [(1, pytest.approx(tfidf.val.accuracy, rel=1e-6))]


@pytest.mark.slow
def test_a_text_run_is_one_mlflow_parent_with_a_run_per_strategy(tmp_path: Path, backbone: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store needs sqlalchemy (the mlflow extra)")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working directory
    report = _run(tmp_path, backbone, tensorboard=False, mlflow_experiment="text-test")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("text-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.data.params["dataset.texts"] == "68" and parent.data.params["run.max_length"] == "32"
    assert parent.data.params["run.strategies"] == "text_finetune_top, tfidf_linear"
    assert parent.data.tags["tl_advise.verdict"] == report.verdict.status
    assert parent.data.tags["tl_advise.dataset"] == str(tmp_path / "data")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"metrics.json", "report.md"}
    children = {r.data.tags["tl_advise.strategy"]: r for r in runs if r is not parent}
    for run in report.runs:
        child = children[run.strategy]
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.metrics["test_accuracy"] == pytest.approx(run.test.accuracy)
        assert child.data.params["n_train"] == str(run.settings.n_train)
        history = client.get_metric_history(child.info.run_id, "accuracy/val")
        assert [m.step for m in history] == [c.epoch for c in run.curves]
    assert children["text_finetune_top"].data.params["tuned_layers"] == "layer.2"


# --------------------------------------------------------------------------- refused before any work


def _reviews(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"review number {i} was {'good' if i % 2 else 'bad'},"
                                             f"{'pos' if i % 2 else 'neg'}\n" for i in range(10)), encoding="utf-8")
    return path


@pytest.mark.parametrize("package", ["mlflow", "tensorboard"])
def test_a_missing_tracker_for_a_text_run_is_exit_2_before_any_work(
        package: str, without: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    without(package)
    started: list[object] = []
    monkeypatch.setattr("tl_advise.advisor.text_api.advise_text_session",
                        lambda *a, **k: started.append(a) or 1 / 0)
    code = main([str(_reviews(tmp_path)), "--run", f"--{package}", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--{package} needs the {package} package, which is not installed" in err and "Traceback" not in err
    assert started == [] and not (tmp_path / "out").exists()


def test_tracking_options_without_run_are_refused_for_text(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(_reviews(tmp_path)), "--tensorboard", "--mlflow-experiment", "x"]) == 2
    err = capsys.readouterr().err
    assert "--tensorboard, --mlflow-experiment only work with --run: add --run, or leave them out" in err


def test_compare_beside_strategies_is_refused_for_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(_reviews(tmp_path)), "--run", "--compare", "--strategies", "tfidf_linear",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--compare trains the recommendation's alternatives" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
