"""Advice quality: does the recommended strategy train best? Regret, agreement, LR check, cost, calibration.

    .venv/bin/python benchmarks/advice_quality.py                      # every dataset, levels 10 and 40/class
    .venv/bin/python benchmarks/advice_quality.py --quick              # one dataset, one level, tiny budget
    .venv/bin/python benchmarks/advice_quality.py --device cuda        # same command on a GPU
    .venv/bin/python benchmarks/advice_quality.py --for mobilenet_v2:IMAGENET1K_V1 --out OUT   # another backbone

For each dataset and images-per-class level (a seeded subsample built as a folder of copies, with a
fixed validation split), the advice runs cold (own cache folder, timed), then every strategy trains
under one budget (same image size, epoch cap and seed for all) with the runners, each with the recipe
the rules give it on that dataset; then a learning-rate sweep (advised ÷10 … ×10) on the recommended
strategy. Results go to ``benchmarks/results/advice_quality.{json,md,png}``, written after every case;
a re-run skips the cases already there with the same budget (``--force`` redoes them).
The calibration section refits the similarity weighting/threshold and the decision table's cells from
the measured cases, judged leave-one-dataset-out.

``--for BACKBONE`` (issue #26, item 3b: does the advice transfer across backbones?) advises for that target as the
CLI's ``--for`` does (the probe, EfficientNet-Lite0, measures the similarity; the rules' recipe is mapped onto the
target's stages) and trains every strategy on the target, at the grid's image sizes. A results file holds the
cases of one target only (or of the default backbone only).

This file trains and records cases; beside it: ``_quality_levels`` (datasets, level folders),
``_quality_metrics`` (regret, ties, fits), ``_quality_judgement`` (summary, seed-averaged judgement,
calibration) and ``_quality_report`` (markdown, figure, generated evidence and doc sections).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _offline_weights import MissingWeightsError, offline_torch_home
from _provenance import provenance
from _quality_judgement import calibrate, seed_judgement, summary
from _quality_levels import (
    DATASETS,
    build_level,
    case_key,
    case_order,
    image_size_for,
    level_from_name,
    level_name,
    levels_for,
    split_plan,
)
from _quality_metrics import (
    LR_FACTORS,
    STRATEGIES,
    agrees,
    best_strategy,
    cost_ratio,
    judged_sweep,
    regret_pp,
    std_error,
    sweep_rate,
    tied_best,
)
from _quality_report import markdown, plot, write_doc, write_evidence

from tl_advise.advisor.defaults import DEFAULT_BACKBONE  # what advise_session uses; the cases record it

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

log = logging.getLogger("advice_quality")


def case_work_dir(args: argparse.Namespace, dataset: str, level: str, seed: int) -> Path:
    """Where one case's level folder, cache and runs live (under --work-dir, never in the dataset); a target's
    cases apart from the default backbone's, whose checkpoints they must not resume."""
    name = f"{dataset}@{level}@seed{seed}".replace("/", "_")
    return args.work_dir / (f"{name}@{args.target.replace(':', '_')}" if args.target else name)


# --------------------------------------------------------------------------- one case


def epoch_cap(strategy: str, args: argparse.Namespace) -> int | None:
    """The budget's epoch cap bounds image-level training. Feature extraction trains its head on
    embeddings computed once, so its epochs never touch an image and cost milliseconds: it trains the
    rules' own schedule, as a user would (capping it measured a half-trained head, not the strategy)."""
    return None if strategy == "feature_extraction" else args.max_epochs


