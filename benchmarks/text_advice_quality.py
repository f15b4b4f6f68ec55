"""Text advice quality: does the recommended text strategy train best? Regret of the advice, case by case.

    .venv/bin/python benchmarks/text_advice_quality.py              # every set in $TL_ADVISE_SHARED/text,
                                                                   # levels 16,64,256,1000,full, seed 0
    .venv/bin/python benchmarks/text_advice_quality.py --quick      # sst2 at 16/class, tiny budget (~2-3 min)
    .venv/bin/python benchmarks/text_advice_quality.py --device cuda --seeds 0,1,2

For each dataset, level (texts per class in the training split) and seed: a seeded, stratified subsample of
the training split (the level; ``full`` is all of it), validated on the dataset's own validation split (a
seeded, stratified sample of at most ``--max-val`` texts) or, without one, on 20% held out of the level by the
runner; judged on the dataset's test split (at most ``--max-test`` texts, seeded and stratified), or, without
one, on a seeded, stratified test split carved out of the training split before any level is drawn (20%, at
least 200 texts), the same for every level and seed. The advice runs cold (an empty cache folder, timed), then
every text strategy trains under one budget, each with the recipe the rules give it on that subsample; the
per-text correctness on the test split is recorded, so strategies are compared text by text
(``tl_advise.rules.statistics``). Results go to ``benchmarks/results/text_advice_quality.{json,md}``, written
after every case; a re-run skips the cases already there with the same budget (``--force`` redoes them).

On the ``--lr-sweep-seed`` (0) cases, an LR sweep of the recommended strategy follows (``--no-lr-sweep``: none):
it trains again at the advised value x ``_quality_metrics.LR_FACTORS`` (÷10, ÷3, x3, x10; the x1 point is the
case's own run) and records ``lr_sweep`` (param, advised, points, best_lr, ratio, within_3x, within_3x_tied), as
the image benchmark does. The swept value is the encoder's top-layer rate when the strategy tunes the encoder
(text_finetune_top, text_full_finetune; the lower layers keep their layer-wise decay), else the head's rate
(text_feature_extraction); tfidf_linear has no rate, so its C is swept and reported apart from the issue's
"LR within x3" target. A recorded case without the sweep of the strategy the current rules recommend gets
only its sweep on a re-run, its strategies not trained again (the advice is rebuilt for the recipe; the
recorded run is the x1 point); ``--sweep-recorded`` does only that, training no new case:

    .venv/bin/python benchmarks/text_advice_quality.py --sweep-recorded    # the recorded seed-0 cases' sweeps

(The 10 seed-0 cases in results/text_advice_quality.json: text_full_finetune at 4 more rates each, about 2 h on
the 2 shared cores, 4 x their recorded training seconds plus the test predictions and the advice; an hour of it
chemprot at 64/class. benchmarks/README.md has the table.)

    .venv/bin/python benchmarks/text_advice_quality.py --report --write-evidence rules/text_rules.toml

``--report`` trains nothing: it re-renders the report from the .json, judging each dataset x level over its
seeds with the current text rules (the rule that decides is re-run on the recorded signals and size, as the
image benchmark's ``--rescore`` does; a text recipe does not depend on the cell that picks it, so every recorded
run stands) and each rule's evidence (``_quality_metrics.cell_evidence``: margin against the runner-up with each
dataset counted once, leave-one-dataset-out folds, gaps); ``--write-evidence`` writes that evidence into the
text rules file's ``evidence`` tables, which the text advice's why, alternatives and confidence read. It judges
the recorded sweeps again with the current check and prints the LR target: raw and tie-aware, over the sweeps
of the strategy each case's current recommendation is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics as stats
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance
from _quality_judgement import judge_by_rule, regret_targets, table_lodo
from _quality_metrics import LR_FACTORS, SeedAverage, judged_sweep, seed_averages, sweep_rate
from _quality_report import TEXT_EVIDENCE_NOTE, held_out_lines, seed_markdown, write_evidence

log = logging.getLogger("text_advice_quality")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_LEVELS = "16,64,256,1000,full"
MIN_CARVED_TEST = 200
CARVED_TEST_SHARE = 0.2
STRATEGIES = ("text_feature_extraction", "text_finetune_top", "text_full_finetune", "tfidf_linear")
# Cheapest first: a tie in the seed judgement and the evidence goes to the earlier (no encoder at all, then a frozen
# one, then more of it tuned).
COST_ORDER = ("tfidf_linear", "text_feature_extraction", "text_finetune_top", "text_full_finetune")
DEFAULT_BACKBONE = "all-minilm-l6-v2"  # advisor.measure.text.backbone.DEFAULT_TEXT_BACKBONE (importing it loads torch)
# What the LR sweep moves, by the recommended strategy's kind: the rate of what trains last (the encoder's top
# layer when it tunes the encoder; the layers below keep their layer-wise decay), else the head's; tfidf_linear
# has no rate, so its one setting, the logistic regression's C, is swept instead (a fit takes seconds).
SWEPT_PARAM = {"encoder": "encoder_lr", "embedding_head": "head_lr", "tfidf": "tfidf_c"}
LR_PARAMS = ("encoder_lr", "head_lr")  # what the "LR within x3" target counts; C is reported apart
# The decision guide's table (../shared/spec/decision-guide.md) on the text bands: where the held-out refit starts,
# so that no judged dataset's results sit in its starting point. Small data keeps the encoder frozen when close and
# tunes its top when far; medium data tunes the last layers when close and more of them when far (all six of
# MiniLM's); large data fine-tunes everything.
TEXT_GUIDE_TABLE: dict[tuple[str, str], str] = {
    **{(band, "close"): "text_feature_extraction" for band in ("tiny", "small")},
    **{(band, "far"): "text_finetune_top" for band in ("tiny", "small")},
    ("medium", "close"): "text_finetune_top", ("medium", "far"): "text_full_finetune",
    ("large", "close"): "text_full_finetune", ("large", "far"): "text_full_finetune",
}


# --------------------------------------------------------------------------- data


def _stratified(examples: Sequence[Any], per_class: int | None, rng: random.Random) -> list[Any]:
    """At most ``per_class`` of each class (None: all), in reading order."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_class[e.label].append(i)
    chosen = [i for members in by_class.values()
              for i in (members if per_class is None or len(members) <= per_class else rng.sample(members, per_class))]
    return [examples[i] for i in sorted(chosen)]


