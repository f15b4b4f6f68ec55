"""Reading and scanning text datasets: tiny synthetic tables and folders written here, and bad inputs."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from tl_advise.advisor.data.modality import detect_modality
from tl_advise.advisor.data.text import TextReadOptions, read_text_dataset, scan_texts
from tl_advise.advisor.data.text.scan import capped_for_training, script_summary
from tl_advise.schema.errors import DatasetError, TLAdviseError


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


REVIEWS = ['"great phone, love it",pos', "battery died in a day,neg", '"works well",pos', "broke at once,neg"]


# --------------------------------------------------------------------------- layouts


def test_a_csv_manifest_is_read_with_its_columns_detected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", "review,sentiment", REVIEWS)
    dataset = read_text_dataset(path)
    assert dataset.source.kind == "manifest"
    assert (dataset.source.text_column, dataset.source.label_column) == ("review", "sentiment")
    assert dataset.classes == ["neg", "pos"]
    assert dataset.splits == ["all"] and dataset.train_split == "all"
    assert dataset.texts()[0] == "great phone, love it"
    assert dataset.examples[1].where == "reviews.csv line 3"


def test_a_split_column_and_explicit_column_names(tmp_path: Path) -> None:
    rows = ["hello there,a,train,x", "good bye,b,train,y", "hi again,a,test,z", "bye now,b,validation,w"]
    path = write_csv(tmp_path / "d.csv", "body_text,target,subset,other", rows)
    dataset = read_text_dataset(path, TextReadOptions(text_column="body_text"))
    assert dataset.splits == ["train", "val", "test"]
    assert dataset.labels("train") == ["a", "b"]
    assert dataset.source.split_column == "subset"


def test_the_only_column_beside_the_label_is_the_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "utterance_raw,label", ["turn on the light,on", "switch it off,off"])
    assert read_text_dataset(path).source.text_column == "utterance_raw"


def test_jsonl_tsv_and_parquet(tmp_path: Path) -> None:
    records = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": "fine", "label": 1.0}]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert read_text_dataset(jsonl).labels() == ["1", "0", "1"]
    tsv = write_csv(tmp_path / "d.tsv", "text\tlabel", ["a, b, c\tx", "d; e\ty"])
    assert read_text_dataset(tsv).texts() == ["a, b, c", "d; e"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sentence": ["one", "two"], "label": ["a", "b"]}), tmp_path / "d.parquet")
    assert read_text_dataset(tmp_path / "d.parquet").texts() == ["one", "two"]


def test_a_folder_of_split_files_in_the_hugging_face_layout(tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "train.csv", "text,label", REVIEWS)
    write_csv(tmp_path / "data" / "validation.csv", "text,label", ["ok,pos", "meh,neg"])
    write_csv(tmp_path / "data" / "test.csv", "text,label", ["fine,pos", "awful,neg"])
    dataset = read_text_dataset(tmp_path / "data")
    assert dataset.source.kind == "split_files"
    assert dataset.splits == ["train", "val", "test"]
    assert len(dataset.subset("train")) == 4 and dataset.train_split == "train"


def test_multi_line_quoted_texts(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"first line\nsecond line",a\nplain,b\n', encoding="utf-8")
    dataset = read_text_dataset(path)
    assert dataset.texts() == ["first line\nsecond line", "plain"]
    assert dataset.examples[1].where == "d.csv line 4"


def test_class_folders_of_text_files(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for label, text in (("pos", "lovely"), ("neg", "dreadful")):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            (folder / "0001.txt").write_text(f"{text} {split}", encoding="utf-8")
    (tmp_path / "data" / "train" / "pos" / "photo.png").write_bytes(b"\x89PNG")
    dataset = read_text_dataset(tmp_path / "data")
    assert dataset.source.kind == "class_folders"
    assert dataset.splits == ["train", "test"]
    assert sorted(dataset.texts("train")) == ["dreadful train", "lovely train"]
    assert [s.path for s in dataset.skipped] == ["train/pos/photo.png"]
    with pytest.raises(DatasetError, match=r"--text-column \(the API's text_column\) applies to a table, and .* "
                                           "holds class folders: leave it out"):
        read_text_dataset(tmp_path / "data", TextReadOptions(text_column="body"))


def test_flat_class_folders_without_extensions(tmp_path: Path) -> None:
    for label in ("sci.space", "rec.autos"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "51060").write_text(f"a post in {label}")
    dataset = read_text_dataset(tmp_path)
    assert dataset.classes == ["rec.autos", "sci.space"] and dataset.splits == ["all"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("content", "expected"), [
    ("", "is empty"),
    ("text,label\n", "no rows"),
    ("words,more_words,label\na,b,c\n", "no text column"),
    ("text,stars_given\nnice,5\n", "no label column"),
])
def test_bad_tables_name_the_file_and_the_fix(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=expected) as info:
        read_text_dataset(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_a_text_holding_an_unquoted_separator_is_refused_not_cut(tmp_path: Path) -> None:
    # Before: "great phone, love it,pos" read as text "great phone" with the label " love it": one class per text.
    path = write_csv(tmp_path / "d.csv", "text,label", ["great phone, love it,pos", "battery died,neg", "ok,pos"])
    with pytest.raises(DatasetError, match=r"d\.csv line 2: 3 values under a header of 2 columns \(text, label\);"
                                           r" a value holding the separator ',' must be quoted") as info:
        read_text_dataset(path)
    assert info.value.exit_code == 2
    # Empty values beyond the header (trailing separators) are no data: the table reads.
    assert len(read_text_dataset(write_csv(tmp_path / "t.csv", "text,label", ["a,pos,", "b,neg,,"]))) == 2


@pytest.mark.parametrize(("content", "line"), [
    ('text,label\ngood one,pos\nbad one,neg\n"great product,1\nfine,pos\n', 4),  # the rows after it vanished
    ('text,label\ngood one,pos\nbad one,neg\n"great product,1', 4),  # the last line, no newline
    ('text,label\ngood one,pos\nbad one,"neg\nfine,pos\n', 3),  # the label's quote
    ('text,label\n"first line\nsecond line",pos\n"great product,1\n', 4),  # after a quoted multi-line text
    ('"text,label\ngood one,pos\n', 1),  # the header's
])
def test_an_unterminated_quote_is_a_malformed_csv_not_a_missing_label(tmp_path: Path, content: str, line: int,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # Before: the open quote swallowed the rest of the file as one text, reported as "no label in the column
    # 'label'" (a skipped row) or "1 class", or read on without the rows after it.
    from tl_advise.cli.commands import main

    path = tmp_path / "d.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"d\.csv line {line}: a quoted field starts there and is never closed.*"
                                           "close its quote, or fix the quoting") as info:
        read_text_dataset(path)
    assert info.value.exit_code == 2
    assert main([str(path), "--modality", "text", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert f"{path} line {line}: a quoted field starts there and is never closed" in err
    assert "no label" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_quotes_the_lenient_reading_accepts_still_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "text,label", ['5" screen,pos', '"closed" late,neg', '"said ""hi""",pos'])
    assert read_text_dataset(path).texts() == ['5" screen', "closed late", 'said "hi"']


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    # Before: the second 'label' column silently won ("1 class (column 'label'): 'x'").
    path = write_csv(tmp_path / "d.csv", "text,label,label", ["a,pos,x", "b,neg,x"])
    with pytest.raises(DatasetError, match=r"d\.csv: the header names the column 'label' twice \(columns 2 and 3\); "
                                           "rename one of them"):
        read_text_dataset(path)


