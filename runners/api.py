"""``run_advice``: train the recommended strategy (and, when asked, its alternatives), measure, decide."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tl_advise.advisor.api import AdviceSession
from tl_advise.advisor.measure.device import describe, resolve_device
from tl_advise.advisor.report.html import render_html, write_html
from tl_advise.advisor.report.thumbnails import class_thumbnails
from tl_advise.runners import distributed, feature_extraction, finetune
from tl_advise.runners.checkpoint import atomic_write_text, load
from tl_advise.runners.context import RESULT_FILE, STATE_FILE, StrategyContext
from tl_advise.runners.data import make_splits
from tl_advise.runners.distributed import BatchSplit
from tl_advise.runners.options import check_output_dir
from tl_advise.runners.recipes import build_recipe
from tl_advise.runners.report import markdown_report, plot_curves
from tl_advise.runners.tracking import LoggerGroup, open_loggers, tracking
from tl_advise.runners.train import EpochCallback
from tl_advise.runners.verdict import decide
from tl_advise.schema.errors import ConfigError, TLAdviseError
from tl_advise.schema.formatting import fmt_lr
from tl_advise.schema.models import STRATEGY_IDS, Recommendation, RunReport, StrategyId, StrategyRun
from tl_advise.schema.run_options import RunOptions

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CURVES_FILE = "learning_curves.png"
HTML_FILE = "report.html"

RUNNERS: dict[StrategyId, Callable[[StrategyContext], StrategyRun]] = {
    "feature_extraction": feature_extraction.run,
    "feature_extraction_top_layers": finetune.run,
    "finetune_last_layers": finetune.run,
    "finetune_more_layers": finetune.run,
    "full_finetune": finetune.run,
    "from_scratch": finetune.run,
}


def strategies_to_run(recommended: StrategyId, options: RunOptions,
                      alternatives: list[StrategyId]) -> list[StrategyId]:
    """An explicit list wins (in its order, once each); else the recommendation, plus alternatives with compare."""
    if options.strategies:
        chosen = list(options.strategies)
    else:
        chosen = [recommended, *(alternatives if options.compare else [])]
    return [s for i, s in enumerate(chosen) if s not in chosen[:i] and s in STRATEGY_IDS]


def _completed_run(ctx: StrategyContext) -> StrategyRun | None:
    """A strategy finished by an earlier run with the same settings: read back, not retrained."""
    result_path, state_path = ctx.folder / RESULT_FILE, ctx.folder / STATE_FILE
    if not (result_path.is_file() and state_path.is_file()):
        return None
    try:
        state = load(state_path)
        if state.get("fingerprint") != ctx.fingerprint() or not state.get("finished"):
            return None
        return StrategyRun.model_validate_json(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RuntimeError) as exc:
        logger.warning("cannot read back %s (%s): training %s again", result_path, exc, ctx.recipe.strategy)
        return None


def _train_one(ctx: StrategyContext) -> StrategyRun:
    strategy = ctx.recipe.strategy
    if ctx.options.resume:
        done = distributed.from_main(lambda: _completed_run(ctx))
        if done is not None:
            logger.info("%s: already completed in %s, read back", strategy, ctx.folder)
            return done
    main = distributed.world().is_main  # in a distributed run rank 0 alone writes files
    if main:  # a fresh (non-resumed) run starts from nothing, whatever an earlier run left behind
        (ctx.folder / RESULT_FILE).unlink(missing_ok=True)
    r = ctx.recipe
    logger.info("%s: training %s; head %d + fine-tune %d epochs, head LR %s, backbone LR %s, batch %d, %d px",
                strategy, ", ".join(r.unfreeze) if r.unfreeze else "the head only", r.head_epochs,
                r.finetune_epochs, fmt_lr(r.head_lr), "frozen" if r.backbone_lr is None else fmt_lr(r.backbone_lr),
                r.batch_size, r.image_size)
    run = RUNNERS[strategy](ctx)
    if main:
        atomic_write_text(run.model_dump_json(indent=2), ctx.folder / RESULT_FILE)
    return run


def run_advice(session: AdviceSession, options: RunOptions, *,
               epoch_callback: EpochCallback | None = None) -> RunReport:
    """Train, measure and write everything under ``options.output_dir``; also sets ``session.result.run``.

    ``epoch_callback(strategy, epochs_done)`` is called after each epoch's checkpoint is on disk.
    Raises ``TLAdviseError`` for bad options; a strategy that crashes is recorded as failed and the
    others still run. KeyboardInterrupt (or SIGTERM) stops the run, resumable with ``resume=True``.

    Under torchrun (the process group joined, ``runners.distributed.process_group``) every rank calls
    this with the same session: each trains on its shard, and rank 0 alone writes the files and tracks;
    a strategy that crashes stops the whole run (the other ranks could not go on without it).
    """
    output_dir = check_output_dir(options.output_dir, session.scan.root)
    here = distributed.world()
    device = distributed.training_device(resolve_device(options.device))
    recommendation = session.result.recommendation
    strategies = strategies_to_run(recommendation.strategy, options,
                                   [a.strategy for a in recommendation.alternatives])
    splits = make_splits(session.scan, val_fraction=options.val_fraction, seed=options.seed,
                         max_train_per_class=options.max_train_images_per_class)
    logger.info("run: %s on %s; %d train / %d val / %d test images; validation: %s",
                ", ".join(strategies), describe(device), len(splits.train), len(splits.val), len(splits.test),
                splits.validation)
    result = session.result
    recipes = {strategy: build_recipe(session.rules, strategy, dataset=result.dataset, similarity=result.similarity,
                                      backbone=result.backbone, options=options) for strategy in strategies}
    for strategy, recipe in recipes.items():  # refused before anything trains, not after the first strategy
        if recipe.head_epochs + recipe.finetune_epochs <= 0:
            raise ConfigError(
                f"{strategy} has no epoch to train (head {recipe.head_epochs}, fine-tune "
                f"{recipe.finetune_epochs} after the run options): give its phase at least one epoch"
                + (" (--finetune-epochs)" if recipe.trains_backbone else " (it trains only a head: --head-epochs)"))
        BatchSplit.of(recipe.batch_size, here.size)  # a batch too small for the processes: refused now
    if here.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    trackers = open_loggers(output_dir=output_dir, tensorboard=options.tensorboard, mlflow=options.mlflow,
                            mlflow_experiment=options.mlflow_experiment, resume=options.resume) \
        if here.is_main else LoggerGroup([])
    with tracking(trackers):
        trackers.start_run(session.result, run_params(session, options, strategies, splits.validation))
        runs: list[StrategyRun] = []
        for strategy, recipe in recipes.items():
            ctx = StrategyContext(session=session, recipe=recipe, splits=splits, options=options, device=device,
                                  folder=output_dir / strategy, output_dir=output_dir,
                                  epoch_callback=epoch_callback, epoch_logger=trackers if trackers else None)
            trackers.start_strategy(strategy, recipe_params(ctx))
            try:
                run = _train_one(ctx)
            except TLAdviseError:
                raise
            except Exception as exc:  # one crashed strategy is a failure record, not a dead comparison…
                if here.distributed:
                    raise  # …except in a distributed run: the other ranks cannot train on without this one
                logger.exception("%s failed", strategy)
                run = StrategyRun(strategy=strategy, status="failed", error=f"{type(exc).__name__}: {exc}")
            runs.append(run)
            trackers.end_strategy(run, ctx.folder)

        report = RunReport(
            output_dir=str(output_dir), device=describe(device), validation=splits.validation,
            budget=options.budget(), runs=runs, verdict=decide(recommendation.strategy, runs, options.margin,
                                                                pixel_baseline=_pixel_bar(recommendation)),
            files={},
        )
        report = distributed.from_main(lambda: write_outputs(session, report, output_dir))
        session.result.run = report
        trackers.finish(session.result, output_dir)
    logger.info("verdict: %s — %s", report.verdict.status, report.verdict.message)
    return report


def _pixel_bar(recommendation: Recommendation) -> float | None:
    """The raw-pixel baseline's accuracy: the reference row every trained strategy is set against."""
    return recommendation.pixel_baseline.accuracy if recommendation.pixel_baseline else None


