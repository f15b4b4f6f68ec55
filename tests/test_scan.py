"""Tests for advisor/data/images/scan.py: layouts, counts, duplicates, bad files, errors, read-only, header-only."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_class_folder, shared_dataset, write_image
from PIL import Image, ImageFile

from tl_advise.advisor.data.images.scan import DatasetScan, ImageRecord, scan_dataset
from tl_advise.schema.errors import DatasetError

ImageFolder = Callable[..., Path]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime, to prove a scan changed nothing."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _skip_reasons(scan: DatasetScan) -> dict[str, str]:
    return {s.path: s.reason for s in scan.summary.skipped}


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --------------------------------------------------------------------------- layouts


def test_flat_layout(image_folder: ImageFolder) -> None:
    root = image_folder({"cat": 3, "dog": 2})
    scan = scan_dataset(root)

    assert scan.classes == ["cat", "dog"]
    assert scan.summary.layout == "flat"
    assert scan.summary.root == str(root)
    assert scan.summary.split_counts == {"all": {"cat": 3, "dog": 2}}
    assert scan.summary.class_counts == {"cat": 3, "dog": 2}
    assert scan.train_split == scan.summary.train_split == "all"
    assert len(scan.split_records("all")) == scan.summary.n_images == 5

    first = scan.records[0]
    assert isinstance(first, ImageRecord)
    assert first.path.is_absolute() and first.path == root / "cat" / "img_0000.png"
    assert (first.class_name, first.label, first.split) == ("cat", 0, "all")
    assert (first.width, first.height, first.mode) == (40, 32, "RGB")
    assert first.size_bytes == first.path.stat().st_size
    assert first.mtime_ns == first.path.stat().st_mtime_ns
    assert [r.label for r in scan.records] == [0, 0, 0, 1, 1]


def test_split_layout_normalises_valid_and_unions_classes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 3, "b": 2})
    make_class_folder(root / "valid", {"a": 1, "c": 1}, seed=1)
    make_class_folder(root / "test", {"b": 1}, seed=2)

    scan = scan_dataset(root)

    assert scan.summary.layout == "splits"
    assert scan.classes == ["a", "b", "c"]
    assert scan.summary.split_counts == {
        "train": {"a": 3, "b": 2, "c": 0},
        "val": {"a": 1, "b": 0, "c": 1},
        "test": {"a": 0, "b": 1, "c": 0},
    }
    assert scan.summary.class_counts == {"a": 4, "b": 3, "c": 1}
    assert scan.train_split == "train"
    assert {r.split for r in scan.records} == {"train", "val", "test"}
    assert [r.path.name for r in scan.split_records("val")] == ["img_0000.png", "img_0000.png"]
    assert scan.split_records("val")[0].path.parent.parent.name == "valid"  # the path keeps the real folder
    # "c" has no training images: min is 0, and the ratio, among the classes that have some, stays finite.
    assert scan.summary.min_images_per_class == 0
    assert scan.summary.imbalance_ratio == 1.5
    assert scan.summary.images_per_class == 2.5  # the median of a and b: c has no training images
    json.loads(scan.summary.model_dump_json())
    # records sorted by (split, class, path)
    keys = [(r.split, r.class_name, r.path) for r in scan.records]
    assert keys == sorted(keys)


def test_validation_folder_is_val(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 2, "b": 2})
    make_class_folder(root / "validation", {"a": 1, "b": 1}, seed=1)
    assert list(scan_dataset(root).summary.split_counts) == ["train", "val"]


def test_split_layout_without_train_judges_all_splits(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "val", {"a": 2, "b": 1})
    make_class_folder(root / "test", {"a": 2, "b": 1}, seed=1)
    scan = scan_dataset(root)
    assert scan.train_split == "all"
    assert len(scan.split_records(scan.train_split)) == 6
    assert scan.summary.images_per_class == 3.0
    assert scan.summary.imbalance_ratio == 2.0


def test_a_class_only_in_val_has_no_training_images_and_no_say_in_the_imbalance(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 4, "b": 2})
    make_class_folder(root / "val", {"a": 1, "b": 1, "c": 2}, seed=1)
    summary = scan_dataset(root).summary
    assert summary.split_counts["train"] == {"a": 4, "b": 2, "c": 0} and summary.min_images_per_class == 0
    assert summary.imbalance_ratio == 2.0  # a against b; c is the classes_without_training_images warning
    assert summary.images_per_class == 3.0  # the median of a and b: c has no say on the size axis either


def test_unlabelled_images_in_a_split_folder_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 2, "b": 2})
    for i in range(3):
        write_image(root / "test" / f"{i}.png", seed=90 + i)
    scan = scan_dataset(root)
    assert list(scan.summary.split_counts) == ["train", "test"]
    assert scan.summary.n_images == 4
    assert "3 unlabelled images" in caplog.text


def test_nested_subfolders_count_for_their_class(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_class_folder(root, {"a": 2, "b": 2})
    write_image(root / "a" / "more" / "deeper" / "x.png", seed=10)
    write_image(root / "a" / "more" / "y.png", seed=11)

    scan = scan_dataset(root)

    assert scan.classes == ["a", "b"]
    assert scan.summary.class_counts == {"a": 4, "b": 2}
    nested = [r for r in scan.records if "more" in r.path.parts]
    assert {r.class_name for r in nested} == {"a"}


def test_hidden_files_and_folders_are_ignored(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 2, "b": 2})
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x01junk")
    write_image(root / ".ipynb_checkpoints" / "c.png", seed=20)
    write_image(root / "a" / ".ipynb_checkpoints" / "copy.png", seed=21)
    write_image(root / "__MACOSX" / "a" / "._img.png", seed=22)
    write_image(root / ".hidden_class" / "h.png", seed=23)

    scan = scan_dataset(root)

    assert scan.classes == ["a", "b"]
    assert scan.summary.n_images == 4
    assert scan.summary.skipped == []


def test_loose_files_in_root_are_not_classes(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 2, "b": 2})
    (root / "README.md").write_text("about this data")
    (root / "labels.csv").write_text("file,label\n")
    write_image(root / "preview.png", seed=30)

    scan = scan_dataset(root)

    assert scan.classes == ["a", "b"]
    assert scan.summary.n_images == 4
    assert scan.summary.skipped == []


def test_image_with_unusual_extension_is_read(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 2, "b": 2})
    write_image(root / "a" / "photo.dat", fmt="PNG", seed=40)
    write_image(root / "b" / "no_extension", fmt="JPEG", seed=41)

    scan = scan_dataset(root)

    assert scan.summary.class_counts == {"a": 3, "b": 3}
    assert scan.summary.skipped == []


# --------------------------------------------------------------------------- counts, modes, sizes


def test_counts_imbalance_modes_and_sizes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(6):
        write_image(root / "big" / f"{i}.png", size=(40, 30), mode="RGB", seed=i)
    write_image(root / "mid" / "grey.png", size=(20, 10), mode="L", seed=10)
    write_image(root / "mid" / "alpha.png", size=(20, 10), mode="RGBA", seed=11)
    write_image(root / "mid" / "deep.png", size=(100, 80), mode="I;16", seed=12)
    write_image(root / "small" / "print.jpg", size=(60, 50), mode="CMYK", seed=13)
    write_image(root / "small" / "grey2.png", size=(60, 50), mode="L", seed=14)

    s = scan_dataset(root).summary

    assert s.class_counts == {"big": 6, "mid": 3, "small": 2}
    assert s.images_per_class == 3.0  # median of 6, 3, 2
    assert s.min_images_per_class == 2
    assert s.imbalance_ratio == 3.0
    assert s.modes == {"RGB": 6, "L": 2, "CMYK": 1, "I;16": 1, "RGBA": 1}
    assert s.image_size.model_dump() == {
        "min_width": 20, "min_height": 10,
        "median_width": 40.0, "median_height": 30.0,
        "max_width": 100, "max_height": 80,
    }


# --------------------------------------------------------------------------- duplicates


def test_duplicates_within_and_across_splits(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 3, "b": 3})
    make_class_folder(root / "val", {"a": 2, "b": 2}, seed=1)
    # within train, across classes
    shutil.copyfile(root / "train" / "a" / "img_0000.png", root / "train" / "b" / "copy_of_a0.png")
    # leakage: a training image also in val
    shutil.copyfile(root / "train" / "b" / "img_0001.png", root / "val" / "b" / "leak.png")

    groups = scan_dataset(root).summary.duplicates

    assert [g.model_dump() for g in groups] == [
        {
            "paths": ["train/a/img_0000.png", "train/b/copy_of_a0.png"],
            "splits": ["train"],
            "classes": ["a", "b"],
            "cross_split": False,
        },
        {
            "paths": ["train/b/img_0001.png", "val/b/leak.png"],
            "splits": ["train", "val"],
            "classes": ["b"],
            "cross_split": True,
        },
    ]


def test_same_size_but_different_content_is_not_a_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # Uncompressed BMPs of one size have identical byte counts, so they reach the hashing step.
    for i in range(3):
        write_image(root / "a" / f"{i}.bmp", seed=i)
        write_image(root / "b" / f"{i}.bmp", seed=10 + i)
    scan = scan_dataset(root)
    assert len({r.size_bytes for r in scan.records}) == 1
    assert scan.summary.duplicates == []


# --------------------------------------------------------------------------- bad files


def test_bad_files_are_skipped_with_reasons(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 3, "b": 3})
    (root / "a" / "empty.png").write_bytes(b"")
    _truncate(write_image(root / "a" / "cut.jpg", size=(64, 64), seed=50))
    _truncate(write_image(root / "b" / "cut.png", size=(64, 64), seed=51))
    (root / "b" / "fake.jpg").write_text("this is not a picture")
    (root / "b" / "notes.txt").write_text("labelled by Bob")

    scan = scan_dataset(root)

    assert _skip_reasons(scan) == {
        "a/cut.jpg": "truncated image data",
        "a/empty.png": "zero-byte file",
        "b/cut.png": "truncated image data",
        "b/fake.jpg": "not an image (cannot identify image file)",
        "b/notes.txt": "not an image file (extension .txt)",
    }
    assert [s.path for s in scan.summary.skipped] == sorted(_skip_reasons(scan))
    assert scan.summary.class_counts == {"a": 3, "b": 3}
    assert all(r.path.name.startswith("img_") for r in scan.records)


def test_jpeg_with_zero_padding_after_end_marker_is_not_truncated(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 2, "b": 2})
    path = write_image(root / "a" / "padded.jpg", seed=60)
    path.write_bytes(path.read_bytes() + b"\x00" * 64)
    scan = scan_dataset(root)
    assert scan.summary.skipped == []
    assert scan.summary.class_counts["a"] == 3


def test_empty_class_is_left_out_and_reported(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 2, "b": 2})
    (root / "c").mkdir()
    (root / "d").mkdir()
    (root / "d" / "broken.png").write_bytes(b"")

    scan = scan_dataset(root)

    assert scan.classes == ["a", "b"]
    # Folders are not files: they are listed apart, and only the one broken file counts as skipped.
    assert scan.summary.empty_class_folders == ["c/", "d/"]
    assert _skip_reasons(scan) == {"d/broken.png": "zero-byte file"}


# --------------------------------------------------------------------------- errors


def test_missing_path_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*root/<class>/<images>"):
        scan_dataset(tmp_path / "nope")


def test_file_instead_of_folder_is_a_dataset_error(tmp_path: Path) -> None:
    path = write_image(tmp_path / "one.png")
    with pytest.raises(DatasetError, match=r"is a file, not a folder.*root/<class>/<images>"):
        scan_dataset(path)


def test_empty_folder_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no class folders \(found nothing\).*root/\{train,val,test\}"):
        scan_dataset(tmp_path / "empty")


def test_images_without_class_folders_is_a_dataset_error(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "loose" / f"{i}.png", seed=i)
    expected = r"holds 3 image files but no class folders.*one sub-folder per class"
    with pytest.raises(DatasetError, match=expected):
        scan_dataset(tmp_path / "loose")


def test_one_class_is_a_dataset_error(image_folder: ImageFolder) -> None:
    root = image_folder({"only_cats": 3})
    with pytest.raises(DatasetError, match=r"only one class with images, 'only_cats'.*at least 2 classes"):
        scan_dataset(root)


def test_class_folders_without_readable_images_is_a_dataset_error(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "x.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match=r"class folders \(a, b\) but no readable images"):
        scan_dataset(root)


# --------------------------------------------------------------------------- cheapness and safety


def test_scan_does_not_change_the_dataset(image_folder: ImageFolder) -> None:
    root = image_folder({"a": 3, "b": 3})
    shutil.copyfile(root / "a" / "img_0000.png", root / "b" / "dup.png")  # exercise hashing too
    (root / "b" / "empty.png").write_bytes(b"")
    before = _snapshot(root)

    scan_dataset(root, progress=True)

    assert _snapshot(root) == before


def test_scan_reads_headers_only(image_folder: ImageFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder({"a": 2, "b": 2})
    write_image(root / "a" / "photo.jpg", seed=70)
    write_image(root / "b" / "deep.tif", mode="I;16", seed=71)

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("scan_dataset decoded pixel data")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)

    scan = scan_dataset(root)
    assert scan.summary.n_images == 6
    assert scan.summary.skipped == []


def test_progress_bar_goes_to_stderr(image_folder: ImageFolder, capsys: pytest.CaptureFixture[str]) -> None:
    scan_dataset(image_folder({"a": 2, "b": 2}), progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "Reading image headers" in err


def test_no_progress_output_by_default(image_folder: ImageFolder, capsys: pytest.CaptureFixture[str]) -> None:
    scan_dataset(image_folder({"a": 2, "b": 2}))
    assert capsys.readouterr() == ("", "")


def test_relative_root_is_made_absolute(image_folder: ImageFolder, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder({"a": 2, "b": 2})
    monkeypatch.chdir(root.parent)
    scan = scan_dataset(root.name)
    assert scan.root == root and scan.root.is_absolute()
    assert all(r.path.is_absolute() for r in scan.records)


# --------------------------------------------------------------------------- real datasets


@pytest.mark.shared
@pytest.mark.slow
def test_hymenoptera() -> None:
    scan = scan_dataset(shared_dataset("hymenoptera"))
    s = scan.summary
    assert s.layout == "splits"
    assert scan.classes == ["ants", "bees"]
    assert list(s.split_counts) == ["train", "val"]
    assert sum(s.split_counts["train"].values()) == 245
    assert sum(s.split_counts["val"].values()) == 153
    assert scan.train_split == "train"
    assert len(scan.split_records("train")) == 245
    assert s.skipped == []


@pytest.mark.shared
@pytest.mark.slow
def test_pneumoniamnist_is_greyscale_and_leaks_across_splits() -> None:
    s = scan_dataset(shared_dataset("pneumoniamnist")).summary
    assert set(s.modes) == {"L"}
    assert (s.image_size.min_width, s.image_size.max_width) == (28, 28)
    assert list(s.split_counts) == ["train", "val", "test"]
    # PneumoniaMNIST ships some byte-identical images in more than one split.
    assert any(g.cross_split for g in s.duplicates)


@pytest.mark.shared
def test_eurosat_small_has_ten_classes_of_thirty() -> None:
    s = scan_dataset(shared_dataset("eurosat_small")).summary
    assert s.layout == "flat"
    assert len(s.classes) == 10
    assert set(s.class_counts.values()) == {30}
    assert s.imbalance_ratio == 1.0


# --------------------------------------------------------------------------- scale: order, records, audit share


def test_records_follow_path_order_when_files_and_subfolders_interleave(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for rel in ("a/a1.png", "a/m/x.png", "a/m/n/y.png", "a/z9.png", "a/m.png", "b/0.png", "b/a b/1.png"):
        write_image(root / rel, seed=len(rel) + hash(rel) % 100)
    scan = scan_dataset(root)
    paths = [r.path for r in scan.records]
    assert paths == sorted(paths)
    assert [p.relative_to(root).as_posix() for p in paths][:5] == [
        "a/a1.png", "a/m/n/y.png", "a/m/x.png", "a/m.png", "a/z9.png"]


def test_image_record_is_read_only_comparable_and_picklable(image_folder: ImageFolder) -> None:
    import pickle

    record = scan_dataset(image_folder({"a": 2, "b": 2})).records[0]
    with pytest.raises(AttributeError, match="read-only"):
        record.label = 5  # type: ignore[misc]
    clone = pickle.loads(pickle.dumps(record))  # DataLoader workers receive records this way
    assert clone == record and hash(clone) == hash(record) and clone.path == record.path
    built = ImageRecord(path=record.path, class_name=record.class_name, label=record.label, split=record.split,
                        width=record.width, height=record.height, mode=record.mode,
                        size_bytes=record.size_bytes, mtime_ns=record.mtime_ns)
    assert built == record and record.path_parts == record.path.parts


def test_small_dataset_reads_every_header(image_folder: ImageFolder) -> None:
    audit = scan_dataset(image_folder({"a": 3, "b": 3})).summary.audit
    assert audit is not None
    assert (audit.mode, audit.n_audited, audit.n_not_audited, audit.n_unreadable) == ("sample", 6, 0, 0)


@pytest.fixture
def small_audit_share(monkeypatch: pytest.MonkeyPatch) -> int:
    """Read 4 headers by default, as if the dataset were larger than scan.AUDIT_FILES."""
    monkeypatch.setattr("tl_advise.advisor.data.images.scan.AUDIT_FILES", 4)
    return 4


def test_audit_share_reads_a_seeded_share_of_headers(image_folder: ImageFolder, small_audit_share: int) -> None:
    root = image_folder({"a": 6, "b": 6}, size=(40, 32))
    (root / "b" / "notes.dat").write_text("no image")  # not an image extension: always read

    scan = scan_dataset(root, seed=1)

    audit = scan.summary.audit
    assert audit is not None
    assert (audit.mode, audit.n_audited, audit.n_not_audited) == ("sample", small_audit_share + 1, 8)
    assert audit.n_unreadable == 1
    assert _skip_reasons(scan) == {"b/notes.dat": "not an image (cannot identify image file)"}
    read = [r for r in scan.records if r.header_read]
    assert len(read) == small_audit_share and all((r.width, r.height, r.mode) == (40, 32, "RGB") for r in read)
    assert all((r.width, r.height, r.mode) == (None, None, None) for r in scan.records if not r.header_read)
    assert scan.summary.n_images == 12 and scan.summary.modes == {"RGB": small_audit_share}
    again = {r.path for r in scan_dataset(root, seed=1).records if r.header_read}
    assert again == {r.path for r in read}, "the share is seeded"
    assert {r.path for r in scan_dataset(root, seed=2).records if r.header_read} != again

    full = scan_dataset(root, audit="all").summary
    assert full.audit is not None
    assert (full.audit.mode, full.audit.n_audited, full.audit.n_not_audited) == ("all", 13, 0)
    assert full.modes == {"RGB": 12}


def test_audit_of_records_drops_the_unreadable_and_updates_the_summary(
        image_folder: ImageFolder, small_audit_share: int) -> None:
    root = image_folder({"a": 5, "b": 5})
    _truncate(write_image(root / "a" / "zz_cut.png", size=(64, 64), seed=50))

    scan = scan_dataset(root, seed=0)
    cut = next(r for r in scan.records if r.path.name == "zz_cut.png")
    assert not cut.header_read, "seed 0 leaves the cut file out of the 4-file share"
    assert scan.summary.class_counts == {"a": 6, "b": 5}

    assert scan.audit([cut, *scan.records[:3]]) == 1

    assert cut not in scan.records and scan.summary.class_counts == {"a": 5, "b": 5}
    assert _skip_reasons(scan) == {"a/zz_cut.png": "truncated image data"}
    audit = scan.summary.audit
    assert audit is not None and audit.n_unreadable == 1
    assert audit.n_audited + audit.n_not_audited == 11  # 10 images + the cut file, each counted once
    assert scan.audit(scan.records[:3]) == 0  # already read: nothing to do


def test_duplicates_are_found_over_every_file_without_reading_every_header(
        tmp_path: Path, small_audit_share: int) -> None:
    root = tmp_path / "data"
    make_class_folder(root / "train", {"a": 4, "b": 4})
    make_class_folder(root / "val", {"a": 2, "b": 2}, seed=3)
    # Larger than the hashed prefix: the whole file decides. Same size and prefix, different last byte.
    big = write_image(root / "train" / "a" / "big.bmp", size=(128, 64), seed=9)
    assert big.stat().st_size > 16 * 1024
    shutil.copyfile(big, root / "val" / "b" / "big_copy.bmp")
    near = bytearray(big.read_bytes())
    near[-1] ^= 0xFF
    (root / "train" / "b" / "big_near.bmp").write_bytes(bytes(near))
    shutil.copyfile(root / "train" / "a" / "img_0001.png", root / "train" / "b" / "small_copy.png")

    summary = scan_dataset(root).summary

    assert summary.audit is not None and summary.audit.n_not_audited > 0
    assert [(g.paths, g.cross_split) for g in summary.duplicates] == [
        (["train/a/big.bmp", "val/b/big_copy.bmp"], True),
        (["train/a/img_0001.png", "train/b/small_copy.png"], False),
    ]


def test_unknown_audit_mode_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'audit' parameter must be one of sample, all. Got 'some' instead"):
        scan_dataset(tmp_path / "does-not-matter", audit="some")  # type: ignore[arg-type]
