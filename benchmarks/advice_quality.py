"""Advice quality: does the recommended strategy train best? Regret, agreement, LR check, cost, calibration.

    .venv/bin/python benchmarks/advice_quality.py                      # every dataset, levels 10 and 40/class
    .venv/bin/python benchmarks/advice_quality.py --quick              # one dataset, one level, tiny budget
    .venv/bin/python benchmarks/advice_quality.py --device cuda        # same command on a GPU

For each dataset and images-per-class level (a seeded subsample built as a folder of copies, with a
fixed validation split), the advice runs cold (own cache folder, timed), then every strategy trains
under one budget (same image size, epoch cap and seed for all) with the runners, each with the recipe
the rules give it on that dataset; then a learning-rate sweep (advised ÷10 … ×10) on the recommended
strategy. Results go to ``benchmarks/results/advice_quality.{json,md,png}``, written after every case;
a re-run skips the cases already there with the same budget (``--force`` redoes them).
The calibration section refits the similarity weighting/threshold and the decision table's cells from
the measured cases, judged leave-one-dataset-out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _provenance import provenance
from _quality_metrics import (
    STRATEGIES,
    Case,
    SeedAverage,
    Weighting,
    agrees,
    best_strategy,
    case_regret,
    cell_evidence,
    combined_score,
    cost_ratio,
    fit_table,
    fit_threshold,
    judge,
    leave_one_dataset_out,
    lr_check,
    mean,
    regret_pp,
    seed_averages,
    std_error,
    tied_best,
)

from tl_advise.advisor.defaults import DEFAULT_BACKBONE  # what advise_session uses; the cases record it

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
LR_FACTORS = (0.1, 1 / 3, 1.0, 3.0, 10.0)

# A person's label (../shared/README.md) and the training image size: the native size rounded up to 64
# for the tiny-image sets (28 px X-rays, 25 px faces, 64 px satellite tiles), --image-size for photos,
# except where `train_px` sets it: flowers5's 4,000+ photos per case at 96 px took over 5 min per epoch
# on the shared 2-core machine, more than a working session per case; at 64 px a case fits in one.
DATASETS: dict[str, dict[str, Any]] = {
    "hymenoptera": {"person": "close", "native_px": None},
    "flowers5_small": {"person": "close", "native_px": None},
    "lfw_faces_vs_nonfaces": {"person": "in between", "native_px": 25},
    "eurosat_small": {"person": "far", "native_px": 64},
    "pneumoniamnist": {"person": "far", "native_px": 28},
    # The size axis (../shared/README.md): close small band, far medium band, an in-between tiny set.
    "flowers5": {"person": "close", "native_px": None, "train_px": 64},
    "eurosat_medium": {"person": "far", "native_px": 64},
    "sign_digits": {"person": "in between", "native_px": 100},
    # `tl-advise sample-data digits`: scikit-learn's 8x8 digits, not in ../shared (an out-of-sample case).
    "digits": {"person": "far", "native_px": 8},
}

log = logging.getLogger("advice_quality")


# --------------------------------------------------------------------------- dataset levels


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _classes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


# The copies' modification time: fixed, so that a case's file identities (path, size, mtime) and with them
# the runners' checkpoint fingerprints survive a rebuild of the level folder — and a session whose shared
# data were re-created with new mtimes, which made symlinks (following them to the source) useless for
# resuming a case in the next session.
COPY_MTIME_NS = 1_700_000_000 * 10**9


def _copy_all(files: Sequence[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        shutil.copyfile(f, target)
        os.utime(target, ns=(COPY_MTIME_NS, COPY_MTIME_NS))


def split_layout(src: Path) -> tuple[Path, Path | None, Path | None]:
    """(train root, val root or None, test root or None) of a dataset folder.

    ``train/`` + ``val/``: both used. ``train/`` without ``val/`` (e.g. ``train/`` + ``test/``): validation
    is held out from ``train/`` as the runners do, and ``test/`` is kept for a test score. No ``train/``:
    the folder itself holds the classes.
    """
    if not (src / "train").is_dir():
        return src, None, None
    val = next((src / n for n in ("val", "valid", "validation") if (src / n).is_dir()), None)
    test = src / "test" if (src / "test").is_dir() else None
    return src / "train", val, test


def build_level(src: Path, dest: Path, level: int | None, seed: int, val_fraction: float = 0.2) -> dict[str, int]:
    """A train/ + val/ (+ test/) folder of copies: at most ``level`` train images per class (None: all), seeded.

    Validation is the dataset's own val/ split when it has one; otherwise a seeded ``val_fraction`` hold-out
    per class made once, the same at every level. A test/ split is linked as it is (a test score).
    Returns the per-class train counts.
    """
    if dest.exists():
        shutil.rmtree(dest)
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    train_root, val_root, test_root = split_layout(src)
    for cls in _classes(train_root):
        files = _images(cls)
        if val_root is not None:
            train, val = files, (_images(val_root / cls.name) if (val_root / cls.name).is_dir() else [])
        else:
            shuffled = files[:]
            rng.shuffle(shuffled)
            n_val = max(1, round(val_fraction * len(files)))
            val, train = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
        if level is not None and len(train) > level:
            train = sorted(random.Random(f"{seed}:{cls.name}:{level}").sample(train, level))
        _copy_all(train, dest / "train" / cls.name)
        _copy_all(val, dest / "val" / cls.name)
        if test_root is not None and (test_root / cls.name).is_dir():
            _copy_all(_images(test_root / cls.name), dest / "test" / cls.name)
        counts[cls.name] = len(train)
    return counts


def levels_for(src: Path, wanted: Sequence[int], seed: int, full: bool = False) -> list[int | None]:
    """The wanted levels below the dataset's train size per class, then None (all) if a level reached it
    or ``full`` asks for the whole dataset."""
    train_root, val_root, _ = split_layout(src)
    per_class = [len(_images(c)) for c in _classes(train_root)]
    available = min(per_class) if val_root is not None else min(n - max(1, round(0.2 * n)) for n in per_class)
    levels: list[int | None] = [lv for lv in sorted(set(wanted)) if lv < available]
    if full or len(levels) < len(set(wanted)):
        levels.append(None)
    return levels


def level_name(level: int | None) -> str:
    return "full" if level is None else f"{level}/class"


def level_from_name(name: str) -> int | None:
    """The inverse of :func:`level_name`."""
    return None if name == "full" else int(name.split("/")[0])


def case_work_dir(args: argparse.Namespace, dataset: str, level: str, seed: int) -> Path:
    """Where one case's level folder, cache and runs live (under --work-dir, never in the dataset)."""
    return args.work_dir / f"{dataset}@{level}@seed{seed}".replace("/", "_")


