"""The human-readable reports (text, markdown, HTML): one learning-rate formatter exact to what trains, one
runner-up that ``--compare`` trains, timings that nest instead of adding up wrong, the strategy's title from the
rules, and a default text report that fits one screen with the evidence under ``--explain``.

Expectations are written out by hand; the fast tests render an advice the rules engine makes on a described
dataset (no image embedded), the slow one the real advice on the ants-and-bees photos."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import shared_dataset
from hypothesis import given
from hypothesis import strategies as st
from test_rules import make_backbone, make_dataset, make_similarity

from tl_advise.advisor.report import OutputFormat, render
from tl_advise.advisor.report.html import render_html
from tl_advise.advisor.timing import PARENT, StepTimer, nested_timings
from tl_advise.rules.engine import recommend
from tl_advise.rules.schema import load_rules
from tl_advise.runners.api import strategies_to_run
from tl_advise.schema.formatting import counted, fmt_lr, per_class
from tl_advise.schema.models import AdviceResult, ImageSizeSummary, SampleInfo
from tl_advise.schema.run_options import RunOptions

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

# What the rules engine measures on 122.5 images per class of similar data (the ants and bees), timed as a cold
# advice is: the ONNX export inside loading the backbone, inside measuring, inside the total.
TIMINGS = {"scan": 0.31, "imports": 1.56, "export": 13.06, "load_backbone": 13.21, "embed": 3.49,
           "similarity": 0.39, "measure": 18.68, "rules": 0.0, "total": 19.01}


LITE0_STAGES = ["stem", *(f"blocks.{i}" for i in range(7)), "conv_head"]  # efficientnet_lite0's nine stages


def described_advice(images_per_class: float = 122.5, **dataset: object) -> AdviceResult:
    dataset, similarity = make_dataset(images_per_class, **dataset), make_similarity("similar")
    backbone = make_backbone(LITE0_STAGES)
    return AdviceResult(
        tool_version="test", device="cpu", dataset=dataset, backbone=backbone,
        sample=SampleInfo(n_images=128, per_class_cap=64, total_cap=1000, seed=0, cache_hits=0, forward_passes=128),
        similarity=similarity, recommendation=recommend(load_rules(), dataset, similarity, backbone),
        timings=TIMINGS)


@pytest.fixture(scope="module")
def advice() -> AdviceResult:
    return described_advice()


# --------------------------------------------------------------------------- one LR formatter, exact


@pytest.mark.parametrize(("rate", "shown"), [(2.5e-6, "2.5e-6"), (1e-3, "1e-3"), (3.33e-4, "3.33e-4"),
                                             (1e-5, "1e-5"), (1.18e-5, "1.18e-5"), (0.1, "1e-1")])
def test_a_learning_rate_reads_as_the_number_that_trains(rate: float, shown: str) -> None:
    assert fmt_lr(rate) == shown


@given(st.floats(min_value=1e-12, max_value=10, allow_nan=False, allow_infinity=False))
def test_every_printed_learning_rate_reads_back_as_the_same_float(rate: float) -> None:
    assert float(fmt_lr(rate)) == rate


def test_a_count_agrees_with_its_noun() -> None:
    assert [counted(n, "case") for n in (0, 1, 2)] == ["0 cases", "1 case", "2 cases"]
    assert counted(3, "class", "classes") == "3 classes" and counted(1, "class", "classes") == "1 class"
    # A median per class: "median 1 images per class" read wrong on two images in two classes.
    assert [per_class(v, "image") for v in (1, 1.0, 1.5, 122)] == [
        "1 image per class", "1 image per class", "1.5 images per class", "122 images per class"]


def test_every_format_prints_the_per_stage_rates_that_train() -> None:
    advice = described_advice(600)
    rec = advice.recommendation
    # The premise, by hand: the small band's last three stages on similar data at 1e-5, x0.5 per stage below.
    assert rec.strategy == "finetune_last_layers"
    assert rec.learning_rate.per_stage == {"blocks.5": 2.5e-6, "blocks.6": 5e-6, "conv_head": 1e-5}
    row = "blocks.5 2.5e-6, blocks.6 5e-6, conv_head 1e-5"
    text = render(advice, "text")
    assert f"  per stage:     {row}\n" in text
    assert "3e-6" not in text  # the one-digit rounding of 2.5e-6 the report used to print
    assert f"| per stage | {row} |" in render(advice, "markdown")
    assert f"<th>per stage</th><td>{row}</td>" in render_html(advice)
    assert "discriminative rates from 1e-5 down to 2.5e-6" in render(advice, "text", explain=True)


# --------------------------------------------------------------------------- one runner-up, trained by --compare


def test_the_runner_up_the_report_names_is_among_what_compare_trains(advice: AdviceResult) -> None:
    rec = advice.recommendation
    runner_up = rec.confidence.runner_up
    # The size margin is clear (122.5 per class is x4.08 from the small band's edge): the runner-up is the one the
    # evidence measured, the benchmark's runner-up for rule tiny-similar, named in the evidence line.
    evidence = load_rules().row_for("tiny", "similar").evidence
    assert evidence is not None and runner_up == evidence.runner_up
    expected = "high" if evidence.separated and evidence.judged_on == "test" else "medium"
    assert rec.confidence.level == expected
    assert any(f"{rec.strategy} tied {runner_up} within noise" in r or f"{rec.strategy} beat {runner_up}" in r
               for r in rec.confidence.reasons)
    alternatives = [a.strategy for a in rec.alternatives]
    assert alternatives[0] == runner_up
    trained = strategies_to_run(rec.strategy, RunOptions(output_dir=Path("unused"), compare=True), alternatives)
    assert runner_up in trained
    for fmt, mark in (("text", f"{runner_up} (runner-up)"), ("markdown", f"`{runner_up}` (runner-up)")):
        shown = render(advice, fmt, explain=True)
        assert f"(runner-up: {runner_up})" in shown
        assert shown.count("(runner-up)") == 1 and mark in shown, fmt
    assert f"<code>{runner_up}</code> (runner-up)" in render_html(advice)


def test_every_advised_cell_compares_against_its_runners_up() -> None:
    """Over the size bands: whatever runner-up a report names, --compare trains it."""
    for ipc in (5, 12, 30, 122.5, 600, 3000, 20000):
        for label in ("similar", "different"):
            dataset, similarity, backbone = make_dataset(ipc), make_similarity(label), make_backbone()
            rec = recommend(load_rules(), dataset, similarity, backbone)
            alternatives = [a.strategy for a in rec.alternatives]
            if rec.confidence.runner_up is not None:
                assert rec.confidence.runner_up in alternatives, (ipc, label)
            assert rec.strategy not in alternatives, (ipc, label)
            assert len(set(alternatives)) == len(alternatives), (ipc, label)


# --------------------------------------------------------------------------- timings


def test_nested_steps_are_shown_inside_the_step_that_holds_them() -> None:
    assert nested_timings(TIMINGS) == (
        "total 19.01 s: scan 0.31 s, measure 18.68 s (imports 1.56 s, load_backbone 13.21 s (export 13.06 s), "
        "embed 3.49 s, similarity 0.39 s), rules 0.00 s")
    assert nested_timings({"scan": 0.2, "measure": 0.01, "rules": 0.0, "total": 0.25}) == \
        "total 0.25 s: scan 0.20 s, measure 0.01 s, rules 0.00 s"


def test_the_steps_beside_each_other_are_disjoint(advice: AdviceResult) -> None:
    """At every level the parts shown side by side add up to no more than the step that holds them."""
    children: dict[str, list[str]] = {}
    for step in TIMINGS:
        if step != "total":
            children.setdefault(PARENT.get(step, "total"), []).append(step)
    for parent, parts in children.items():
        assert sum(TIMINGS[p] for p in parts) <= TIMINGS[parent] + 0.01, parent
    assert f"Timings: {nested_timings(TIMINGS)}" in render(advice, "text", explain=True)


def test_the_timer_records_the_nesting_the_report_declares() -> None:
    timer = StepTimer()
    with timer.step("measure"):
        with timer.step("load_backbone"), timer.step("export"):
            pass
        for step in ("imports", "embed", "similarity"):
            with timer.step(step):
                pass
    assert timer.parents == {k: v for k, v in PARENT.items()}


# --------------------------------------------------------------------------- the default output, for a person


def test_the_default_text_report_fits_one_screen_and_leads_with_the_decision(advice: AdviceResult) -> None:
    text = render(advice, "text")
    lines = text.splitlines()
    assert len(lines) <= 25, text
    rec = advice.recommendation
    assert lines[3].startswith(f"Recommendation: {rec.strategy} — {rec.title} (rule {rec.rule_id})")
    order = [text.index(s) for s in ("Recommendation:", "  learning rate:", "Confidence:", "Alternatives")]
    assert order == sorted(order)
    assert "Why:" not in text and "Timings:" not in text  # the evidence: under --explain
    assert "-v or --explain" in text
    full = render(advice, "text", explain=True)
    assert "Why:" in full and "Timings:" in full and len(full.splitlines()) > len(lines)
    for line in lines[4:]:  # the recipe rows survive in the full report unchanged
        if line.startswith("  ") and ":" in line:
            assert line in full.splitlines()


def test_warnings_come_before_the_confidence_in_the_default_report() -> None:
    small = ImageSizeSummary(min_width=28, min_height=28, median_width=28, median_height=28, max_width=28,
                             max_height=28)
    advice = described_advice(image_size=small)  # 28 px images for a 224 px backbone: the upsampling warning
    assert advice.recommendation.warnings
    text = render(advice, "text")
    assert text.index("Warnings (") < text.index("Confidence:")


def test_the_strategy_title_comes_from_the_rules(advice: AdviceResult) -> None:
    strategy = advice.recommendation.strategy
    title = load_rules().strategies[strategy].title
    assert advice.recommendation.title == title
    assert f"{strategy} — {title} (rule" in render(advice, "text")
    assert f"**{title}**" in render(advice, "markdown")
    assert title in render_html(advice)


def test_markdown_names_the_cache_instead_of_a_device_called_none(advice: AdviceResult) -> None:
    sample = advice.sample.model_copy(update={"forward_passes": 0, "cache_hits": 128})
    cached = advice.model_copy(update={"device": "none (measurements from the cache)", "sample": sample})
    markdown = render(cached, "markdown")
    assert "on none" not in markdown
    assert "128 from cache, no forward pass: measurements from the cache" in markdown


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_explain_changes_only_the_text_format(advice: AdviceResult, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.TEXT:
        assert render(advice, fmt, explain=True) != render(advice, fmt)
    else:
        assert render(advice, fmt, explain=True) == render(advice, fmt)


# --------------------------------------------------------------------------- the real advice


@pytest.mark.slow
def test_the_ants_and_bees_report_prints_what_trains(session_cache_dir: Path) -> None:
    """The README's example: the per-stage, rate and epoch rows against the optimizer that trains (the building
    blocks ``--run`` trains with), both held to numbers written out by hand."""
    from tl_advise.advisor.api import advise_session
    from tl_advise.runners import blocks

    session = advise_session(shared_dataset("hymenoptera"), cache_dir=session_cache_dir, device="cpu")
    text = render(session.result, "text")
    rows = dict(re.findall(r"^  ([a-z ]+):\s+(.*)$", text, re.MULTILINE))
    # The README's example: a frozen backbone and a new head (rule tiny-similar).
    assert rows["learning rate"] == "head 1e-3, backbone frozen (adam)"
    assert rows["schedule"].startswith("head: 10 epochs at 1e-3 (head)")
    assert "per stage" not in rows
    assert len(text.splitlines()) <= 25, text
    advised = blocks.from_session(session)
    assert [(p.name, p.epochs) for p in advised.phases] == [("head", 10)]
    assert advised.setup_phase(advised.phases[0]).learning_rates() == {"head": 1e-3}
    # Its alternative that tunes the last stages, as --compare trains it: the rules' rates per stage.
    tuned = blocks.from_session(session, strategy="finetune_last_layers")
    assert [(p.name, p.epochs) for p in tuned.phases] == [("head", 5), ("finetune", 20)]
    assert tuned.setup_phase(tuned.phases[0]).learning_rates() == {"head": 1e-3}
    assert tuned.setup_phase(tuned.phases[1]).learning_rates() == {
        "head": 1e-5, "blocks.5": 2.5e-6, "blocks.6": 5e-6, "conv_head": 1e-5}
