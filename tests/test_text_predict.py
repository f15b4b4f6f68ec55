"""``tl-advise predict`` with a text model: what a text ``--run`` saves predicts, offline, exactly what the run
measured; texts come from arguments, stdin or a file; bad input is one exit-2 message."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from text_fixtures import tiny_backbone, tiny_dataset

from tl_advise.cli.commands import main

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

STRATEGIES = ["text_feature_extraction", "text_finetune_top", "tfidf_linear"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[str], list[str]]:
    """A tiny run of three strategies and the recommended one: (output folder, its report, the test texts, their
    true labels)."""
    from tl_advise.advisor.text_api import advise_text_session
    from tl_advise.runners.text import run_text_advice
    from tl_advise.runners.text.api import make_text_splits
    from tl_advise.schema.text import TextRunOptions

    root = tmp_path_factory.mktemp("text-run")
    dataset = tiny_dataset(root / "data")
    session = advise_text_session(dataset, backbone=tiny_backbone(), use_cache=False, sample_size=40)
    # The recommended strategy is trained too, whichever it is: the run folder predicts with its model.
    strategies = list(dict.fromkeys([*STRATEGIES, session.result.recommendation.strategy]))
    report = run_text_advice(session, TextRunOptions(output_dir=root / "out", strategies=strategies, max_length=32,
                                                     head_epochs=3, finetune_epochs=1, tensorboard=False))
    test = make_text_splits(dataset).test
    assert test is not None
    return root / "out", report, test.texts, [dataset.classes[y] for y in test.labels]


def _predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_saved_text_model_predicts_what_its_run_measured_on_test(
        strategy: str, trained: tuple[Path, Any, list[str], list[str]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, report, texts, truth = trained
    run = next(r for r in report.runs if r.strategy == strategy)
    assert run.checkpoint == f"{strategy}/model.pt"
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, stdout, err = _predict(capsys, str(out / strategy), "--file", str(texts_file), "--format", "json")
    assert code == 0, err
    predicted = json.loads(stdout)
    assert predicted["modality"] == "text" and predicted["strategy"] == strategy
    labels = [p["prediction"] for p in predicted["predictions"]]
    # the run recorded, text by text, which test texts it got right: the saved model gets the same ones right
    assert "".join("1" if p == t else "0" for p, t in zip(labels, truth, strict=True)) == run.test.correct
    for p in predicted["predictions"]:
        assert p["top_k"][0] == p["prediction"] and sorted(p["top_k"]) == ["negative", "positive"]
        assert p["confidence"] == pytest.approx(max(p["probabilities"].values()))
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_the_run_folder_predicts_with_the_recommended_model_from_arguments_stdin_and_csv(
        trained: tuple[Path, Any, list[str], list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out, report, texts, _ = trained
    recommended = report.verdict.recommended
    code, stdout, err = _predict(capsys, str(out / recommended), texts[0], texts[1], "--top-k", "1")
    assert code == 0, err
    expected = list(csv.DictReader(io.StringIO(stdout)))
    assert [r["text"] for r in expected] == texts[:2] and [r["index"] for r in expected] == ["0", "1"]
    assert list(expected[0]) == ["index", "text", "prediction", "confidence", "top_k", "prob_negative",
                                 "prob_positive"]
    assert all(r["top_k"] == r["prediction"] for r in expected)

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{texts[0]}\n\n{texts[1]}\n"))
    code, stdout, err = _predict(capsys, str(out), "-", "--top-k", "1")  # the folder: its recommended strategy's model
    assert code == 0, err
    assert list(csv.DictReader(io.StringIO(stdout))) == expected

    table = tmp_path / "new.csv"
    table.write_text("id,review\n1," + texts[0] + "\n2," + texts[1] + "\n", encoding="utf-8")
    code, stdout, err = _predict(capsys, str(out), "--file", str(table), "--top-k", "1")
    assert code == 0, err
    assert list(csv.DictReader(io.StringIO(stdout))) == expected


# --------------------------------------------------------------------------- bad input: exit 2, one message


@pytest.fixture
def tfidf_model(tmp_path: Path) -> Path:
    """A tfidf_linear model saved as a run saves it (fitted here on six texts: no training run needed)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from tl_advise.runners.text.trained_model import save_tfidf_model

    texts = ["good film", "great plot", "lovely show", "bad film", "awful plot", "dull show"]
    vectorizer = TfidfVectorizer(sublinear_tf=True)
    model = LogisticRegression(C=10).fit(vectorizer.fit_transform(texts), [1, 1, 1, 0, 0, 0])
    path = tmp_path / "model.pt"
    save_tfidf_model(path, strategy="tfidf_linear", class_names=["neg", "pos"], vectorizer=vectorizer, model=model)
    return path