def case_key(case: dict[str, Any]) -> tuple[str, str, int]:
    """A case is one dataset at one level with one seed (files written before seeds were a key: seed 0)."""
    return case["dataset"], case["level"], int(case.get("seed", 0))


# --------------------------------------------------------------------------- one case


def image_size_for(name: str, default: int) -> int:
    known = DATASETS.get(name, {})
    if known.get("train_px"):
        return min(default, known["train_px"])
    native = known.get("native_px")
    return min(default, 64) if native is not None and native <= 64 else default


def epoch_cap(strategy: str, args: argparse.Namespace) -> int | None:
    """The budget's epoch cap bounds image-level training. Feature extraction trains its head on
    embeddings computed once, so its epochs never touch an image and cost milliseconds: it trains the
    rules' own schedule, as a user would (capping it measured a half-trained head, not the strategy)."""
    return None if strategy == "feature_extraction" else args.max_epochs


def train_strategies(session: Any, strategies: Sequence[str], out: Path, args: argparse.Namespace,
                     image_size: int, **overrides: float) -> dict[str, dict[str, Any]]:
    """Train ``strategies`` with the runners under the budget; strategy -> measured numbers."""
    from tl_advise.runners import RunOptions, run_advice

    runs = []
    for cap in dict.fromkeys(epoch_cap(s, args) for s in strategies):
        group = [s for s in strategies if epoch_cap(s, args) == cap]
        options = RunOptions(output_dir=out / ("capped" if cap else "uncapped"), strategies=group, max_epochs=cap,
                             image_size=image_size, seed=args.seed, device=args.device, progress=False,
                             patience=args.patience, num_workers=args.num_workers,
                             # A case cut short (a session ends mid-case) resumes from the runners' own
                             # epoch checkpoints and keeps every strategy it finished.
                             resume=True, **overrides)
        runs.extend(run_advice(session, options).runs)
    measured: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.val is None:
            log.warning("%s failed: %s", run.strategy, run.error)
            continue
        s = run.settings
        measured[run.strategy] = {
            "accuracy": run.val.accuracy, "balanced_accuracy": run.val.balanced_accuracy,
            "n_val": run.val.n_images, "se": std_error(run.val.accuracy, run.val.n_images),
            "train_time_s": run.train_time_s, "epochs_run": run.epochs_run, "status": run.status,
            "head_lr": s.head_lr if s else None, "backbone_lr": s.backbone_lr if s else None,
            "image_size": s.image_size if s else None, "unfreeze": list(s.unfreeze) if s else [],
            # The rules' own (uncapped) epochs, to project what trying this strategy costs at full schedule.
            "schedule_epochs": schedule_epochs(session, run.strategy),
        }
    return measured


def schedule_epochs(session: Any, strategy: str) -> int:
    """Epochs the rules' recipe trains ``strategy`` for (head + fine-tune phases), before any budget cap."""
    from tl_advise.runners.recipes import recommendation_for

    return sum(p.epochs for p in recommendation_for(session, strategy).schedule)


def projected_all_s(runs: dict[str, dict[str, Any]]) -> float:
    """Time of trying every strategy at the rules' own epochs: measured s/epoch x scheduled epochs.

    Feature extraction's embedding happens once whatever the epochs, so it is counted as measured.
    """
    total = 0.0
    for strategy, v in runs.items():
        if strategy == "feature_extraction" or not v["epochs_run"]:
            total += v["train_time_s"]
        else:
            total += v["train_time_s"] / v["epochs_run"] * max(v["schedule_epochs"], v["epochs_run"])
    return total


def lr_sweep(session: Any, strategy: str, main: dict[str, Any], out: Path, args: argparse.Namespace,
             image_size: int) -> dict[str, Any]:
    """The recommended strategy at advised LR x LR_FACTORS (backbone LR when it tunes the backbone)."""
    param = "backbone_lr" if main.get("backbone_lr") else "head_lr"
    advised = float(main[param])
    points = []
    for factor in LR_FACTORS:
        rate = float(f"{advised * factor:.3g}")
        if factor == 1.0:
            acc, n = main["accuracy"], main["n_val"]
        else:
            log.info("  LR sweep %s %s=%g", strategy, param, rate)
            got = train_strategies(session, [strategy], out / f"lr_{factor:.3g}", args, image_size,
                                   **{param: rate})
            if strategy not in got:
                continue
            acc, n = got[strategy]["accuracy"], got[strategy]["n_val"]
        points.append({"factor": factor, "lr": rate, "accuracy": acc, "n_val": n})
    check = lr_check(advised, {p["lr"]: p["accuracy"] for p in points}, main["n_val"])
    return {"param": param, "advised": advised, "points": points, "best_lr": check.best_lr,
            "ratio": check.ratio, "within_3x": check.within_3x, "within_3x_tied": check.within_3x_tied}


def case_session(src: Path, level: int | None, args: argparse.Namespace, *, cold: bool) -> tuple[Any, dict, float]:
    """(advice session, per-class train counts, advice seconds) for one case's level folder."""
    from tl_advise.advisor import advise_session

    work = case_work_dir(args, src.name, level_name(level), args.seed)
    counts = build_level(src, work / "data", level, args.seed)
    if cold:  # a cold advice: its time is what a user pays the first time
        shutil.rmtree(work / "cache", ignore_errors=True)
    started = time.perf_counter()
    session = advise_session(work / "data", cache_dir=work / "cache", seed=args.seed, device=args.device,
                             rules=args.rules)
    return session, counts, time.perf_counter() - started


def sweep_wanted(args: argparse.Namespace) -> bool:
    """The LR sweep runs on one seed only (--lr-sweep-seed): the issue's check needs no repeats."""
    return not args.no_lr_sweep and args.seed == args.lr_sweep_seed


