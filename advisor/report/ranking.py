"""The backbone ranking as text, Markdown, JSON, or an HTML fragment for the visual report.

One function per format, all rendering the same ``RankingResult``; ``RANKING_FORMATTERS`` maps every
format name to its function (a test checks they agree).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable

from tl_advise.schema.formatting import fmt_lr, per_class
from tl_advise.schema.models import Recommendation, printable
from tl_advise.schema.ranking import RankedBackbone, RankingResult

SCORE_TITLES = {"logreg_accuracy": "logreg", "knn_accuracy": "k-NN", "logme": "LogME"}
HEADERS = ("rank", "backbone", "logreg", "k-NN", "LogME", "gap (± s.e.)", "params (no head)", "GFLOPs", "img/s", "px",
           "Pareto", "strategy", "unfreeze")


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def _gap(r: RankedBackbone) -> str:
    if r.rank == 1:
        return "best"
    se = f" ± {r.gap_se:.3f}" if r.gap_se is not None else ""
    tie = " (tie)" if r.within_noise else ""
    return f"{-r.gap_to_best:z.3f}{se}{tie}"  # z: a tie at 0 reads 0.000, never -0.000


def _row(r: RankedBackbone, chosen: str) -> list[str]:
    mark = " ←" if r.spec == chosen else ""
    return [str(r.rank), f"{r.spec}{mark}", f"{r.scores.logreg_accuracy:.3f}", f"{r.scores.knn_accuracy:.3f}",
            f"{r.scores.logme:.3f}", _gap(r), _millions(r.cost.parameters),
            f"{r.cost.gflops:.2f}" if r.cost.gflops is not None else "n/a",
            f"{r.cost.images_per_second:.0f}" if r.cost.images_per_second is not None else "n/a",
            str(r.cost.input_size), "yes" if r.pareto else "", r.strategy, r.unfreeze_summary]


def _rates(rec: Recommendation) -> str:
    rates = rec.learning_rate
    if rates.backbone is None:
        return f"head {fmt_lr(rates.head)} ({rec.optimizer}); backbone frozen"
    text = f"head {fmt_lr(rates.head)}, backbone {fmt_lr(rates.backbone)} ({rec.optimizer})"
    if rates.per_stage:
        text += "; per stage " + ", ".join(f"{s} {fmt_lr(v)}" for s, v in rates.per_stage.items())
    return text


def _advice_lines(result: RankingResult) -> list[tuple[str, str]]:
    chosen = next(r for r in result.candidates if r.spec == result.recommended.spec)
    rec = result.recommended.recommendation
    pre = chosen.backbone.preprocessing
    return [
        ("strategy", f"{rec.strategy} — {rec.title} (rule {rec.rule_id}, confidence {rec.confidence.level})"),
        ("unfreeze", f"{rec.unfreeze_summary}" + (f": {', '.join(rec.unfreeze)}" if rec.unfreeze else "")),
        ("learning rate", _rates(rec)),
        ("schedule", "; ".join(f"{p.name}: {p.epochs} epochs at {fmt_lr(p.learning_rate)}" for p in rec.schedule)),
        ("input", f"{pre.input_size} px ({pre.interpolation}, crop {pre.crop_pct:g}, mean {list(pre.mean)}, "
                  f"std {list(pre.std)})"),
        ("train it", f"tl-advise {_shell(result.dataset.root)} --for {chosen.spec}{_weights_option(chosen)} --run"),
    ]


def _weights_option(chosen: RankedBackbone) -> str:
    """`` --weights PATH`` when the candidate was measured with a local checkpoint (its weights id ``file:PATH``)."""
    if chosen.backbone.source != "file":
        return ""
    return f" --weights {_shell(chosen.backbone.weights.removeprefix('file:'))}"


def _shell(path: str) -> str:
    return path if all(c.isalnum() or c in "/._-~+" for c in path) else "'" + path.replace("'", "'\\''") + "'"


def _similarity_line(result: RankingResult) -> str:
    sim = result.similarity
    return (f"{sim.score:.2f} → {sim.label} (threshold {sim.threshold:.2f}), measured by the probe "
            f"{result.probe.name} ({'calibrated' if result.probe.calibrated else 'uncalibrated'})")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render_text(result: RankingResult) -> str:
    d = result.dataset
    lines = [
        f"tl-advise {result.tool_version} · backbone ranking · {d.root}",
        f"Dataset: {d.n_images} images, {len(d.classes)} classes; median {per_class(d.images_per_class, 'image')}; "
        f"sample {result.sample_images} (seed {result.seed})",
        f"Similarity: {_similarity_line(result)}",
        "",
        f"Recommended: {result.recommended.spec}",
        f"  why:           {result.recommended.reason}",
        *(f"  {name + ':':14s} {value}" for name, value in _advice_lines(result)),
        "",
        f"Candidates (ranked by {SCORE_TITLES[result.score_name]}; cross-validated on the sample; img/s measured "
        "here):",
        *_table([list(HEADERS), *(_row(r, result.recommended.spec) for r in result.candidates)]),
        "",
        "Notes:",
        *(f"  - {n}" for n in result.notes),
        "Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()),
    ]
    return "\n".join(printable(line) for line in lines) + "\n"


def _md_cell(text: str) -> str:
    return printable(text).replace("|", "\\|")


def render_markdown(result: RankingResult) -> str:
    d = result.dataset
    lines = [
        f"## Backbone ranking: `{_md_cell(d.root)}`",
        "",
        f"{d.n_images} images, {len(d.classes)} classes (median {d.images_per_class:g} per class); sample "
        f"{result.sample_images}, seed {result.seed}. Similarity {_md_cell(_similarity_line(result))}.",
        "",
        f"**Recommended: `{_md_cell(result.recommended.spec)}`** — {_md_cell(result.recommended.reason)}",
        "",
        *(f"- **{name}**: {_md_cell(value)}" for name, value in _advice_lines(result)),
        "",
        f"Ranked by {SCORE_TITLES[result.score_name]} (cross-validated on the sample; img/s measured here):",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---:" if h in ("rank", "logreg", "k-NN", "LogME", "params (no head)", "GFLOPs", "img/s", "px")
                       else "---" for h in HEADERS) + "|",
        *("| " + " | ".join(_md_cell(c) for c in _row(r, result.recommended.spec)) + " |" for r in result.candidates),
        "",
        *(f"- {_md_cell(n)}" for n in result.notes),
        "",
    ]
    return "\n".join(lines)


def render_json(result: RankingResult) -> str:
    return json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def render_html_fragment(result: RankingResult) -> str:
    """A ``<section>`` for the visual report: the recommendation, the table, a score-against-FLOPs view of the
    Pareto front (inline SVG, no script)."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    chosen = ' class="chosen"'
    body = "".join(
        f"<tr{chosen if r.spec == result.recommended.spec else ''}>"
        + "".join(f"<td>{e(printable(c))}</td>" for c in _row(r, result.recommended.spec)) + "</tr>"
        for r in result.candidates)
    advice = "".join(f"<dt>{e(k)}</dt><dd>{e(printable(v))}</dd>" for k, v in _advice_lines(result))
    notes = "".join(f"<li>{e(printable(n))}</li>" for n in result.notes)
    return (
        '<section class="tl-ranking">'
        f"<h2>Backbone ranking</h2><p>Similarity {e(_similarity_line(result))}.</p>"
        f"<p><strong>Recommended: {e(result.recommended.spec)}</strong> — {e(printable(result.recommended.reason))}</p>"
        f"<dl>{advice}</dl>{_pareto_svg(result)}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><ul>{notes}</ul></section>"
    )