def test_a_saved_tfidf_model_predicts_offline_from_plain_numbers(tfidf_model: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = _predict(capsys, str(tfidf_model), "a great film", "an awful show", "--format", "json")
    assert code == 0, err
    assert [p["prediction"] for p in json.loads(stdout)["predictions"]] == ["pos", "neg"]


def test_class_names_and_texts_are_escaped_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """Before: a class folder named with the byte 0xff made --format json exit 3 (surrogates not allowed), and a
    class named 'x\\ny' broke the CSV header in two. Escaped as the advice escapes them; so is a text argument
    holding a byte that is not UTF-8 (how argv spells it)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from tl_advise.runners.text.trained_model import save_tfidf_model

    bad = b"bad\xff".decode("utf-8", "surrogateescape")
    texts = ["good film", "great plot", "lovely show", "bad film", "awful plot", "dull show"]
    vectorizer = TfidfVectorizer()
    model = LogisticRegression(C=10).fit(vectorizer.fit_transform(texts), [1, 1, 1, 0, 0, 0])
    path = tmp_path / "model.pt"
    save_tfidf_model(path, strategy="tfidf_linear", class_names=[bad, "x\ny"], vectorizer=vectorizer, model=model)
    code, out, err = _predict(capsys, str(path), "a great film \udcfe", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["classes"] == ["bad\\xff", "x\\ny"] and report["predictions"][0]["prediction"] == "x\\ny"
    assert report["predictions"][0]["text"] == "a great film \\xfe"
    assert set(report["predictions"][0]["probabilities"]) == {"bad\\xff", "x\\ny"}
    code, out, err = _predict(capsys, str(path), "a great film")
    assert code == 0, err
    assert out.splitlines()[0] == "index,text,prediction,confidence,top_k,prob_bad\\xff,prob_x\\ny"
    assert len(out.splitlines()) == 2


def test_bad_text_input_is_one_exit_2_message(tfidf_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _predict(capsys, str(tfidf_model))
    assert code == 2 and "no texts given to" in err and "--file texts.txt" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    code, _, err = _predict(capsys, str(tfidf_model), "-")
    assert code == 2 and "no texts given to" in err
    code, _, err = _predict(capsys, str(tfidf_model), "--file", str(tmp_path / "missing.txt"))
    assert code == 2 and f"cannot read {tmp_path / 'missing.txt'}" in err
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n", encoding="utf-8")
    code, _, err = _predict(capsys, str(tfidf_model), "--file", str(blank))
    assert code == 2 and f"{blank} holds no text" in err
    table = tmp_path / "t.csv"
    table.write_text("id,score\n1,2\n", encoding="utf-8")
    code, _, err = _predict(capsys, str(tfidf_model), "--file", str(table))
    assert code == 2 and f"{table} has no text column" in err and "--text-column" in err
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not really")
    code, _, err = _predict(capsys, str(tfidf_model), str(photo))
    assert code == 2 and "is a text model: it classifies texts, and" in err and "photo.jpg is an image file" in err
    assert "Traceback" not in err


def test_a_folder_argument_is_refused_and_a_file_argument_is_a_text_with_a_warning(
        tfidf_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: a folder or a file named as an argument was classified as the text of its path, silently.
    folder = tmp_path / "reviews"
    folder.mkdir()
    code, out, err = _predict(capsys, str(tfidf_model), "a great film", str(folder))
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{folder} is a folder; pass texts as arguments, or a file of texts with --file" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("an awful show\n", encoding="utf-8")
    code, out, err = _predict(capsys, str(tfidf_model), str(notes))
    assert code == 0, err
    assert [r["text"] for r in csv.DictReader(io.StringIO(out))] == [str(notes)]  # the argument, as given
    assert f"{notes} is a file: classifying those words as a text" in err and f"use --file {notes}" in err
    # A text longer than a file name may be is a text, not an OSError.
    long_text = "a great film " * 30
    code, out, err = _predict(capsys, str(tfidf_model), long_text)
    assert code == 0 and "is a file" not in err and "File name too long" not in err


def test_predictions_written_with_o_are_whole_or_not_at_all(tfidf_model: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from test_durability import fill_the_disk

    texts = ["a great film", "an awful show"] * 20
    code, printed, _ = _predict(capsys, str(tfidf_model), *texts)
    assert code == 0
    target = tmp_path / "out" / "predictions.csv"
    code, out, err = _predict(capsys, str(tfidf_model), *texts, "-o", str(target))
    assert code == 0 and out == "", err
    assert target.read_text(encoding="utf-8") == printed  # every row, as stdout would have had them
    # A write that fails half-way (a full disk after 100 bytes) keeps the previous file, and leaves nothing beside.
    fill_the_disk(monkeypatch)
    code, out, err = _predict(capsys, str(tfidf_model), *reversed(texts), "-o", str(target))
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert target.read_text(encoding="utf-8") == printed and sorted(p.name for p in target.parent.iterdir()) == [
        "predictions.csv"]


def test_an_output_file_over_the_file_of_texts_is_refused(tfidf_model: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Before: -o naming the --file being classified replaced the texts with their predictions (exit 0)."""
    texts = tmp_path / "texts.csv"
    texts.write_text("text\na great film\nan awful show\n", encoding="utf-8")
    code, out, err = _predict(capsys, str(tfidf_model), "--file", str(texts), "-o", str(texts))
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"The predictions file (-o) {texts} is the dataset itself" in err and "outside it" in err
    assert texts.read_text(encoding="utf-8") == "text\na great film\nan awful show\n"
    # Beside it is fine: only what is read is protected.
    code, _, err = _predict(capsys, str(tfidf_model), "--file", str(texts), "-o", str(tmp_path / "preds.csv"))
    assert code == 0, err


def test_an_output_file_that_could_never_be_created_is_refused_before_predicting(
        tfidf_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.cli import pipeline_commands

    monkeypatch.setattr(pipeline_commands, "_predict_texts", lambda *a, **k: pytest.fail("predicted first"))
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    code, out, err = _predict(capsys, str(tfidf_model), "a great film", "-o", str(tmp_path / "a-file" / "p.csv"))
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"The predictions file (-o) {tmp_path / 'a-file' / 'p.csv'} cannot be created: {tmp_path / 'a-file'} " \
           "is a file, not a folder" in err


def test_a_binary_or_latin_1_file_of_texts_is_refused_not_predicted(tfidf_model: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Before: --file photo.jpg predicted its bytes as lines of text, and a Latin-1 file its mojibake (exit 0).
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\nmore\x00bytes\n")
    code, out, err = _predict(capsys, str(tfidf_model), "--file", str(photo))
    assert code == 2 and f"{photo} is binary (NUL bytes), not text" in err and out == ""
    for name in ("old.txt", "old.csv"):
        old = tmp_path / name
        old.write_bytes("text\ncaf\u00e9 cr\u00e8me\nna\u00efve\n".encode("latin-1"))
        code, out, err = _predict(capsys, str(tfidf_model), "--file", str(old))
        assert code == 2 and f"{old} is not UTF-8" in err and "save it as UTF-8" in err and out == ""
    utf16 = tmp_path / "utf16.txt"  # NUL bytes, but announced as UTF-16: text
    utf16.write_bytes("good film\nbad plot\n".encode("utf-16"))
    code, out, _ = _predict(capsys, str(tfidf_model), "--file", str(utf16))
    assert code == 0 and "good film" in out


def test_texts_for_an_image_model_are_refused_naming_the_modality(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    image_model = tmp_path / "model.pt"
    torch.save({"kind": "tl-advise-model"}, image_model)
    texts = tmp_path / "texts.txt"
    texts.write_text("a text\n", encoding="utf-8")
    code, _, err = _predict(capsys, str(image_model), "--file", str(texts))
    assert code == 2 and f"{image_model} is an image model: it classifies images, not texts (--file)" in err
    assert "Traceback" not in err


def test_a_damaged_text_model_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "model.pt"
    torch.save({"kind": "tl-advise-text-model", "model": "tfidf", "strategy": "tfidf_linear",
                "class_names": ["a", "b"]}, broken)
    code, _, err = _predict(capsys, str(broken), "some text")
    assert code == 2 and "is not a text model tl-advise can load: its 'vocabulary' should be dict, not nothing" in err
