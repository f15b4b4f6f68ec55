"""A text dataset's advice (``TextAdviceResult``) as text, markdown or JSON: the decision and its recipe first,
warnings and confidence on the same screen, the evidence under ``explain`` (always in markdown and JSON)."""

from __future__ import annotations

from tl_advise.schema.formatting import fmt_count, fmt_lr, per_class
from tl_advise.schema.text import TextAdviceResult, TextRecipe, TextRunReport

TEXT_FORMATS = ("text", "json", "markdown")


def render_text_advice(result: TextAdviceResult, fmt: str, *, explain: bool = False) -> str:
    if fmt == "json":
        return result.model_dump_json(indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(result)
    return _text(result, explain=explain)


def dataset_line(result: TextAdviceResult) -> str:
    d = result.dataset
    splits = ", ".join(f"{name} {sum(counts.values())}" for name, counts in d.split_counts.items())
    return (f"{d.n_texts} texts, {len(d.classes)} classes ({splits}); median "
            f"{per_class(d.texts_per_class, 'text')} in {d.train_split}"
            f"{f' as trained (--max-train-per-class {d.train_cap})' if d.train_cap else ''}, "
            f"imbalance {d.imbalance_ratio:.2f}")


def length_line(result: TextAdviceResult) -> str:
    n = result.lengths
    cap = f" (the backbone takes {n.max_length})" if n.max_length else ""
    return f"median {fmt_count(n.median)}, p95 {fmt_count(n.p95)}, max {n.max} {n.unit}{cap}"


def recipe_lines(recipe: TextRecipe) -> list[tuple[str, str]]:
    """(label, value) rows of a text recipe, every rate exactly as it trains."""
    if recipe.kind == "tfidf":
        return [("model", f"TF-IDF (words up to {recipe.tfidf_ngram_max}-grams) + logistic regression, "
                          f"C = {recipe.tfidf_c:g}")]
    rows = [("max length", f"{recipe.max_length} tokens")]
    if recipe.tuned_layers:
        rows.append(("tune", f"{', '.join(recipe.tuned_layers)} (frozen: {', '.join(recipe.frozen_layers) or 'none'})"))
    else:
        rows.append(("tune", "nothing in the encoder: a head on cached frozen embeddings"))
    # Tuning the encoder trains in two phases: the head alone at head_lr, then every group at per_group_lr.
    phase = " (head phase)" if recipe.per_group_lr else ""
    rates = f"head {fmt_lr(recipe.head_lr)}{phase}" if recipe.head_lr is not None else ""
    if recipe.encoder_lr is not None:
        decay = f", x{recipe.layer_decay:g} per layer below" if recipe.layer_decay else ""
        rates += f", encoder {fmt_lr(recipe.encoder_lr)}{decay} (adamw, weight decay {recipe.weight_decay:g})"
    rows.append(("learning rate", rates))
    if recipe.per_group_lr:
        rows.append(("fine-tune LRs", ", ".join(f"{g} {fmt_lr(lr)}" for g, lr in recipe.per_group_lr.items())))
    epochs = f"head {recipe.head_epochs}" + (f" + fine-tune {recipe.finetune_epochs}" if recipe.finetune_epochs else "")
    warmup = f", warm-up {recipe.warmup_share:.0%} then linear decay" if recipe.encoder_lr is not None else ""
    patience = f", early stopping after {recipe.patience}" if recipe.patience else ""
    rows.append(("schedule", f"{epochs} epochs, batch {recipe.batch_size}{warmup}{patience}"))
    return rows


def _text(result: TextAdviceResult, *, explain: bool) -> str:
    rec = result.recommendation
    lines = [f"tl-advise {result.tool_version} (text) · {result.source.root}", f"Dataset: {dataset_line(result)}",
             f"Lengths: {length_line(result)}", "",
             f"Recommendation: {rec.strategy} — {rec.title} (rule {rec.rule_id})"]
    lines += [f"  {label + ':':14s} {value}" for label, value in recipe_lines(rec.recipe)]
    lines.append(f"  {'backbone:':14s} {result.backbone.name}")
    if rec.tfidf_bar is not None:
        bar = rec.tfidf_bar
        lines.append(f"  {'bar to clear:':14s} {bar.accuracy:.2f}: TF-IDF + logistic regression ({bar.n_folds}-fold CV "
                     f"on {bar.n_texts} texts), against {bar.embedding_accuracy:.2f} on frozen embeddings")
    if rec.warnings or result.findings:  # as the image report lists them: counted, each with its id
        lines += ["", f"Warnings ({len(rec.warnings) + len(result.findings)}):"]
        lines += [f"  ! [{w.id}] {w.message}" for w in rec.warnings]
        lines += [f"  ! [{f.code}] {f.message}" for f in result.findings]
    c = rec.confidence
    lines += ["", f"Confidence: {c.level}" + (f" (runner-up: {c.runner_up})" if c.runner_up else "")]
    lines += [f"  - {r}" for r in c.reasons]
    if c.suggestion:
        lines.append(f"  → {c.suggestion}")
    sim = result.similarity
    lines += ["", f"Similarity to the backbone's source: {sim.score:.2f} → {sim.label} (threshold {sim.threshold:.2f}, "
                  f"profile {sim.profile}{'' if sim.calibrated else ', not calibrated'})"]
    if rec.alternatives:
        lines.append("Alternatives (--run --compare trains them): " + ", ".join(a.strategy for a in rec.alternatives))
    if explain:
        lines += ["", "Why:"] + [f"  - {w}" for w in rec.why]
        lines += ["", "Sources: " + "; ".join(rec.sources)]
        lines += ["", "Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())]
    else:
        lines += ["", "Why, the sources and timings: --explain (or --format markdown, --format json)"]
    if result.run is not None:
        lines += ["", *_run_lines(result.run)]
    return "\n".join(lines) + "\n"


def _run_lines(run: TextRunReport) -> list[str]:
    lines = [f"Run ({run.device}, {run.validation}):",
             f"  {'strategy':26s} {'status':10s} {'val acc':>8s} {'test acc':>9s} {'epochs':>7s} {'time':>8s}"]
    for r in run.runs:
        val = f"{100 * r.val.accuracy:.1f} %" if r.val else "–"
        test = f"{100 * r.test.accuracy:.1f} %" if r.test else "–"
        mark = "*" if r.strategy == run.verdict.recommended else " "
        lines.append(f" {mark}{r.strategy:26s} {r.status:10s} {val:>8s} {test:>9s} {r.epochs_run:>7d} "
                     f"{r.train_time_s:>7.1f}s")
    lines += ["  (* recommended)", f"Verdict: {run.verdict.status} — {run.verdict.message}"]
    return lines


def _markdown(result: TextAdviceResult) -> str:
    rec = result.recommendation
    lines = [f"# tl-advise (text): `{result.source.root}`", "", f"**Dataset:** {dataset_line(result)}",
             "", f"**Lengths:** {length_line(result)}", "",
             f"## Recommendation: `{rec.strategy}` — {rec.title} (rule `{rec.rule_id}`)", "",
             "| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in recipe_lines(rec.recipe)]
    lines += [f"| backbone | {result.backbone.name} |"]
    if rec.tfidf_bar is not None:
        lines.append(f"| bar to clear | TF-IDF + logistic regression {rec.tfidf_bar.accuracy:.2f} "
                     f"(frozen embeddings {rec.tfidf_bar.embedding_accuracy:.2f}) |")
    if rec.warnings or result.findings:
        lines += ["", "## Warnings", ""] + [f"- {w.message}" for w in rec.warnings]
        lines += [f"- {f.message}" for f in result.findings]
    c = rec.confidence
    lines += ["", f"## Confidence: {c.level}" + (f" (runner-up: `{c.runner_up}`)" if c.runner_up else ""), ""]
    lines += [f"- {r}" for r in c.reasons]
    sim = result.similarity
    lines += ["", f"## Similarity: {sim.score:.2f} → {sim.label}", "",
              f"Threshold {sim.threshold:.2f}, profile `{sim.profile}`"
              f"{'' if sim.calibrated else ' (not calibrated)'}.", "",
              "## Why", ""] + [f"- {w}" for w in rec.why]
    if rec.alternatives:
        lines += ["", "## Alternatives (`--run --compare` trains them)", ""]
        lines += [f"- `{a.strategy}` (rule `{a.rule_id}`): {a.reason}" for a in rec.alternatives]
    lines += ["", "## Sources", ""] + [f"- {s}" for s in rec.sources]
    if result.run is not None:
        lines += ["", "## Run", "", "```", *_run_lines(result.run), "```"]
    return "\n".join(lines) + "\n"
