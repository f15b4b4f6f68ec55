"""``tl-advise predict`` with a real model: trained by ``tl-advise MANIFEST --run`` (feature extraction, 64 px)
on a tiny synthetic dataset, then asked about files, folders and broken images."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_class_folder, truncated_png
from schema_check import validate
from threadpoolctl import threadpool_limits

from tl_advise.advisor.report.predictions import PredictionReport
from tl_advise.cli.commands import main
from tl_advise.runners import predict
from tl_advise.runners.trained_model import predict_images

pytestmark = [pytest.mark.usefixtures("restore_tl_logging"), pytest.mark.slow]

CLASSES = {"blue": 8, "green": 8, "red": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1, "blas"):
        yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TL_ADVISE_") and name != "TL_ADVISE_SHARED":
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, session_cache_dir: Path) -> tuple[Path, Path]:
    """(the --run output folder, the image folder): trained from a label manifest through the CLI."""
    base = tmp_path_factory.mktemp("predict")
    images = make_class_folder(base / "images", CLASSES, size=(48, 40), seed=3)
    manifest = base / "labels.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "label"])
        writer.writerows((p.relative_to(base).as_posix(), p.parent.name) for p in sorted(images.rglob("*.png")))
    out = base / "run"
    code = main([str(manifest), "--run", "--strategies", "feature_extraction", "--budget", "3ep", "--image-size",
                 "64", "--output-dir", str(out), "--cache-dir", str(session_cache_dir), "--workers", "0", "-q"])
    assert code == 0
    return out, images


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_run_on_a_manifest_wrote_a_model(trained: tuple[Path, Path]) -> None:
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["manifests"] and metrics["run"]["files"]["model:feature_extraction"]
    assert (out / "feature_extraction" / "model.pt").is_file()


def test_predict_csv_on_files_folders_and_broken_images(trained: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out, images = trained
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    truncated = truncated_png(tmp_path / "cut.png")
    (images / "red" / "notes.txt").write_text("ignored when a folder is expanded")
    model = out / "feature_extraction" / "model.pt"
    assert main(["predict", str(model), str(images / "red" / "img_0000.png"), str(broken), str(images / "blue"),
                 str(truncated), str(tmp_path / "gone.png"), "--batch-size", "3", "--workers", "0"]) == 0
    captured = capsys.readouterr()
    rows = _csv_rows(captured.out)
    assert list(rows[0]) == ["path", "prediction", "confidence", "top_k", "prob_blue", "prob_green", "prob_red",
                             "error"]
    assert [r["path"] for r in rows] == [str(images / "red" / "img_0000.png"), str(broken),
                                         *(str(p) for p in sorted((images / "blue").glob("*.png"))),
                                         str(truncated), str(tmp_path / "gone.png")]
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {str(broken), str(truncated), str(tmp_path / "gone.png")}
    assert errors[str(broken)].startswith("cannot decode: UnidentifiedImageError")
    assert errors[str(tmp_path / "gone.png")] == "no such file"
    assert all(str(p) in captured.err for p in errors)  # also reported on stderr
    good = [r for r in rows if not r["error"]]
    for r in good:
        probs = {c: float(r[f"prob_{c}"]) for c in CLASSES}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert r["prediction"] == max(probs, key=lambda c: probs[c])
        assert float(r["confidence"]) == pytest.approx(max(probs.values()), abs=1e-6)
    # The colours separate the classes: the model trained on them gets its own training images right.
    assert [r["prediction"] for r in good] == ["red"] + ["blue"] * CLASSES["blue"]


def test_predict_json_from_the_run_folder_matches_the_python_api(trained: tuple[Path, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out, images = trained
    assert main(["predict", str(out), str(images), "--format", "json", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    report = PredictionReport.model_validate_json(printed)
    assert main(["schema", "predictions"]) == 0
    validate(json.loads(printed), json.loads(capsys.readouterr().out))
    assert report.model == str(out / "feature_extraction" / "model.pt")
    assert report.strategy == "feature_extraction" and report.image_size == 64
    assert report.classes == sorted(CLASSES) and len(report.predictions) == sum(CLASSES.values())
    paths = [p.path for p in report.predictions]
    assert [p.prediction for p in report.predictions] == predict(out / "feature_extraction" / "model.pt", paths)
    accuracy = sum(p.prediction == Path(p.path).parent.name for p in report.predictions) / len(paths)
    assert accuracy >= 0.9


def test_top_k_lists_the_most_probable_classes_in_csv_and_json(trained: tuple[Path, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Before: --top-k was read by text models only; an image row had no top classes whatever it was set to.
    out, images = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    args = ["predict", str(out), str(images / "green"), str(broken), "--workers", "0", "-q"]
    for k in (1, 2, 3, 5):
        assert main([*args, "--top-k", str(k)]) == 0
        rows = _csv_rows(capsys.readouterr().out)
        assert main([*args, "--top-k", str(k), "--format", "json"]) == 0
        report = PredictionReport.model_validate_json(capsys.readouterr().out)
        assert [r["top_k"] for r in rows] == [";".join(p.top_k) for p in report.predictions]
        for p in report.predictions[:-1]:
            by_probability = sorted(CLASSES, key=lambda c: -p.probabilities[c])
            assert p.top_k == by_probability[:k] and p.top_k[0] == p.prediction
        assert report.predictions[-1].error and report.predictions[-1].top_k == []
    assert main(args) == 0  # the default, 3: every class of this model
    assert all(len(r["top_k"].split(";")) == 3 for r in _csv_rows(capsys.readouterr().out)[:-1])


def test_batches_do_not_change_the_numbers(trained: tuple[Path, Path]) -> None:
    out, images = trained
    one = predict_images(out, [images], batch_size=1, device="cpu", num_workers=0)
    many = predict_images(out, [images], batch_size=32, device="cpu", num_workers=2)
    for a, b in zip(one.predictions, many.predictions, strict=True):
        assert a.path == b.path and a.prediction == b.prediction
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)


def test_predict_output_file(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, images = trained
    target = tmp_path / "reports" / "predictions.csv"
    assert main(["predict", str(out), str(images / "green"), "-o", str(target), "--workers", "0", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert [r["prediction"] for r in _csv_rows(target.read_text())] == ["green"] * CLASSES["green"]


def test_an_output_file_inside_the_images_is_refused(trained: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Before: -o inside the folder being classified exited 0 and wrote the CSV into the dataset."""
    out, images = trained
    before = sorted(images.rglob("*"))
    image = images / "red" / "img_0000.png"
    for inputs, target in [([images], images / "preds.csv"), ([images / "green"], images / "green" / "p.csv"),
                           ([image], image)]:
        code = main(["predict", str(out), *map(str, inputs), "-o", str(target), "--workers", "0", "-q"])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == ""
        where = "is the dataset itself" if target == inputs[0] else f"is inside the dataset {inputs[0]}"
        assert f"The predictions file (-o) {target} {where}" in captured.err
        assert "Choose a path outside it" in captured.err and "Traceback" not in captured.err
    assert sorted(images.rglob("*")) == before  # nothing written, nothing replaced


def test_bad_model_files_exit_2(trained: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    _, images = trained
    image = str(images / "red" / "img_0000.png")
    not_torch = tmp_path / "model.pt"
    not_torch.write_bytes(b"garbage")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    cases = {not_torch: "is not a model saved by tl-advise --run (torch.load: ",
             other: "other.pt is not a model saved by tl-advise --run",
             tmp_path / "absent.pt": "absent.pt does not exist",
             other.parent / "no-models": "is a folder; name one model file in it (models found: none)"}
    (other.parent / "no-models").mkdir()
    for model, message in cases.items():
        assert main(["predict", str(model), image]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_no_images_or_none_readable_exit_2(trained: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = trained
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(out), str(tmp_path / "empty")]) == 2
    assert "no images found in" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    assert main(["predict", str(out), str(broken)]) == 2
    captured = capsys.readouterr()
    assert _csv_rows(captured.out)[0]["error"].startswith("cannot decode")
    assert "the image could not be read (the reason above)" in captured.err
    assert main(["predict", str(out)]) == 2  # IMAGES is required: a usage error
