"""Small phrases shared by the human-readable formats."""

from __future__ import annotations

from tl_advise.advisor.timing import nested_timings
from tl_advise.schema.formatting import fmt_lr, per_class
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
from tl_advise.schema.text import TextRunReport


def lr(value: float | None) -> str:
    """A learning rate as it trains (``fmt_lr``: exact, ``2.5e-6``), or "frozen"."""
    return "frozen" if value is None else fmt_lr(value)


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


def title(rec: Recommendation) -> str:
    """The strategy's title from the rules (a report from before titles were recorded: its id)."""
    return rec.title or rec.strategy.replace("_", " ")


def per_stage(rec: Recommendation) -> str | None:
    """The discriminative rates, stage by stage, exactly as they train; None when there are none."""
    rates = rec.learning_rate.per_stage
    return ", ".join(f"{stage} {lr(rate)}" for stage, rate in rates.items()) if rates else None


def recipe_rows(result: AdviceResult) -> list[tuple[str, str]]:
    """The recommendation's recipe as (label, value) rows: the same rows, in the same order, in every format."""
    rec = result.recommendation
    rows = [("unfreeze", rec.unfreeze_summary), ("learning rate", rates(rec))]
    if (stages := per_stage(rec)) is not None:
        rows.append(("per stage", stages))
    rows += [("schedule", schedule_line(rec)),
             ("batch size", f"{rec.batch_size} · GPU {'advised' if rec.gpu_advised else 'not needed'}"),
             ("augmentation", augmentation(rec)), ("regularise", regularization(rec)),
             ("backbone", f"{result.backbone.name} ({result.backbone.weights})")]
    if (bar := pixel_bar(rec)) is not None:
        rows.append(("bar to clear", bar))
    return rows


def alternatives_line(rec: Recommendation) -> str:
    """The alternatives by name, the confidence's runner-up marked: what ``--run --compare`` trains."""
    runner_up = rec.confidence.runner_up
    return ", ".join(a.strategy + (" (runner-up)" if a.strategy == runner_up else "") for a in rec.alternatives)


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
            f"median {per_class(ds.images_per_class, 'image')} in {ds.train_split}"
            f"{f' as trained (--max-train-per-class {ds.train_cap})' if ds.train_cap else ''}, "
            f"imbalance {ds.imbalance_ratio:.2f}")
    return line + (f"; labels from {', '.join(ds.manifests)}" if ds.manifests else "")


def audit_line(result: AdviceResult) -> str | None:
    """How many image files were opened and checked (format, size, truncation), or None for a summary
    without that record."""
    audit = result.dataset.audit
    if audit is None:
        return None
    unreadable = f"; {audit.n_unreadable:,} of them unreadable" if audit.n_unreadable else ""
    if audit.n_not_audited == 0:
        return f"all {audit.n_audited:,} opened and checked{unreadable}"
    return (f"{audit.n_audited:,} opened and checked (a seeded share, seed {audit.seed}, and the "
            f"sample){unreadable}; {audit.n_not_audited:,} counted from name and size only (--audit all opens "
            "every one)")


def sample_line(result: AdviceResult) -> str:
    """The embedded sample and where its forward passes ran (or that the measurements came from the cache)."""
    sample = result.sample
    where = (f"{sample.forward_passes} forward passes on {result.device}" if sample.forward_passes
             else "no forward pass: measurements from the cache")
    return f"{sample.n_images} images (seed {sample.seed}), {sample.cache_hits} from cache, {where}"


def modes_line(modes: dict[str, int]) -> str:
    return ", ".join(f"{mode} {n}" for mode, n in modes.items())


def timings_line(timings: dict[str, float]) -> str:
    """Each step inside the step that contains it (``advisor.timing.PARENT``): parts never sit beside their whole."""
    return nested_timings(timings)


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


def margin_line(report: RunReport | TextRunReport) -> str:
    verdict = report.verdict
    return (f"margin for 'confirmed': {100 * verdict.margin:.1f} pts of {verdict.judged_on} accuracy "
            f"({verdict.margin_rule})")