def run_case(name: str, src: Path, level: int | None, args: argparse.Namespace) -> dict[str, Any]:
    from tl_advise.rules import signals_from_measurements

    key = f"{name}@{level_name(level)} seed {args.seed}"
    work = case_work_dir(args, name, level_name(level), args.seed)
    image_size = image_size_for(name, args.image_size)
    session, counts, advice_wall = case_session(src, level, args, cold=True)
    r = session.result
    rec = r.recommendation
    sim = r.similarity
    log.info("%s: %s (score %.2f, %s) -> %s in %.1fs", key, r.dataset.images_per_class, sim.score, sim.label,
             rec.strategy, advice_wall)

    strategies = [s for s in STRATEGIES if s not in args.skip]
    runs = train_strategies(session, strategies, work / "runs", args, image_size)
    n_val = min(v["n_val"] for v in runs.values())
    sweep = lr_sweep(session, rec.strategy, runs[rec.strategy], work / "lr", args, image_size) \
        if rec.strategy in runs and sweep_wanted(args) else None
    return {
        "dataset": name, "level": level_name(level), "seed": args.seed,
        "person_label": DATASETS.get(name, {}).get("person"),
        "train_per_class": counts, "images_per_class": r.dataset.images_per_class,
        "size_band": session.rules.size_bands.band_for(r.dataset.images_per_class),
        "n_val": n_val, "image_size": image_size,
        "advice": {
            "backbone": r.backbone.name, "strategy": rec.strategy, "rule_id": rec.rule_id, "score": sim.score,
            "label": sim.label, "threshold": sim.threshold, "shift_level": sim.shift_level,
            "signals": signals_from_measurements(sim.bn_shift, sim.head, sim.separability),
            "head_lr": rec.learning_rate.head, "backbone_lr": rec.learning_rate.backbone,
            "time_s": round(advice_wall, 3), "timings": r.timings, "sample_images": r.sample.n_images,
            # The raw-pixel bar (linear model on 32x32 pixels, cross-validated on the sample).
            "pixel_logreg_accuracy": sim.separability.pixel_logreg_accuracy if sim.separability else None,
            "feature_logreg_accuracy": sim.separability.logreg_accuracy if sim.separability else None,
        },
        "runs": runs,
        "skipped": {s: args.skip_why for s in STRATEGIES if s in args.skip},
        **judgement(runs, rec.strategy, n_val),
        "all_strategies_s": sum(v["train_time_s"] for v in runs.values()),
        "cost_ratio": cost_ratio(advice_wall, [v["train_time_s"] for v in runs.values()]),
        "projected_all_strategies_s": projected_all_s(runs),
        "projected_cost_ratio": cost_ratio(advice_wall, [projected_all_s(runs)]),
        "lr_sweep": sweep,
    }


def judgement(runs: dict[str, dict[str, Any]], recommended: str, n_val: int) -> dict[str, Any]:
    """Best strategy, regret and agreement of ``recommended`` among the measured ``runs``."""
    accuracy = {s: v["accuracy"] for s, v in runs.items()}
    best = best_strategy(accuracy)
    measured = recommended in accuracy
    return {
        "best": best, "tied_best": tied_best(accuracy, n_val),
        "regret_pp": regret_pp(accuracy, recommended) if measured else None,
        "agree_raw": best == recommended,
        "agree_within_se": agrees(accuracy, recommended, n_val) if measured else False,
    }


class RescoreError(Exception):
    """A recorded case that the current rules cannot judge without training again."""


def rescore_case(case: dict[str, Any], src: Path, args: argparse.Namespace, rules: Any) -> dict[str, Any]:
    """``case`` judged by the current rules without training the six strategies again.

    A strategy's recipe does not depend on which cell of the table picks it, so every recorded run
    stands; only the recommendation, its regret and agreement move, and the LR sweep is re-run when
    the recommended strategy changed. The backbone LR does depend on the similarity label, so a case
    whose label moves has to be trained again (``--force``).
    """
    from tl_advise.rules import decide, score_similarity

    key = f"{case['dataset']}@{case['level']} seed {case_key(case)[2]}"
    old = case["advice"]
    verdict = score_similarity(rules, old.get("backbone", DEFAULT_BACKBONE), old["signals"])
    if verdict.label != old["label"]:
        raise RescoreError(f"{key}: the similarity label moves ({old['label']} -> {verdict.label}), and every "
                           "recipe's backbone LR with it: train it again with --force")
    band = rules.size_bands.band_for(case["images_per_class"])
    row = decide(rules, band, verdict.label, old["signals"].get("logreg_gain"))
    if row.strategy not in case["runs"]:
        raise RescoreError(f"{key}: {row.strategy} has no recorded run: train it again with --force")
    recommended = case["runs"][row.strategy]
    advice = {**old, "strategy": row.strategy, "rule_id": row.rule_id, "score": verdict.score,
              "threshold": verdict.threshold, "head_lr": recommended["head_lr"],
              "backbone_lr": recommended["backbone_lr"]}
    sweep = case.get("lr_sweep")
    if row.strategy != old["strategy"] and sweep is not None:
        log.info("%s: %s -> %s: LR sweep of the new recommendation", key, old["strategy"], row.strategy)
        sweep = sweep_case(case, src, args, row.strategy)
    return {**case, "size_band": band, "advice": advice, **judgement(case["runs"], row.strategy, case["n_val"]),
            "lr_sweep": sweep}


