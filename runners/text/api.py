"""``run_text_advice``: train the recommended text strategy (and, with compare, its alternatives), measure each on
the validation and test splits, and judge the advice with ``runners.verdict.decide``.

Outputs under ``options.output_dir``: ``<strategy>/`` (checkpoints, ``model.pt``, ``run.json``), ``metrics.json``
(the advice with ``run`` filled), ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_advise.advisor.data.text.reading import TextDataset, TextExample
from tl_advise.advisor.measure.device import resolve_device
from tl_advise.advisor.report.text_html import page_data, render_text_html
from tl_advise.advisor.text_api import TextAdviceSession
from tl_advise.rules.text_engine import per_group_lr, text_recipe
from tl_advise.runners.checkpoint import atomic_write_text
from tl_advise.runners.options import check_output_dir
from tl_advise.runners.text.strategies import TextJob, TextSplit, TextSplits, run_strategy
from tl_advise.runners.tracking import open_loggers, tracking
from tl_advise.runners.train import EpochCallback
from tl_advise.runners.verdict import Margin, decide
from tl_advise.schema.errors import ConfigError, DatasetError, TLAdviseError
from tl_advise.schema.models import StrategyId, StrategyRun
from tl_advise.schema.text import (
    TEXT_STRATEGY_IDS,
    TextRecipe,
    TextRunOptions,
    TextRunReport,
    TextStrategyId,
    TextStrategyRun,
    TextVerdict,
)

logger = logging.getLogger(__name__)

RESULT_FILE = "run.json"
FINGERPRINT_FILE = "fingerprint.txt"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
HTML_FILE = "report.html"

# runners/verdict.py `decide` is typed with the image strategy ids; each text strategy stands in for one while
# it judges, and its verdict is translated back (names in its message included). One to one, so nothing mixes.
_PROXY: dict[TextStrategyId, StrategyId] = {
    "text_feature_extraction": "feature_extraction",
    "text_finetune_top": "finetune_last_layers",
    "text_full_finetune": "full_finetune",
    "tfidf_linear": "from_scratch",
}
_BACK: dict[str, TextStrategyId] = {v: k for k, v in _PROXY.items()}
_PROXY_NAMES = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _BACK), key=len, reverse=True)) + r")\b")
_WORDS = {"image by image": "text by text", "images": "texts", "image": "text"}
_IMAGE_WORDS = re.compile(r"\b(image by image|images|image)\b")


def _as_text(message: str) -> str:
    """A verdict message of ``decide`` in text terms: the text strategies' names, texts instead of images."""
    message = _PROXY_NAMES.sub(lambda m: _BACK[m.group(1)], message)
    return _IMAGE_WORDS.sub(lambda m: _WORDS[m.group(1)], message)


# --------------------------------------------------------------------------- splits


def _stratified_take(indices_by_class: dict[str, list[int]], share: float, rng: random.Random,
                     minimum: int = 1) -> set[int]:
    taken: set[int] = set()
    for members in indices_by_class.values():
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(minimum, round(share * len(members))))
        taken.update(rng.sample(members, k))
    return taken


def make_text_splits(dataset: TextDataset, *, val_fraction: float = 0.2, seed: int = 0,
                     max_train_per_class: int | None = None) -> TextSplits:
    """Train, validation and test texts (class indices in ``dataset.classes`` order). The dataset's own val
    split validates when it has one; else a seeded, stratified ``val_fraction`` of the training split is held
    out. ``max_train_per_class``: a seeded subsample of the training texts, the same share per class."""
    classes = dataset.classes
    index = {c: i for i, c in enumerate(classes)}
    rng = random.Random(seed)
    train = dataset.subset(dataset.train_split)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(train):
        by_class[e.label].append(i)
    if max_train_per_class is not None:
        by_class = {c: sorted(rng.sample(m, min(len(m), max_train_per_class))) for c, m in by_class.items()}
    keep = sorted(i for m in by_class.values() for i in m)
    if "val" in dataset.splits and dataset.train_split != "val":
        val_rows = dataset.subset("val")
        validation = f"the dataset's val split ({len(val_rows)} texts)"
        held: set[int] = set()
    else:
        held = _stratified_take(by_class, val_fraction, rng)
        val_rows = [train[i] for i in sorted(held)]
        validation = f"{len(held)} texts held out of {dataset.train_split} ({val_fraction:.0%} per class, seed {seed})"
    train_rows = [train[i] for i in keep if i not in held]
    test_rows = dataset.subset("test") if "test" in dataset.splits and dataset.train_split != "test" else []

    def split(rows: Sequence[TextExample]) -> TextSplit:
        return TextSplit(texts=[r.text for r in rows], labels=[index[r.label] for r in rows])

    splits = TextSplits(train=split(train_rows), val=split(val_rows), test=split(test_rows) if test_rows else None,
                        classes=classes, validation=validation)
    if len({*splits.train.labels}) < 2 or len(splits.val) == 0:
        raise DatasetError(f"{dataset.source.root}: too few texts to train and validate (train {len(splits.train)}, "
                           f"val {len(splits.val)}, over {len({*splits.train.labels})} classes)")
    return splits


