"""``report.html``: the advice (and a ``--run``) as one self-contained page to read at a glance.

One file: inline CSS, charts as base64 PNG (matplotlib), thumbnails as base64 JPEG, no script and no
external URL, so it opens anywhere (a CI artifact, an e-mail attachment, an MLflow artifact view).
Rendered from the ``AdviceResult`` like the text and Markdown formats; the thumbnails are the only
input beyond it (``advisor.report.thumbnails``), since the result does not carry pixels.
"""

from __future__ import annotations

import base64
import tomllib
from collections.abc import Mapping, Sequence
from html import escape
from importlib import resources
from pathlib import Path

from matplotlib.figure import Figure

from tl_advise.advisor.report import common, figures
from tl_advise.advisor.report.thumbnails import Thumbnail
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import AdviceResult, Metrics, RunReport, SimilarityReport
from tl_advise.schema.text import TextRunReport

AnyRunReport = RunReport | TextRunReport  # the run section reads only what both modalities' runs carry

# Section ids, in page order: the page's table of contents and what the tests look for.
ADVICE_SECTIONS = {"recommendation": "Recommendation", "warnings": "Warnings", "similarity": "Similarity",
                   "bn-profile": "BN-shift depth profile", "signals": "Signals", "dataset": "Dataset",
                   "thumbnails": "Samples"}