def render_html_page(result: RankingResult) -> str:
    """A self-contained page around the fragment (``--html``)."""
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}td:nth-child(2),td:nth-child(12),"
             "td:nth-child(13){text-align:left}tr.chosen{background:#eef6ee}dt{font-weight:bold}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>tl-advise backbone ranking"
            f"</title><style>{style}</style></head><body>{render_html_fragment(result)}</body></html>\n")


def _pareto_svg(result: RankingResult, width: int = 420, height: int = 220) -> str:
    points = [(r.cost.gflops, r.score, r) for r in result.candidates if r.cost.gflops is not None]
    if len(points) < 2:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = 40

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    front = sorted((p for p in points if p[2].pareto), key=lambda p: p[0])
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in front)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{"#2a7" if r.pareto else "#999"}"/>'
        f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 7:.1f}" font-size="11">{html.escape(printable(r.spec))}</text>'
        for x, y, r in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="score against GFLOPs">'
            f'<polyline points="{path}" fill="none" stroke="#2a7" stroke-dasharray="4 3"/>{dots}'
            f'<text x="{width / 2:.0f}" y="{height - 8}" font-size="11" text-anchor="middle">GFLOPs per image</text>'
            f'<text x="12" y="{height / 2:.0f}" font-size="11" transform="rotate(-90 12 {height / 2:.0f})" '
            f'text-anchor="middle">{SCORE_TITLES[result.score_name]}</text></svg>')


RANKING_FORMATTERS: dict[str, Callable[[RankingResult], str]] = {
    "text": render_text,
    "json": render_json,
    "markdown": render_markdown,
}


def render_ranking(result: RankingResult, fmt: str = "text") -> str:
    return RANKING_FORMATTERS[fmt](result)