# --------------------------------------------------------------------------- recipes


def apply_options(recipe: TextRecipe, options: TextRunOptions) -> TextRecipe:
    """The recipe after the run options (overrides, then the ``max_epochs`` cap on each phase)."""
    update: dict[str, object] = {}
    if options.max_length is not None and recipe.kind != "tfidf":
        update["max_length"] = options.max_length
    if options.batch_size is not None:
        update["batch_size"] = options.batch_size
    if options.patience is not None:
        update["patience"] = options.patience
    update.update(_rate_overrides(recipe, options))
    head, finetune = recipe.head_epochs, recipe.finetune_epochs
    if options.head_epochs is not None and recipe.kind != "tfidf":
        head = options.head_epochs
    if options.finetune_epochs is not None and recipe.trains_encoder:
        finetune = options.finetune_epochs
    if options.max_epochs is not None:
        head, finetune = min(head, options.max_epochs), min(finetune, options.max_epochs)
    if options.max_finetune_epochs is not None:
        finetune = min(finetune, options.max_finetune_epochs)
    update.update(head_epochs=head, finetune_epochs=finetune)
    out = recipe.model_copy(update=update)
    if out.kind == "embedding_head" and out.head_epochs == 0:
        raise ConfigError(f"{out.strategy} trains only a head: give it at least one epoch (head_epochs)")
    if out.kind == "encoder" and out.finetune_epochs == 0:
        raise ConfigError(f"{out.strategy} fine-tunes encoder layers: give it at least one epoch (finetune_epochs)")
    return TextRecipe.model_validate(out.model_dump())


def _rate_overrides(recipe: TextRecipe, options: TextRunOptions) -> dict[str, object]:
    """The recipe fields the options' rates replace, where the recipe has them. A new encoder rate is spread over
    the tuned layers with the recipe's own layer-wise decay, as ``text_recipe`` spreads the rules' rate."""
    update: dict[str, object] = {}
    if options.head_lr is not None and recipe.head_lr is not None:
        update["head_lr"] = options.head_lr
    if options.encoder_lr is not None and recipe.trains_encoder and recipe.layer_decay is not None:
        update["encoder_lr"] = options.encoder_lr
        update["per_group_lr"] = per_group_lr(recipe.tuned_layers, options.encoder_lr, recipe.layer_decay)
    if options.tfidf_c is not None and recipe.kind == "tfidf":
        update["tfidf_c"] = options.tfidf_c
    return update


def strategies_to_run(session: TextAdviceSession, options: TextRunOptions) -> list[TextStrategyId]:
    rec = session.result.recommendation
    chosen = list(options.strategies) if options.strategies else [
        rec.strategy, *([a.strategy for a in rec.alternatives] if options.compare else [])]
    return [s for i, s in enumerate(chosen) if s not in chosen[:i] and s in TEXT_STRATEGY_IDS]


def recipes_for(session: TextAdviceSession, strategies: Sequence[TextStrategyId],
                options: TextRunOptions) -> dict[TextStrategyId, TextRecipe]:
    """Each strategy's recipe as the advice states it (``rules.text_engine.text_recipe``), the options applied."""
    result = session.result
    return {s: apply_options(text_recipe(session.rules, s, summary=result.dataset, lengths=result.lengths,
                                         backbone=result.backbone), options) for s in strategies}


# --------------------------------------------------------------------------- the verdict


