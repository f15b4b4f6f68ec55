"""``--html report.html`` for a text dataset: the image report's page (``report.html``: its sections, pills, charts
and run section), with what text has instead of thumbnails — a histogram of the texts' token lengths with the
backbone's max length marked, and a few example texts per class (escaped, shortened).

Like the image page it is rendered from the typed result; the per-text lengths and the examples are the only
input beyond it (the result carries summaries, not texts): ``TextPageData`` from the advice session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from tl_advise.advisor.report import common, figures
from tl_advise.advisor.report.html import (
    advice_page,
    chart,
    class_rows,
    class_table,
    kv,
    pill,
    run_section,
    section,
)
from tl_advise.advisor.report.text_advice import dataset_line, length_line, recipe_lines
from tl_advise.schema.formatting import counted
from tl_advise.schema.text import TextAdviceResult, TextRunReport

if TYPE_CHECKING:
    from tl_advise.advisor.text_api import TextAdviceSession


@dataclass(frozen=True)
class TextPageData:
    """What the page shows beyond the result: every text's length (as the scan counted it) and a few texts per
    class (already shortened; escaped when rendered)."""

    token_counts: Sequence[int] = ()
    examples: Mapping[str, Sequence[str]] = field(default_factory=dict)


def page_data(session: TextAdviceSession, *, per_class: int = 3) -> TextPageData:
    """The session's per-text lengths and a seeded few texts of each class."""
    from tl_advise.advisor.data.text.scan import class_examples

    return TextPageData(token_counts=session.token_counts,
                        examples=class_examples(session.dataset, per_class=per_class,
                                                seed=session.result.sample.seed))


def _recommendation(result: TextAdviceResult) -> str:
    rec = result.recommendation
    rows = [*recipe_lines(rec.recipe), ("backbone", result.backbone.name)]
    if rec.tfidf_bar is not None:
        rows.append(("bar to clear", f"{rec.tfidf_bar.accuracy:.2f}: TF-IDF + logistic regression "
                                     f"({rec.tfidf_bar.n_folds}-fold CV on {rec.tfidf_bar.n_texts} texts), against "
                                     f"{rec.tfidf_bar.embedding_accuracy:.2f} on frozen embeddings"))
    confidence = rec.confidence
    parts = [f'<p><span class="strategy">{escape(rec.strategy)}</span> — {escape(rec.title)} '
             f'<span class="muted">(rule <code>{escape(rec.rule_id)}</code>)</span></p>', kv(rows),
             "<h3>Why (the evidence)</h3>", '<ul class="why">', *(f"<li>{escape(w)}</li>" for w in rec.why), "</ul>",
             f"<h3>Confidence: {escape(confidence.level)}"
             + (f" (runner-up: {escape(confidence.runner_up)})" if confidence.runner_up else "") + "</h3>",
             "<ul>", *(f"<li>{escape(r)}</li>" for r in confidence.reasons), "</ul>"]
    if rec.alternatives:
        parts += ["<h3>Alternatives</h3>", '<p class="muted">--run --compare trains them beside the '
                  "recommendation.</p>", "<ul>",
                  *(f"<li><code>{escape(a.strategy)}</code>: {escape(a.reason)}</li>" for a in rec.alternatives),
                  "</ul>"]
    return section("recommendation", "".join(parts))


def _warnings(result: TextAdviceResult) -> str:
    rec = result.recommendation
    items: list[tuple[str, str, list[str]]] = [(w.id, w.message, []) for w in rec.warnings]
    items += [(f.code, f.message, f.examples) for f in result.findings]
    if not items:
        return section("warnings", '<p class="ok">No warning fired.</p>')
    body = "".join(f'<div class="warning"><strong>{escape(name)}</strong>: {escape(message)}'
                   + ("".join(f'<div class="small muted">{escape(e)}</div>' for e in examples[:3]))
                   + "</div>" for name, message, examples in items)
    return section("warnings", body, title=f"Warnings ({len(items)})")


