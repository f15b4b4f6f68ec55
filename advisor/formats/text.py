"""The default report: a readable summary for a terminal."""

from __future__ import annotations

from tl_advise.advisor.formats import common
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
                     f"k-NN {sep.knn_accuracy:.2f} vs {sep.pixel_knn_accuracy:.2f} ({sep.knn_gain:+.2f}), "
                     f"logreg {sep.logreg_accuracy:.2f} vs {sep.pixel_logreg_accuracy:.2f} "
                     f"({sep.logreg_gain:+.2f}), LogME {sep.logme:.2f} ({sep.logme_gain:+.2f})")
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


def render(result: AdviceResult) -> str:
    rec = result.recommendation
    ds = result.dataset
    lines = [
        f"tl-advise {result.tool_version} · {ds.root}",
        f"Dataset: {common.dataset_line(result)}",
        *([f"Headers: {audit}"] if (audit := common.audit_line(result)) else []),
        "",
        f"Recommendation: {rec.strategy} — {common.STRATEGY_TITLES[rec.strategy]} (rule {rec.rule_id})",
        f"  confidence:    {common.confidence_line(rec)}",
        f"  backbone:      {result.backbone.name} ({result.backbone.weights})",
        f"  unfreeze:      {rec.unfreeze_summary}",
        f"  learning rate: {common.rates(rec)}",
        f"  schedule:      {common.schedule_line(rec)}",
        f"  batch size:    {rec.batch_size} · GPU {'advised' if rec.gpu_advised else 'not needed'}",
        f"  augmentation:  {common.augmentation(rec)}",
        f"  regularise:    {common.regularization(rec)}",
    ]
    if rec.learning_rate.per_stage:
        per_stage = ", ".join(f"{s} {common.lr(v)}" for s, v in rec.learning_rate.per_stage.items())
        lines.append(f"  per stage:     {per_stage}")
    bar = common.pixel_bar(rec)
    if bar:
        lines.append(f"  bar to clear:  {bar}")
    lines += ["", *_similarity_lines(result), "", "Why:"]
    lines += [f"  - {reason}" for reason in rec.why]
    lines += ["", f"Confidence: {rec.confidence.level}"] + [f"  - {r}" for r in rec.confidence.reasons]
    if rec.warnings:
        lines += ["", "Warnings:"] + [f"  ! [{w.id}] {w.message}" for w in rec.warnings]
    if rec.alternatives:
        lines += ["", "Alternatives:"] + [f"  - {a.strategy}: {a.reason}" for a in rec.alternatives]
    if ds.skipped:
        lines += ["", f"Skipped {len(ds.skipped)} file(s):"]
        lines += [f"  - {s.path}: {s.reason}" for s in ds.skipped[:20]]
        if len(ds.skipped) > 20:
            lines.append(f"  … and {len(ds.skipped) - 20} more (see --format json)")
    lines += _run_lines(result)
    sample = result.sample
    lines += [
        "",
        f"Sample: {sample.n_images} images (seed {sample.seed}), {sample.cache_hits} from cache, "
        + (f"{sample.forward_passes} forward passes on {result.device}" if sample.forward_passes
           else "no forward pass (measurements from the cache)"),
        f"Timings: {common.timings_line(result.timings)}",
    ]
    return "\n".join(lines) + "\n"
