"""`tl-advise DATA` for texts: the modality read from the layout, options of the other modality refused, and the
whole command on a small CSV of real sentences."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import make_class_folder
from tl_advise.advisor.data.modality import detect_modality
from tl_advise.cli.commands import main
from tl_advise.schema.errors import BackboneError, DatasetError
from tl_advise.schema.text import TEXT_STRATEGY_IDS

REVIEWS = [
    ("The battery lasts all day and the screen is bright.", "positive"),
    ("Great sound, comfortable to hold, works as described.", "positive"),
    ("I would buy this phone again without a second thought.", "positive"),
    ("Fast delivery and the case fits perfectly.", "positive"),
    ("Excellent value: clear calls and a long battery life.", "positive"),
    ("The charger stopped working after two days.", "negative"),
    ("Terrible reception, calls drop every few minutes.", "negative"),
    ("The screen cracked the first week and support never answered.", "negative"),
    ("Waste of money, the buttons stick and it overheats.", "negative"),
    ("Poor quality: the headset broke as soon as I used it.", "negative"),
]


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _reviews_csv(path: Path) -> Path:
    return _csv(path, "text,label", [f'"{t}",{label}' for t, label in REVIEWS])


def test_a_table_of_texts_is_text_and_a_table_of_image_paths_is_images(tmp_path: Path) -> None:
    assert detect_modality(_reviews_csv(tmp_path / "reviews.csv")) == "text"
    assert detect_modality(_csv(tmp_path / "images.csv", "path,label", ["a/1.jpg,cat", "a/2.jpg,dog"])) == "image"
    # Headerless image manifests name no column: the values say it.
    assert detect_modality(_csv(tmp_path / "bare.csv", "x1.png,cat", ["x2.png,dog"])) == "image"
    both = _csv(tmp_path / "both.csv", "image,text,label", ["a.jpg,a cat on a mat,cat"])
    with pytest.raises(DatasetError, match=r"cannot tell whether .*both\.csv lists images or texts.*--modality"):
        detect_modality(both)
    # A column named on the command line decides.
    assert detect_modality(both, text_column="text") == "text"
    assert detect_modality(both, path_column="image") == "image"


def test_folders_are_read_by_their_split_tables_or_their_files(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    _reviews_csv(hf / "train.csv")
    assert detect_modality(hf) == "text"
    texts = tmp_path / "texts"
    for i, (text, label) in enumerate(REVIEWS):
        (texts / label).mkdir(parents=True, exist_ok=True)
        (texts / label / f"{i}.txt").write_text(text, encoding="utf-8")
    assert detect_modality(texts) == "text"
    images = make_class_folder(tmp_path / "images", {"a": 3, "b": 3})
    assert detect_modality(images) == "image"
    for i in range(6):
        (images / "a" / f"note{i}.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"both text files \(6\) and images \(6\).*--modality"):
        detect_modality(images)


def test_a_missing_path_names_the_layouts_of_both_modalities(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "reviews.csv")]) == 2
    err = capsys.readouterr().err
    assert "reviews.csv does not exist" in err and "dataset folder" not in err
    assert "root/<class>/<images>" in err and "text and label columns" in err and "Traceback" not in err


def test_a_lone_file_that_is_no_table_names_the_layouts_of_both_modalities(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .txt of texts or an .xlsx was read as images: the message named only image folders and manifests."""
    (tmp_path / "texts.txt").write_text("great phone\n", encoding="utf-8")
    (tmp_path / "reviews.xlsx").write_bytes(b"PK\x03\x04")
    assert main([str(tmp_path / "texts.txt")]) == 2
    err = capsys.readouterr().err
    assert "texts.txt is a file, not a folder or a table this reads" in err and "Traceback" not in err
    assert "root/<class>/<images>" in err and "class folders of .txt files" in err
    assert main([str(tmp_path / "reviews.xlsx")]) == 2
    assert "(save a spreadsheet as .csv)" in capsys.readouterr().err


