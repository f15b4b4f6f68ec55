"""Label manifests (CSV, TSV, JSON Lines, Parquet, Hugging Face ImageFolder metadata) read into the same
records as the folder scan: detection, overrides, skipped rows, errors, and the same advice as the folder."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import make_class_folder, shared_dataset, snapshot_tree, write_image

from tl_advise.advisor import advise
from tl_advise.advisor.data.images.manifest import ManifestOptions, normalise
from tl_advise.advisor.data.images.scan import DatasetScan, scan_dataset
from tl_advise.cli.commands import main
from tl_advise.runners.data import make_splits
from tl_advise.schema.errors import DatasetError

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "one_blas_thread", "clean_environment")



def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg"))


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def folder_rows(root: Path, base: Path) -> list[tuple[str, str]]:
    """(path relative to ``base``, class) for every image of a flat class folder."""
    return [(os.path.relpath(p, base), p.parent.name) for p in _images(root)]


def same_scan(a: DatasetScan, b: DatasetScan) -> None:
    """Two scans describe the same dataset: records, classes, counts, duplicates (not where labels came from)."""
    assert a.root == b.root
    assert a.classes == b.classes
    assert [(r.path, r.class_name, r.label, r.split) for r in a.records] == \
           [(r.path, r.class_name, r.label, r.split) for r in b.records]
    exclude = {"manifests"}
    assert a.summary.model_dump(exclude=exclude) == b.summary.model_dump(exclude=exclude)


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    return make_class_folder(tmp_path / "data", {"cat": 5, "dog": 4, "fox": 3})


# --------------------------------------------------------------------------- the same records as a folder


def test_csv_manifest_gives_the_folder_scan(flat: Path, tmp_path: Path) -> None:
    manifest = write_csv(flat.parent / "labels.csv", ["file_name", "label"], folder_rows(flat, flat.parent))
    before = snapshot_tree(flat)
    scan = scan_dataset(manifest)
    same_scan(scan, scan_dataset(flat))
    assert scan.summary.manifests == [str(manifest)]
    assert scan.summary.layout == "flat" and scan.summary.class_counts == {"cat": 5, "dog": 4, "fox": 3}
    assert snapshot_tree(flat) == before


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet", ".csv;"])
def test_every_table_format_reads_the_same(flat: Path, suffix: str) -> None:
    rows = folder_rows(flat, flat.parent)
    if suffix == ".tsv":
        manifest = write_csv(flat.parent / "labels.tsv", ["path", "class"], rows, delimiter="\t")
    elif suffix == ".csv;":  # a spreadsheet in a locale whose list separator is ';'
        manifest = write_csv(flat.parent / "labels.csv", ["path", "class"], rows, delimiter=";")
    elif suffix == ".jsonl":
        manifest = write_jsonl(flat.parent / "labels.jsonl", [{"path": p, "class": c} for p, c in rows])
    else:
        pa = pytest.importorskip("pyarrow", reason="pyarrow (the [parquet] extra) is not installed")
        import pyarrow.parquet as pq

        manifest = flat.parent / "labels.parquet"
        pq.write_table(pa.table({"path": [p for p, _ in rows], "class": [c for _, c in rows]}), manifest)
    same_scan(scan_dataset(manifest), scan_dataset(flat))


def test_split_column_gives_the_split_layout_and_the_runner_splits(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        make_class_folder(root / split, {"a": n, "b": n}, seed=len(split))
    rows = [(os.path.relpath(p, tmp_path), p.parent.name, {"val": "valid"}.get(p.parts[-3], p.parts[-3]))
            for p in _images(root)]
    manifest = write_csv(tmp_path / "labels.csv", ["image", "target", "subset"], rows)
    scan = scan_dataset(manifest)
    same_scan(scan, scan_dataset(root))
    assert scan.summary.layout == "splits" and scan.summary.split_counts["val"] == {"a": 2, "b": 2}
    splits = make_splits(scan, val_fraction=0.2, seed=0)
    assert splits.validation == "the dataset's val/ split"
    assert {r.path for r in splits.val} == {r.path for r in scan.records if r.path.parts[-3] == "val"}
    assert {r.path for r in splits.test} == {r.path for r in scan.records if r.path.parts[-3] == "test"}


def test_fastai_is_valid_column_marks_validation(flat: Path) -> None:
    rows = [(p, c, i % 3 == 0) for i, (p, c) in enumerate(folder_rows(flat, flat))]
    manifest = write_csv(flat / "labels.csv", ["fname", "labels", "is_valid"], rows)
    scan = scan_dataset(manifest)
    val = sorted(str(flat / p) for p, _, valid in rows if valid)
    assert sorted(str(r.path) for r in scan.split_records("val")) == val
    assert len(scan.split_records("train")) == len(rows) - len(val)


def test_image_root_and_absolute_paths(flat: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "manifests" / "labels.csv"
    rows = folder_rows(flat, flat)
    write_csv(elsewhere, ["path", "label"], rows)
    same_scan(scan_dataset(elsewhere, manifest=ManifestOptions(image_root=flat)), scan_dataset(flat))
    write_csv(elsewhere, ["path", "label"], [(str(flat / p), c) for p, c in rows])
    same_scan(scan_dataset(elsewhere), scan_dataset(flat))


def test_ids_without_extension_and_windows_separators(flat: Path) -> None:
    rows = [(str(Path(p).with_suffix("")).replace("/", "\\"), c) for p, c in folder_rows(flat, flat)]
    same_scan(scan_dataset(write_csv(flat / "train.csv", ["image_id", "dx"], rows)), scan_dataset(flat))


def test_headerless_csv_reads_path_then_label(flat: Path) -> None:
    manifest = write_csv(flat / "list.csv", [], folder_rows(flat, flat))
    same_scan(scan_dataset(manifest), scan_dataset(flat))


@pytest.mark.parametrize(("path_name", "label_name"), [
    ("file_name", "label"), ("Path", "Class"), ("imagePath", "className"), ("Image Index", "category"),
    ("filename", "y"), ("img", "species"), ("id", "breed"),
])
def test_column_names_are_detected(flat: Path, path_name: str, label_name: str) -> None:
    rows = [(p, "extra", c) for p, c in folder_rows(flat, flat)]
    manifest = write_csv(flat / "labels.csv", [path_name, "notes", label_name], rows)
    assert scan_dataset(manifest).summary.class_counts == {"cat": 5, "dog": 4, "fox": 3}


def test_normalise() -> None:
    assert [normalise(n) for n in ("fileName", "File Name", "file-name", " FILE.NAME ")] == ["file_name"] * 4


def test_columns_given_by_name(flat: Path) -> None:
    rows = [(c, p, "x") for p, c in folder_rows(flat, flat)]
    manifest = write_csv(flat / "labels.csv", ["a", "b", "c"], rows)
    with pytest.raises(DatasetError, match=r"no image path column; its columns are: 'a', 'b', 'c'.*--path-column"):
        scan_dataset(manifest)
    scan = scan_dataset(manifest, manifest=ManifestOptions(path_column="b", label_column="a"))
    same_scan(scan, scan_dataset(flat))


def test_a_given_column_that_is_absent_names_the_columns(flat: Path) -> None:
    manifest = write_csv(flat / "labels.csv", ["file_name", "label"], folder_rows(flat, flat))
    with pytest.raises(DatasetError, match=r"no column 'kind' \(--label-column\); its columns are: 'file_name', "
                                           r"'label'"):
        scan_dataset(manifest, manifest=ManifestOptions(label_column="kind"))


def test_no_label_column_exits_2_naming_the_columns(flat: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_csv(flat / "captions.csv", ["file_name", "caption"], folder_rows(flat, flat))
    assert main([str(manifest), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "has no label column; its columns are: 'file_name', 'caption'" in err
    assert "--label-column" in err and "Traceback" not in err


def test_split_column_that_is_not_splits(flat: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [(p, c, i % 5) for i, (p, c) in enumerate(folder_rows(flat, flat))]
    manifest = write_csv(flat / "labels.csv", ["file_name", "label", "fold"], rows)
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        assert scan_dataset(manifest).summary.layout == "flat"
    assert "column 'fold' holds '0', '1', '2', '3', '4', not split names" in caplog.text
    with pytest.raises(DatasetError, match=r"column 'fold' \(--split-column\) holds '0', '1'.*use train, val"):
        scan_dataset(manifest, manifest=ManifestOptions(split_column="fold"))


def test_manifest_scan_reads_the_same_header_share_and_duplicates_as_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One pipeline after the Listing: with a 4-file audit share (as if the dataset were larger than
    # AUDIT_FILES) the manifest reads the same seeded headers and finds the same duplicates as the walk.
    monkeypatch.setattr("tl_advise.advisor.data.images.scan.AUDIT_FILES", 4)
    root = make_class_folder(tmp_path / "data", {"cat": 6, "dog": 6})
    (root / "dog" / "copy.png").write_bytes((root / "cat" / "img_0002.png").read_bytes())
    (root / "dog" / "scan.dat").write_text("no image")  # not an image's extension: always read
    rows = [*folder_rows(root, tmp_path), (os.path.relpath(root / "dog" / "scan.dat", tmp_path), "dog")]
    manifest = write_csv(tmp_path / "labels.csv", ["file_name", "label"], rows)

    by_folder, by_manifest = scan_dataset(root, seed=3), scan_dataset(manifest, seed=3)

    same_scan(by_folder, by_manifest)
    audit = by_manifest.summary.audit
    assert audit is not None and (audit.mode, audit.n_audited, audit.n_not_audited) == ("sample", 5, 9)
    assert [(r.path, r.header_read) for r in by_folder.records] == \
           [(r.path, r.header_read) for r in by_manifest.records]
    assert [g.paths for g in by_manifest.summary.duplicates] == [["cat/img_0002.png", "dog/copy.png"]]
    assert {s.path: s.reason for s in by_manifest.summary.skipped} == \
           {"dog/scan.dat": "not an image (cannot identify image file)"}
    assert by_manifest.summary.manifests == [str(manifest)] and "list" in by_manifest.step_timings


def test_missing_unreadable_repeated_and_unlabelled_rows_are_skipped(flat: Path) -> None:
    good = folder_rows(flat, flat)
    (flat / "notes.txt").write_text("not an image")
    (flat / "empty.png").write_bytes(b"")
    rows = [*good, ("gone.png", "cat"), ("notes.txt", "dog"), ("empty.png", "dog"), (good[0][0], "dog"),
            ("cat/img_0001.png", ""), ("https://example.com/a.jpg", "cat"), ("", "cat")]
    manifest = write_csv(flat / "labels.csv", ["file_name", "label"], rows)
    scan = scan_dataset(manifest)
    assert scan.summary.n_images == len(good)
    reasons = {s.path: s.reason for s in scan.summary.skipped}
    assert reasons["gone.png"] == f"file not found at {flat / 'gone.png'} (labels.csv line {len(good) + 2})"
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["empty.png"] == "zero-byte file"
    assert reasons[good[0][0]].startswith(f"listed again (labels.csv line {len(good) + 5}; first in labels.csv "
                                          "line 2, with the label 'cat' there)")
    assert reasons["cat/img_0001.png"].startswith("the label is empty")
    assert reasons["https://example.com/a.jpg"].startswith("a URL, not a local file")
    assert reasons[f"labels.csv line {len(rows) + 1}"].startswith("no image path")


def test_a_class_without_readable_files_is_reported(flat: Path) -> None:
    rows = [*folder_rows(flat, flat), ("missing1.png", "owl"), ("missing2.png", "owl")]
    scan = scan_dataset(write_csv(flat / "labels.csv", ["file_name", "label"], rows))
    assert scan.classes == ["cat", "dog", "fox"]
    # Left out like an empty class folder: named where the manifest declared it.
    assert scan.summary.empty_class_folders == ["labels.csv: class 'owl'"]


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"empty\.csv is empty; expected .* path column and a label column"):
        scan_dataset(write_csv(tmp_path / "empty.csv", [], []))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file_name": "a.png", "label": "x"}\n[1, 2]\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl line 2: a JSON list, not an object"):
        scan_dataset(bad)
    bad.write_text('{"file_name": "a.png",\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl line 1: not valid JSON"):
        scan_dataset(bad)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("file_name,label\ncaf\xe9.png,x\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.csv is not UTF-8 text .* save the manifest as UTF-8"):
        scan_dataset(latin)
    only_missing = write_csv(tmp_path / "m.csv", ["file_name", "label"], [("a.png", "x"), ("b.png", "y")])
    expected = (r"m\.csv lists the classes \(x, y\) but no readable images .*relative paths start at .* "
                r"\(the manifest folder\); name another with --image-root")
    with pytest.raises(DatasetError, match=expected):
        scan_dataset(only_missing)
    # A path holding an unquoted separator, and a column named twice: refused, not silently cut or overwritten.
    cut = tmp_path / "cut.csv"
    cut.write_text("file_name,label\nphotos/a,b.png,x\nc.png,y\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"cut\.csv line 2: 3 values under a header of 2 columns .* must be quoted"):
        scan_dataset(cut)
    # A quote never closed: before, the rows after it were one path with no label ("only one class").
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('file_name,label\na.png,x\n"b.png,y\nc.png,y\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"unclosed\.csv line 3: a quoted field starts there and is never closed"):
        scan_dataset(unclosed)
    twice = write_csv(tmp_path / "twice.csv", ["file_name", "label", "label"], [("a.png", "x", "z")])
    with pytest.raises(DatasetError, match=r"twice\.csv: the header names the column 'label' twice"):
        scan_dataset(twice)


def test_parquet_without_pyarrow_names_the_extra(flat: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = flat / "labels.parquet"
    manifest.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main([str(manifest), "--no-cache"]) == 2
    assert "needs pyarrow: pip install 'tl-advise[parquet]'" in capsys.readouterr().err


def test_manifest_options_on_a_plain_folder_are_an_error(flat: Path) -> None:
    with pytest.raises(DatasetError, match=r"--label-column applies to a label manifest"):
        scan_dataset(flat, manifest=ManifestOptions(label_column="label"))
    with pytest.raises(DatasetError, match=r"--path-column, --label-column apply to a label manifest"):
        scan_dataset(flat, manifest=ManifestOptions(path_column="p", label_column="label"))


# --------------------------------------------------------------------------- Hugging Face ImageFolder


def test_hugging_face_metadata_beside_the_images(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    for i in range(6):
        write_image(root / f"{i}.png", seed=i)
    write_jsonl(root / "metadata.jsonl", [{"file_name": f"{i}.png", "label": "ab"[i % 2]} for i in range(6)])
    scan = scan_dataset(root)
    assert scan.summary.class_counts == {"a": 3, "b": 3}
    assert scan.summary.manifests == [str(root / "metadata.jsonl")]


def test_hugging_face_metadata_per_split(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            write_image(root / split / "images" / f"{i}.png", seed=10 * len(split) + i)
        write_csv(root / split / "metadata.csv", ["file_name", "label"],
                  [(f"images/{i}.png", "ab"[i % 2]) for i in range(n)])
    scan = scan_dataset(root)
    assert scan.summary.layout == "splits"
    assert scan.summary.split_counts == {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}


def test_hugging_face_metadata_without_labels_keeps_the_class_folders(flat: Path) -> None:
    write_csv(flat / "metadata.csv", ["file_name", "caption"], [(p, "a photo") for p, _ in folder_rows(flat, flat)])
    scan = scan_dataset(flat)
    assert scan.summary.manifests == [] and scan.summary.class_counts == {"cat": 5, "dog": 4, "fox": 3}


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_cli_on_a_manifest(flat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_csv(tmp_path / "labels.csv", ["file_name", "label"], folder_rows(flat, tmp_path))
    assert main([str(manifest), "--format", "json", "--cache-dir", str(tmp_path / "cache")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"]["manifests"] == [str(manifest)]
    assert report["dataset"]["class_counts"] == {"cat": 5, "dog": 4, "fox": 3}
    assert report["sample"]["n_images"] == 12


@pytest.mark.slow
@pytest.mark.shared
def test_manifest_of_a_shared_dataset_gives_the_folder_advice(tmp_path: Path, session_cache_dir: Path) -> None:
    source = shared_dataset("flowers5_small")
    # Relative paths from a manifest outside the dataset, in the column names of a Hugging Face metadata.csv.
    manifest = write_csv(tmp_path / "work" / "flowers.csv", ["file_name", "label"],
                         folder_rows(source, tmp_path / "work"))
    # 16 per class (80 of the 150 images) keeps the two cold embeddings short; both draw the same sample.
    from_folder = advise(source, cache_dir=session_cache_dir, device="cpu", per_class=16)
    from_manifest = advise(manifest, use_cache=False, device="cpu", per_class=16)  # measured afresh
    assert from_manifest.sample.forward_passes == from_manifest.sample.n_images == from_folder.sample.n_images
    assert from_manifest.recommendation.strategy == from_folder.recommendation.strategy
    assert from_manifest.recommendation.rule_id == from_folder.recommendation.rule_id
    assert from_manifest.dataset.class_counts == from_folder.dataset.class_counts
    assert from_manifest.dataset.split_counts == from_folder.dataset.split_counts
    assert from_manifest.similarity.score == pytest.approx(from_folder.similarity.score, abs=1e-3)
    assert from_manifest.similarity.label == from_folder.similarity.label


@pytest.mark.shared
@pytest.mark.slow
def test_manifest_of_a_split_shared_dataset_scans_and_splits_like_the_folder(tmp_path: Path) -> None:
    source = shared_dataset("hymenoptera")
    rows = [(str(p), p.parent.name, p.parts[-3]) for p in sorted(source.rglob("*")) if p.is_file()]
    manifest = write_csv(tmp_path / "hymenoptera.csv", ["filepath", "class_name", "split"], rows)
    scan, folder = scan_dataset(manifest), scan_dataset(source)
    same_scan(scan, folder)
    a, b = make_splits(scan, val_fraction=0.2, seed=0), make_splits(folder, val_fraction=0.2, seed=0)
    assert [r.path for r in a.train] == [r.path for r in b.train] and [r.path for r in a.val] == [r.path for r in b.val]