def sweep_case(case: dict[str, Any], src: Path, args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """The LR sweep of ``strategy`` on a recorded case (its level folder rebuilt with the case's seed)."""
    args = argparse.Namespace(**{**vars(args), "seed": case_key(case)[2]})
    level = level_from_name(case["level"])
    session, _, _ = case_session(src, level, args, cold=False)
    work = case_work_dir(args, case["dataset"], case["level"], args.seed)
    return lr_sweep(session, strategy, case["runs"][strategy], work / "lr", args, case["image_size"])


# --------------------------------------------------------------------------- calibration


def weightings_from_rules(rules: Any, backbone: str = DEFAULT_BACKBONE) -> dict[str, Weighting]:
    """The current weighting first, then a few candidate weightings built from the same anchors."""
    profile = rules.similarity.profile_for(backbone)
    anchors = {n: (r.similar_at, r.different_at) for n, r in profile.signals.items()}

    def only(weights: dict[str, float]) -> Weighting:
        return {n: (weights.get(n, 0.0), *anchors[n]) for n in anchors}

    current = {n: (r.weight, r.similar_at, r.different_at) for n, r in profile.signals.items()}
    return {
        "current (bn_late .5, head .25/.25)": current,
        "bn_shift_late only": only({"bn_shift_late": 1.0}),
        "head signals only": only({"head_max_prob": 0.5, "head_entropy": 0.5}),
        "current + logreg_gain .25": only({"bn_shift_late": 0.5, "head_max_prob": 0.25, "head_entropy": 0.25,
                                           "logreg_gain": 0.25}),
        "logreg_gain only": only({"logreg_gain": 1.0}),
    }


def calibrate(cases_json: Sequence[dict[str, Any]], rules: Any) -> dict[str, Any]:
    """In-sample and leave-one-dataset-out fits of (weighting, threshold) and of the table's cells, on the
    seed-averaged cases (the signals of each dataset x level's first seed: the advice's own sample)."""
    bands = rules.size_bands.bands
    table = {(b, lab): rules.row_for(b, lab).strategy for b in bands for lab in ("similar", "different")}
    first = {(c["dataset"], c["level"]): c for c in sorted(cases_json, key=lambda c: -case_key(c)[2])}
    cases = [Case(dataset=a.dataset, level=a.level, band=a.band, accuracy=a.accuracy, n_val=a.n_val * len(a.seeds),
                  signals=first[(a.dataset, a.level)]["advice"]["signals"])
             for a in seed_averages(cases_json)
             if all(table[(a.band, lab)] in a.accuracy for lab in ("similar", "different"))]
    if not cases:
        return {}
    weightings = weightings_from_rules(rules)
    prior = rules.similarity.threshold_for(DEFAULT_BACKBONE)
    current_name = next(iter(weightings))
    current_scores = [combined_score(c.signals, weightings[current_name]) for c in cases]
    current = [case_regret(c, s, prior, table) for c, s in zip(cases, current_scores, strict=True)]
    in_sample = fit_threshold(cases, weightings, table, prior)
    lodo = leave_one_dataset_out(cases, weightings, table, prior)
    lodo_regrets = [r for res in lodo for r in res.held_out_regret_pp.values()]

    labels = ["similar" if s >= prior else "different" for s in current_scores]
    table_in = fit_table(cases, table, labels)
    table_lodo: dict[str, dict[str, float]] = {}
    for dataset in sorted({c.dataset for c in cases}):
        idx_train = [i for i, c in enumerate(cases) if c.dataset != dataset]
        fitted = fit_table([cases[i] for i in idx_train], table, [labels[i] for i in idx_train])
        table_lodo[dataset] = {c.level: regret_pp(c.accuracy, fitted[(c.band, labels[i])])
                               for i, c in enumerate(cases) if c.dataset == dataset}
    fmt = {f"{b}-{lab}": s for (b, lab), s in table.items()}
    return {
        "n_cases": len(cases), "datasets": sorted({c.dataset for c in cases}),
        "current": {"threshold": prior, "weighting": current_name, "mean_regret_pp": mean(current),
                    "scores": {f"{c.dataset}@{c.level}": s for c, s in zip(cases, current_scores, strict=True)}},
        "threshold_fit": {
            "in_sample": {"weighting": in_sample.weighting_name, "threshold": in_sample.threshold,
                          "mean_regret_pp": in_sample.mean_regret_pp},
            "lodo": {"mean_regret_pp": mean(lodo_regrets), "max_regret_pp": max(lodo_regrets),
                     "per_dataset": [{"held_out": r.dataset, "weighting": r.fit.weighting_name,
                                      "threshold": r.fit.threshold, "held_out_regret_pp": r.held_out_regret_pp}
                                     for r in lodo]},
        },
        "table_fit": {
            "current": fmt,
            "in_sample": {f"{b}-{lab}": s for (b, lab), s in table_in.items()},
            "in_sample_mean_regret_pp": mean([regret_pp(c.accuracy, table_in[(c.band, lab)])
                                              for c, lab in zip(cases, labels, strict=True)]),
            "lodo_mean_regret_pp": mean([v for d in table_lodo.values() for v in d.values()]),
            "lodo_max_regret_pp": max(v for d in table_lodo.values() for v in d.values()),
            "lodo_per_dataset": table_lodo,
        },
    }


# --------------------------------------------------------------------------- repeat seeds, rule evidence


def _deciding_rule(avg: SeedAverage, first_case: dict[str, Any], rules: Any) -> Any:
    from tl_advise.rules import decide

    return decide(rules, avg.band, avg.label, first_case["advice"]["signals"].get("logreg_gain"))


def seed_judgement(cases_json: Sequence[dict[str, Any]], rules: Any) -> dict[str, Any]:
    """Every dataset x level judged on its seed-averaged accuracies, the targets over them, and the evidence
    for each rule of the current rules (generated: it is what the rules file's ``evidence`` tables hold)."""
    first = {(c["dataset"], c["level"]): c for c in sorted(cases_json, key=lambda c: -case_key(c)[2])}
    averages = seed_averages(sorted(cases_json, key=case_order))
    rows, by_rule = [], {}
    for a in averages:
        decision = _deciding_rule(a, first[(a.dataset, a.level)], rules)
        j = judge(a, decision.strategy)
        by_rule.setdefault(decision.rule_id, (decision.strategy, []))[1].append(a)
        rows.append({"dataset": a.dataset, "level": a.level, "band": a.band, "label": a.label, "seeds": list(a.seeds),
                     "n_val": a.n_val, "recommended": decision.strategy, "rule_id": decision.rule_id,
                     "best": j.best, "regret_pp": j.regret_pp, "se_pp": j.se_pp, "tie": j.tie,
                     "accuracy": a.accuracy, "spread": {s: list(v) for s, v in a.spread.items()}})
    sweeps = [c["lr_sweep"] for c in cases_json if c.get("lr_sweep")]
    by_dataset: dict[str, list[float]] = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], []).append(r["regret_pp"])
    repeated = [r for r in rows if len(r["seeds"]) >= 2]
    targets = {
        "n_cases": len(rows), "mean_regret_pp": mean([r["regret_pp"] for r in rows]),
        "max_dataset_mean_regret_pp": max((mean(v) for v in by_dataset.values()), default=float("nan")),
        "worst_dataset": max(by_dataset, key=lambda d: mean(by_dataset[d])) if by_dataset else None,
        "within_se": sum(r["tie"] for r in rows), "lr_checked": len(sweeps),
        "lr_within_3x": sum(s["within_3x"] for s in sweeps),
        "lr_within_3x_tied": sum(s["within_3x_tied"] for s in sweeps),
        "cases_with_2_seeds": len(repeated),
        "repeated_small_medium": sorted({f"{r['band']}/{r['label']}" for r in repeated
                                         if r["band"] in ("small", "medium")}),
    }
    evidence = {}
    for rule_id, (strategy, members) in by_rule.items():
        e = cell_evidence(members, strategy)
        if e is not None:
            evidence[rule_id] = {"strategy": strategy, **e.__dict__}
    return {"cases": rows, "targets": targets, "rule_evidence": evidence}


