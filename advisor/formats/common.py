"""Small phrases shared by the human-readable formats."""

from __future__ import annotations

from tl_advise.schema.models import (
    AdviceResult,
    HeadSignals,
    Phase,
    Recommendation,
    RunReport,
    SimilarityReport,
    StrategyRun,
    recipe_lines,
)

STRATEGY_TITLES = {
    "feature_extraction": "freeze the backbone, train a new head",
    "feature_extraction_top_layers": "freeze most of the backbone, train the head and the top stages",
    "finetune_last_layers": "fine-tune the last stages after training the head",
    "finetune_more_layers": "fine-tune more stages after training the head",
    "full_finetune": "fine-tune the whole network after training the head",
    "from_scratch": "train the architecture from random weights",
}


def lr(value: float | None) -> str:
    return "frozen" if value is None else f"{value:.0e}".replace("e-0", "e-")


def schedule(phases: list[Phase]) -> str:
    return "; ".join(f"{p.name}: {p.epochs} epochs at {lr(p.learning_rate)} ({', '.join(p.trains)})"
                     for p in phases)


def schedule_line(rec: Recommendation) -> str:
    """The phases, then how the learning rate moves within them."""
    return f"{schedule(rec.schedule)} · {recipe_lines(rec).lr_schedule}"


def augmentation(rec: Recommendation) -> str:
    return ", ".join(recipe_lines(rec).augmentation) or "none"


def regularization(rec: Recommendation) -> str:
    return ", ".join(recipe_lines(rec).regularization) or "none"


def rates(rec: Recommendation) -> str:
    out = f"head {lr(rec.learning_rate.head)}, backbone {lr(rec.learning_rate.backbone)} ({rec.optimizer}"
    out += f", weight decay {rec.weight_decay:g})" if rec.weight_decay else ")"
    return out


def confidence_line(rec: Recommendation) -> str:
    c = rec.confidence
    out = f"{c.level}"
    if c.runner_up:
        out += f" (runner-up: {c.runner_up})"
    return out + (f" — {c.suggestion}" if c.suggestion else "")


def pixel_bar(rec: Recommendation) -> str | None:
    """The raw-pixel bar as one phrase, or None when it was not measured."""
    bar = rec.pixel_baseline
    if bar is None:
        return None
    verdict = "as good as" if bar.beats_features else "below"
    return (f"{bar.accuracy:.2f}: a linear model on raw 32x32 pixels (5-fold CV on the sample), {verdict} the "
            f"same model on frozen features ({bar.features_accuracy:.2f}); any strategy must beat it")


def threshold_relation(sim: SimilarityReport) -> str:
    """How the score stands to the threshold: "at or above" (similar) or "below" (different)."""
    return "at or above" if sim.label == "similar" else "below"


def top_classes(head: HeadSignals) -> str:
    """The source head's most predicted classes with their shares, e.g. "ant 42%, bee 42%"."""
    return ", ".join(f"{name} {share:.0%}" for name, share in head.top_classes)


def dataset_line(result: AdviceResult) -> str:
    ds = result.dataset
    splits = ", ".join(f"{name} {sum(counts.values())}" for name, counts in ds.split_counts.items())
    line = (f"{ds.n_images} images, {len(ds.classes)} classes ({splits}); "
            f"median {ds.images_per_class:g} per class in {ds.train_split}, imbalance {ds.imbalance_ratio:.2f}")
    return line + (f"; labels from {', '.join(ds.manifests)}" if ds.manifests else "")


def audit_line(result: AdviceResult) -> str | None:
    """How many image headers the scan read, or None for a summary without that record."""
    audit = result.dataset.audit
    if audit is None:
        return None
    unreadable = f"; {audit.n_unreadable:,} unreadable among them" if audit.n_unreadable else ""
    if audit.n_not_audited == 0:
        return f"all {audit.n_audited:,} read{unreadable}"
    return (f"{audit.n_audited:,} read (a seeded share, seed {audit.seed}, and the sample){unreadable}; "
            f"{audit.n_not_audited:,} counted from name and size only (--audit all reads every one)")


def modes_line(modes: dict[str, int]) -> str:
    return ", ".join(f"{mode} {n}" for mode, n in modes.items())


def timings_line(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items())


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _run_row(run: StrategyRun, recommended: str) -> str:
    name = f"**{run.strategy}** (recommended)" if run.strategy == recommended else run.strategy
    if run.val is None:
        return f"| {name} | {run.status} | – | – | – | – | – | – | {run.error or ''} |"
    test = pct(run.test.accuracy) if run.test else "–"
    return (f"| {name} | {run.status} | {pct(run.val.accuracy)} | {pct(run.val.balanced_accuracy)} | "
            f"{run.val.macro_f1:.3f} | {test} | {run.epochs_run} (best {run.best_epoch}) | "
            f"{run.train_time_s:.1f} s, {run.images_per_s:.1f} img/s | |")


def run_table(report: RunReport, recommended: str) -> list[str]:
    """The per-strategy results as Markdown table lines (used by the report and the markdown format)."""
    rows = [
        "| strategy | status | val acc | val balanced acc | val macro F1 | test acc | epochs | time | note |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_run_row(run, recommended) for run in report.runs),
    ]
    if report.verdict.pixel_baseline is not None:
        rows.append(f"| raw-pixel baseline (reference) | – | {pct(report.verdict.pixel_baseline)} | – | – | – | – | – "
                    "| linear model on 32x32 pixels, 5-fold CV on the advice sample, not the validation split |")
    return rows


def margin_line(report: RunReport) -> str:
    verdict = report.verdict
    return (f"margin for 'confirmed': {100 * verdict.margin:.1f} pts of {verdict.judged_on} accuracy "
            f"({verdict.margin_rule})")
