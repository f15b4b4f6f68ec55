"""The default report: a readable summary for a terminal."""

from __future__ import annotations

from tl_advise.advisor.report import common
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import AdviceResult


def _similarity_lines(result: AdviceResult) -> list[str]:
    sim = result.similarity
    verb = common.threshold_relation(sim)
    lines = [f"Similarity to the backbone's source domain: {sim.score:.2f} → {sim.label} "
             f"({verb} {sim.threshold:.2f}; shift level: {sim.shift_level})"]
    if sim.bn_shift:
        bn = sim.bn_shift
        lines.append(f"  BN statistics shift (W2, {bn.n_layers} layers): early {bn.early:.2f} · "
                     f"middle {bn.middle:.2f} · late {bn.late:.2f}")
    if sim.head:
        top = common.top_classes(sim.head)
        lines.append(f"  source head: max prob {sim.head.mean_max_prob:.2f}, entropy "
                     f"{sim.head.mean_entropy:.2f} (most predicted: {top})")
    if sim.separability:
        sep = sim.separability
        lines.append(f"  frozen features vs raw pixels ({sep.n_folds}-fold CV, chance {sep.chance:.2f}): "
                     f"k-NN {sep.knn_accuracy:.2f} vs {sep.pixel_knn_accuracy:.2f} ({sep.knn_gain:+z.2f}), "
                     f"logreg {sep.logreg_accuracy:.2f} vs {sep.pixel_logreg_accuracy:.2f} "
                     f"({sep.logreg_gain:+z.2f}), LogME {sep.logme:.2f} ({sep.logme_gain:+z.2f})")
    lines.extend(f"  note: {note}" for note in sim.notes)
    return lines


def _run_lines(result: AdviceResult) -> list[str]:
    run = result.run
    if run is None:
        return []
    lines = ["", f"Run on {run.device}; validation: {run.validation}",
             f"  {'strategy':32s} {'status':18s} {'val acc':>8s} {'bal acc':>8s} {'test acc':>8s} {'time':>9s}"]
    for r in run.runs:
        name = r.strategy + (" *" if r.strategy == result.recommendation.strategy else "")
        val = r.val
        test = common.pct(r.test.accuracy) if r.test else "–"
        lines.append(f"  {name:32s} {r.status:18s} {common.pct(val.accuracy if val else None):>8s} "
                     f"{common.pct(val.balanced_accuracy if val else None):>8s} {test:>8s} {r.train_time_s:>7.1f} s"
                     + (f"  ({r.error})" if r.error else ""))
    if run.verdict.pixel_baseline is not None:
        lines.append(f"  {'raw-pixel baseline (reference)':32s} {'':18s} {common.pct(run.verdict.pixel_baseline):>8s}"
                     "   (5-fold CV on the advice sample)")
    lines += ["  (* recommended)", f"Verdict: {run.verdict.status} — {run.verdict.message}",
              f"  {common.margin_line(run)}",
              f"Outputs: {run.output_dir} ({', '.join(sorted(run.files.values()))})"]
    return lines


def _recipe_lines(result: AdviceResult) -> list[str]:
    rec = result.recommendation
    return [f"Recommendation: {rec.strategy} — {common.title(rec)} (rule {rec.rule_id})",
            *(f"  {label + ':':14s} {value}" for label, value in common.recipe_rows(result))]


def _warning_lines(result: AdviceResult) -> list[str]:
    warnings = result.recommendation.warnings
    return ["", f"Warnings ({len(warnings)}):", *(f"  ! [{w.id}] {w.message}" for w in warnings)] if warnings else []


def _confidence_lines(result: AdviceResult) -> list[str]:
    rec = result.recommendation
    return ["", f"Confidence: {common.confidence_line(rec)}", *(f"  - {r}" for r in rec.confidence.reasons)]


def _skipped_lines(result: AdviceResult, limit: int) -> list[str]:
    skipped = result.dataset.skipped
    if not skipped:
        return []
    lines = ["", f"Skipped {counted(len(skipped), 'file')}:", *(f"  - {s.path}: {s.reason}" for s in skipped[:limit])]
    if len(skipped) > limit:
        lines.append(f"  … and {len(skipped) - limit} more (see --format json)")
    return lines


def render(result: AdviceResult, *, explain: bool = False) -> str:
    """One screen by default: the decision, the recipe, warnings, confidence and what to compare it with.
    ``explain`` (``-v``/``--explain``) adds the evidence: the similarity signals, every rule that fired, each
    alternative's reason, the skipped files, the sample and the timings."""
    rec = result.recommendation
    ds = result.dataset
    sim = result.similarity
    lines = [f"tl-advise {result.tool_version} · {ds.root}", f"Dataset: {common.dataset_line(result)}",
             *([f"Image files: {audit}"] if explain and (audit := common.audit_line(result)) else []),
             "", *_recipe_lines(result), *_warning_lines(result), *_confidence_lines(result)]
    if not explain:
        lines.append("")
        lines.append(f"Similarity to the source domain: {sim.score:.2f} → {sim.label} "
                     f"({common.threshold_relation(sim)} {sim.threshold:.2f}; shift level: {sim.shift_level})")
        if rec.alternatives:
            lines.append(f"Alternatives (--run --compare trains them): {common.alternatives_line(rec)}")
        if ds.skipped:
            lines.append(f"Skipped {counted(len(ds.skipped), 'file')} (-v lists them)")
        lines += _run_lines(result)
        lines += ["", "Why, the similarity signals, the sample and timings: -v or --explain "
                      "(or --format markdown, --format json, --html FILE)"]
        return "\n".join(lines) + "\n"
    lines += ["", *_similarity_lines(result), "", "Why:", *(f"  - {reason}" for reason in rec.why)]
    if rec.alternatives:
        lines += ["", "Alternatives (--run --compare trains them):"]
        lines += [f"  - {a.strategy}{' (runner-up)' if a.strategy == rec.confidence.runner_up else ''}: {a.reason}"
                  for a in rec.alternatives]
    lines += _skipped_lines(result, limit=20)
    lines += _run_lines(result)
    lines += ["", f"Sample: {common.sample_line(result)}", f"Timings: {common.timings_line(result.timings)}"]
    return "\n".join(lines) + "\n"