def test_image_options_on_a_text_dataset_are_refused_before_any_work(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = _reviews_csv(tmp_path / "reviews.csv")
    assert main([str(data), "--image-size", "64", "--for", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "--for, --image-size apply to image datasets" in err and "Traceback" not in err
    assert main([str(data), "--for", "resnet18"]) == 2  # one option reads in the singular
    assert "--for applies to image datasets, and" in (err := capsys.readouterr().err) and "leave it out" in err
    images = make_class_folder(tmp_path / "images", {"a": 3, "b": 3})
    assert main([str(images), "--text-column", "text"]) == 2  # a text column: read as text, and it is no table
    assert "--text-column (the API's text_column) applies to a table" in capsys.readouterr().err
    assert main([str(images), "--modality", "image", "--text-column", "text"]) == 2
    assert "--text-column applies to text datasets" in capsys.readouterr().err


def test_an_image_backbone_for_texts_is_refused_before_the_hub_is_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, --backbone resnet50 on a table of texts waited out a minute of Hub retries before failing."""
    from tl_advise.advisor.measure.text import backbone as text_backbone

    def no_hub(name: str) -> None:
        raise AssertionError(f"the Hub was asked for {name}")

    monkeypatch.setattr(text_backbone, "_from_hub", no_hub)
    data = _reviews_csv(tmp_path / "reviews.csv")
    # efficientnet_lite0 is the image default: named, it is refused as the others are
    for name in ("resnet50", "efficientnet_lite1", "mobilenet_v2:IMAGENET1K_V1", "efficientnet_lite0"):
        assert main([str(data), "--backbone", name, "--no-cache"]) == 2
        err = capsys.readouterr().err
        assert f"--backbone {name} is an image backbone, and" in err and "Traceback" not in err
    # Set by configuration, the message names where, and says how to ask for the text default.
    monkeypatch.setenv("TL_ADVISE_BACKBONE", "resnet50")
    assert main([str(data), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "TL_ADVISE_BACKBONE=resnet50 is an image backbone" in err and "say --backbone all-minilm-l6-v2" in err
    monkeypatch.delenv("TL_ADVISE_BACKBONE")
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\nbackbone = "resnet50"\n')
    monkeypatch.chdir(tmp_path)
    assert main([str(data), "--no-cache"]) == 2
    assert 'backbone = "resnet50" in pyproject.toml\'s [tool.tl-advise] is an image backbone' in capsys.readouterr().err

    # The Python API refuses it too, before the dataset is read or the Hub asked.
    from tl_advise.advisor.text_api import advise_text_session

    with pytest.raises(BackboneError, match="resnet50 is an image backbone, and a text dataset needs a text encoder"):
        advise_text_session(tmp_path / "missing.csv", backbone="resnet50", use_cache=False)


def test_text_run_options_are_checked_before_the_dataset_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a bad --strategies/--budget/--margin/--output-dir of a text --run was refused only after the whole
    # advice (the dataset read, the backbone loaded, the texts embedded), and --strategies all was refused.
    folder = tmp_path / "hf"
    folder.mkdir()
    _reviews_csv(folder / "train.csv")

    def no_advice(*args: object, **kwargs: object) -> None:
        raise AssertionError("the advice ran before the run options were checked")

    monkeypatch.setattr("tl_advise.advisor.text_api.advise_text_session", no_advice)
    for args, expected in [
        (["--strategies", "feature_extraction"], "--strategies: unknown feature_extraction for a text dataset"),
        (["--strategies", " , "], "--strategies: unknown empty list"),
        (["--budget", "3"], "--budget '3': each part must look like"),
        (["--margin", "2"], "--margin '2': use 'auto'"),
        (["--output-dir", str(folder / "runs")], "is inside the dataset"),
    ]:
        assert main([str(folder), "--run", *args]) == 2, args
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and "internal error" not in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["train.csv"]

    seen: dict[str, object] = {}

    def capture(session: object, options: object) -> None:
        seen["options"] = options
        raise DatasetError("captured")

    monkeypatch.setattr("tl_advise.advisor.text_api.advise_text_session",
                        lambda *args, **kwargs: SimpleNamespace(result=None))
    monkeypatch.setattr("tl_advise.runners.text.run_text_advice", capture)
    assert main([str(folder), "--run", "--strategies", "all", "--output-dir", str(tmp_path / "runs")]) == 2
    assert "captured" in capsys.readouterr().err
    assert list(seen["options"].strategies) == list(TEXT_STRATEGY_IDS)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_the_text_advice_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _reviews_csv(tmp_path / "reviews.csv")
    cache = tmp_path / "cache"
    assert main([str(data), "--cache-dir", str(cache), "--format", "json", "-q"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["modality"] == "text" and advice["dataset"]["n_texts"] == 10
    assert advice["recommendation"]["strategy"] in ("text_feature_extraction", "text_finetune_top",
                                                    "text_full_finetune", "tfidf_linear")
    assert main([str(data), "--cache-dir", str(cache), "-q"]) == 0
    text = capsys.readouterr().out
    from tl_advise.advisor.versions import tool_version

    assert text.startswith(f"tl-advise {tool_version()} (text) · ") and "Recommendation: " in text
    # the warnings as the image report lists them: counted, each with its id
    assert re.search(r"\nWarnings \(\d+\):\n  ! \[[a-z_]+\] ", text) and "Confidence: " in text
    # Nothing is written inside the dataset's folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "reviews.csv"]
    assert main([str(data), "--cache-dir", str(cache), "-o", str(tmp_path / "report.md"), "--format", "markdown",
                 "-q"]) == 0
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("# tl-advise (text)")


def test_class_folders_of_images_beside_a_table_of_texts_ask_for_the_modality(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a folder of class folders of images that also held a train.csv of texts was read as text, silently.
    folder = make_class_folder(tmp_path / "mixed", {"cat": 3, "dog": 3})
    _reviews_csv(folder / "train.csv")
    with pytest.raises(DatasetError, match=r"mixed holds both split tables of texts \(train\.csv\) and class folders "
                                           r"of images \(cat, dog: 6 images looked at\); say which to read with "
                                           r"--modality image or --modality text"):
        detect_modality(folder)
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert "train.csv" in err and "class folders of images" in err and "--modality image or --modality text" in err
    assert "Traceback" not in err
    # Class folders of .txt files beside the table are texts both ways: no question.
    texts = tmp_path / "texts"
    texts.mkdir()
    _reviews_csv(texts / "train.csv")
    (texts / "extra" / "pos").mkdir(parents=True)
    (texts / "extra" / "pos" / "1.txt").write_text("fine", encoding="utf-8")
    assert detect_modality(texts) == "text"

    # --modality decides: each reader gets the folder.
    def reached(modality: str) -> object:
        def stop(data: object, **kwargs: object) -> None:
            raise DatasetError(f"{modality} reader reached with {data}")
        return stop

    monkeypatch.setattr("tl_advise.advisor.text_api.advise_text_session", reached("text"))
    monkeypatch.setattr("tl_advise.advisor.api.advise_session", reached("image"))
    for modality in ("text", "image"):
        assert main([str(folder), "--modality", modality, "--no-cache"]) == 2
        assert f"{modality} reader reached with {folder}" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["cat", "dog", "train.csv"]  # nothing written inside