def _share(examples: Sequence[Any], share: float, minimum: int, rng: random.Random, *,
           keep_half: bool = True) -> set[int]:
    """Indices of a stratified ``share`` of ``examples`` (at least ``minimum`` in all; with ``keep_half`` at most
    half of each class, so that a carved-out split leaves the other half to train on)."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_class[e.label].append(i)
    wanted = max(share, minimum / max(len(examples), 1))
    return {i for members in by_class.values()
            for i in rng.sample(members, min(len(members) // 2 if keep_half else len(members),
                                             max(1, round(wanted * len(members)))))}


def judged_splits(dataset: Any, args: argparse.Namespace) -> tuple[list[Any], list[Any], list[Any], str]:
    """(training pool, validation texts, test texts, how the test split was made): the same for every level
    and seed of a dataset (seeded by --split-seed)."""
    rng = random.Random(args.split_seed)
    train = dataset.subset(dataset.train_split)
    if "test" in dataset.splits and dataset.train_split != "test":
        test_all = dataset.subset("test")
        test = _stratified_total(test_all, args.max_test, rng)
        how = f"the dataset's test split ({len(test)} of {len(test_all)} texts)"
    else:
        carved = _share(train, CARVED_TEST_SHARE, MIN_CARVED_TEST, rng)
        test = [e for i, e in enumerate(train) if i in carved]
        test = _stratified_total(test, args.max_test, rng)
        train = [e for i, e in enumerate(train) if i not in carved]
        how = f"carved out of {dataset.train_split} (seed {args.split_seed}, {len(test)} texts)"
    val = _stratified_total(dataset.subset("val"), args.max_val, rng) if "val" in dataset.splits else []
    return train, val, test, how


def _stratified_total(examples: Sequence[Any], total: int | None, rng: random.Random) -> list[Any]:
    """A stratified sample of at most ``total`` texts (each class its share), in reading order."""
    if total is None or len(examples) <= total:
        return list(examples)
    picked = _share(examples, total / len(examples), 0, rng, keep_half=False)
    return [e for i, e in enumerate(examples) if i in picked]


def levels_for(pool: Sequence[Any], wanted: list[int], full: bool) -> list[int | None]:
    """The levels that differ from ``full``: a level at or above the largest class's count is the full set."""
    largest = max(Counter(e.label for e in pool).values())
    levels: list[int | None] = [n for n in sorted(set(wanted)) if n < largest]
    return [*levels, None] if full else levels


def level_name(level: int | None) -> str:
    return "full" if level is None else str(level)


def level_from_name(name: str) -> int | None:
    return None if name == "full" else int(name)


def case_dataset(dataset: Any, pool: list[Any], val: list[Any], test: list[Any], level: int | None,
                 seed: int) -> Any:
    from tl_advise.advisor.data.text.reading import TextDataset

    train = _stratified(pool, level, random.Random(seed * 7919 + (level or 0)))
    examples = [*(_as(e, "train") for e in train), *(_as(e, "val") for e in val), *(_as(e, "test") for e in test)]
    return TextDataset(source=dataset.source, examples=examples)


def _as(example: Any, split: str) -> Any:
    import dataclasses

    return example if example.split == split else dataclasses.replace(example, split=split)


# --------------------------------------------------------------------------- a case