def test_an_unlabelled_test_file_beside_train_says_how_to_advise_on_train(tmp_path: Path) -> None:
    # Kaggle's layout: train.csv with labels, test.csv without. Before: auto-detection read test.csv first ("cannot
    # tell whether test.csv lists images or texts": 'id' reads like an image id), and with --modality text the fix
    # offered was "name it with --label-column", which an unlabelled file cannot follow.
    folder = tmp_path / "kaggle"
    train = write_csv(folder / "train.csv", "id,text,label", [f"{i},{row}" for i, row in enumerate(REVIEWS)])
    write_csv(folder / "test.csv", "id,text", ["7,what a film", "8,never again"])
    assert detect_modality(folder) == "text"
    with pytest.raises(DatasetError, match=r"test\.csv has no label column \(its columns are: 'id', 'text'\): an "
                                           r"unlabelled test file cannot be judged on; advise on .*train\.csv alone "
                                           r"\(tl-advise .*train\.csv\), or move test\.csv out of") as info:
        read_text_dataset(folder)
    assert info.value.exit_code == 2
    assert len(read_text_dataset(train)) == 4


def test_a_named_column_that_is_not_there(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "text,label", REVIEWS)
    with pytest.raises(DatasetError, match=r"no column 'body'.*its columns are: 'text', 'label'"):
        read_text_dataset(path, TextReadOptions(text_column="body"))


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "text,label", ["a,x", "b,x"])
    with pytest.raises(DatasetError, match=r"1 class.*'x'.*at least 2"):
        read_text_dataset(path)