RUN_SECTIONS = {"run": "Run", "learning-curves": "Learning curves", "per-class-accuracy": "Per-class accuracy",
                "confusion-matrix": "Confusion matrices"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2933;
 background:#f4f6f8;margin:0}
main{max-width:1100px;margin:0 auto;padding:20px 28px 60px}
header{background:#1f2933;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;color:#cbd2d9}
nav{max-width:1100px;margin:0 auto;padding:8px 28px;font-size:13px}
nav a{color:#3e4c59;margin-right:14px;text-decoration:none;border-bottom:1px dotted #9aa5b1}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 22px;margin:16px 0}
section section{box-shadow:none;padding:0;margin:18px 0 0}
h2{font-size:18px;margin:0 0 10px} h3{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;margin:6px 0} td,th{padding:4px 10px;border-bottom:1px solid #e4e7eb;
 text-align:left;vertical-align:top} th{background:#f5f7fa;font-weight:600} td.num{text-align:right;
 font-variant-numeric:tabular-nums}
.kv th{width:150px;background:none;color:#52606d;font-weight:500}
.strategy{font-size:20px;font-weight:700;color:#0b6e4f} .muted{color:#7b8794} .small{font-size:12px}
.pill{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.similar,.close,.confirmed{background:#2e7d32} .different,.far,.refuted{background:#c62828}
.not_compared{background:#607d8b}
.warning{border-left:4px solid #f0b429;background:#fffbea;padding:6px 12px;margin:6px 0}
.ok{border-left:4px solid #2e7d32;background:#effaf0;padding:6px 12px}
.bar{background:#e4e7eb;border-radius:3px;height:12px;min-width:160px;position:relative}
.bar span{display:block;height:12px;border-radius:3px;background:#3f7cac}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;align-items:center}
.thumbs figure{margin:0;text-align:center} .thumbs img{border-radius:3px;display:block}
.classrow{display:flex;gap:12px;align-items:center;margin:8px 0;border-bottom:1px solid #f0f2f4;padding-bottom:8px}
.classrow .name{width:150px;font-weight:600;word-break:break-all}
img.chart{max-width:100%;height:auto;display:block}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
ul.why li{margin:3px 0} code{background:#f0f2f4;padding:0 4px;border-radius:3px;font-size:12.5px}
"""


# --------------------------------------------------------------------------- pieces


def _png(fig: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(figures.png_bytes(fig)).decode("ascii")


def chart(fig: Figure, alt: str) -> str:
    return f'<img class="chart" alt="{escape(alt)}" src="{_png(fig)}">'


def kv(rows: Sequence[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) \
        + "</table>"


def bar(fraction: float) -> str:
    width = max(0.0, min(1.0, fraction)) * 100
    return f'<div class="bar"><span style="width:{width:.1f}%"></span></div>'


def pill(text: str) -> str:
    return f'<span class="pill {escape(text)}">{escape(text)}</span>'


def reference_band(profile_key: str) -> tuple[tuple[float, float], str] | None:
    """The natural-photo BN-shift band for a backbone (``arch:WEIGHTS`` first, then ``arch``), if measured."""
    bands = tomllib.loads(resources.files("tl_advise.advisor.report").joinpath("reference_bands.toml")
                          .read_text(encoding="utf-8"))
    for key in (profile_key, profile_key.split(":", 1)[0]):
        if key in bands:
            entry = bands[key]
            return (float(entry["low"]), float(entry["high"])), str(entry["source"])
    return None


# --------------------------------------------------------------------------- sections


def _recommendation(result: AdviceResult) -> str:
    rec = result.recommendation
    rows = [*common.recipe_rows(result), ("confidence", common.confidence_line(rec))]
    parts = [f'<p><span class="strategy">{escape(rec.strategy)}</span> — '
             f"{escape(common.title(rec))} <span class=\"muted\">(rule "
             f"<code>{escape(rec.rule_id)}</code>)</span></p>", kv(rows),
             "<h3>Why (the evidence)</h3>", '<ul class="why">',
             *(f"<li>{escape(reason)}</li>" for reason in rec.why), "</ul>",
             f"<h3>Confidence: {escape(rec.confidence.level)}</h3>", "<ul>",
             *(f"<li>{escape(reason)}</li>" for reason in rec.confidence.reasons), "</ul>"]
    if rec.alternatives:
        parts += ["<h3>Alternatives</h3>", '<p class="muted">--run --compare trains them beside the '
                  "recommendation.</p>", "<ul>",
                  *(f"<li><code>{escape(a.strategy)}</code>"
                    f"{' (runner-up)' if a.strategy == rec.confidence.runner_up else ''}: {escape(a.reason)}</li>"
                    for a in rec.alternatives),
                  "</ul>"]
    return section("recommendation", "".join(parts))


def _warnings(result: AdviceResult) -> str:
    warnings = result.recommendation.warnings
    if not warnings:
        return section("warnings", '<p class="ok">No warning fired.</p>')
    body = "".join(f'<div class="warning"><strong>{escape(w.id)}</strong>: {escape(w.message)}</div>'
                   for w in warnings)
    return section("warnings", body, title=f"Warnings ({len(warnings)})")


def _similarity(result: AdviceResult) -> str:
    sim: SimilarityReport = result.similarity
    verb = common.threshold_relation(sim)
    parts = [f"<p>Similarity to the backbone's source domain: <strong>{sim.score:.2f}</strong> "
             f"{pill(sim.label)} ({verb} the threshold {sim.threshold:.2f}; shift level "
             f"<code>{escape(sim.shift_level)}</code>)"
             + ("" if result.backbone.calibrated else " — <strong>thresholds not calibrated for this backbone</strong>")
             + "</p>"]
    if sim.head:
        top = common.top_classes(sim.head)
        parts.append(f"<p>Source head: mean max probability {sim.head.mean_max_prob:.2f}, normalised entropy "
                     f"{sim.head.mean_entropy:.2f}; most predicted: {escape(top)}</p>")
    if sim.separability:
        sep = sim.separability
        rows = [("k-NN accuracy", sep.knn_accuracy, sep.pixel_knn_accuracy, sep.knn_gain),
                ("logistic regression", sep.logreg_accuracy, sep.pixel_logreg_accuracy, sep.logreg_gain),
                ("LogME", sep.logme, sep.pixel_logme, sep.logme_gain)]
        parts += [f"<p>Frozen features against raw 32×32 pixels ({sep.n_folds}-fold CV on {sep.n_images} images, "
                  f"chance {sep.chance:.2f}):</p><table><tr><th></th><th>frozen features</th><th>raw pixels</th>"
                  "<th>gain</th></tr>",
                  *(f'<tr><td>{name}</td><td class="num">{a:.3f}</td><td class="num">{b:.3f}</td>'
                    f'<td class="num">{g:+z.3f}</td></tr>' for name, a, b, g in rows), "</table>"]
    parts += [f'<p class="muted small">note: {escape(note)}</p>' for note in sim.notes]
    parts += [_bn_profile(result), _signals(sim)]
    return section("similarity", "".join(parts), title="Similarity to ImageNet")


def _bn_profile(result: AdviceResult) -> str:
    bn = result.similarity.bn_shift
    if bn is None:
        return section("bn-profile", '<p class="muted">This backbone has no batch-norm layers: no depth profile '
                        "(the other signals carry the score).</p>")
    band = reference_band(result.backbone.profile_key)
    label = f"natural photos ({band[0][0]:.2f}–{band[0][1]:.2f})" if band else ""
    fig = figures.bn_profile(bn, band[0] if band else None, label)
    source = (f"Green band: where natural photos sit for this backbone — {escape(band[1])}." if band else
              "No natural-photo band has been measured for this backbone, so none is drawn.")
    text = (f"<p>Shift of each of the {bn.n_layers} batch-norm layers' input statistics from the ImageNet "
            "statistics they store (normalised W2), from the first layer to the last. Early layers react to "
            "low-level image statistics (colour, resolution, sensor), late layers to content. "
            f"{source}</p>")
    return section("bn-profile", text + chart(fig, "BN-shift depth profile"))


def _signals(sim: SimilarityReport) -> str:
    text = ("<p>Each signal mapped onto a ramp from <em>different</em> (red, score 0) to <em>similar</em> "
            "(green, score 1); the black line is this dataset. The weighted mean of the voting signals is the "
            "combined score, compared with the threshold at the bottom.</p>")
    rows = "".join(f'<tr><td>{escape(c.signal)}</td><td class="num">{c.value:.3f}</td><td class="num">{c.score:.2f}'
                   f'</td><td class="num">{c.weight:g}</td><td class="num">{c.similar_at:g}</td>'
                   f'<td class="num">{c.different_at:g}</td></tr>' for c in sim.components)
    table = ("<details><summary class=\"small\">the numbers</summary><table><tr><th>signal</th><th>value</th>"
             f"<th>score</th><th>weight</th><th>similar at</th><th>different at</th></tr>{rows}</table></details>")
    return section("signals", text + chart(figures.signal_ramps(sim), "signal ramps") + table)


def _dataset(result: AdviceResult, thumbnails: Mapping[str, Sequence[Thumbnail]] | None) -> str:
    ds = result.dataset
    parts = [f"<p>{escape(common.dataset_line(result))}; image modes: {escape(common.modes_line(ds.modes))}; "
             f"{counted(len(ds.duplicates), 'duplicate group')}, {sum(g.cross_split for g in ds.duplicates)} across "
             f"splits; {counted(len(ds.skipped), 'file')} skipped.</p>",
             class_table(ds.classes, ds.class_counts, ds.split_counts, "images")]
    if ds.skipped:
        shown = ds.skipped[:20]
        parts += ["<h3>Skipped files</h3><table><tr><th>file</th><th>reason</th></tr>",
                  *(f"<tr><td><code>{escape(s.path)}</code></td><td>{escape(s.reason)}</td></tr>" for s in shown),
                  "</table>"]
        if len(ds.skipped) > len(shown):
            parts.append(f'<p class="muted">… and {len(ds.skipped) - len(shown)} more (see the JSON report)</p>')
    parts.append(_thumbnails(thumbnails, len(ds.classes)))
    return section("dataset", "".join(parts), title=f"Dataset: {escape(ds.root)}")


def class_table(classes: Sequence[str], class_counts: Mapping[str, int],
                split_counts: Mapping[str, Mapping[str, int]], unit: str) -> str:
    """Items per class and split (``unit``: images, texts), each class's total with a bar."""
    splits = list(split_counts) if len(split_counts) > 1 else []  # a flat folder: the total says it all
    biggest = max(class_counts.values(), default=1) or 1
    header = "".join(f"<th>{escape(s)}</th>" for s in splits)
    rows = "".join(
        f"<tr><td>{escape(name)}</td>"
        + "".join(f'<td class="num">{split_counts[s].get(name, 0)}</td>' for s in splits)
        + f'<td class="num">{class_counts.get(name, 0)}</td>'
        + f"<td>{bar(class_counts.get(name, 0) / biggest)}</td></tr>"
        for name in classes)
    return f"<table><tr><th>class</th>{header}<th>{escape(unit)}</th><th></th></tr>{rows}</table>"


def _thumbnails(thumbnails: Mapping[str, Sequence[Thumbnail]] | None, n_classes: int) -> str:
    if not thumbnails:
        return section("thumbnails", '<p class="muted">No sample images in this report (rendered without '
                        "access to the dataset's files).</p>", title="Samples per class")
    shown = {name: '<div class="thumbs">' + "".join(
        f'<figure><img src="{t.data_uri}" width="{t.width}" height="{t.height}" alt="{escape(t.path)}" '
        f'title="{escape(t.path)}"></figure>' for t in thumbs) + "</div>" for name, thumbs in thumbnails.items()}
    return section("thumbnails", class_rows(shown, n_classes), title="Samples per class")


def class_rows(shown: Mapping[str, str], n_classes: int) -> str:
    """One row per class: its name, then what the page shows of it (HTML: thumbnails, example texts); a note when
    only the first classes are shown."""
    rows = [f'<p class="muted">The first {len(shown)} of {n_classes} classes.</p>'] if len(shown) < n_classes else []
    rows += [f'<div class="classrow"><div class="name">{escape(name)}</div>{body}</div>'
             for name, body in shown.items()]
    return "".join(rows)


def _run(result: AdviceResult, run: RunReport) -> str:
    verdict = run.verdict
    reference = None
    if verdict.pixel_baseline is not None:
        reference = ("raw-pixel baseline (reference)", verdict.pixel_baseline,
                     "linear model on 32×32 pixels, 5-fold CV on the advice sample")
    return run_section(run, result.recommendation.strategy, result.dataset.classes, reference)


def run_section(run: AnyRunReport, recommended: str, classes: Sequence[str],
                reference: tuple[str, float, str] | None = None) -> str:
    """The run: verdict, one row per strategy (and the ``reference`` row: name, accuracy, what it is), learning
    curves, per-class accuracy and confusion matrices on the split the verdict reads."""
    verdict = run.verdict
    head = ("<tr><th>strategy</th><th>status</th><th>val acc</th><th>balanced</th><th>macro F1</th>"
            "<th>test acc</th><th>epochs (best)</th><th>time</th></tr>")
    rows = []
    for r in run.runs:
        name = f"<strong>{escape(r.strategy)}</strong> (recommended)" if r.strategy == recommended \
            else escape(r.strategy)
        if r.val is None:
            rows.append(f"<tr><td>{name}</td><td>{escape(r.status)}</td>"
                        f'<td colspan="6">{escape(r.error or "")}</td></tr>')
            continue
        rows.append(f"<tr><td>{name}</td><td>{escape(r.status)}</td><td class=\"num\">{common.pct(r.val.accuracy)}</td>"
                    f'<td class="num">{common.pct(r.val.balanced_accuracy)}</td>'
                    f'<td class="num">{r.val.macro_f1:.3f}</td>'
                    f'<td class="num">{common.pct(r.test.accuracy) if r.test else "–"}</td>'
                    f'<td class="num">{r.epochs_run} ({r.best_epoch})</td>'
                    f'<td class="num">{r.train_time_s:.1f} s</td></tr>')
    if reference is not None:
        label, accuracy, what = reference
        rows.append(f'<tr><td>{escape(label)}</td><td>–</td><td class="num">{common.pct(accuracy)}</td>'
                    f'<td colspan="5" class="muted">{escape(what)}</td></tr>')
    parts = [f"<p>Verdict: {pill(verdict.status)} {escape(verdict.message)}</p>",
             f'<p class="muted">{escape(common.margin_line(run))}</p>',
             f'<p class="muted">Device {escape(run.device)}; validation: {escape(run.validation)}; '
             f"outputs in <code>{escape(run.output_dir)}</code>.</p>",
             f"<table>{head}{''.join(rows)}</table>",
             _learning_curves(run), _per_class(classes, run), _confusion(classes, run)]
    return section("run", "".join(parts), title="Run: does training confirm the advice?")


def _learning_curves(run: AnyRunReport) -> str:
    fig = figures.learning_curves(run.runs)
    if fig is None:
        return section("learning-curves", '<p class="muted">No strategy trained an epoch.</p>')
    text = ('<p class="small muted">Top: train and validation loss; bottom: validation accuracy. Dotted: the '
            "switch from the head phase to fine-tuning; dashed red: the best epoch (the model kept).</p>")
    return section("learning-curves", text + chart(fig, "learning curves"))


def _judged(run: AnyRunReport) -> tuple[str, list[tuple[str, Metrics]]]:
    """The split the verdict reads ("test" or "validation") and each measured strategy's metrics on it: the
    per-class table and the confusion matrices show what the verdict judged."""
    on_test = run.verdict.judged_on == "test"
    measured = [(r.strategy, r.test if on_test else r.val) for r in run.runs]
    return ("test" if on_test else "validation"), [(name, m) for name, m in measured if m is not None]


def _per_class(classes: Sequence[str], run: AnyRunReport) -> str:
    split, measured = _judged(run)
    if not measured:
        return section("per-class-accuracy", '<p class="muted">Nothing was measured.</p>')
    header = "".join(f"<th>{escape(name)}</th>" for name, _ in measured)
    rows = []
    for name in classes:
        cells = []
        for _, metrics in measured:
            value = metrics.per_class_accuracy.get(name)
            cells.append("<td>–</td>" if value is None else
                         f'<td><div class="num small">{common.pct(value)}</div>{bar(value)}</td>')
        rows.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    return section("per-class-accuracy", f'<p class="small muted">Accuracy per class (recall) of each strategy\'s '
                    f"best model on the {split} split, the one the verdict reads.</p>"
                    f"<table><tr><th>class</th>{header}</tr>{''.join(rows)}</table>")


def _confusion(classes: Sequence[str], run: AnyRunReport) -> str:
    split, measured = _judged(run)
    charts = [chart(figures.confusion_matrix(metrics, classes, name), f"confusion {name}")
              for name, metrics in measured]
    if not charts:
        return section("confusion-matrix", '<p class="muted">Nothing was measured.</p>')
    return section("confusion-matrix", f'<p class="small muted">The {split} split, the one the verdict reads; rows '
                    "are the true class, columns the prediction, colour the share of the row.</p>"
                    f'<div class="grid">{"".join(f"<div>{c}</div>" for c in charts)}</div>')


def section(section_id: str, body: str, *, title: str | None = None) -> str:
    heading = title or ADVICE_SECTIONS.get(section_id) or RUN_SECTIONS[section_id]
    level = "h2" if section_id in ("recommendation", "warnings", "similarity", "dataset", "run") else "h3"
    return f'<section id="{section_id}"><{level}>{heading}</{level}>{body}</section>'


# --------------------------------------------------------------------------- the page


def render_html(result: AdviceResult, thumbnails: Mapping[str, Sequence[Thumbnail]] | None = None) -> str:
    """The whole page. ``thumbnails``: class -> a few images (``advisor.report.thumbnails.class_thumbnails``)."""
    rec, ds = result.recommendation, result.dataset
    subtitle = (f"{ds.root} · tl-advise {result.tool_version} · backbone {result.backbone.name} · "
                f"sample: {common.sample_line(result)}")
    return advice_page(f"tl-advise: {rec.strategy} for {Path(ds.root).name}", subtitle,
                       [_recommendation(result), _warnings(result), _similarity(result), _dataset(result, thumbnails)],
                       _run(result, result.run) if result.run is not None else None,
                       f"Timings: {common.timings_line(result.timings)}")


def advice_page(title: str, subtitle: str, sections: Sequence[str], run: str | None, footer: str) -> str:
    """An advice page of either modality: its four sections (recommendation, warnings, similarity, dataset) in
    the table of contents, then the run's section when there is one."""
    nav = [("recommendation", "Recommendation"), ("warnings", "Warnings"), ("similarity", "Similarity"),
           ("dataset", "Dataset")] + ([("run", "Run")] if run is not None else [])
    return page(title, subtitle, nav, [*sections, *([run] if run is not None else [])], footer)


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: Sequence[str], footer: str) -> str:
    """One self-contained page: the header, the table of contents (section id, label), the sections, a footer
    line (texts are escaped here; ``body`` is HTML)."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>",
        "<nav>" + "".join(f'<a href="#{i}">{escape(t)}</a>' for i, t in nav) + "</nav>",
        "<main>", *body, f'<p class="muted small">{escape(footer)}</p>', "</main></body></html>", ""])


def write_html(text: str, path: Path, dataset_root: str | Path) -> Path:
    """Write the page atomically, never inside the dataset (the one write-path check)."""
    from tl_advise.advisor.writable import atomic_write_text, check_write_path

    target = check_write_path(path, dataset_root, "The HTML report (--html)")
    if target.is_dir():
        from tl_advise.schema.errors import ConfigError

        raise ConfigError(f"--html {path}: {target} is a folder; give a file name, e.g. {target / 'report.html'}")
    atomic_write_text(text, target)
    return target