def train_strategies(session: Any, strategies: Sequence[str], out: Path, args: argparse.Namespace,
                     image_size: int, **overrides: float) -> dict[str, dict[str, Any]]:
    """Train ``strategies`` with the runners under the budget; strategy -> measured numbers."""
    from tl_advise.runners import RunOptions, run_advice
    from tl_advise.schema.errors import StaleCheckpointError

    runs = []
    for cap in dict.fromkeys(epoch_cap(s, args) for s in strategies):
        group = [s for s in strategies if epoch_cap(s, args) == cap]
        options = RunOptions(output_dir=out / ("capped" if cap else "uncapped"), strategies=group, max_epochs=cap,
                             image_size=image_size, seed=args.seed, device=args.device, progress=False,
                             patience=args.patience, num_workers=args.num_workers,
                             # A case cut short (a session ends mid-case) resumes from the runners' own
                             # epoch checkpoints and keeps every strategy it finished.
                             resume=True, **overrides)
        try:
            result = run_advice(session, options)
        except StaleCheckpointError as error:  # a folder left by another budget or recipe: keep it, start over
            stale = options.output_dir.with_name(f"{options.output_dir.name}.stale-{time.strftime('%Y%m%dT%H%M%S')}")
            options.output_dir.rename(stale)
            log.warning("%s\n  moved to %s; training this case's strategies again", error, stale)
            result = run_advice(session, options)
        runs.extend(result.runs)
    measured: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.val is None:
            log.warning("%s failed: %s", run.strategy, run.error)
            continue
        s = run.settings
        # The largest held-out split judges (issue #23): test when the level has one; early stopping read val.
        judged, split = (run.test, "test") if args.judge == "test" and run.test is not None else (run.val, "val")
        measured[run.strategy] = {
            "accuracy": judged.accuracy, "balanced_accuracy": judged.balanced_accuracy, "judged_on": split,
            "n_judged": judged.n_images, "se": std_error(judged.accuracy, judged.n_images),
            # Per judged image, in the split's order: what paired comparisons of two strategies read.
            "correct": judged.correct,
            "val_accuracy": run.val.accuracy, "n_val": run.val.n_images,
            "test_accuracy": run.test.accuracy if run.test else None,
            "n_test": run.test.n_images if run.test else 0,
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
        rate = sweep_rate(advised, factor)
        if factor == 1.0:
            acc, n = main["accuracy"], main["n_judged"]
        else:
            log.info("  LR sweep %s %s=%g", strategy, param, rate)
            got = train_strategies(session, [strategy], out / f"lr_{factor:.3g}", args, image_size,
                                   **{param: rate})
            if strategy not in got:
                continue
            acc, n = got[strategy]["accuracy"], got[strategy]["n_judged"]
        points.append({"factor": factor, "lr": rate, "accuracy": acc, "n_judged": n})
    return judged_sweep({"param": param, "advised": advised, "points": points}, main["n_judged"])


def case_session(src: Path, level: int | None, args: argparse.Namespace, *, cold: bool) -> tuple[Any, dict, float]:
    """(advice session, per-class train counts, advice seconds) for one case's level folder."""
    from tl_advise.advisor import advise_session

    work = case_work_dir(args, src.name, level_name(level), args.seed)
    counts = build_level(src, work / "data", level, args.seed, args.judge)
    if cold:  # a cold advice: its time is what a user pays the first time
        shutil.rmtree(work / "cache", ignore_errors=True)
    started = time.perf_counter()
    session = advise_session(work / "data", cache_dir=work / "cache", seed=args.seed, device=args.device,
                             rules=args.rules, target=args.target)
    return session, counts, time.perf_counter() - started


def sweep_wanted(args: argparse.Namespace) -> bool:
    """The LR sweep runs on one seed only (--lr-sweep-seed): the issue's check needs no repeats."""
    return not args.no_lr_sweep and args.seed == args.lr_sweep_seed


def run_case(name: str, src: Path, level: int | None, args: argparse.Namespace) -> dict[str, Any]:
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
    n_judged = min(v["n_judged"] for v in runs.values())
    sweep = lr_sweep(session, rec.strategy, runs[rec.strategy], work / "lr", args, image_size) \
        if rec.strategy in runs and sweep_wanted(args) else None
    return {
        "dataset": name, "level": level_name(level), "seed": args.seed, **backbones_record(session, args.target),
        "person_label": DATASETS.get(name, {}).get("person"),
        "train_per_class": counts, "images_per_class": r.dataset.images_per_class,
        "size_band": session.rules.size_bands.band_for(r.dataset.images_per_class),
        "n_judged": n_judged, "judged_on": runs[next(iter(runs))]["judged_on"] if runs else None,
        "test_is_source_split": all(c.test_is_source_split for c in split_plan(src, args.seed, args.judge).values()),
        "image_size": image_size,
        "advice": advice_record(session, advice_wall),
        "runs": runs,
        "skipped": {s: args.skip_why for s in STRATEGIES if s in args.skip},
        **judgement(runs, rec.strategy),
        "all_strategies_s": sum(v["train_time_s"] for v in runs.values()),
        "cost_ratio": cost_ratio(advice_wall, [v["train_time_s"] for v in runs.values()]),
        "projected_all_strategies_s": projected_all_s(runs),
        "projected_cost_ratio": cost_ratio(advice_wall, [projected_all_s(runs)]),
        "lr_sweep": sweep,
    }


def backbones_record(session: Any, target: str | None) -> dict[str, str]:
    """A case advised ``--for`` a target records it (the spec as given) and the probe that measured the
    similarity (its profile name: what the rules score the recorded signals with); a case of the default
    backbone records neither, as every file from before ``--for``."""
    if target is None:
        return {}
    return {"target": target, "probe": session.result.probe.profile_key}


def advice_record(session: Any, advice_wall: float) -> dict[str, Any]:
    """What a case records of its advice: the decision, its signals and its cost."""
    from tl_advise.rules import signals_from_measurements

    r = session.result
    rec, sim = r.recommendation, r.similarity
    return {
        "backbone": r.backbone.name, "strategy": rec.strategy, "rule_id": rec.rule_id, "score": sim.score,
        "label": sim.label, "threshold": sim.threshold, "shift_level": sim.shift_level,
        "signals": signals_from_measurements(sim.bn_shift, sim.head, sim.separability),
        "head_lr": rec.learning_rate.head, "backbone_lr": rec.learning_rate.backbone,
        "time_s": round(advice_wall, 3), "timings": r.timings, "sample_images": r.sample.n_images,
        # The raw-pixel bar (linear model on 32x32 pixels, cross-validated on the sample).
        "pixel_logreg_accuracy": sim.separability.pixel_logreg_accuracy if sim.separability else None,
        "feature_logreg_accuracy": sim.separability.logreg_accuracy if sim.separability else None,
    }


def readvise_case(case: dict[str, Any], src: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``case`` with its advice measured again on its rebuilt level folder (cold), its runs kept: for a change
    in what the advice measures (e.g. its sample no longer reads the test split). A moved similarity label
    changes every recipe's backbone LR, so such a case has to be trained again (``--force``)."""
    key = f"{case['dataset']}@{case['level']} seed {case_key(case)[2]}"
    args = argparse.Namespace(**{**vars(args), "seed": case_key(case)[2]})
    session, _, advice_wall = case_session(src, level_from_name(case["level"]), args, cold=True)
    advice = advice_record(session, advice_wall)
    if advice["label"] != case["advice"]["label"]:
        raise RescoreError(f"{key}: the similarity label moves ({case['advice']['label']} -> {advice['label']}), "
                           "and every recipe's backbone LR with it: train it again with --force")
    if advice["strategy"] not in case["runs"]:
        raise RescoreError(f"{key}: {advice['strategy']} has no recorded run: train it again with --force")
    sweep = case.get("lr_sweep") if advice["strategy"] == case["advice"]["strategy"] else None
    log.info("%s: advice measured again: %s (%s) -> %s (%s)", key, case["advice"]["strategy"],
             case["advice"]["rule_id"], advice["strategy"], advice["rule_id"])
    return {**case, "advice": advice, "lr_sweep": sweep,
            "size_band": session.rules.size_bands.band_for(session.result.dataset.images_per_class),
            **judgement(case["runs"], advice["strategy"])}


def judgement(runs: dict[str, dict[str, Any]], recommended: str) -> dict[str, Any]:
    """Best strategy, regret and agreement of ``recommended`` among the measured ``runs`` (ties: one s.e. of the
    paired difference, :mod:`tl_advise.rules.statistics`)."""
    accuracy = {s: v["accuracy"] for s, v in runs.items()}
    best = best_strategy(accuracy)
    measured = recommended in accuracy
    return {
        "best": best, "tied_best": tied_best(runs),
        "regret_pp": regret_pp(accuracy, recommended) if measured else None,
        "agree_raw": best == recommended,
        "agree_within_se": agrees(runs, recommended) if measured else False,
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
    # The signals are the probe's: a target's case records the target as its advice's backbone.
    verdict = score_similarity(rules, case.get("probe") or old.get("backbone", DEFAULT_BACKBONE), old["signals"])
    if verdict.label != old["label"]:
        raise RescoreError(f"{key}: the similarity label moves ({old['label']} -> {verdict.label}), and every "
                           "recipe's backbone LR with it: train it again with --force")
    band = rules.size_bands.band_for(case["images_per_class"])
    row = decide(rules, band, verdict.label, old["signals"].get("logreg_gain"), args.target)  # a target's own cell
    if row.strategy not in case["runs"]:
        raise RescoreError(f"{key}: {row.strategy} has no recorded run: train it again with --force")
    recommended = case["runs"][row.strategy]
    advice = {**old, "strategy": row.strategy, "rule_id": row.rule_id, "score": verdict.score,
              "threshold": verdict.threshold, "head_lr": recommended["head_lr"],
              "backbone_lr": recommended["backbone_lr"]}
    sweep = case.get("lr_sweep")
    if row.strategy != old["strategy"] and sweep is not None:
        if args.no_lr_sweep:  # it swept another strategy: dropped, so that a later run with sweeps resumes it
            log.info("%s: %s -> %s: LR sweep deferred", key, old["strategy"], row.strategy)
            sweep = None
        else:
            log.info("%s: %s -> %s: LR sweep of the new recommendation", key, old["strategy"], row.strategy)
            sweep = sweep_case(case, src, args, row.strategy)
    return {**case, "size_band": band, "advice": advice, **judgement(case["runs"], row.strategy),
            "lr_sweep": sweep}


def sweep_case(case: dict[str, Any], src: Path, args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """The LR sweep of ``strategy`` on a recorded case (its level folder rebuilt with the case's seed)."""
    args = argparse.Namespace(**{**vars(args), "seed": case_key(case)[2]})
    level = level_from_name(case["level"])
    session, _, _ = case_session(src, level, args, cold=False)
    work = case_work_dir(args, case["dataset"], case["level"], args.seed)
    return lr_sweep(session, strategy, case["runs"][strategy], work / "lr", args, case["image_size"])


# --------------------------------------------------------------------------- outputs


def write_outputs(results: dict[str, Any], prefix: Path, rules: Any) -> None:
    results["cases"].sort(key=case_order)  # re-run cases land in place, not at the end
    for case in results["cases"]:  # judged again with the current statistics, as the sweeps are
        if case["advice"]["strategy"] in case["runs"]:
            case.update(judgement(case["runs"], case["advice"]["strategy"]))
        if case.get("lr_sweep"):
            case["lr_sweep"] = judged_sweep(case["lr_sweep"], case["n_judged"])
    results["summary"] = summary(results["cases"])
    results["seed_judgement"] = seed_judgement(results["cases"], rules, results["budget"].get("target"))
    path = prefix.with_suffix(".json").resolve()
    results["source"] = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    results["calibration"] = calibrate(results["cases"], rules, results["budget"].get("target"))
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
    p.add_argument("--for", dest="target", default=None, metavar="BACKBONE",
                   help="advise for this backbone and train every strategy on it (the CLI's --for: the probe "
                   "measures the similarity, the rules' recipe is mapped onto the target's stages), e.g. "
                   "mobilenet_v2:IMAGENET1K_V1 (its weights from <shared>/weights) or efficientnet_lite2; a results "
                   "file holds one target only")
    p.add_argument("--out", type=Path, default=RESULTS / "advice_quality", help="output prefix (no suffix)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/tl-advise-advice-quality"))
    p.add_argument("--no-lr-sweep", action="store_true")
    p.add_argument("--judge", choices=("test", "val"), default="test",
                   help="the split that judges every strategy: 'test' (issue #23) = the dataset's test/, else its "
                   "val/ with early stopping on a hold-out of train/, else a test split carved out per seed; "
                   "'val' = the layout of the grids before it (early stopping and judging on one split)")
    p.add_argument("--force", action="store_true",
                   help="redo the requested cases even if the results file has them (others are kept)")
    p.add_argument("--rescore", action="store_true",
                   help="judge the recorded cases with the current rules without training them again (the LR "
                   "sweep re-runs where the recommendation changed, or is dropped with --no-lr-sweep, for a later "
                   "run to resume); for a rules edit that moves no similarity label")
    p.add_argument("--readvise", action="store_true",
                   help="measure the advice of the recorded cases again on their rebuilt level folders (cold), "
                   "keeping every run: for a change in what the advice measures; a case whose similarity label "
                   "moves needs --force")
    p.add_argument("--import-from", type=Path, action="append", default=[],
                   help="merge the cases of another results file with the same budget (e.g. an older seed's file)")
    p.add_argument("--write-evidence", type=Path, default=None, metavar="RULES_TOML",
                   help="with --report: write each rule's measured evidence into this rules file (with --for "
                   "BACKBONE: as that backbone's backbone_evidence tables, keyed by BACKBONE as given: name a "
                   "torchvision model with its weights, e.g. mobilenet_v2:IMAGENET1K_V1, its profile key)")
    p.add_argument("--evidence-rules", default=None, metavar="IDS",
                   help="with --write-evidence: only these rules' evidence (comma-separated ids) comes from this "
                   "file; the other rules keep theirs (e.g. the held-out grid's pixel rule beside the 10-epoch "
                   "grid's table)")
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
    if args.target and args.write_doc:
        p.error("--for: the doc's generated sections are the default backbone's; report a target's file without "
                "--write-doc")
    if args.quick:
        args.levels, args.image_size, args.max_epochs = "10", 64, 1
        if not args.datasets:
            args.datasets = [args.shared / "data" / "lfw_faces_vs_nonfaces"]
    if not args.datasets:
        args.datasets = [args.shared / "data" / n for n in DATASETS if (args.shared / "data" / n).is_dir()]
    return args


def budget_of(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two cases comparable. Seeds, the LR sweep and skipped strategies are recorded per case."""
    judged = {} if args.judge == "val" else {"judge": args.judge}  # files from before --judge judged on val
    target = {"target": args.target} if args.target else {}  # the default backbone's budget as before --for
    return {**judged, "image_size": args.image_size, "max_epochs": args.max_epochs, "patience": args.patience,
            "device": args.device, "lr_factors": list(LR_FACTORS),
            "rules": str(args.rules) if args.rules else "default",
            "feature_extraction_epochs": "the rules' own (head on cached embeddings: not capped)", **target}


class MixedTargetsError(Exception):
    """A results file holds cases of another target (or of none) than the one asked for."""


def target_name(target: str | None) -> str:
    return f"--for {target}" if target else "the default backbone (no --for)"


def check_one_target(path: Path, cases: Sequence[dict[str, Any]], target: str | None) -> None:
    """Refuse to add ``target``'s cases to a file of another target's: one file's regrets judge one backbone."""
    recorded = sorted({c.get("target") for c in cases} - {target}, key=str)
    if recorded:
        raise MixedTargetsError(
            f"{path} holds cases of {', '.join(map(target_name, recorded))}, not of {target_name(target)}: a results "
            "file holds the cases of one target only; give another --out (or the file's own --for)")


def load_results(path: Path, budget: dict[str, Any]) -> dict[str, Any]:
    """The results file's cases and history when its budget matches (a file from before seeds were a case key
    carries its seed in the budget: its cases get it), else an empty file. A file holding cases of another
    target than the budget's raises :class:`MixedTargetsError` (rather than starting over on it)."""
    results: dict[str, Any] = {"budget": budget, "commands": [], "cases": []}
    if not path.is_file():
        return results
    old = json.loads(path.read_text(encoding="utf-8"))
    check_one_target(path, old.get("cases", []), budget.get("target"))
    old_budget = {k: v for k, v in old.get("budget", {}).items() if k not in ("seed", "lr_sweep")}
    if old_budget != budget:
        log.warning("%s has another budget: starting over", path)
        return results
    seed = old.get("budget", {}).get("seed")
    for case in old.get("cases", []):
        case.setdefault("seed", seed if seed is not None else 0)
        _judged_on_val(case)
    results["cases"] = old.get("cases", [])
    results["commands"] = old.get("commands", [old["command"]] if "command" in old else [])
    return results


def _judged_on_val(case: dict[str, Any]) -> None:
    """A case recorded before ``--judge`` was judged on its validation split: say so in today's keys."""
    if "n_val" in case and "n_judged" not in case:
        case["n_judged"] = case.pop("n_val")
        case["judged_on"] = "val"
        for run in case["runs"].values():
            run.setdefault("n_judged", run.get("n_val"))
            run.setdefault("judged_on", "val")
        for point in (case.get("lr_sweep") or {}).get("points", []):
            point.setdefault("n_judged", point.pop("n_val", None))


def merge_case(results: dict[str, Any], case: dict[str, Any]) -> None:
    results["cases"] = [c for c in results["cases"] if case_key(c) != case_key(case)] + [case]


def target_evidence(target: str | None) -> dict[str, Any]:
    """``write_evidence``'s arguments for a ``--for`` target's results: its own tables and generated note."""
    if not target:
        return {}
    return {"backbone": target, "note": f"# [benchmark] generated by benchmarks/advice_quality.py --report --for "
                                        f"{target} --write-evidence; not edited by hand"}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("tl_advise",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tl_advise.rules import load_rules

    rules = load_rules(args.rules)
    results_path = args.out.with_suffix(".json")
    try:
        results = load_results(results_path, budget_of(args))
        imports = [(other, load_results(other, budget_of(args))["cases"]) for other in args.import_from]
        if args.target and not args.report:
            offline_torch_home(args.work_dir, args.shared, [args.target])
    except (MixedTargetsError, MissingWeightsError) as error:
        log.error("%s", error)
        return 2
    if not (args.report and not args.import_from):  # a bare --report changes no number: not a building command
        # Every command that added to (or re-judged) this file, oldest first, with its commit and machine.
        results["commands"].append(provenance(__file__, argv))
    for other, imported in imports:
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
            only = [r.strip() for r in args.evidence_rules.split(",") if r.strip()] if args.evidence_rules else None
            try:
                written = write_evidence(text, judged["rule_evidence"], results["source"], only=only,
                                         **target_evidence(args.target))
            except ValueError as error:
                log.error("--evidence-rules: %s", error)
                return 2
            args.write_evidence.write_text(written, encoding="utf-8")
            log.info("evidence of %d rule(s) written to %s", len(only or judged["rule_evidence"]), args.write_evidence)
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
            for level in levels_for(src, wanted, seed, "full" in tokens, args.judge) if wanted else [None]:
                key = (src.name, level_name(level), seed, args.target)
                name = f"{src.name}@{level_name(level)} seed {seed}"
                t0 = time.perf_counter()
                old = recorded.get(key)
                if args.rescore or args.readvise:
                    if old is None:
                        log.info("%s: not in %s, nothing to judge again", name, results_path)
                        continue
                    try:
                        case = readvise_case(old, src, args) if args.readvise else rescore_case(old, src, args, rules)
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