def test_a_file_in_another_encoding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncafé crème,a\nnaïve,b\nrésumé,a\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"not UTF-8.*save it as UTF-8"):
        read_text_dataset(path)


def test_a_few_undecodable_bytes_are_a_finding_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\ngood \xff text,a\nfine,b\nok,a\nnice,b\n")
    dataset = read_text_dataset(path)
    assert dataset.examples[0].undecodable == 1
    scan = scan_texts(dataset)
    assert scan.n_undecodable == 1
    assert "undecodable" in {f.code for f in scan.findings}


def test_class_folders_of_images_read_as_text_say_what_they_hold(tmp_path: Path) -> None:
    """--modality text on an image folder: the suffixes and the fix, not a table's expected columns."""
    for i, name in enumerate(["a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.png"]):
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / name).write_bytes(b"\xff\xd8" + bytes([i]))
    with pytest.raises(DatasetError) as err:
        read_text_dataset(tmp_path / "imgs")
    message = str(err.value)
    assert "holds no text files: its class folders hold 3 .jpg, 1 .png files" in message
    assert "--modality image" in message and "text,label" not in message


def test_missing_paths_and_other_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_text_dataset(tmp_path / "nope.csv")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DatasetError, match="not a table"):
        read_text_dataset(tmp_path / "notes.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TLAdviseError, match="holds no table and no class folder"):
        read_text_dataset(tmp_path / "empty")


# --------------------------------------------------------------------------- scan


def test_scan_counts_and_findings(tmp_path: Path) -> None:
    rows = ["good one,pos,train", "bad one,neg,train", "good one,neg,train", '"  ",pos,train',
            "bad one,neg,test", "ctrl\x07char,pos,train", "fine,pos,train"]
    dataset = read_text_dataset(write_csv(tmp_path / "d.csv", "text,label,split", rows))
    scan = scan_texts(dataset)
    assert scan.summary.split_counts == {"train": {"neg": 2, "pos": 4}, "test": {"neg": 1, "pos": 0}}
    assert scan.summary.train_split == "train" and scan.summary.texts_per_class == 3.0
    assert scan.n_empty == 1 and scan.n_control == 1
    assert scan.n_duplicate_texts == 2
    codes = {f.code for f in scan.findings}
    assert {"empty", "duplicates", "duplicate_conflict", "cross_split_duplicates", "control_characters",
            "few_texts"} <= codes
    assert scan.lengths.unit == "words" and scan.lengths.max == 2
    conflict = next(g for g in scan.duplicates if g.text == "good one")
    assert conflict.label_conflict and not conflict.cross_split
    # One of a kind reads as one: "1 text holds", not "1 texts hold".
    messages = {f.code: f.message for f in scan.findings}
    assert messages["control_characters"].startswith("1 text holds control characters")
    assert messages["empty"].startswith("1 empty or blank text:")
    assert messages["duplicates"].startswith("2 texts repeat an earlier one (2 distinct texts with copies)")
    assert messages["cross_split_duplicates"].startswith("1 text appears in more than one split")


def test_one_text_and_one_skipped_row_read_in_the_singular(tmp_path: Path) -> None:
    rows = ["good one,pos", "bad one,neg", "fine,pos", "lonely,third", "no label here,"]
    scan = scan_texts(read_text_dataset(write_csv(tmp_path / "d.csv", "text,label", rows)))
    messages = {f.code: f.message for f in scan.findings}
    assert messages["few_texts"].startswith("the smallest class has 1 text in all:")
    assert messages["skipped"].startswith("1 row or file was left out")


def test_labels_only_in_the_held_out_splits_are_named_and_not_counted_on_the_size_axis(tmp_path: Path) -> None:
    """Splits whose label sets do not overlap: train 12 per class of '0' and '1', test only 'x' and 'y'."""
    rows = [f"train s {i},{i % 2},train" for i in range(24)] + [f"test s {i},{'xy'[i % 2]},test" for i in range(4)]
    scan = scan_texts(read_text_dataset(write_csv(tmp_path / "d.csv", "text,label,split", rows)))
    assert scan.summary.texts_per_class == 12.0 and scan.summary.min_texts_per_class == 0
    (finding,) = [f for f in scan.findings if f.code == "classes_without_training_texts"]
    assert (finding.count, finding.examples) == (2, ["x", "y"])
    assert finding.message.startswith("2 classes ('x', 'y') have no text in 'train' but appear in the other splits: "
                                      "no strategy can learn them")
    assert "few_texts" not in {f.code for f in scan.findings}  # 12 per class where there are any


def test_the_size_axis_counts_what_trains_under_a_cap(tmp_path: Path) -> None:
    rows = [f"text {i},pos,train" for i in range(9)] + [f"text {i},neg,train" for i in range(3)] + \
           ["held out,neg,test"]
    summary = scan_texts(read_text_dataset(write_csv(tmp_path / "d.csv", "text,label,split", rows))).summary
    assert capped_for_training(summary, None) is summary
    capped = capped_for_training(summary, 4)
    # train counts pos 9, neg 3 -> at most 4 each: 4 and 3, median 3.5, smallest 3, imbalance 4/3
    assert (capped.texts_per_class, capped.min_texts_per_class, capped.imbalance_ratio) == (3.5, 3, 1.333)
    assert capped.train_cap == 4 and capped.split_counts == summary.split_counts
    assert (summary.texts_per_class, summary.imbalance_ratio, summary.train_cap) == (6.0, 3.0, None)


def test_script_summary() -> None:
    summary = script_summary(["hello world", "привет мир", "नमस्ते"])
    assert summary.shares["LATIN"] == pytest.approx(10 / summary.n_letters, abs=1e-4)
    assert {"CYRILLIC", "DEVANAGARI"} <= set(summary.shares)
    assert summary.non_latin_share > 0.4


def test_script_summary_counts_every_letter_once() -> None:
    texts = ["Crème brûlée, 3 €", "Ελληνικά και English", "", "日本語のテキスト", "naïve café\nr\u00e9sum\u00e9"]
    letters = [ch for text in texts for ch in text if ch.isalpha()]
    summary = script_summary(texts)
    assert summary.n_letters == len(letters)
    latin = sum(unicodedata.name(ch).startswith("LATIN") for ch in letters)
    assert summary.shares["LATIN"] == pytest.approx(latin / len(letters), abs=1e-4)
    assert summary.shares["GREEK"] == pytest.approx(11 / len(letters), abs=1e-4)  # Ελληνικά και
    assert script_summary([]).n_letters == 0 and script_summary(["123 !"]).shares == {}


def test_non_latin_text_is_a_finding(tmp_path: Path) -> None:
    rows = ["Это хороший телефон,pos", "Очень плохой,neg", "great,pos", "bad,neg"]
    scan = scan_texts(read_text_dataset(write_csv(tmp_path / "d.csv", "text,label", rows)))
    assert "non_latin_script" in {f.code for f in scan.findings}


class _FakeTokenizer:
    """Characters as tokens, plus two special tokens: enough to check the length accounting."""

    def __call__(self, texts: list[str], **_: object) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0, *range(len(t)), 1] for t in texts]}


