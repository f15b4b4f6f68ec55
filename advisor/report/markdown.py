"""Markdown: for pull-request comments, CI summaries and reports."""

from __future__ import annotations

from tl_advise.advisor.report import common
from tl_advise.schema.models import AdviceResult


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def render(result: AdviceResult, *, explain: bool = True) -> str:
    """The whole report, evidence included (``explain`` is for the text format's sake: Markdown always explains)."""
    rec, sim, ds = result.recommendation, result.similarity, result.dataset
    lines = [
        f"# tl-advise: `{rec.strategy}` for `{ds.root}`",
        "",
        f"**{common.title(rec)}** (rule `{rec.rule_id}`, backbone `{result.backbone.name}`)",
        "",
        *_table(["", ""], [[label, value] for label, value in common.recipe_rows(result)]
                + [["confidence", common.confidence_line(rec)]]),
        "",
        "## Why",
        "",
        *(f"- {reason}" for reason in rec.why),
        "",
        f"## Confidence: {rec.confidence.level}",
        "",
        *(f"- {reason}" for reason in rec.confidence.reasons),
        "",
        f"## Similarity: {sim.score:.2f} → {sim.label} (threshold {sim.threshold:.2f}, shift level {sim.shift_level})",
        "",
        *_table(["signal", "value", "score", "weight", "similar at", "different at"], [
            [c.signal, f"{c.value:.3f}", f"{c.score:.2f}", f"{c.weight:g}", f"{c.similar_at:g}", f"{c.different_at:g}"]
            for c in sim.components
        ]),
    ]
    if sim.separability:
        sep = sim.separability
        lines += ["", *_table(["classifier", "frozen features", "raw pixels", "gain"], [
            ["k-NN accuracy", f"{sep.knn_accuracy:.3f}", f"{sep.pixel_knn_accuracy:.3f}", f"{sep.knn_gain:+z.3f}"],
            ["logistic regression", f"{sep.logreg_accuracy:.3f}", f"{sep.pixel_logreg_accuracy:.3f}",
             f"{sep.logreg_gain:+z.3f}"],
            ["LogME", f"{sep.logme:.3f}", f"{sep.pixel_logme:.3f}", f"{sep.logme_gain:+z.3f}"],
        ])]
    if rec.warnings:
        lines += ["", "## Warnings", "", *(f"- **{w.id}**: {w.message}" for w in rec.warnings)]
    if rec.alternatives:
        lines += ["", "## Alternatives", "", "`--run --compare` trains them beside the recommendation.", "",
                  *(f"- `{a.strategy}`{' (runner-up)' if a.strategy == rec.confidence.runner_up else ''}: {a.reason}"
                    for a in rec.alternatives)]
    if result.run is not None:
        run = result.run
        lines += ["", f"## Run: {run.verdict.status}", "", run.verdict.message, "", common.margin_line(run), "",
                  f"Device {run.device}; validation: {run.validation}; outputs in `{run.output_dir}`.", "",
                  *common.run_table(run, rec.strategy)]
    lines += ["", "## Dataset", "", f"{common.dataset_line(result)}; modes: {common.modes_line(ds.modes)}"]
    if audit := common.audit_line(result):
        lines += ["", f"Image files: {audit}."]
    if ds.skipped:
        lines += ["", *_table(["skipped file", "reason"], [[f"`{s.path}`", s.reason] for s in ds.skipped])]
    lines += ["", f"_Sample: {common.sample_line(result)}. Timings: {common.timings_line(result.timings)}._", ""]
    return "\n".join(lines)
