"""``tl-advise schema``: the printed JSON Schema describes real reports — an advice, a ``--run`` metrics.json,
predictions — and rejects reports that break it."""

from __future__ import annotations

import copy
import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from schema_check import errors, validate
from text_fixtures import sentence
from threadpoolctl import threadpool_limits

from tl_advise.advisor.api import advise_session
from tl_advise.advisor.report.predictions import FORMATTERS, ImagePrediction, PredictionFormat, PredictionReport, to_csv
from tl_advise.cli.commands import main
from tl_advise.runners import RunOptions, run_advice
from tl_advise.schema.models import SCHEMA_VERSION, AdviceResult
from tl_advise.schema.text import TEXT_SCHEMA_VERSION, TextAdviceResult

pytestmark = pytest.mark.usefixtures("restore_tl_logging")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1, "blas"):
        yield


def _printed_schema(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["schema", *args]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    return schema


@pytest.fixture(scope="module")
def run_metrics(synthetic_dataset: Path, session_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Any]:
    """metrics.json of a real --run: feature extraction at the backbone's input size, from the cached advice."""
    session = advise_session(synthetic_dataset, cache_dir=session_cache_dir, device="cpu")
    out = tmp_path_factory.mktemp("schema-run")
    run_advice(session, RunOptions(output_dir=out, strategies=["feature_extraction"], head_epochs=2,
                                   progress=False, num_workers=0))
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def test_schema_is_draft_2020_12_and_every_output_field_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    schema = _printed_schema(capsys)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA_VERSION in schema["$comment"]
    assert schema["required"] == list(AdviceResult.model_fields)  # 'run' too: null without --run, never absent
    run = schema["$defs"]["RunReport"]
    assert {"runs", "verdict", "files"} <= set(run["required"])
    assert schema["$defs"]["DatasetSummary"]["additionalProperties"] is False


@pytest.mark.slow
def test_schema_validates_a_real_run_report(capsys: pytest.CaptureFixture[str], run_metrics: dict[str, Any]) -> None:
    schema = _printed_schema(capsys)
    assert run_metrics["run"]["runs"][0]["status"] == "completed"
    validate(run_metrics, schema)
    assert AdviceResult.model_validate(run_metrics).model_dump(mode="json") == run_metrics  # round trip


@pytest.mark.slow
def test_schema_validates_the_json_format(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path,
                                          session_cache_dir: Path) -> None:
    schema = _printed_schema(capsys)
    assert main([str(synthetic_dataset), "--format", "json", "--cache-dir", str(session_cache_dir), "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"] is None
    validate(report, schema)


@pytest.mark.slow
def test_schema_rejects_broken_reports(capsys: pytest.CaptureFixture[str], run_metrics: dict[str, Any]) -> None:
    schema = _printed_schema(capsys)
    missing = copy.deepcopy(run_metrics)
    del missing["run"]["verdict"]
    assert errors(missing, schema) == ["$.run: missing required 'verdict'"]
    renamed = copy.deepcopy(run_metrics)
    renamed["recommendation"]["strategy_id"] = renamed["recommendation"].pop("strategy")
    assert set(errors(renamed, schema)) == {"$.recommendation: missing required 'strategy'",
                                            "$.recommendation: unexpected key 'strategy_id'"}
    wrong = copy.deepcopy(run_metrics)
    wrong["recommendation"]["strategy"] = "train_harder"
    wrong["similarity"]["score"] = 1.5
    assert len(errors(wrong, schema)) == 2


def test_the_text_advice_has_its_own_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `tl-advise schema` offered only the image advice's, which a text advice fails (53 errors)."""
    schema = _printed_schema(capsys, "text-advice")
    assert schema["title"] == "TextAdviceResult" and TEXT_SCHEMA_VERSION in schema["$comment"]
    assert schema["required"] == list(TextAdviceResult.model_fields)  # 'run' too: null without --run
    assert {"runs", "verdict", "files"} <= set(schema["$defs"]["TextRunReport"]["required"])
    assert main(["schema", "--help"]) == 0
    assert "text-advice" in capsys.readouterr().out


@pytest.mark.slow
def test_the_text_schema_validates_a_real_text_advice_and_run(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    """The JSON of `tl-advise TEXTS.csv --format json` and a text --run's metrics.json, both as the command wrote
    them (the embedded all-MiniLM-L6-v2; the run trains tfidf_linear only: seconds)."""
    rng = random.Random(0)
    data = tmp_path / "reviews.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((f"{sentence(rng, label)} {i}", label) for i in range(30)
                         for label in ("negative", "positive"))
    schema = _printed_schema(capsys, "text-advice")
    cache = tmp_path / "cache"
    assert main([str(data), "--format", "json", "--cache-dir", str(cache), "-q"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["schema_version"] == TEXT_SCHEMA_VERSION and advice["run"] is None
    validate(advice, schema)
    assert errors(advice, _printed_schema(capsys, "advice"))  # the image advice's schema is not the text one's
    out = tmp_path / "run"
    assert main([str(data), "--run", "--strategies", "tfidf_linear", "--output-dir", str(out), "--cache-dir",
                 str(cache), "--no-tensorboard", "-q"]) == 0
    capsys.readouterr()
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["run"]["runs"][0]["status"] == "completed"
    validate(metrics, schema)
    assert TextAdviceResult.model_validate(metrics).model_dump(mode="json") == metrics  # round trip
    broken = copy.deepcopy(metrics)
    del broken["run"]["verdict"]
    assert errors(broken, schema) == ["$.run: missing required 'verdict'"]


def test_predictions_schema(capsys: pytest.CaptureFixture[str]) -> None:
    schema = _printed_schema(capsys, "predictions")
    report = PredictionReport(model="run/feature_extraction/model.pt", strategy="feature_extraction",
                              backbone="efficientnet_lite0", image_size=64, classes=["a", "b"], predictions=[
                                  ImagePrediction(path="x.png", prediction="b", confidence=0.75, top_k=["b", "a"],
                                                  probabilities={"a": 0.25, "b": 0.75}),
                                  ImagePrediction(path="y.png", prediction=None, confidence=None, probabilities={},
                                                  error="no such file")])
    validate(json.loads(FORMATTERS[PredictionFormat.JSON](report)), schema)
    assert to_csv(report).splitlines() == ["path,prediction,confidence,top_k,prob_a,prob_b,error",
                                           "x.png,b,0.750000,b;a,0.250000,0.750000,",
                                           "y.png,,,,,,no such file"]


def test_predictions_escape_class_and_file_names_in_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a class folder named with the byte 0xff ('\\udcff') made --format json an internal error (exit 3),
    and the CSV held the raw byte and a raw newline for a class named 'x\\ny'. Escaped as the advice escapes them."""
    bad, newline = b"bad\xff".decode("utf-8", "surrogateescape"), "x\ny"
    report = PredictionReport(model="run/model.pt", strategy="feature_extraction", backbone="efficientnet_lite0",
                              image_size=32, classes=[newline, "plain", bad], predictions=[
                                  ImagePrediction(path=f"data/{bad}/0.png", prediction=bad, confidence=0.5,
                                                  top_k=[bad, newline], probabilities={newline: 0.2, "plain": 0.3,
                                                                                       bad: 0.5})])
    assert set(FORMATTERS) == {PredictionFormat.JSON, PredictionFormat.CSV}  # each one is checked below
    dumped = json.loads(FORMATTERS[PredictionFormat.JSON](report))
    validate(dumped, _printed_schema(capsys, "predictions"))
    assert dumped["classes"] == ["x\\ny", "plain", "bad\\xff"]  # the spelling of the advice's JSON
    assert dumped["predictions"][0]["path"] == "data/bad\\xff/0.png"
    assert dumped["predictions"][0]["probabilities"] == {"x\\ny": 0.2, "plain": 0.3, "bad\\xff": 0.5}
    text = to_csv(report)
    text.encode("utf-8")  # a raw '\udcff' could not be written to a file or stdout
    assert text.split("\n") == ["path,prediction,confidence,top_k,prob_x\\ny,prob_plain,prob_bad\\xff,error",
                    "data/bad\\xff/0.png,bad\\xff,0.500000,bad\\xff;x\\ny,0.200000,0.300000,0.500000,", ""]


def test_every_prediction_format_is_mapped() -> None:
    assert set(FORMATTERS) == set(PredictionFormat)


@pytest.mark.slow
def test_schema_needs_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; from tl_advise.cli.commands import main; main(['schema']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["title"] == "AdviceResult"