def test_lengths_in_tokens_and_too_long_texts(tmp_path: Path) -> None:
    rows = ["short,a", "a much longer text here,b", "mid size,a", "tiny,b"]
    dataset = read_text_dataset(write_csv(tmp_path / "d.csv", "text,label", rows))
    scan = scan_texts(dataset, tokenizer=_FakeTokenizer(), tokenizer_name="chars", max_length=10)
    assert scan.lengths.unit == "tokens" and scan.lengths.max == len("a much longer text here") + 2
    assert scan.lengths.n_over_max == 1 and scan.lengths.share_over_max == 0.25
    too_long = next(f for f in scan.findings if f.code == "too_long")
    assert too_long.examples == ["d.csv line 3"]


def test_the_training_table_is_parsed_once_for_modality_and_reader(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.advisor.data.text import reading

    parsed: list[str] = []
    parse = reading._parse_rows
    monkeypatch.setattr(reading, "_parse_rows", lambda path: parsed.append(path.name) or parse(path))
    folder = tmp_path / "d"
    folder.mkdir()
    write_csv(folder / "train.csv", "text,label", ["great phone,pos", "broke at once,neg", "love it,pos", "bad,neg"])
    write_csv(folder / "test.csv", "text,label", ["fine,pos", "awful,neg"])
    assert detect_modality(folder) == "text"
    assert len(read_text_dataset(folder).examples) == 6
    assert parsed == ["train.csv", "test.csv"]  # the reader reused the modality's read of train.csv
    read_text_dataset(folder)
    assert parsed[2:] == ["train.csv", "test.csv"]  # nothing kept once the dataset is read