def run_params(session: AdviceSession, options: RunOptions, strategies: list[StrategyId],
               validation: str) -> dict[str, Any]:
    """What a tracker records about the whole run: the advice it tests and the options it ran with."""
    result = session.result
    rec, sim, ds = result.recommendation, result.similarity, result.dataset
    return {
        "advice": {"strategy": rec.strategy, "rule": rec.rule_id, "similarity": round(sim.score, 4),
                   "similarity_label": sim.label, "shift_level": sim.shift_level},
        "dataset": {"root": ds.root, "images": ds.n_images, "classes": len(ds.classes),
                    "images_per_class": ds.images_per_class},
        "backbone": {"name": result.backbone.name, "weights": result.backbone.weights},
        "run": {"strategies": strategies, "compare": options.compare, "margin": options.margin,
                "validation": validation, "world_size": distributed.world().size, **options.budget()},
    }


def recipe_params(ctx: StrategyContext) -> dict[str, Any]:
    """A strategy's recipe as a tracker records it (before training: a crashed run keeps its settings)."""
    return {**ctx.recipe.model_dump(mode="json"), "n_train": len(ctx.splits.train), "n_val": len(ctx.splits.val)}


def write_outputs(session: AdviceSession, report: RunReport, out: Path) -> RunReport:
    """metrics.json (the AdviceResult with ``run`` filled), report.md, report.html and the learning-curves PNG."""
    files = {"metrics": METRICS_FILE, "report": REPORT_FILE, "html": HTML_FILE}
    if plot_curves(report.runs, out / CURVES_FILE):
        files["curves"] = CURVES_FILE
    files.update({f"model:{r.strategy}": r.checkpoint for r in report.runs if r.checkpoint})
    report = report.model_copy(update={"files": files})
    result = session.result.model_copy(update={"run": report})
    atomic_write_text(result.model_dump_json(indent=2), out / METRICS_FILE)
    atomic_write_text(markdown_report(result, report), out / REPORT_FILE)
    write_html(render_html(result, class_thumbnails(session.scan, seed=session.result.sample.seed)),
               out / HTML_FILE, session.scan.root)
    return report