def evidence_toml(evidence: dict[str, Any], source: str) -> str:
    """The rule evidence as the rules file's ``evidence`` tables, ready to paste under each rule."""
    lines = []
    for rule_id, e in evidence.items():
        lines += [f"# rule {rule_id} ({e['strategy']})", "[decision.evidence]" if rule_id != "pixel-baseline"
                  else "[pixel_baseline.evidence]",
                  f'source = "{source}"', f"cases = {e['cases']}", f"datasets = {json.dumps(e['datasets'])}",
                  f"seeds = {e['seeds']}", f"mean_regret_pp = {e['mean_regret_pp']:.2f}",
                  f'runner_up = "{e["runner_up"]}"', f"margin_pp = {e['margin_pp']:.2f}",
                  f"se_pp = {e['se_pp']:.2f}", ""]
    return "\n".join(lines)


def write_evidence(rules_text: str, evidence: dict[str, Any], source: str) -> str:
    """``rules_text`` with each rule's ``evidence`` table replaced by ``evidence`` (generated, never typed).

    A rule's table goes after its last key, before the comments that introduce the next table.
    """
    lines = _without_evidence(rules_text.splitlines())
    for rule_id, e in evidence.items():
        block = [EVIDENCE_NOTE, *(ln for ln in evidence_toml({rule_id: e}, source).splitlines()[1:] if ln)]
        start = (lines.index("[pixel_baseline]") if rule_id == "pixel-baseline"
                 else lines.index(f'id = "{rule_id}"'))
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        lines[end:end] = block
    return "\n".join(lines) + "\n"


GENERATED_BLOCK = re.compile(
    r"(?P<start><!-- generated: (?P<title>[^>]+?) -->).*?(?P<end><!-- end generated -->)", re.S)


def report_section(report_md: str, title: str) -> str:
    """The report's ``## {title}...`` section, its headings one level deeper (it sits under a doc's own)."""
    lines = report_md.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"## {title}")), None)
    if start is None:
        raise ValueError(f"the report has no section '## {title}'")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    out, fenced = [], False
    for line in lines[start:end]:
        fenced ^= line.startswith("```")
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out).strip()


def write_doc(doc: str, report_md: str) -> str:
    """``doc`` with each ``<!-- generated: TITLE -->`` block replaced by the report's section TITLE."""
    return GENERATED_BLOCK.sub(
        lambda m: f"{m['start']}\n{report_section(report_md, m['title'])}\n{m['end']}", doc)


EVIDENCE_NOTE = "# [benchmark] generated by benchmarks/advice_quality.py --report --write-evidence; not edited by hand"


def _without_evidence(lines: list[str]) -> list[str]:
    out: list[str] = []
    skipping = False
    for line in lines:
        if line == EVIDENCE_NOTE:
            continue
        if line in ("[decision.evidence]", "[pixel_baseline.evidence]"):
            skipping = True
            continue
        if skipping and (not line.strip() or line.startswith(("[", "#"))):
            skipping = False
        if not skipping:
            out.append(line)
    return out