def text_verdict(recommended: TextStrategyId, runs: Sequence[TextStrategyRun], margin: Margin,
                 cv_bar: float | None) -> TextVerdict:
    """``runners.verdict.decide`` on the text runs (test split when every run has one), and the TF-IDF bar:
    the trained tfidf_linear on the judging split when it ran, else the advice's cross-validated bar."""
    proxies = [StrategyRun(strategy=_PROXY[r.strategy], status=r.status, val=r.val, test=r.test) for r in runs]
    verdict = decide(_PROXY[recommended], proxies, margin)
    fields = verdict.model_dump(exclude={"pixel_baseline", "beat_pixel_baseline"})
    fields.update(recommended=recommended, best=_BACK[verdict.best] if verdict.best else None,
                  message=_as_text(verdict.message), margin_rule=_as_text(verdict.margin_rule))
    split = verdict.judged_on
    judged = {r.strategy: (r.test if split == "test" else r.val) for r in runs if r.status != "failed"}
    tfidf = judged.get("tfidf_linear")
    bar = tfidf.accuracy if tfidf is not None else cv_bar
    others = [m.accuracy for s, m in judged.items() if m is not None and s != "tfidf_linear"]
    if bar is not None and others:
        fields["tfidf_bar"] = bar
        fields["beat_tfidf_bar"] = max(others) > bar
        if not fields["beat_tfidf_bar"]:
            where = f"on the {split} split" if tfidf is not None else "cross-validated on the advice sample"
            fields["message"] += (f"; no encoder strategy beat the TF-IDF bar ({bar:.3f} {where}): the encoder does "
                                  "not carry this task")
    return TextVerdict(**fields)


# --------------------------------------------------------------------------- the run