def _similarity(result: TextAdviceResult) -> str:
    sim = result.similarity
    verb = "at or above" if sim.score >= sim.threshold else "below"
    rows = "".join(f'<tr><td>{escape(s.name)}</td><td class="num">{s.value:.3f}</td><td class="num">{s.score:.2f}'
                   f'</td><td class="num">{s.weight:g}</td><td class="num">{s.close_at:g}</td>'
                   f'<td class="num">{s.far_at:g}</td></tr>' for s in sim.scores)
    parts = [f"<p>Similarity to the backbone's source domain: <strong>{sim.score:.2f}</strong> {pill(sim.label)} "
             f"({verb} the threshold {sim.threshold:.2f}; profile <code>{escape(sim.profile)}</code>"
             + ("" if sim.calibrated else ", <strong>not calibrated</strong>") + ")</p>",
             "<p>Each signal on its ramp from <em>far</em> (score 0) to <em>close</em> (score 1); the weighted mean "
             "of the voting ones is the score.</p>",
             "<table><tr><th>signal</th><th>value</th><th>score</th><th>weight</th><th>close at</th><th>far at</th>"
             f"</tr>{rows}</table>"]
    return section("similarity", "".join(parts), title="Similarity to the backbone's source")


def _dataset(result: TextAdviceResult, data: TextPageData) -> str:
    ds = result.dataset
    parts = [f"<p>{escape(dataset_line(result))}.</p>",
             class_table(ds.classes, ds.class_counts, ds.split_counts, "texts"),
             _lengths(result, data), _examples(data, len(ds.classes))]
    return section("dataset", "".join(parts), title=f"Dataset: {escape(result.source.root)}")


def _lengths(result: TextAdviceResult, data: TextPageData) -> str:
    lengths = result.lengths
    text = f"<p>Lengths: {escape(length_line(result))}.</p>"
    if not data.token_counts:
        return section("lengths", text + '<p class="muted">No per-text lengths in this report.</p>',
                       title="Text lengths")
    fig = figures.length_histogram(list(data.token_counts), lengths.unit, lengths.max_length)
    note = (f'<p class="small muted">Dashed red: the backbone\'s max length ({lengths.max_length} tokens); '
            f"{counted(lengths.n_over_max, 'text')} beyond it {'is' if lengths.n_over_max == 1 else 'are'} cut.</p>"
            if lengths.max_length else "")
    return section("lengths", text + chart(fig, "text length histogram") + note, title="Text lengths")


def _examples(data: TextPageData, n_classes: int) -> str:
    if not data.examples:
        return section("examples", '<p class="muted">No example texts in this report.</p>',
                       title="Examples per class")
    shown = {name: '<ul class="small">' + "".join(f"<li>{escape(t)}</li>" for t in texts) + "</ul>"
             for name, texts in data.examples.items()}
    return section("examples", class_rows(shown, n_classes), title="Examples per class")


def _run(result: TextAdviceResult, run: TextRunReport) -> str:
    verdict = run.verdict
    reference = None
    if verdict.tfidf_bar is not None and all(r.strategy != "tfidf_linear" for r in run.runs):
        reference = ("TF-IDF bar (reference)", verdict.tfidf_bar,
                     "TF-IDF + logistic regression, cross-validated on the advice sample")
    return run_section(run, result.recommendation.strategy, result.dataset.classes, reference)


def render_text_html(result: TextAdviceResult, data: TextPageData | None = None) -> str:
    """The whole page for a text dataset (with its run section when ``result.run`` is set)."""
    data = data or TextPageData()
    subtitle = (f"{result.source.root} · tl-advise {result.tool_version} · backbone {result.backbone.name} · "
                f"sample: {result.sample.n_texts} texts (seed {result.sample.seed}) on {result.device}")
    return advice_page(f"tl-advise: {result.recommendation.strategy} for {Path(result.source.root).name}", subtitle,
                       [_recommendation(result), _warnings(result), _similarity(result), _dataset(result, data)],
                       _run(result, result.run) if result.run is not None else None,
                       f"Timings: {common.timings_line(result.timings)}")