# --------------------------------------------------------------------------- outputs


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(results: dict[str, Any]) -> str:
    cases = results["cases"]
    b = results["budget"]
    lines = [
        "# Advice quality", "",
        f"Budget: image size {b['image_size']} px (64 px for the ≤64 px datasets and flowers5), "
        f"at most {b['max_epochs']} "
        f"epochs per image-level phase (feature_extraction: {b.get('feature_extraction_epochs', 'capped too')}), "
        f"patience {b['patience']}, seeds {sorted({case_key(c)[2] for c in cases})}, device {b['device']}. "
        "Accuracy = validation accuracy in %; ± = one binomial s.e. sqrt(p(1-p)/n); "
        "'agree' = the recommended strategy is within one s.e. of the best.", "",
        "| dataset | level | a person says | score → label | recommended | best (val %) | recommended (val %) "
        "| regret pp | agree (raw / ±s.e.) | n val | advice s | all 6 s | cost ratio (budget / rules' epochs) "
        "| LR advised → best (×3? raw / tied) |",
        "|" + "---|" * 14,
    ]
    for c in cases:
        acc = {s: v["accuracy"] for s, v in c["runs"].items()}
        rec = c["advice"]["strategy"]
        se = std_error(acc[c["best"]], c["n_val"])
        sw = c.get("lr_sweep")
        lr = (f"{sw['param'].replace('_lr', '')} {sw['advised']:.3g} → {sw['best_lr']:.3g} "
              f"({'yes' if sw['within_3x'] else 'no'} / tied {'yes' if sw['within_3x_tied'] else 'no'})"
              if sw else "–")
        lines.append(
            f"| {c['dataset']} | {c['level']} | {c['person_label']} | {c['advice']['score']:.2f} → "
            f"{c['advice']['label']} | {rec} | {c['best']} {_pct(acc[c['best']])}±{100 * se:.1f} | "
            f"{_pct(acc.get(rec))} | {c['regret_pp']:.1f} | {'yes' if c['agree_raw'] else 'no'} / "
            f"{'yes' if c['agree_within_se'] else 'no'} | {c['n_val']} | {c['advice']['time_s']:.1f} | "
            f"{c['all_strategies_s']:.0f} | {100 * c['cost_ratio']:.1f} % / {100 * c['projected_cost_ratio']:.1f} % "
            f"| {lr} |")
    lines += ["", "Every strategy's validation accuracy (%) and training time (s):", "",
              "| dataset | level | " + " | ".join(STRATEGIES) + " |", "|" + "---|" * (2 + len(STRATEGIES))]
    for c in cases:
        cells = [f"{_pct(c['runs'][s]['accuracy'])} ({c['runs'][s]['train_time_s']:.0f}s)" if s in c["runs"]
                 else "failed" for s in STRATEGIES]
        lines.append(f"| {c['dataset']} | {c['level']} | " + " | ".join(cells) + " |")
    lines += seed_markdown(results.get("seed_judgement", {}), results.get("source", "this file"))
    s = results.get("summary", {})
    if s:
        lines += ["", "## Summary (each seed a case of its own)", "",
                  f"- mean regret {s['mean_regret_pp']:.2f} pp, max {s['max_regret_pp']:.2f} pp "
                  f"(per-dataset mean max {s['max_dataset_mean_regret_pp']:.2f} pp)",
                  f"- agreement: raw {s['agree_raw']}/{s['n_cases']}, within one s.e. "
                  f"{s['agree_within_se']}/{s['n_cases']}",
                  f"- LR within ×3 of the sweep's best: raw {s['lr_within_3x']}/{s['lr_checked']}, "
                  f"tie-aware {s['lr_within_3x_tied']}/{s['lr_checked']}",
                  f"- cost ratio (advice ÷ all six strategies): mean {100 * s['mean_cost_ratio']:.1f} %, "
                  f"max {100 * s['max_cost_ratio']:.1f} % at this budget; at the rules' own epoch counts "
                  f"(measured s/epoch x scheduled epochs) mean {100 * s['mean_projected_cost_ratio']:.1f} %, "
                  f"max {100 * s['max_projected_cost_ratio']:.1f} %"]
    cal = results.get("calibration", {})
    if cal:
        tf, tb = cal["threshold_fit"], cal["table_fit"]
        lines += ["", "## Calibration", "",
                  f"- current rules ({cal['current']['weighting']}, threshold {cal['current']['threshold']:.2f}): "
                  f"mean regret {cal['current']['mean_regret_pp']:.2f} pp",
                  f"- weighting + threshold refit, in-sample: {tf['in_sample']['weighting']}, threshold "
                  f"{tf['in_sample']['threshold']:.3f}, mean regret {tf['in_sample']['mean_regret_pp']:.2f} pp",
                  f"- same refit judged leave-one-dataset-out: mean regret {tf['lodo']['mean_regret_pp']:.2f} pp, "
                  f"max {tf['lodo']['max_regret_pp']:.2f} pp"]
        lines += [f"  - held out {d['held_out']}: fit {d['weighting']} @ {d['threshold']:.3f} → "
                  + ", ".join(f"{k} {v:.1f} pp" for k, v in d["held_out_regret_pp"].items())
                  for d in tf["lodo"]["per_dataset"]]
        changed = {k: v for k, v in tb["in_sample"].items() if v != tb["current"][k]}
        lines += [f"- decision-table cells refit in-sample: {changed or 'no change'}; mean regret "
                  f"{tb['in_sample_mean_regret_pp']:.2f} pp in-sample, {tb['lodo_mean_regret_pp']:.2f} pp LODO "
                  f"(max {tb['lodo_max_regret_pp']:.2f})"]
    return "\n".join(lines) + "\n"


def seed_markdown(judged: dict[str, Any], source: str) -> list[str]:
    if not judged:
        return []
    lines = ["", "## Seed-averaged judgement (current rules)", "",
             "Each dataset x level over its seeds: mean validation accuracy (%) and, after it, the range over seeds. "
             "The recommendation comes from the current rules; regret = best mean - recommended mean; "
             "'tie' = within one s.e. of that difference (the spread over seeds, never below binomial noise).", "",
             "| dataset | level | band | label | seeds | n val | recommended (rule) | best | recommended % | best % "
             "| regret pp ± s.e. | tie |", "|" + "---|" * 12]
    for r in judged["cases"]:
        def cell(strategy: str, r: dict[str, Any] = r) -> str:
            lo, hi = r["spread"][strategy]
            spread = f" ({100 * lo:.1f}–{100 * hi:.1f})" if len(r["seeds"]) > 1 else ""
            return f"{100 * r['accuracy'][strategy]:.1f}{spread}"
        lines.append(f"| {r['dataset']} | {r['level']} | {r['band']} | {r['label']} | {','.join(map(str, r['seeds']))} "
                     f"| {r['n_val']} | {r['recommended']} ({r['rule_id']}) | {r['best']} | {cell(r['recommended'])} "
                     f"| {cell(r['best'])} | {r['regret_pp']:.1f} ± {r['se_pp']:.1f} | {'yes' if r['tie'] else 'no'} |")
    lines += ["", "Every strategy, mean % (range over seeds):", "",
              "| dataset | level | seeds | " + " | ".join(STRATEGIES) + " |", "|" + "---|" * (3 + len(STRATEGIES))]
    for r in judged["cases"]:
        cells = []
        for strategy in STRATEGIES:
            if strategy not in r["accuracy"]:
                cells.append("skipped")
                continue
            lo, hi = r["spread"][strategy]
            cells.append(f"{100 * r['accuracy'][strategy]:.1f}" + (f" ({100 * lo:.1f}–{100 * hi:.1f})"
                                                                     if len(r["seeds"]) > 1 else ""))
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(f"| {r['dataset']} | {r['level']} | {seeds} | " + " | ".join(cells) + " |")
    t = judged["targets"]
    lines += ["", "### Targets (seed-averaged)", "",
              f"- mean regret {t['mean_regret_pp']:.2f} pp over {t['n_cases']} dataset x level cases (target ≤ 1.0)",
              f"- worst dataset mean {t['max_dataset_mean_regret_pp']:.2f} pp ({t['worst_dataset']}; target ≤ 2.0)",
              f"- recommendation within one s.e. of the best: {t['within_se']}/{t['n_cases']} "
              f"({100 * t['within_se'] / max(t['n_cases'], 1):.0f} %; target ≥ 90 %)",
              f"- LR within ×3 of the sweep's best: {t['lr_within_3x']}/{t['lr_checked']} raw, "
              f"{t['lr_within_3x_tied']}/{t['lr_checked']} tie-aware (target ≥ 80 %)",
              f"- cases with ≥ 2 seeds: {t['cases_with_2_seeds']} (target ≥ 8), small/medium among them: "
              f"{', '.join(t['repeated_small_medium']) or 'none'}"]
    if judged["rule_evidence"]:
        lines += ["", "### Evidence per rule (the rules file's `evidence` tables)", "",
                  "| rule | strategy | cases | datasets | seeds | mean regret pp | runner-up | margin pp ± s.e. | "
                  "separated |", "|" + "---|" * 9]
        for rule_id, e in judged["rule_evidence"].items():
            lines.append(f"| {rule_id} | {e['strategy']} | {e['cases']} | {', '.join(e['datasets'])} | {e['seeds']} | "
                         f"{e['mean_regret_pp']:.2f} | {e['runner_up']} | {e['margin_pp']:+.2f} ± {e['se_pp']:.2f} | "
                         f"{'yes' if e['margin_pp'] > e['se_pp'] else 'no'} |")
        lines += ["", "```toml", evidence_toml(judged["rule_evidence"], source).rstrip(), "```"]
    return lines