def _completed(folder: Path, fingerprint: str) -> TextStrategyRun | None:
    result, stamp = folder / RESULT_FILE, folder / FINGERPRINT_FILE
    try:
        if result.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == fingerprint:
            return TextStrategyRun.model_validate_json(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("cannot read back %s (%s): training again", result, exc)
    return None


def run_text_advice(session: TextAdviceSession, options: TextRunOptions, *,
                    epoch_callback: EpochCallback | None = None) -> TextRunReport:
    """Train, measure and judge; writes everything under ``options.output_dir`` and sets ``session.result.run``.

    A strategy that crashes is recorded as failed and the others still run; bad options raise ``ConfigError``
    before anything trains. ``resume=True`` reads back strategies an earlier run with the same settings
    finished, and continues an interrupted one from its last complete epoch.
    """
    output_dir = check_output_dir(options.output_dir, Path(session.dataset.source.root))
    strategies = strategies_to_run(session, options)
    if not strategies:
        raise ConfigError("no text strategy to train")
    recipes = recipes_for(session, strategies, options)  # refused before anything trains
    splits = make_text_splits(session.dataset, val_fraction=options.val_fraction, seed=options.seed,
                              max_train_per_class=options.max_train_per_class)
    device = resolve_device(options.device)
    backbone = session.backbone.to(device)
    logger.info("text run: %s; %d train / %d val / %d test texts; validation: %s", ", ".join(strategies),
                len(splits.train), len(splits.val), len(splits.test) if splits.test else 0, splits.validation)
    output_dir.mkdir(parents=True, exist_ok=True)
    trackers = open_loggers(output_dir=output_dir, tensorboard=options.tensorboard, mlflow=options.mlflow,
                            mlflow_experiment=options.mlflow_experiment, resume=options.resume)
    with tracking(trackers):
        trackers.start_run(session.result, run_params(session, options, strategies, splits.validation))
        runs: list[TextStrategyRun] = []
        for strategy, recipe in recipes.items():
            folder = output_dir / strategy
            folder.mkdir(parents=True, exist_ok=True)
            job = TextJob(recipe=recipe, backbone=backbone, splits=splits, folder=folder, output_dir=output_dir,
                          device=device, seed=options.seed, patience=recipe.patience if options.patience is None
                          else options.patience, time_budget_s=options.time_budget_s, resume=options.resume,
                          progress=options.progress, cache=session.cache, namespace=session.namespace,
                          epoch_callback=epoch_callback, epoch_logger=trackers if trackers else None)
            trackers.start_strategy(strategy, {**recipe.model_dump(mode="json"), "n_train": len(splits.train),
                                               "n_val": len(splits.val)})
            run = _train_one(job, options)
            runs.append(run)
            trackers.end_strategy(run, folder)

        rec = session.result.recommendation
        verdict = text_verdict(rec.strategy, runs, options.margin, rec.tfidf_bar.accuracy if rec.tfidf_bar else None)
        report = TextRunReport(output_dir=str(output_dir), device=str(device), validation=splits.validation,
                               budget=options.budget(), runs=runs, verdict=verdict,
                               files={"metrics": METRICS_FILE, "report": REPORT_FILE, "html": HTML_FILE,
                                      **{f"model:{r.strategy}": r.checkpoint for r in runs if r.checkpoint}})
        session.result.run = report
        atomic_write_text(session.result.model_dump_json(indent=2), output_dir / METRICS_FILE)
        atomic_write_text(markdown_report(session, report), output_dir / REPORT_FILE)
        atomic_write_text(render_text_html(session.result, page_data(session)), output_dir / HTML_FILE)
        trackers.finish(session.result, output_dir)
    logger.info("verdict: %s — %s", verdict.status, verdict.message)
    return report


def _train_one(job: TextJob, options: TextRunOptions) -> TextStrategyRun:
    """One strategy: read back when ``--resume`` finds it finished with the same settings, else trained (a crash
    is a failure record)."""
    strategy, folder = job.recipe.strategy, job.folder
    fingerprint = job.fingerprint("run", options.time_budget_s)
    done = _completed(folder, fingerprint) if options.resume else None
    if done is not None:
        logger.info("%s: already completed in %s, read back", strategy, folder)
        return done
    (folder / RESULT_FILE).unlink(missing_ok=True)
    try:
        run = run_strategy(job)
    except TLAdviseError:
        raise
    except Exception as exc:  # one crashed strategy is a failure record, not a dead comparison
        logger.exception("%s failed", strategy)
        return TextStrategyRun(strategy=strategy, status="failed", error=f"{type(exc).__name__}: {exc}")
    atomic_write_text(run.model_dump_json(indent=2), folder / RESULT_FILE)
    atomic_write_text(fingerprint, folder / FINGERPRINT_FILE)
    return run


def run_params(session: TextAdviceSession, options: TextRunOptions, strategies: Sequence[TextStrategyId],
               validation: str) -> dict[str, Any]:
    """What a tracker records about the whole text run: the advice it tests and the options it ran with (the
    image run's ``runners.api.run_params``, in text terms)."""
    result = session.result
    rec, sim, ds = result.recommendation, result.similarity, result.dataset
    return {
        "advice": {"strategy": rec.strategy, "rule": rec.rule_id, "similarity": round(sim.score, 4),
                   "similarity_label": sim.label},
        "dataset": {"root": result.source.root, "texts": ds.n_texts, "classes": len(ds.classes),
                    "texts_per_class": ds.texts_per_class},
        "backbone": {"name": result.backbone.name, "weights": result.backbone.weights},
        "run": {"strategies": list(strategies), "compare": options.compare, "margin": options.margin,
                "validation": validation, **options.budget()},
    }


def _lr(x: float | None) -> str:
    return "-" if x is None else f"{x:.0e}".replace("e-0", "e-")


def _row(r: TextStrategyRun, *, advised: bool) -> list[str]:
    s = r.settings
    name = f"{r.strategy}{' (advised)' if advised else ''}"
    if r.val is None or s is None:
        return [name, r.status, "-", "-", "-", "-", "-", r.error or ""]
    return [name, r.status, str(r.epochs_run), f"{r.val.accuracy:.3f}",
            f"{r.test.accuracy:.3f}" if r.test else "-", f"{r.train_time_s:.1f}",
            "-" if s.kind == "tfidf" else str(s.max_length), f"{_lr(s.head_lr)} / {_lr(s.encoder_lr)}"]


def markdown_report(session: TextAdviceSession, report: TextRunReport) -> str:
    rec = session.result.recommendation
    lines = [f"# tl-advise text run: {session.result.source.root}", "",
             f"**Verdict: {report.verdict.status}** — {report.verdict.message}", "",
             f"- advice: **{rec.strategy}** (rule {rec.rule_id}); similarity {session.result.similarity.score:.2f} "
             f"({session.result.similarity.label})",
             f"- backbone: {session.result.backbone.name} ({session.result.backbone.weights})",
             f"- validation: {report.validation}", "",
             "| strategy | status | epochs | val acc | test acc | train s | max length | LRs (head / top layer) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report.runs:
        lines.append("| " + " | ".join(_row(r, advised=r.strategy == rec.strategy)) + " |")
    return "\n".join([*lines, ""])
