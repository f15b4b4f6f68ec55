"""``--html`` for a text dataset: the image report's page, with a token-length histogram (the backbone's max length
marked) and escaped example texts per class instead of thumbnails; with ``--run``, the run section on the split the
verdict reads. The tiny random BERT of ``text_fixtures`` stands in for the backbone."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

import pytest
from text_fixtures import tiny_backbone, tiny_dataset

from tl_advise.cli.commands import main

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

HOSTILE = "<script>alert('x')</script> good & \"great\" film"


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z-]+)">', page)


def _section(page: str, section_id: str) -> str:
    start = page.index(f'<section id="{section_id}">')
    return page[start:page.index("</section>", start)]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tl_advise.advisor.data.text.reading import TextExample
    from tl_advise.advisor.text_api import advise_text_session

    dataset = tiny_dataset(tmp_path_factory.mktemp("html") / "data")
    dataset.examples.append(TextExample(text=HOSTILE, label="positive", split="train", where="train hostile"))
    return advise_text_session(dataset, backbone=tiny_backbone(), use_cache=False, sample_size=40)


@pytest.mark.slow
def test_the_advice_page_shows_lengths_and_escaped_examples_instead_of_thumbnails(session: Any) -> None:
    from tl_advise.advisor.report.text_html import page_data, render_text_html

    data = page_data(session, per_class=100)  # every text: the hostile one among them
    page = render_text_html(session.result, data)
    assert _sections(page) == ["recommendation", "warnings", "similarity", "dataset", "lengths", "examples"]
    assert len(data.token_counts) == len(session.dataset.examples) == 69
    assert page.count('src="data:image/png;base64,') == 1  # the histogram, in its section
    assert 'alt="text length histogram" src="data:image/png;base64,' in _section(page, "lengths")
    assert "max length (64 tokens)" in _section(page, "lengths")
    examples = _section(page, "examples")
    for label in ("negative", "positive"):
        for example in session.dataset.examples:
            if example.label == label:
                assert f"<li>{escape(example.text)}</li>" in examples
    assert "<script>" not in page and escape(HOSTILE) in examples
    rec = session.result.recommendation
    assert f'<span class="strategy">{rec.strategy}</span>' in _section(page, "recommendation")
    assert f'<span class="pill {session.result.similarity.label}">' in _section(page, "similarity")


@pytest.mark.slow
def test_a_text_run_page_shows_the_run_on_the_split_the_verdict_reads(session: Any, tmp_path: Path) -> None:
    from tl_advise.runners.text import run_text_advice
    from tl_advise.schema.text import TextRunOptions

    report = run_text_advice(session, TextRunOptions(
        output_dir=tmp_path / "out", strategies=["text_feature_extraction", "tfidf_linear"], max_epochs=2,
        max_length=32, tensorboard=False))
    assert report.files["html"] == "report.html" and report.verdict.judged_on == "test"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert _sections(page)[-4:] == ["run", "learning-curves", "per-class-accuracy", "confusion-matrix"]
    run = _section(page, "run")
    assert f'<span class="pill {report.verdict.status}">' in run
    per_class = _section(page, "per-class-accuracy")
    assert "best model on the test split, the one the verdict reads" in per_class
    fe = report.runs[0].test.per_class_accuracy
    assert f'{100 * fe["negative"]:.1f} %' in per_class and f'{100 * fe["positive"]:.1f} %' in per_class
    assert _section(page, "confusion-matrix").count('src="data:image/png;base64,') == 2  # one per strategy
    assert 'alt="learning curves"' in _section(page, "learning-curves")


def test_the_histogram_marks_the_max_length() -> None:
    from tl_advise.advisor.report.figures import length_histogram

    fig = length_histogram([5, 9, 12, 70, 80], "tokens", 64)
    ax = fig.axes[0]
    assert [line.get_xdata()[0] for line in ax.lines] == [64]
    assert sum(p.get_height() for p in ax.patches) == 5
    assert "max length 64 (2 over)" in [t.get_text().strip() for t in ax.texts]


def test_an_html_report_inside_a_text_dataset_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(10)),
                                    encoding="utf-8")
    started: list[object] = []
    monkeypatch.setattr("tl_advise.advisor.text_api.advise_text_session",
                        lambda *a, **k: started.append(a) or 1 / 0)
    assert main([str(data), "--modality", "text", "--html", str(data / "report.html")]) == 2
    err = capsys.readouterr().err
    assert "The HTML report (--html)" in err and "tl-advise never writes into the dataset" in err
    assert started == [] and not (data / "report.html").exists()