def summary(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    regrets = [c["regret_pp"] for c in cases if c["regret_pp"] is not None]
    by_dataset: dict[str, list[float]] = {}
    for c in cases:
        by_dataset.setdefault(c["dataset"], []).append(c["regret_pp"])
    sweeps = [c["lr_sweep"] for c in cases if c.get("lr_sweep")]
    ratios = [c["cost_ratio"] for c in cases]
    return {
        "n_cases": len(cases), "mean_regret_pp": mean(regrets), "max_regret_pp": max(regrets, default=0.0),
        "max_dataset_mean_regret_pp": max((mean(v) for v in by_dataset.values()), default=0.0),
        "per_dataset_mean_regret_pp": {d: mean(v) for d, v in by_dataset.items()},
        "agree_raw": sum(c["agree_raw"] for c in cases), "agree_within_se": sum(c["agree_within_se"] for c in cases),
        "lr_checked": len(sweeps), "lr_within_3x": sum(s["within_3x"] for s in sweeps),
        "lr_within_3x_tied": sum(s["within_3x_tied"] for s in sweeps),
        "mean_cost_ratio": mean(ratios), "max_cost_ratio": max(ratios, default=0.0),
        "mean_projected_cost_ratio": mean([c["projected_cost_ratio"] for c in cases]),
        "max_projected_cost_ratio": max((c["projected_cost_ratio"] for c in cases), default=0.0),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["cases"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{c['dataset']}\n{c['level']}" for c in cases]
    colours = ["tab:green" if c["agree_within_se"] else "tab:red" for c in cases]
    ax1.bar(range(len(cases)), [c["regret_pp"] for c in cases], color=colours)
    ax1.axhline(1.0, ls="--", c="grey", lw=1, label="target mean ≤ 1 pp")
    ax1.axhline(3.0, ls=":", c="grey", lw=1, label="target max ≤ 3 pp")
    ax1.set_xticks(range(len(cases)), labels, rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel("regret (pp): best − recommended val accuracy")
    ax1.set_title("Regret per case (green: within one s.e. of the best)")
    ax1.legend(fontsize=7)
    order = {"close": 0, "in between": 1, "far": 2}
    for c in cases:
        x = order.get(c["person_label"] or "", 3) + random.Random(c["dataset"] + c["level"]).uniform(-0.15, 0.15)
        ax2.scatter(x, c["advice"]["score"], c="tab:blue" if c["advice"]["label"] == "similar" else "tab:orange")
        ax2.annotate(f"{c['dataset']} {c['level']}", (x, c["advice"]["score"]), fontsize=6)
    if cases:
        ax2.axhline(cases[0]["advice"]["threshold"], ls="--", c="grey", lw=1, label="threshold")
    ax2.set_xticks(range(3), ["close", "in between", "far"])
    ax2.set_xlabel("a person's label (distance from ImageNet photos)")
    ax2.set_ylabel("combined similarity score")
    ax2.set_title("Similarity score vs a person's label")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def case_order(case: dict[str, Any]) -> tuple[int, str, float, int]:
    """Datasets in DATASETS order (others after, by name), then levels from small to full, then seeds."""
    known = list(DATASETS)
    rank = known.index(case["dataset"]) if case["dataset"] in known else len(known)
    level = level_from_name(case["level"])
    return rank, case["dataset"], math.inf if level is None else float(level), case_key(case)[2]


def write_outputs(results: dict[str, Any], prefix: Path, rules: Any) -> None:
    results["cases"].sort(key=case_order)  # re-run cases land in place, not at the end
    results["summary"] = summary(results["cases"])
    results["seed_judgement"] = seed_judgement(results["cases"], rules)
    path = prefix.with_suffix(".json").resolve()
    results["source"] = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    results["calibration"] = calibrate(results["cases"], rules)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = prefix.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    tmp.replace(prefix.with_suffix(".json"))
    prefix.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    if results["cases"]:
        plot(results, prefix.with_suffix(".png"))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    shared = Path(os.environ.get("TL_ADVISE_SHARED", REPO.parent / "shared"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="*", type=Path, help="dataset folders (default: every one in <shared>/data)")
    p.add_argument("--shared", type=Path, default=shared)
    p.add_argument("--levels", default="10,40", help="train images per class, comma-separated, and 'full' for "
                   "the whole dataset (also added when a level reaches the dataset's size)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--max-epochs", type=int, default=2, help="cap on head and fine-tune epochs")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=0, help="data-loader workers (0: in-process; fastest for "
                   "these small sets on 2 cores)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each seed is a case of its own (its own "
                   "subsample, hold-out and training seed)")
    p.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    p.add_argument("--lr-sweep-seed", type=int, default=0, help="the seed whose cases get the LR sweep")
    p.add_argument("--skip", default="", help="comma-separated strategies not trained in these cases")
    p.add_argument("--skip-why", default="", help="the evidence for --skip, recorded in every case it applies to")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--rules", type=Path, default=None, help="rules file for the advice (default: packaged)")
    p.add_argument("--out", type=Path, default=RESULTS / "advice_quality", help="output prefix (no suffix)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/tl-advise-advice-quality"))
    p.add_argument("--no-lr-sweep", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="redo the requested cases even if the results file has them (others are kept)")
    p.add_argument("--rescore", action="store_true",
                   help="judge the recorded cases with the current rules without training them again (the LR "
                   "sweep re-runs where the recommendation changed); for a rules edit that moves no similarity label")
    p.add_argument("--import-from", type=Path, action="append", default=[],
                   help="merge the cases of another results file with the same budget (e.g. an older seed's file)")
    p.add_argument("--write-evidence", type=Path, default=None, metavar="RULES_TOML",
                   help="with --report: write each rule's measured evidence into this rules file")
    p.add_argument("--write-doc", type=Path, default=None, metavar="DOC_MD",
                   help="with --report: replace the generated blocks of this document (<!-- generated: SECTION --> "
                   "... <!-- end generated -->) with those sections of the report")
    p.add_argument("--report", action="store_true", help="re-render the .md/.png (and summary) from the .json only")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: lfw_faces_vs_nonfaces at 10/class, 64 px, 1 epoch (~2-3 min on 2 cores)")
    args = p.parse_args(argv)
    args.seeds = [args.seed] if args.seed is not None else [int(x) for x in args.seeds.split(",") if x.strip()]
    args.seed = args.seeds[0]
    args.skip = [x.strip() for x in args.skip.split(",") if x.strip()]
    unknown = [x for x in args.skip if x not in STRATEGIES]
    if unknown:
        p.error(f"--skip: unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    if args.skip and not args.skip_why:
        p.error("--skip needs --skip-why: the evidence that the skipped strategies are far behind here")
    if args.quick:
        args.levels, args.image_size, args.max_epochs = "10", 64, 1
        if not args.datasets:
            args.datasets = [args.shared / "data" / "lfw_faces_vs_nonfaces"]
    if not args.datasets:
        args.datasets = [args.shared / "data" / n for n in DATASETS if (args.shared / "data" / n).is_dir()]
    return args


def budget_of(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two cases comparable. Seeds, the LR sweep and skipped strategies are recorded per case."""
    return {"image_size": args.image_size, "max_epochs": args.max_epochs, "patience": args.patience,
            "device": args.device, "lr_factors": list(LR_FACTORS),
            "rules": str(args.rules) if args.rules else "default",
            "feature_extraction_epochs": "the rules' own (head on cached embeddings: not capped)"}


def load_results(path: Path, budget: dict[str, Any]) -> dict[str, Any]:
    """The results file's cases and history when its budget matches (a file from before seeds were a case key
    carries its seed in the budget: its cases get it), else an empty file."""
    results: dict[str, Any] = {"budget": budget, "commands": [], "cases": []}
    if not path.is_file():
        return results
    old = json.loads(path.read_text(encoding="utf-8"))
    old_budget = {k: v for k, v in old.get("budget", {}).items() if k not in ("seed", "lr_sweep")}
    if old_budget != budget:
        log.warning("%s has another budget: starting over", path)
        return results
    seed = old.get("budget", {}).get("seed")
    for case in old.get("cases", []):
        case.setdefault("seed", seed if seed is not None else 0)
    results["cases"] = old.get("cases", [])
    results["commands"] = old.get("commands", [old["command"]] if "command" in old else [])
    return results


def merge_case(results: dict[str, Any], case: dict[str, Any]) -> None:
    results["cases"] = [c for c in results["cases"] if case_key(c) != case_key(case)] + [case]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("tl_advise",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tl_advise.rules import load_rules

    rules = load_rules(args.rules)
    results_path = args.out.with_suffix(".json")
    results = load_results(results_path, budget_of(args))
    if not (args.report and not args.import_from):  # a bare --report changes no number: not a building command
        # Every command that added to (or re-judged) this file, oldest first, with its commit and machine.
        results["commands"].append(provenance(__file__, argv))
    for other in args.import_from:
        imported = load_results(other, budget_of(args))["cases"]
        if not imported:
            log.error("%s: no cases with this budget to import", other)
            return 2
        for case in imported:
            merge_case(results, case)
        log.info("imported %d case(s) from %s", len(imported), other)
    if args.report:
        write_outputs(results, args.out, rules)
        if args.write_evidence:
            text = args.write_evidence.read_text(encoding="utf-8")
            judged = results["seed_judgement"]
            args.write_evidence.write_text(write_evidence(text, judged["rule_evidence"], results["source"]),
                                           encoding="utf-8")
            log.info("evidence of %d rule(s) written to %s", len(judged["rule_evidence"]), args.write_evidence)
        if args.write_doc:
            args.write_doc.write_text(write_doc(args.write_doc.read_text(encoding="utf-8"), markdown(results)),
                                      encoding="utf-8")
            log.info("generated sections of %s rewritten from the report", args.write_doc)
        print(markdown(results))
        return 0
    recorded = {case_key(c): c for c in results["cases"]}
    tokens = [x.strip() for x in args.levels.split(",") if x.strip()]
    wanted = [int(x) for x in tokens if x != "full"]
    started = time.perf_counter()
    for src in args.datasets:
        if not src.is_dir():
            log.error("no dataset folder %s", src)
            return 2
    for seed in args.seeds:
        args.seed = seed
        for src in args.datasets:
            for level in levels_for(src, wanted, seed, full="full" in tokens) if wanted else [None]:
                key = (src.name, level_name(level), seed)
                name = f"{src.name}@{level_name(level)} seed {seed}"
                t0 = time.perf_counter()
                old = recorded.get(key)
                if args.rescore:
                    if old is None:
                        log.info("%s: not in %s, nothing to rescore", name, results_path)
                        continue
                    try:
                        case = rescore_case(old, src, args, rules)
                    except RescoreError as error:
                        log.error("%s", error)
                        return 2
                elif old is not None and not args.force:
                    if not (sweep_wanted(args) and old.get("lr_sweep") is None
                            and old["advice"]["strategy"] in old["runs"]):
                        log.info("%s: already in %s, skipped", name, results_path)
                        continue
                    log.info("%s: recorded without its LR sweep: sweeping", name)  # resumes a deferred sweep
                    case = {**old, "lr_sweep": sweep_case(old, src, args, old["advice"]["strategy"])}
                else:
                    case = run_case(src.name, src, level, args)
                merge_case(results, case)
                write_outputs(results, args.out, rules)
                log.info("%s done in %.0fs: best %s, recommended %s, regret %.1f pp, cost ratio %.1f %%",
                         name, time.perf_counter() - t0, case["best"], case["advice"]["strategy"],
                         case["regret_pp"], 100 * case["cost_ratio"])
    write_outputs(results, args.out, rules)
    log.info("all done in %.0fs", time.perf_counter() - started)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