def budget_of(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two cases comparable (seeds are part of each case's key)."""
    return {"max_length": args.max_length, "max_epochs": args.max_epochs,
            "max_finetune_epochs": args.max_finetune_epochs, "time_budget_s": args.time_budget,
            "patience": args.patience, "max_val": args.max_val, "max_test": args.max_test,
            "split_seed": args.split_seed, "sample_size": args.sample_size, "device": args.device,
            "rules": str(args.rules) if args.rules else "default"}


def case_work(args: argparse.Namespace, name: str, level: int | None, seed: int) -> Path:
    """One case's folder under --work-dir: the advice's cache and every run of the case (its sweep's too)."""
    return args.work_dir / f"{name}@{level_name(level)}-seed{seed}"


def case_session(dataset: Any, splits: tuple[list[Any], list[Any], list[Any], str], level: int | None, seed: int,
                 backbone: Any, args: argparse.Namespace, work: Path) -> tuple[Any, float]:
    """(the advice session of one case's subsample, its seconds): cold, in an empty cache folder under ``work``."""
    from tl_advise.advisor.text_api import advise_text_session

    pool, val, test, _ = splits
    data = case_dataset(dataset, pool, val, test, level, seed)
    started = time.perf_counter()
    session = advise_text_session(data, backbone=backbone, seed=seed, sample_size=args.sample_size,
                                  cache_dir=work / "cache", rules=args.rules)
    return session, time.perf_counter() - started


def run_options(args: argparse.Namespace, out: Path, strategies: Sequence[str], seed: int,
                **rates: float) -> Any:
    """The runner's options under the case budget; ``rates``: TextRunOptions' rate overrides (the sweep's)."""
    from tl_advise.schema.text import TextRunOptions

    return TextRunOptions(output_dir=out, strategies=list(strategies), max_length=args.max_length,
                          max_epochs=args.max_epochs, max_finetune_epochs=args.max_finetune_epochs,
                          time_budget_s=args.time_budget, patience=args.patience, device=args.device, seed=seed,
                          **rates)


def run_record(r: Any) -> dict[str, Any]:
    """What a case records of one trained strategy (a ``TextStrategyRun``): judged on test, else on val."""
    judged = r.test if r.test is not None else r.val
    s = r.settings
    return {
        "status": r.status, "error": r.error,
        "accuracy": judged.accuracy if judged else None, "n_judged": judged.n_images if judged else 0,
        "correct": judged.correct if judged else None, "macro_f1": judged.macro_f1 if judged else None,
        "val_accuracy": r.val.accuracy if r.val else None, "epochs_run": r.epochs_run,
        "train_time_s": r.train_time_s,
        "max_length": s.max_length if s else None, "finetune_epochs": s.finetune_epochs if s else None,
        # the rates it trained with: what a later LR sweep's x1 point must match
        "head_lr": s.head_lr if s else None, "encoder_lr": s.encoder_lr if s else None,
        "tfidf_c": s.tfidf_c if s else None}


def run_case(name: str, dataset: Any, splits: tuple[list[Any], list[Any], list[Any], str], level: int | None,
             seed: int, backbone: Any, args: argparse.Namespace) -> dict[str, Any]:
    from tl_advise.runners.text import run_text_advice

    _, val, test, test_how = splits
    work = case_work(args, name, level, seed)
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    session, advice_s = case_session(dataset, splits, level, seed, backbone, args, work)  # a cold advice
    result, rec = session.result, session.result.recommendation
    report = run_text_advice(session, run_options(args, work / "run", STRATEGIES, seed))
    runs = {r.strategy: run_record(r) for r in report.runs}
    case: dict[str, Any] = {
        "dataset": name, "level": level_name(level), "seed": seed,
        "n_train": sum(result.dataset.split_counts.get("train", {}).values()),
        "texts_per_class": result.dataset.texts_per_class, "n_val": len(val) or None, "n_test": len(test),
        "test_split": test_how, "validation": report.validation, "judged_on": report.verdict.judged_on,
        "advice": advice_record(result, advice_s), "runs": runs, "verdict": report.verdict.status,
    }
    case.update(outcome(runs, rec.strategy))
    case["seconds"] = round(time.perf_counter() - started, 1)  # the case without its sweep (recorded apart)
    advised = runs.get(rec.strategy)
    if advised is not None and advised["accuracy"] is not None and sweep_wanted(args, seed):
        case["lr_sweep"] = lr_sweep(session, advised_recipe(session, rec.strategy), advised, work / "lr", seed, args)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return case


def advice_record(result: Any, seconds: float) -> dict[str, Any]:
    """What a case records of its advice (a ``TextAdviceResult``, cold in ``seconds``)."""
    from tl_advise.rules.text_engine import signal_values

    rec = result.recommendation
    return {"strategy": rec.strategy, "rule": rec.rule_id, "label": result.similarity.label,
            "score": result.similarity.score, "confidence": rec.confidence.level,
            "runner_up": rec.confidence.runner_up, "seconds": round(seconds, 2), "backbone": result.backbone.name,
            # every measured signal, scored or not: --report re-scores them with the current rules
            "signals": signal_values(result.similarity.signals),
            "tfidf_bar_cv": rec.tfidf_bar.accuracy if rec.tfidf_bar else None, "max_length": rec.recipe.max_length}


def outcome(runs: Mapping[str, dict[str, Any]], recommended: str) -> dict[str, Any]:
    """The case's best strategy and the advice's regret against it, in pp, with one s.e. of their difference
    (text by text: ``tl_advise.rules.statistics``); regret None when the recommended strategy was not judged."""
    from tl_advise.rules import statistics

    scored = {s: v for s, v in runs.items() if v["accuracy"] is not None}
    best = max(scored, key=lambda s: (scored[s]["accuracy"], s == recommended)) if scored else None
    advised = scored.get(recommended)
    if best is None or advised is None:
        return {"best": best, "regret_pp": None}
    gap = statistics.between(scored[best], advised)
    return {"best": best, "regret_pp": round(100 * (scored[best]["accuracy"] - advised["accuracy"]), 3),
            "gap_se_pp": round(100 * gap.se, 3), "advice_within_noise": statistics.compare(gap.mean, gap.se) != "ahead"}


# --------------------------------------------------------------------------- the LR sweep


def sweep_wanted(args: argparse.Namespace, seed: int) -> bool:
    """The LR sweep runs on one seed only (--lr-sweep-seed), as the image benchmark's: the check needs no repeats."""
    return not args.no_lr_sweep and seed == args.lr_sweep_seed


def advised_recipe(session: Any, strategy: str) -> Any:
    """``strategy``'s recipe as the advice states it (its rates are the advised ones; the budget caps no rate)."""
    from tl_advise.rules.text_engine import text_recipe

    result = session.result
    return text_recipe(session.rules, strategy, summary=result.dataset, lengths=result.lengths,
                       backbone=result.backbone, similarity=result.similarity.label)


def train_strategy(session: Any, strategy: str, out: Path, seed: int, args: argparse.Namespace,
                   **rates: float) -> dict[str, Any] | None:
    """``strategy`` trained alone under the case budget with ``rates`` overriding its recipe's; its record, or None
    when it failed."""
    from tl_advise.runners.text import run_text_advice

    (run,) = run_text_advice(session, run_options(args, out, [strategy], seed, **rates)).runs
    record = run_record(run)
    if record["accuracy"] is None:
        log.warning("  %s failed: %s", strategy, record["error"])
        return None
    return record


def lr_sweep(session: Any, recipe: Any, main: dict[str, Any], out: Path, seed: int,
             args: argparse.Namespace) -> dict[str, Any]:
    """The advised strategy (``recipe``) at its advised rate x LR_FACTORS (``SWEPT_PARAM`` of its kind); the x1
    point is ``main``, the case's own run, not trained again. Points record the swept value as ``lr`` (C for
    tfidf_linear), the judged accuracy and the training seconds."""
    param = SWEPT_PARAM[recipe.kind]
    advised = float(getattr(recipe, param))
    started = time.perf_counter()
    points = []
    for factor in LR_FACTORS:
        rate = sweep_rate(advised, factor)
        if factor == 1.0:
            got: dict[str, Any] | None = main
        else:
            log.info("  LR sweep %s %s=%g", recipe.strategy, param, rate)
            got = train_strategy(session, recipe.strategy, out / f"{param}_{factor:.3g}", seed, args, **{param: rate})
        if got is not None:
            points.append({"factor": factor, "lr": rate, "accuracy": got["accuracy"], "n_judged": got["n_judged"],
                           "train_time_s": got["train_time_s"]})
    sweep = {"strategy": recipe.strategy, "param": param, "advised": advised, "points": points,
             "seconds": round(time.perf_counter() - started, 1)}
    return judged_sweep(sweep, main["n_judged"])


def swept_strategy(case: dict[str, Any], rules: Any) -> str | None:
    """The strategy whose LR a case's sweep checks: the one the current rules recommend on its recorded signals
    and size (a recorded run of it is the x1 point); None when it has no judged run."""
    judged = rescored(case, rules)
    strategy = judged["advice"]["strategy"] if judged is not None else None
    return strategy if judged is not None and strategy in judged["runs"] else None


def current_sweep(case: dict[str, Any], rules: Any) -> dict[str, Any] | None:
    """The case's recorded sweep when it still checks the current advice: of the strategy the current rules
    recommend, around the value they advise for it in the case's cell; else None (a sweep of what the rules
    advised before: listed, not counted)."""
    sweep, strategy = case.get("lr_sweep"), swept_strategy(case, rules)
    if not sweep or sweep.get("strategy") != strategy:
        return None
    return sweep if sweep["advised"] == advised_value(case, rules, strategy, sweep["param"]) else None


def advised_value(case: dict[str, Any], rules: Any, strategy: str, param: str) -> float | None:
    """What the current rules give ``strategy`` for ``param`` (a rate, or tfidf_linear's C) in the cell of the
    recorded ``case`` (re-scored from its signals and size)."""
    from tl_advise.rules.text_engine import encoder_rate

    judged = rescored(case, rules)
    if judged is None:
        return None
    if param == "encoder_lr":
        return encoder_rate(rules, strategy, rules.row_for(judged["size_band"], judged["advice"]["label"]))
    value = getattr(rules.strategies[strategy], param)
    return None if value is None else float(value)


def stale_runs(case: dict[str, Any], rules: Any) -> dict[str, str]:
    """The recorded runs of ``case`` trained at another encoder rate than the current rules give their strategy in
    the case's cell: strategy -> why (what ``--retrain-stale`` trains again)."""
    out = {}
    for strategy, run in case["runs"].items():
        rate, trained = advised_value(case, rules, strategy, "encoder_lr"), trained_rate(run, rules, strategy)
        if rate is not None and trained is not None and trained != rate:
            out[strategy] = f"recorded at encoder_lr {trained:g}, the rules now give {rate:g}"
    return out


def trained_rate(run: dict[str, Any], rules: Any, strategy: str) -> float | None:
    """The encoder rate a recorded run trained: its record's; a run recorded before records kept rates trained
    the strategy's own (no cell had a rate of its own then)."""
    return run["encoder_lr"] if "encoder_lr" in run else rules.strategies[strategy].encoder_lr


def sweep_due(case: dict[str, Any], args: argparse.Namespace, rules: Any) -> bool:
    """A recorded case on the sweep's seed without a sweep of the current advice (none, or one of a strategy or
    value the rules advised before) whose runs are current (a stale one is trained again first)."""
    return (sweep_wanted(args, int(case["seed"])) and swept_strategy(case, rules) is not None
            and current_sweep(case, rules) is None and not stale_runs(case, rules))


def recorded_mismatch(run: dict[str, Any], recipe: Any, args: argparse.Namespace, rules: Any) -> str | None:
    """Why a recorded run cannot be the x1 point of a sweep trained now (it trained another rate or length than
    the recipe gives today), or None."""
    param = SWEPT_PARAM[recipe.kind]
    trained = trained_rate(run, rules, recipe.strategy) if param == "encoder_lr" else run.get(param)
    if trained is not None and trained != getattr(recipe, param):
        return f"recorded at {param} {trained:g}, the rules now give {getattr(recipe, param):g}"
    length = args.max_length if args.max_length is not None and recipe.kind != "tfidf" else recipe.max_length
    if run.get("max_length") is not None and run["max_length"] != length:
        return f"recorded at max length {run['max_length']}, the recipe now gives {length}"
    return None


def sweep_recorded(case: dict[str, Any], dataset: Any, splits: tuple[list[Any], list[Any], list[Any], str],
                   backbone: Any, args: argparse.Namespace, rules: Any) -> dict[str, Any] | None:
    """The LR sweep of a recorded case, its strategies not trained again: the advice is rebuilt on the case's
    subsample (the recipe the runs need), the recorded run of the recommended strategy is the x1 point. None
    when that run no longer matches the recipe (the case needs --force)."""
    name, level, seed = case["dataset"], level_from_name(case["level"]), int(case["seed"])
    label = f"{name}@{case['level']} seed {seed}"
    strategy = swept_strategy(case, rules)
    assert strategy is not None, "sweep_due() picks the cases to sweep"
    work = case_work(args, name, level, seed)
    shutil.rmtree(work, ignore_errors=True)
    session, _ = case_session(dataset, splits, level, seed, backbone, args, work)
    if session.result.recommendation.strategy != strategy:
        log.warning("%s: the advice now recommends %s, the recorded signals %s: sweeping %s", label,
                    session.result.recommendation.strategy, strategy, strategy)
    recipe = advised_recipe(session, strategy)
    why = recorded_mismatch(case["runs"][strategy], recipe, args, rules)
    if why is not None:
        log.error("%s: %s %s: no sweep (train its stale runs again with --retrain-stale)", label, strategy, why)
        sweep = None
    else:
        log.info("%s: recorded without the sweep of %s: sweeping", label, strategy)
        sweep = lr_sweep(session, recipe, case["runs"][strategy], work / "lr", seed, args)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return sweep


def retrain_stale(case: dict[str, Any], dataset: Any, splits: tuple[list[Any], list[Any], list[Any], str],
                  backbone: Any, args: argparse.Namespace, rules: Any) -> dict[str, Any]:
    """``case`` with its stale runs (:func:`stale_runs`) trained again on its subsample, the others kept: the
    advice is rebuilt (the recipes the runs need), the outcome judged again over every run. The case's
    ``verdict`` (``--run``'s, over the strategies trained together) becomes None; ``retrained`` says what moved;
    ``advice`` is the rebuilt one (what the runs trained and the regret is judged against)."""
    from tl_advise.runners.text import run_text_advice

    name, level, seed = case["dataset"], level_from_name(case["level"]), int(case["seed"])
    label = f"{name}@{case['level']} seed {seed}"
    stale = stale_runs(case, rules)
    for strategy, why in stale.items():
        log.info("%s: %s %s: training it again", label, strategy, why)
    work = case_work(args, name, level, seed)
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    session, advice_s = case_session(dataset, splits, level, seed, backbone, args, work)
    report = run_text_advice(session, run_options(args, work / "run", sorted(stale), seed))
    runs = {**case["runs"], **{r.strategy: run_record(r) for r in report.runs}}
    retrained = [*case.get("retrained", []),
                 {"strategies": stale, "seconds": round(time.perf_counter() - started, 1)}]
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return {**case, "advice": advice_record(session.result, advice_s), "runs": runs, "verdict": None,
            "retrained": retrained, **outcome(runs, session.result.recommendation.strategy)}


def lr_targets(cases: Sequence[dict[str, Any]], rules: Any) -> dict[str, Any]:
    """The issue's "advised LR within x3 of the sweep's best" over the sweeps of the strategy each case's current
    recommendation is, around the value advised now (raw and tie-aware); tfidf_linear's C apart (not a rate);
    sweeps of what the rules no longer advise are left out and counted apart (a training run sweeps the new)."""
    current = [sweep for c in cases for sweep in [current_sweep(c, rules)] if sweep is not None]
    rates = [s for s in current if s["param"] in LR_PARAMS]
    regularisation = [s for s in current if s["param"] not in LR_PARAMS]
    return {"lr_checked": len(rates), "lr_within_3x": sum(s["within_3x"] for s in rates),
            "lr_within_3x_tied": sum(s["within_3x_tied"] for s in rates),
            "c_checked": len(regularisation), "c_within_3x": sum(s["within_3x"] for s in regularisation),
            "c_within_3x_tied": sum(s["within_3x_tied"] for s in regularisation),
            "sweeps_not_counted": sum(1 for c in cases if c.get("lr_sweep")) - len(current)
            + sum(len(c.get("lr_sweeps_before", [])) for c in cases)}


def lr_directions(cases: Sequence[dict[str, Any]], rules: Any) -> dict[str, dict[str, int]]:
    """Which side of the advised rate each counted sweep's best lies on, by the close/far label the current rules
    give the case: ``higher`` / ``lower`` when the best is ahead of the advised rate beyond noise (unpaired: the
    sweep keeps no per-image results), else ``at``. What a rate per label would rest on."""
    from tl_advise.rules import statistics

    out: dict[str, dict[str, int]] = {}
    for c in cases:
        sweep, judged = current_sweep(c, rules), rescored(c, rules)
        if sweep is None or judged is None or sweep["param"] not in LR_PARAMS:
            continue
        accuracy = {p["lr"]: p["accuracy"] for p in sweep["points"]}
        best, advised = sweep["best_lr"], sweep["advised"]
        n = int(c["runs"][sweep["strategy"]]["n_judged"])
        ahead = advised in accuracy and statistics.unpaired(accuracy[best], accuracy[advised], n).outcome == "ahead"
        side = "at" if not ahead else "higher" if best > advised else "lower"
        counts = out.setdefault(judged["advice"]["label"], {"higher": 0, "at": 0, "lower": 0})
        counts[side] += 1
    return out


def rejudged_sweep(case: dict[str, Any]) -> dict[str, Any]:
    """The case's recorded sweep judged with the current check (on the texts its x1 run was judged on)."""
    sweep = case["lr_sweep"]
    return judged_sweep(sweep, int(case["runs"][sweep["strategy"]]["n_judged"]))


# --------------------------------------------------------------------------- results


def case_key(case: dict[str, Any]) -> tuple[str, str, int]:
    return case["dataset"], case["level"], int(case["seed"])


def load_results(path: Path, budget: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"budget": budget, "commands": [], "cases": []}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("budget") == budget:
            results["cases"], results["commands"] = old.get("cases", []), old.get("commands", [])
        else:
            log.warning("%s has another budget: starting over", path)
    return results


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [c for c in cases if c.get("regret_pp") is not None]
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in judged:
        cell = f"{c['advice']['rule']}"
        for s, run in c["runs"].items():
            if run["accuracy"] is not None:
                cells[cell][s].append(run["accuracy"])
    return {
        "cases": len(judged),
        "mean_regret_pp": round(stats.fmean(c["regret_pp"] for c in judged), 3) if judged else None,
        "best_or_within_noise": sum(1 for c in judged if c.get("advice_within_noise")),
        "per_rule": {rule: {s: round(stats.fmean(v), 4) for s, v in by.items()} for rule, by in sorted(cells.items())},
    }


# --------------------------------------------------------------------------- judgement and evidence


def rescored(case: dict[str, Any], rules: Any) -> dict[str, Any] | None:
    """``case`` as the current text rules decide it, in the shape ``_quality_metrics.seed_averages`` reads: the
    close/far label re-scored from the recorded signal values, the size band from the texts per class, the row
    of the table for both (``advice.strategy``/``rule``), ``n_judged`` (the fewest judged texts of a run) and
    only the runs that were judged. None when no run was."""
    from tl_advise.rules.text_engine import judge_signal_values

    runs = {s: r for s, r in case["runs"].items() if r.get("accuracy") is not None}
    if not runs:
        return None
    advice = case["advice"]
    values = {k: float(v) for k, v in advice.get("signals", {}).items() if v is not None}
    verdict = judge_signal_values(rules, advice.get("backbone", DEFAULT_BACKBONE), values)
    band = rules.size_bands.band_for(case["texts_per_class"])
    row = rules.row_for(band, verdict.label)
    return {**case, "size_band": band, "runs": runs, "n_judged": min(int(r["n_judged"]) for r in runs.values()),
            "advice": {**advice, "label": verdict.label, "score": verdict.score, "strategy": row.strategy,
                       "rule": row.id}}


def _same_test_texts(case: Mapping[str, Any]) -> bool:
    """Every seed of a dataset is judged on the same texts: ``judged_splits`` draws the test split with
    ``--split-seed`` only (part of the budget), whatever the level and seed."""
    return True


def seed_judgement(cases: Sequence[dict[str, Any]], rules: Any) -> dict[str, Any]:
    """Each dataset x level over its seeds, judged against what the current text rules advise (decided on the
    lowest seed's signals, as the image benchmark does), the targets, and each rule's evidence: what
    ``--write-evidence`` writes into the text rules file."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for c in sorted(cases, key=case_key):
        judged = rescored(c, rules)
        if judged is not None:
            first.setdefault((c["dataset"], c["level"]), judged)
    judged_cases = [{**j, "size_band": f["size_band"], "advice": f["advice"]}
                    for c in sorted(cases, key=case_key) for j in [rescored(c, rules)] if j is not None
                    for f in [first[(c["dataset"], c["level"])]]]
    averages = seed_averages(judged_cases, COST_ORDER, _same_test_texts)

    def decision(a: SeedAverage) -> tuple[str, str]:
        return first[(a.dataset, a.level)]["advice"]["rule"], a.recommended

    rows, evidence = judge_by_rule(averages, decision)
    targets = {**regret_targets(rows), **lr_targets(cases, rules), "lr_directions": lr_directions(cases, rules)}
    cells = [(a.band, a.label) for a in averages]
    one_cell = ("any", "any")  # one strategy for the whole table: the fewest choices fitted to the data
    held_out = {"beyond_noise": table_lodo(averages, cells, TEXT_GUIDE_TABLE, beyond_noise=True),
                "least_regret": table_lodo(averages, cells, TEXT_GUIDE_TABLE, beyond_noise=False),
                "one_strategy": table_lodo(averages, [one_cell] * len(averages),
                                           {one_cell: TEXT_GUIDE_TABLE[("tiny", "close")]}, beyond_noise=False)}
    return {"cases": rows, "targets": targets, "held_out": held_out, "rule_evidence": evidence}


def markdown(results: dict[str, Any]) -> str:
    cases = sorted(results["cases"], key=case_key)
    s = results.get("summary") or summary(cases)
    lines = ["# Text advice quality (all-minilm-l6-v2)", ""]
    for cmd in results["commands"]:
        lines.append(f"- `{cmd['command']}` at commit `{cmd['commit'][:10]}`{' (dirty)' if cmd.get('dirty') else ''}, "
                     f"{cmd['date']}")
    lines += ["", "Budget: " + ", ".join(f"{k} {v}" for k, v in results["budget"].items()), "",
              f"**{s['cases']} case(s): mean regret {s['mean_regret_pp']} pp; the advice was best or within one "
              f"s.e. of the best in {s['best_or_within_noise']}.**", "",
              "Accuracy on the judging split (test: the dataset's, or carved out); regret = best - advised, in "
              "points; ± one s.e. of that gap, text by text.", "",
              "| dataset | level | seed | per class | label (score) | advised (rule) | "
              + " | ".join(STRATEGIES) + " | best | regret pp | advice s | case s |",
              "|---|---|---|---|---|---|" + "---|" * len(STRATEGIES) + "---|---|---|---|"]
    for c in cases:
        a = c["advice"]
        accs = [f"{c['runs'][st]['accuracy']:.3f}" if c["runs"].get(st, {}).get("accuracy") is not None
                else c["runs"].get(st, {}).get("status", "-") for st in STRATEGIES]
        regret = "-" if c.get("regret_pp") is None else f"{c['regret_pp']:.1f} ± {c.get('gap_se_pp', 0):.1f}"
        lines.append(f"| {c['dataset']} | {c['level']} | {c['seed']} | {c['texts_per_class']:.0f} | {a['label']} "
                     f"({a['score']:.2f}) | {a['strategy']} ({a['rule']}) | " + " | ".join(accs)
                     + f" | {c['best']} | {regret} | {a['seconds']:.1f} | {c['seconds']:.0f} |")
    if s["per_rule"]:
        lines += ["", "## Mean accuracy per rule that fired", "",
                  "| rule | " + " | ".join(STRATEGIES) + " |", "|---|" + "---|" * len(STRATEGIES)]
        for rule, by in s["per_rule"].items():
            lines.append(f"| {rule} | " + " | ".join(f"{by[st]:.3f}" if st in by else "-" for st in STRATEGIES) + " |")
    lines += sweep_markdown(cases, (results.get("seed_judgement") or {}).get("targets", {}))
    judged = results.get("seed_judgement") or {}
    lines += seed_markdown(judged, results.get("source", "this file"), STRATEGIES)
    if judged.get("held_out"):
        held = judged["held_out"]
        lines += ["", "### Held out: the targets judged leave-one-dataset-out", "",
                  "Each dataset's cases advised by a table refit on the other datasets' cases alone (target mean "
                  "regret ≤ 1.0 pp, ≥ 90 % within one s.e.). The current rules were chosen on all of them; these are "
                  "the figures for a dataset no rule has seen, by three refit procedures: each cell from the guide's "
                  "(a cell no other dataset measured keeps the guide's strategy), and one strategy for every cell:",
                  "", *held_out_lines([("each cell from the guide, moving only beyond noise", held["beyond_noise"]),
                                       ("each cell to the least mean regret, noise or not", held["least_regret"]),
                                       ("one strategy for every cell, the least mean regret", held["one_strategy"])])]
    return "\n".join([*lines, ""])


def factor_name(factor: float) -> str:
    """x1, x3, ÷3 ... as the sweep's columns read."""
    return f"×{factor:.3g}" if factor >= 1 else f"÷{1 / factor:.3g}"


def sweep_markdown(cases: Sequence[dict[str, Any]], targets: dict[str, Any]) -> list[str]:
    """Each recorded sweep (accuracy at each factor of the advised value), and beside the LR target (under
    "Targets") tfidf_linear's C and the sweeps left out of it."""
    swept = [(c, sw, "") for c in cases for sw in [c.get("lr_sweep")] if sw] + [
        (c, sw, " (before)") for c in cases for sw in c.get("lr_sweeps_before", [])]
    if not swept:
        return []
    lines = ["", "## LR sweep of the recommended strategy", "",
             "The strategy the rules recommend, trained again at " + ", ".join(factor_name(f) for f in LR_FACTORS)
             + " its advised value (the encoder's top-layer rate when it tunes the encoder, the layers below keep "
             "their decay; else the head's; tfidf_linear: its C); ×1 is the case's own run. "
             "Accuracy on the judging split; 'tied': the advised value is within ×3 of a value whose accuracy "
             "ties the best (one s.e.).", "",
             "| dataset | level | seed | strategy | swept | advised | " + " | ".join(factor_name(f) for f in LR_FACTORS)
             + " | best | within ×3 (raw / tied) | sweep s |", "|" + "---|" * (9 + len(LR_FACTORS))]
    for c, sw, when in swept:
        accuracy = {p["factor"]: p["accuracy"] for p in sw["points"]}
        cells = [f"{accuracy[f]:.3f}" if f in accuracy else "failed" for f in LR_FACTORS]
        lines.append(f"| {c['dataset']} | {c['level']} | {c['seed']} | {sw['strategy']}{when} | {sw['param']} | "
                     f"{sw['advised']:.3g} | " + " | ".join(cells) + f" | {sw['best_lr']:.3g} | "
                     f"{'yes' if sw['within_3x'] else 'no'} / {'yes' if sw['within_3x_tied'] else 'no'} | "
                     f"{sw.get('seconds', 0):.0f} |")
    notes = []  # the LR target itself is with the others, under "Targets" below
    for label, side in sorted(targets.get("lr_directions", {}).items()):
        notes.append(f"- {label} sets: the best rate above the advised one beyond noise in {side['higher']}, below "
                     f"it in {side['lower']}, tied with it in {side['at']} of {sum(side.values())} sweeps")
    if targets.get("c_checked"):
        notes.append(f"- tfidf_linear's C within ×3 of the sweep's best: raw {targets['c_within_3x']}/"
                     f"{targets['c_checked']}, tie-aware {targets['c_within_3x_tied']}/{targets['c_checked']} "
                     "(not a rate: apart from the LR target)")
    if targets.get("sweeps_not_counted"):
        notes.append(f"- {targets['sweeps_not_counted']} sweep(s) of a strategy or around a value the current "
                     "rules no longer advise: listed, not counted (a training run of those cases sweeps the new)")
    return [*lines, *([""] if notes else []), *notes]


def write_outputs(results: dict[str, Any], prefix: Path, rules: Any) -> None:
    for case in results["cases"]:  # judged again with the current check, as the image benchmark's sweeps are
        if case.get("lr_sweep"):
            case["lr_sweep"] = rejudged_sweep(case)
    results["summary"] = summary(results["cases"])
    path = prefix.with_suffix(".json").resolve()
    results["source"] = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    results["seed_judgement"] = seed_judgement(results["cases"], rules)
    _atomic_text(prefix.with_suffix(".json"), json.dumps(results, indent=1))
    _atomic_text(prefix.with_suffix(".md"), markdown(results))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    shared = Path(os.environ.get("TL_ADVISE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("datasets", nargs="*", type=Path, help="text dataset folders (default: every one in <shared>/text)")
    p.add_argument("--shared", type=Path, default=shared)
    p.add_argument("--levels", default=DEFAULT_LEVELS, help="training texts per class, comma-separated; 'full'")
    p.add_argument("--seeds", default="0", help="comma-separated; each seed is a case of its own")
    p.add_argument("--max-length", type=int, default=None, help="tokens (default: each recipe's own)")
    p.add_argument("--max-epochs", type=int, default=None, help="cap on every phase (default: the recipes')")
    p.add_argument("--max-finetune-epochs", type=int, default=None,
                   help="cap on the fine-tuning phase only (the heads train on cached embeddings: cheap)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per strategy")
    p.add_argument("--patience", type=int, default=None, help="default: each recipe's")
    p.add_argument("--max-val", type=int, default=200, help="validation texts (a seeded, stratified sample)")
    p.add_argument("--max-test", type=int, default=None, help="judging texts (default: the whole test split)")
    p.add_argument("--split-seed", type=int, default=1000, help="seeds the test carving and val/test sampling")
    p.add_argument("--sample-size", type=int, default=256, help="texts the advice embeds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rules", type=Path, default=None, help="text rules file (default: packaged)")
    p.add_argument("--out", type=Path, default=None, help="output prefix (default: results/text_advice_quality)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/tl-advise-text-advice-quality"))
    p.add_argument("--keep", action="store_true", help="keep each case's run folder (models, checkpoints)")
    p.add_argument("--force", action="store_true", help="redo cases already recorded")
    p.add_argument("--lr-sweep-seed", type=int, default=0, help="the seed whose cases get the LR sweep")
    p.add_argument("--no-lr-sweep", action="store_true", help="train no LR sweep (a later run adds them)")
    p.add_argument("--sweep-recorded", action="store_true",
                   help="train no new case: only the LR sweeps that the recorded cases among the given datasets, "
                   "levels and seeds lack (their strategies are not trained again)")
    p.add_argument("--retrain-stale", action="store_true",
                   help="train no new case: train again only the recorded runs whose encoder rate the current rules "
                   "no longer give (the other runs of the case kept), then the sweep the case then lacks")
    p.add_argument("--report", action="store_true",
                   help="train nothing: re-render the .md (and the seed judgement with each rule's evidence, by the "
                   "current text rules) from the .json only")
    p.add_argument("--write-evidence", type=Path, default=None, metavar="TEXT_RULES_TOML",
                   help="with --report: write each rule's measured evidence into this text rules file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: sst2 at 16/class, max length 32, 1 epoch per phase, 64 val / 200 test texts")
    args = p.parse_args(argv)
    if args.write_evidence and not args.report:
        p.error("--write-evidence needs --report")
    if args.sweep_recorded and (args.force or args.no_lr_sweep):
        p.error("--sweep-recorded only adds LR sweeps: leave out --force and --no-lr-sweep")
    if args.retrain_stale and (args.force or args.sweep_recorded):
        p.error("--retrain-stale trains only the stale runs of recorded cases: leave out --force and "
                "--sweep-recorded")
    args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if args.quick:
        args.levels, args.max_length, args.max_epochs = "16", 32, 1
        args.max_val, args.max_test, args.sample_size = 64, 200, 64
        if not args.datasets:
            args.datasets = [args.shared / "text" / "sst2"]
        args.out = args.out or RESULTS / "text_advice_quality_quick"
    args.out = args.out or RESULTS / "text_advice_quality"
    if not args.datasets:
        root = args.shared / "text"
        args.datasets = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("tl_advise", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tl_advise.rules.text_schema import load_text_rules

    rules = load_text_rules(args.rules)
    if args.report:
        return report(args, rules)
    if not args.datasets:
        log.error("no text datasets: give folders or set TL_ADVISE_SHARED to the folder holding text/")
        return 2
    from tl_advise.advisor.data.text.reading import read_text_dataset

    results_path = args.out.with_suffix(".json")
    results = load_results(results_path, budget_of(args))
    if args.sweep_recorded and not results["cases"]:  # nothing to sweep: the file is left as it is
        log.error("%s: no cases recorded with this budget to sweep", results_path)
        return 2
    results["commands"].append(provenance(__file__, argv))
    recorded = {case_key(c): c for c in results["cases"]}
    tokens = [x.strip() for x in args.levels.split(",") if x.strip()]
    wanted = [int(x) for x in tokens if x != "full"]
    backbone = load_backbone(args)  # loaded once; the advice of each case is cold all the same
    started = time.perf_counter()
    for src in args.datasets:
        if not src.is_dir():
            log.error("no dataset folder %s", src)
            return 2
        if args.sweep_recorded and not any(c["dataset"] == src.name and sweep_due(c, args, rules)
                                           for c in results["cases"]):
            continue
        if args.retrain_stale and not any(c["dataset"] == src.name and stale_runs(c, rules)
                                          for c in results["cases"]):
            continue
        dataset = read_text_dataset(src)
        splits = judged_splits(dataset, args)
        for seed in args.seeds:
            for level in levels_for(splits[0], wanted, "full" in tokens):
                key = (src.name, level_name(level), seed)
                label = f"{src.name}@{level_name(level)} seed {seed}"
                old = recorded.get(key)
                if old is not None and not args.force and args.retrain_stale and stale_runs(old, rules):
                    case, trained = retrain_stale(old, dataset, splits, backbone, args, rules), True
                    if sweep_due(case, args, rules):
                        sweep = sweep_recorded(case, dataset, splits, backbone, args, rules)
                        case = with_sweep(case, sweep) if sweep is not None else case
                elif old is not None and not args.force:
                    if not sweep_due(old, args, rules):
                        log.info("%s: already in %s, skipped", label, results_path)
                        continue
                    sweep = sweep_recorded(old, dataset, splits, backbone, args, rules)
                    if sweep is None:
                        continue
                    case, trained = with_sweep(old, sweep), False
                elif args.sweep_recorded or args.retrain_stale:
                    log.info("%s: not recorded, and --sweep-recorded/--retrain-stale train no new case", label)
                    continue
                else:
                    case, trained = run_case(src.name, dataset, splits, level, seed, backbone, args), True
                results["cases"] = [c for c in results["cases"] if case_key(c) != key] + [case]
                write_outputs(results, args.out, rules)
                log_case(label, case, trained=trained)
    write_outputs(results, args.out, rules)
    log.info("all done in %.0fs", time.perf_counter() - started)
    print(markdown(results))
    return 0


def with_sweep(case: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """``case`` with a new sweep; the one it had (of what the rules advised before) kept in ``lr_sweeps_before``."""
    before = [*case.get("lr_sweeps_before", []), *([case["lr_sweep"]] if case.get("lr_sweep") else [])]
    return {**case, "lr_sweep": sweep, **({"lr_sweeps_before": before} if before else {})}


def load_backbone(args: argparse.Namespace) -> Any:
    from tl_advise.advisor.measure.text.backbone import load_text_backbone

    return load_text_backbone(device=args.device)


def log_case(label: str, case: dict[str, Any], *, trained: bool) -> None:
    """The case's outcome (``trained``: a new case, else only its sweep was)."""
    if trained:
        seconds = case["retrained"][-1]["seconds"] if case.get("retrained") else case["seconds"]
        log.info("%s done in %.0fs: best %s, advised %s, regret %s pp", label, seconds, case["best"],
                 case["advice"]["strategy"], case["regret_pp"])
    sweep = case.get("lr_sweep")
    if sweep is not None:
        log.info("%s: LR sweep of %s (%s) in %.0fs: advised %g, best %g; within x3 %s, tie-aware %s", label,
                 sweep["strategy"], sweep["param"], sweep["seconds"], sweep["advised"], sweep["best_lr"],
                 sweep["within_3x"], sweep["within_3x_tied"])


def report(args: argparse.Namespace, rules: Any) -> int:
    """``--report``: the .md (and the .json's summary and seed judgement) from the recorded cases, whatever budget
    they were trained under; with ``--write-evidence`` each rule's evidence goes into that text rules file."""
    path = args.out.with_suffix(".json")
    if not path.is_file():
        log.error("%s: no results to report on", path)
        return 2
    results = json.loads(path.read_text(encoding="utf-8"))
    write_outputs(results, args.out, rules)
    if args.write_evidence:
        evidence = results["seed_judgement"]["rule_evidence"]
        text = args.write_evidence.read_text(encoding="utf-8")
        _atomic_text(args.write_evidence, write_evidence(text, evidence, results["source"], TEXT_EVIDENCE_NOTE))
        log.info("evidence of %d rule(s) written to %s", len(evidence), args.write_evidence)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
