"""``report.html``: every section, no external URL, every image embedded and decodable — checked on the
markup (fast, no browser) and, when Chromium is installed, in a real headless browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest
from conftest import make_class_folder, snapshot_tree
from PIL import Image

from tl_advise.advisor import AdviceResult
from tl_advise.advisor.api import AdviceSession, advise_session
from tl_advise.advisor.report import common
from tl_advise.advisor.report.html import ADVICE_SECTIONS, RUN_SECTIONS, reference_band, render_html
from tl_advise.advisor.report.thumbnails import class_thumbnails
from tl_advise.cli.commands import main

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

DATA_URI = re.compile(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"')
CLASSES = {"cat": 6, "dog": 6, "fox": 6}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, session_cache_dir: Path) -> AdviceSession:
    """Its own small dataset: sharing ``synthetic_dataset`` would warm the cache that test_api_cli's cold
    advice expects to be cold, making the result depend on the order the files run in."""
    data = make_class_folder(tmp_path_factory.mktemp("html") / "data", CLASSES, seed=3)
    return advise_session(data, cache_dir=session_cache_dir, device="cpu")


@pytest.fixture(scope="module")
def run_result(session: AdviceSession, tmp_path_factory: pytest.TempPathFactory) -> AdviceResult:
    """The advice with a real (small) run: feature extraction trains a head on cached features in seconds."""
    from tl_advise.runners import RunOptions, run_advice

    out = tmp_path_factory.mktemp("html-run") / "runs"
    report = run_advice(session, RunOptions(output_dir=out, strategies=["feature_extraction"], head_epochs=3,
                                            progress=False, num_workers=0, tensorboard=False, mlflow=False))
    return session.result.model_copy(update={"run": report})


def _advice_only(session: AdviceSession) -> AdviceResult:
    """The advice without the run (``run_advice`` fills ``session.result.run`` in place)."""
    return session.result.model_copy(update={"run": None})


def _section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page)


def _images(page: str) -> list[Image.Image]:
    out = []
    for _, payload in DATA_URI.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()  # a truncated or corrupt payload fails here
        out.append(image)
    return out


def assert_self_contained(page: str) -> None:
    # Every src/href is inline data or an in-page anchor; nothing to fetch, nothing to run.
    for attribute, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        assert value.startswith(("data:image/", "#")), f"{attribute}={value[:60]!r} points outside the page"
    for pattern in ("<script", "<link", "@import", "url(", "http://", "https://"):
        assert pattern not in page, f"{pattern!r} in the page"


# --------------------------------------------------------------------------- the markup (no browser)


@pytest.mark.slow
def test_advice_page_has_every_section_and_its_numbers(session: AdviceSession) -> None:
    result = _advice_only(session)
    thumbnails = class_thumbnails(session.scan, per_class=4)
    page = render_html(result, thumbnails)

    assert _section_ids(page) == ["recommendation", "warnings", "similarity", "bn-profile", "signals", "dataset",
                                  "thumbnails"]
    assert set(_section_ids(page)) == set(ADVICE_SECTIONS)
    assert_self_contained(page)
    rec, sim = result.recommendation, result.similarity
    assert f'<span class="strategy">{rec.strategy}</span>' in page
    for reason in [*rec.why, *rec.confidence.reasons]:
        assert f"<li>{escape(reason)}</li>" in page
    assert f"<h3>Confidence: {rec.confidence.level}</h3>" in page
    bar = common.pixel_bar(rec)
    assert bar is not None and escape(bar) in page  # the raw-pixel bar, measured on every advice
    for warning in rec.warnings:
        assert f"<strong>{escape(warning.id)}</strong>: {escape(warning.message)}" in page
    assert f"<strong>{sim.score:.2f}</strong>" in page
    for c in sim.components:  # drawn in the ramps chart, and listed under it
        assert (f'<tr><td>{c.signal}</td><td class="num">{c.value:.3f}</td><td class="num">{c.score:.2f}</td>'
                f'<td class="num">{c.weight:g}</td>') in page
    # Charts: the depth profile and the ramps (PNG); thumbnails: 4 per class (JPEG), all decodable.
    images = _images(page)
    assert sum(1 for fmt, _ in DATA_URI.findall(page) if fmt == "png") == 2
    jpegs = [im for im in images if im.format == "JPEG"]
    assert len(jpegs) == 4 * len(CLASSES) and all(max(im.size) <= 96 for im in jpegs)
    for name in CLASSES:
        assert f'<div class="name">{name}</div>' in page
    assert "Run" not in re.findall(r"<h2>([^<]+)</h2>", page)


@pytest.mark.slow
def test_the_depth_profile_names_the_natural_photo_band_of_its_backbone(session: AdviceSession) -> None:
    page = render_html(_advice_only(session))
    band = reference_band(session.result.backbone.profile_key)
    assert band is not None and band[0] == (0.07, 0.30)  # efficientnet_lite0: similarity notes, point 1
    assert "Green band: where natural photos sit for this backbone" in page
    assert reference_band("mobilenet_v2:IMAGENET1K_V1") is not None
    assert reference_band("resnet50:IMAGENET1K_V2") is None
    # Without the dataset's files the page says so instead of showing an empty grid.
    assert "No sample images in this report" in page


@pytest.mark.slow
def test_run_page_adds_curves_per_class_accuracy_and_confusion(run_result: AdviceResult) -> None:
    page = render_html(run_result)
    assert set(_section_ids(page)) == set(ADVICE_SECTIONS) | set(RUN_SECTIONS)
    assert_self_contained(page)
    run = run_result.run
    assert run is not None
    assert f'<span class="pill {run.verdict.status}">' in page and escape(run.verdict.message) in page
    assert escape(common.margin_line(run)) in page
    assert run.verdict.pixel_baseline is not None
    assert f"raw-pixel baseline (reference)</td><td>–</td><td class=\"num\">{common.pct(run.verdict.pixel_baseline)}" \
        in page
    trained = run.runs[0]
    assert trained.val is not None
    for name, accuracy in trained.val.per_class_accuracy.items():
        assert re.search(rf"<td>{name}</td><td><div class=\"num small\">{re.escape(f'{100 * accuracy:.1f} %')}",
                         page)
    # depth profile + ramps + learning curves + one confusion matrix
    assert sum(1 for fmt, _ in DATA_URI.findall(page) if fmt == "png") == 4
    assert len(_images(page)) == 4


def test_per_class_accuracy_and_confusion_show_the_split_the_verdict_reads(run_result: AdviceResult) -> None:
    run = run_result.run
    assert run is not None and run.verdict.judged_on == "val" and run.runs[0].val is not None
    val = run.runs[0].val
    assert "best model on the validation split, the one the verdict reads" in render_html(run_result)
    # The same run judged on a test split whose per-class figures differ from validation's: the page shows test's.
    test = val.model_copy(update={"per_class_accuracy": {c: 0.125 for c in val.per_class_accuracy}})
    judged_on_test = run.model_copy(update={
        "runs": [run.runs[0].model_copy(update={"test": test}), *run.runs[1:]],
        "verdict": run.verdict.model_copy(update={"judged_on": "test"})})
    page = render_html(run_result.model_copy(update={"run": judged_on_test}))
    assert "best model on the test split, the one the verdict reads" in page
    assert "The test split, the one the verdict reads" in page
    for name in val.per_class_accuracy:
        assert f'<td>{name}</td><td><div class="num small">12.5 %' in page


def test_run_writes_report_html_into_its_output_dir(run_result: AdviceResult) -> None:
    assert run_result.run is not None
    out = Path(run_result.run.output_dir)
    assert run_result.run.files["html"] == "report.html"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert set(_section_ids(page)) == set(ADVICE_SECTIONS) | set(RUN_SECTIONS)
    assert page.count("data:image/jpeg;base64,") == 6 * len(CLASSES)  # thumbnails from the scan
    assert json.loads((out / "metrics.json").read_text())["run"]["files"]["html"] == "report.html"


@pytest.mark.slow
def test_cli_html_option_writes_the_page_and_never_into_the_dataset(
        session: AdviceSession, session_cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml with [tool.tl-advise] above the working directory
    data = session.scan.root
    before = snapshot_tree(data)
    target = tmp_path / "out" / "advice.html"
    assert main([str(data), "--cache-dir", str(session_cache_dir), "--html", str(target)]) == 0
    out, err = capsys.readouterr()
    assert "Recommendation:" in out  # the text report still goes to stdout
    assert f"HTML report written to {target}" in err
    assert set(_section_ids(target.read_text(encoding="utf-8"))) == set(ADVICE_SECTIONS)

    code = main([str(data), "--cache-dir", str(session_cache_dir), "--html", str(data / "report.html")])
    err = capsys.readouterr().err
    assert code == 2 and "inside the dataset" in err and "Traceback" not in err
    assert snapshot_tree(data) == before


# --------------------------------------------------------------------------- in a real browser

CHECKER = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const report = {
    sections: [...document.querySelectorAll("section[id]")].map(s => s.id),
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
    height: document.documentElement.scrollHeight,
  };
  const pre = document.createElement("pre");
  pre.id = "tl-check";
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium) for the in-browser check")


def _open_in_chromium(page: str, tmp_path: Path) -> tuple[dict[str, object], list[str]]:
    """Load ``page`` (plus a checker script appended to a copy) headless; the checker's report and the
    browser's console messages."""
    browser = _chromium()
    copy = tmp_path / "checked.html"
    copy.write_text(page.replace("</body>", CHECKER + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="tl-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert match, f"the page did not finish loading in Chromium: {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(match.group(1)), console


@pytest.mark.slow
def test_advice_page_loads_in_chromium_without_console_errors(session: AdviceSession, tmp_path: Path) -> None:
    page = render_html(_advice_only(session), class_thumbnails(session.scan))
    report, console = _open_in_chromium(page, tmp_path)
    assert console == []
    assert report["sections"] == list(ADVICE_SECTIONS)
    assert report["broken"] == [] and report["images"] == 2 + 6 * len(CLASSES)


@pytest.mark.slow
def test_run_page_loads_in_chromium_without_console_errors(run_result: AdviceResult, tmp_path: Path) -> None:
    assert run_result.run is not None
    page = (Path(run_result.run.output_dir) / "report.html").read_text(encoding="utf-8")
    report, console = _open_in_chromium(page, tmp_path)
    assert console == []
    assert report["sections"] == [*ADVICE_SECTIONS, *RUN_SECTIONS]
    assert report["broken"] == [] and report["images"] == 4 + 6 * len(CLASSES)


@pytest.mark.slow
def test_warm_advice_with_html_never_imports_torch(session: AdviceSession, session_cache_dir: Path,
                                                   tmp_path: Path) -> None:
    """The page (charts, thumbnails) costs matplotlib and PIL, not the deep-learning stack."""
    import sys

    target = tmp_path / "warm.html"
    code = ("import sys; from tl_advise.cli.commands import main; "
            f"code = main([{str(session.scan.root)!r}, '--cache-dir', {str(session_cache_dir)!r}, "
            f"'--html', {str(target)!r}, '-q']); print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout
    assert set(_section_ids(target.read_text(encoding="utf-8"))) == set(ADVICE_SECTIONS)


@pytest.mark.slow
def test_thumbnails_stay_bounded_with_many_classes(tmp_path: Path) -> None:
    from tl_advise.advisor.data.images.scan import scan_dataset
    from tl_advise.advisor.report.thumbnails import MAX_THUMBNAILS

    data = make_class_folder(tmp_path / "many", {f"c{i:03d}": 2 for i in range(MAX_THUMBNAILS + 10)}, size=(8, 8))
    thumbnails = class_thumbnails(scan_dataset(data))
    assert len(thumbnails) == MAX_THUMBNAILS and all(len(t) == 1 for t in thumbnails.values())
    assert next(iter(thumbnails)) == "c000"


@pytest.mark.slow
def test_thumbnails_of_a_file_name_that_is_not_utf8_are_escaped(tmp_path: Path, session: AdviceSession) -> None:
    """Found by the property test: a non-UTF-8 name reached the page raw and its write failed (exit 3)."""
    import os

    from tl_advise.advisor.data.images.scan import scan_dataset

    data = make_class_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    Image.new("RGB", (40, 32), (200, 10, 10)).save(os.fsencode(data / "cat") + b"/bad\xff.png", format="PNG")
    thumbnails = class_thumbnails(scan_dataset(data), per_class=4)
    assert "cat/bad\\xff.png" in [t.path for t in thumbnails["cat"]]
    page = render_html(_advice_only(session), thumbnails)  # any result: the names come with the thumbnails
    page.encode("utf-8")  # would raise on a surrogate
    assert 'title="cat/bad\\xff.png"' in page
