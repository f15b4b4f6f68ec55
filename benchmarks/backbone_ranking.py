"""Does the backbone ranking predict fine-tuned accuracy? (issue #26, item 3a) And how long does it take cold?

    .venv/bin/python benchmarks/backbone_ranking.py                 # the shared sets, 3 offline backbones
    .venv/bin/python benchmarks/backbone_ranking.py --quick         # one set, 10/class, 1 epoch at 64 px
    .venv/bin/python benchmarks/backbone_ranking.py --timing-only   # the cold ranking time on hymenoptera
    .venv/bin/python benchmarks/backbone_ranking.py --device cuda   # the same on a GPU

For each dataset (a seeded level folder of at most N train images per class with a fixed validation and test
split, ``_quality_levels.build_level``, as the advice-quality grid builds them): the ranking runs cold
(``rank_backbones`` with its own cache folder, timed) and gives every backbone its frozen-feature scores
(cross-validated logistic-regression and k-NN accuracy, LogME); then each backbone is fine-tuned with the strategy
the advice gives it (``advise_session(target=...)`` and the runners, the rules' own recipe under one epoch cap) and
judged on the test split. Per dataset, the weighted Kendall tau (``scipy.stats.weightedtau``, hyperbolic weights on
rank, as the LogME and SFDA papers report it) between each frozen-feature score and the fine-tuned accuracy; over the
datasets its mean, standard deviation, minimum and maximum.

Results go to ``benchmarks/results/backbone_ranking.{json,md}`` (``--out`` for another prefix) with the command and
the commit, written after every trained backbone; a re-run skips what is recorded with the same budget
(``--force`` redoes it), so a run cut short resumes (the runners' epoch checkpoints resume inside a backbone too).
The ``cold_ranking`` section is the ranking command alone on the full hymenoptera set (398 images), in a fresh
interpreter, timed cold (empty cache folder) and warm, with the load average beside each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _offline_weights import MissingWeightsError, offline_torch_home
from _provenance import provenance
from _quality_levels import build_level, image_size_for

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATASETS = ("hymenoptera", "flowers5_small", "lfw_faces_vs_nonfaces", "eurosat_small", "pneumoniamnist",
                    "sign_digits")
OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2:IMAGENET1K_V1")
SCORES = ("logreg_accuracy", "knn_accuracy", "logme")

log = logging.getLogger("backbone_ranking")


# --------------------------------------------------------------------------- set-up


def torch_home(args: argparse.Namespace) -> None:
    """A $TORCH_HOME under the work folder whose hub cache holds the shared MobileNetV2 file: the cold ranking
    command ranks every offline backbone, whichever --backbones are fine-tuned."""
    try:
        offline_torch_home(args.work_dir, args.shared, (*OFFLINE_BACKBONES, *args.backbones))
    except MissingWeightsError as error:
        raise SystemExit(str(error)) from None


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"cases": {}, "cold_ranking": None}


def save(results: dict[str, Any], out: Path, args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    results["provenance"] = provenance(__file__, argv)
    write(results, out)


def write(results: dict[str, Any], out: Path) -> None:
    """The results with their summary recomputed, to ``out``.json (atomically) and ``out``.md."""
    results["summary"] = summarise(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out.with_suffix(".json"))
    out.with_suffix(".md").write_text(markdown(results))


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """What makes a recorded fine-tuning comparable: a change re-trains."""
    return {"level": args.level, "max_epochs": args.max_epochs, "image_size": args.image_size, "seed": args.seed,
            "patience": args.patience}


# --------------------------------------------------------------------------- one dataset


def rank_cold(data: Path, backbones: Sequence[str], cache: Path, args: argparse.Namespace) -> tuple[Any, float]:
    from tl_advise.advisor.ranking import rank_backbones

    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    result = rank_backbones(data, list(backbones), cache_dir=cache, device=args.device, seed=args.seed)
    return result, time.perf_counter() - started


def fine_tune(data: Path, backbone: str, cache: Path, out: Path, args: argparse.Namespace,
              image_size: int | None) -> dict[str, Any]:
    """The advised strategy for ``backbone`` on ``data``, trained with the rules' recipe under the epoch cap."""
    from tl_advise.advisor.api import advise_session
    from tl_advise.runners import RunOptions, run_advice

    session = advise_session(data, cache_dir=cache, device=args.device, seed=args.seed, target=backbone)
    strategy = session.result.recommendation.strategy
    options = RunOptions(output_dir=out, strategies=[strategy], max_epochs=args.max_epochs, image_size=image_size,
                         seed=args.seed, device=args.device, progress=False, patience=args.patience,
                         num_workers=args.num_workers, resume=True)
    started = time.perf_counter()
    run = run_advice(session, options).runs[0]
    judged = run.test if run.test is not None else run.val
    return {
        "strategy": strategy, "unfreeze": list(session.result.recommendation.unfreeze),
        "accuracy": judged.accuracy if judged else None, "judged_on": "test" if run.test is not None else "val",
        "n_judged": judged.n_images if judged else 0, "correct": judged.correct if judged else None,
        "status": run.status, "error": run.error,
        "epochs_run": run.epochs_run, "train_time_s": round(time.perf_counter() - started, 1),
        "image_size": run.settings.image_size if run.settings else None,
    }


def train_size(name: str, args: argparse.Namespace) -> int | None:
    """--image-size, else the grid's size for the tiny-image sets (64 px), else None: each backbone's own."""
    if args.image_size:
        return int(args.image_size)
    unbounded = 1 << 30
    sized = image_size_for(name, unbounded)
    return None if sized == unbounded else sized


def run_case(name: str, results: dict[str, Any], args: argparse.Namespace, out: Path,
             argv: Sequence[str] | None) -> None:
    src = args.shared / "data" / name
    if not src.is_dir():
        log.warning("%s is absent: skipped", src)
        return
    work = args.work_dir / f"{name}@{args.level}@seed{args.seed}"
    key = f"{name}@{args.level}/class@seed{args.seed}"
    case = results["cases"].get(key)
    if case is None or case.get("budget") != budget(args) or args.force:
        case = {"dataset": name, "budget": budget(args), "ranking": None, "fine_tuned": {}}
    build_level(src, work / "data", args.level, args.seed)
    if case["ranking"] is None or set(case["ranking"]["scores"]) != set(args.backbones):
        ranking, seconds = rank_cold(work / "data", args.backbones, work / "rank-cache", args)
        case["ranking"] = {
            "seconds_cold": round(seconds, 2), "recommended": ranking.recommended.spec,
            "strategy": ranking.recommended.recommendation.strategy, "similarity": ranking.similarity.score,
            "sample_images": ranking.sample_images,
            "scores": {c.spec: {s: getattr(c.scores, s) for s in SCORES} | {
                "gflops": c.cost.gflops, "parameters": c.cost.parameters, "images_per_second": c.cost.images_per_second}
                for c in ranking.candidates}}
        results["cases"][key] = case
        save(results, out, args, argv)
        log.info("%s: ranking in %.1f s cold, recommends %s", key, seconds, ranking.recommended.spec)
    if args.rank_only:
        return
    image_size = train_size(name, args)
    for backbone in args.backbones:
        if backbone in case["fine_tuned"] and case["fine_tuned"][backbone].get("accuracy") is not None:
            continue
        log.info("%s: fine-tuning %s", key, backbone)
        case["fine_tuned"][backbone] = fine_tune(work / "data", backbone, work / "cache",
                                                 work / "runs" / backbone.replace(":", "_"), args, image_size)
        results["cases"][key] = case
        save(results, out, args, argv)


def rank_command(data: Path, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``tl-advise rank-backbones`` in a fresh interpreter (what a user waits for: start-up and imports
    included): its wall time, the result's own step timings and the load average around it."""
    command = [sys.executable, "-m", "tl_advise.cli", "rank-backbones", str(data), "--candidates",
               ",".join(OFFLINE_BACKBONES), "--cache-dir", str(cache), "--device", args.device, "--seed",
               str(args.seed), "--format", "json", "-q"]
    load_before = list(os.getloadavg())
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rank-backbones failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return {"seconds": round(seconds, 2), "timings": result["timings"], "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()), "recommended": result["recommended"]["spec"],
            "sample_images": result["sample_images"], "images": result["dataset"]["n_images"],
            "candidates": {c["spec"]: {"from_cache": c["from_cache"], **c["scores"], **c["cost"]}
                           for c in result["candidates"]}}


def cold_ranking(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The ranking command on the full hymenoptera set, cold (an empty cache folder) then warm (the same folder),
    each in a fresh interpreter: the issue's 30 s target on 2 cores."""
    data = args.shared / "data" / "hymenoptera"
    if not data.is_dir():
        log.warning("%s is absent: no cold timing", data)
        return
    cache = args.work_dir / "cold-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cold = rank_command(data, cache, args)
    warm = rank_command(data, cache, args)
    results["cold_ranking"] = {
        "dataset": "hymenoptera", "images": cold["images"], "sample_images": cold["sample_images"],
        "backbones": list(OFFLINE_BACKBONES), "seconds": cold["seconds"], "timings": cold["timings"],
        "warm_seconds": warm["seconds"], "warm_timings": warm["timings"],
        "recommended": cold["recommended"], "load_average": cold["load_average_before"],
        "runs": {"cold": cold, "warm": warm}, "cpu_count": os.cpu_count(), "device": args.device,
        "note": "wall time of `python -m tl_advise.cli rank-backbones` in a fresh interpreter (start-up and imports "
                "included), cold with an empty cache folder, then warm with the same folder; timings are the "
                "result's own steps; load_average is os.getloadavg() just before each run (1, 5, 15 min)",
    }


# --------------------------------------------------------------------------- summary


def separated_pairs(tuned: dict[str, dict[str, Any]], backbones: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of ``backbones`` whose fine-tuned accuracies differ beyond noise (``tl_advise.rules.statistics``:
    image by image where the runs recorded it, else from the two accuracies), the better one first."""
    from itertools import combinations

    from tl_advise.rules import statistics

    pairs = []
    for a, b in combinations(backbones, 2):
        outcome = statistics.between(tuned[a], tuned[b]).outcome
        if outcome != "tie":
            pairs.append((a, b) if outcome == "ahead" else (b, a))
    return pairs


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per score: the weighted τ per dataset and over them; and, over every dataset, how many backbone pairs the
    fine-tuning separated beyond noise and how many of those the score put in the same order (a τ over pairs
    the judging split cannot tell apart measures that split's noise)."""
    import numpy as np
    from scipy.stats import weightedtau

    per_score: dict[str, dict[str, float]] = {s: {} for s in SCORES}
    n_pairs, separated = 0, []
    for key, case in results.get("cases", {}).items():
        tuned = {b: v for b, v in case.get("fine_tuned", {}).items() if v.get("accuracy") is not None}
        ranking = case.get("ranking") or {}
        common = [b for b in tuned if b in ranking.get("scores", {})]
        if len(common) < 3:
            continue
        n_pairs += len(common) * (len(common) - 1) // 2
        separated += [(ranking["scores"], better, worse) for better, worse in separated_pairs(tuned, common)]
        for score in SCORES:
            x = [ranking["scores"][b][score] for b in common]
            y = [tuned[b]["accuracy"] for b in common]
            tau = weightedtau(x, y).statistic
            if np.isfinite(tau):
                per_score[score][key] = float(tau)
    summary: dict[str, Any] = {}
    for score, taus in per_score.items():
        values = np.array(list(taus.values()))
        summary[score] = {"datasets": len(values), "per_dataset": taus, "pairs": n_pairs,
                          "separated_pairs": len(separated),
                          "ordered_right": sum(scores[better][score] > scores[worse][score]
                                               for scores, better, worse in separated)} | (
            {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
             "min": float(values.min()), "max": float(values.max())} if len(values) else {})
    return summary


EVIDENCE_NOTE = ("# [benchmark] generated by benchmarks/backbone_ranking.py --report --write-evidence; not edited "
                 "by hand")


def ranking_evidence(results: dict[str, Any], source: str) -> dict[str, Any]:
    """The rules' ``[ranking.evidence]`` from the results: which datasets, level, seeds and backbones the τ of
    each score rests on (``summarise``'s cases: three or more backbones fine-tuned)."""
    summary = summarise(results)
    counted = sorted({key for s in summary.values() for key in s["per_dataset"]})
    if not counted:
        raise ValueError("no dataset has three fine-tuned backbones yet: nothing to write")
    cases = [results["cases"][key] for key in counted]
    levels = {key.split("@")[1] for key in counted}
    if len(levels) != 1:
        raise ValueError(f"the cases mix levels ({', '.join(sorted(levels))}): write one level's evidence")
    backbones = sorted(set.intersection(*(set(c["fine_tuned"]) for c in cases)))
    return {
        "source": source, "datasets": sorted({c["dataset"] for c in cases}),
        "per_class": int(levels.pop().split("/")[0]), "seeds": len({key.rsplit("@seed", 1)[1] for key in counted}),
        "backbones": backbones,
        "scores": {score: {"datasets": s["datasets"], **({"tau_mean": round(s["mean"], 2), "tau_sd": round(s["std"], 2)}
                                                          if s["datasets"] else {}),
                           "pairs": s["pairs"], "separated_pairs": s["separated_pairs"],
                           "ordered_right": s["ordered_right"]}
                   for score, s in summary.items()},
    }


def write_ranking_evidence(rules_text: str, evidence: dict[str, Any]) -> str:
    """``rules_text`` with its ``[ranking]`` section's generated evidence replaced by ``evidence``; checked by
    loading the result as rules before anything is written."""
    import tomllib

    from tl_advise.rules.schema import rules_from_mapping

    lines = rules_text.splitlines()
    if "[ranking]" not in lines:
        raise ValueError("the rules file has no [ranking] section to write the evidence under")
    start = lines.index("[ranking]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ----")), len(lines))
    section = lines[start:end]
    if EVIDENCE_NOTE in section:
        section = section[:section.index(EVIDENCE_NOTE)]
    while section and not section[-1].strip():
        section.pop()
    quoted = lambda values: "[" + ", ".join(json.dumps(v) for v in values) + "]"  # noqa: E731
    block = [EVIDENCE_NOTE, "[ranking.evidence]", f"source = {json.dumps(evidence['source'])}",
             f"datasets = {quoted(evidence['datasets'])}", f"per_class = {evidence['per_class']}",
             f"seeds = {evidence['seeds']}", f"backbones = {quoted(evidence['backbones'])}",
             "[ranking.evidence.scores]",
             *(f"{score} = {{ " + ", ".join(f"{k} = {v}" for k, v in e.items()) + " }"
               for score, e in evidence["scores"].items())]
    lines[start:end] = section + block + ([""] if end < len(lines) else [])
    text = "\n".join(lines) + "\n"
    rules_from_mapping(tomllib.loads(text), "the written rules")
    return text


def markdown(results: dict[str, Any]) -> str:
    prov = results.get("provenance", {})
    lines = ["# Backbone ranking: do frozen-feature scores predict fine-tuned accuracy?", "", "Commands, oldest first:",
             "", *(f"- `{c.get('command', '')}` at commit `{c.get('commit', '')[:12]}`"
                   f"{' (dirty tree)' if c.get('dirty') else ''}, {c.get('date', '')}"
                   for c in results.get("commands") or [prov]), ""]
    if "--quick" in prov.get("command", ""):
        lines += ["**--quick is a plumbing check, not evidence**: 10 images per class, 1 epoch at 64 px, while the "
                  "ranking scores each backbone's features at its own input size; its τ says nothing about the "
                  "ranking.", ""]
    cold = results.get("cold_ranking")
    if cold:
        warm = (f"; warm **{cold['warm_seconds']:.1f} s**" if cold.get("warm_seconds") is not None else "")
        lines += ["## Cold ranking time", "",
                  f"{', '.join(cold['backbones'])} on {cold['dataset']} ({cold['images']} images, sample "
                  f"{cold['sample_images']}): **{cold['seconds']:.1f} s** cold{warm} on {cold['cpu_count']} CPU(s), "
                  f"load average {', '.join(f'{v:.1f}' for v in cold['load_average'])} ({cold['note']}).", ""]
        if cold.get("provenance"):
            measured = cold["provenance"]
            lines += [f"Measured by `{measured['command']}` at commit `{measured['commit'][:12]}`, "
                      f"{measured['date']}.", ""]
        warm_timings = cold.get("warm_timings") or {}
        lines += ["| step | cold s | warm s |", "|---|---:|---:|",
                  *(f"| {k} | {v:.2f} | {warm_timings[k]:.2f} |" if k in warm_timings else f"| {k} | {v:.2f} | – |"
                    for k, v in cold["timings"].items()), ""]
        runs = cold.get("runs", {}).get("cold", {}).get("candidates", {})
        if runs:
            lines += ["| backbone | logreg | k-NN | LogME | GFLOPs | images/s | how |",
                      "|---|---:|---:|---:|---:|---:|---|",
                      *(f"| {b} | {c['logreg_accuracy']:.3f} | {c['knn_accuracy']:.3f} | {c['logme']:.3f} | "
                        f"{c['gflops'] or 0:.3f} | {c['images_per_second']} | {c['throughput_engine']} |"
                        for b, c in runs.items()), ""]
    summary = results.get("summary", {})
    lines += ["## Weighted Kendall τ (score vs fine-tuned accuracy of the advised strategy)", "",
              "| score | datasets | mean τ | s.d. | min | max |", "|---|---:|---:|---:|---:|---:|"]
    for score in SCORES:
        s = summary.get(score, {})
        if s.get("datasets"):
            lines.append(f"| {score} | {s['datasets']} | {s['mean']:.2f} | {s['std']:.2f} | {s['min']:.2f} | "
                         f"{s['max']:.2f} |")
        else:
            lines.append(f"| {score} | 0 | – | – | – | – |")
    first = next((summary[s] for s in SCORES if summary.get(s, {}).get("pairs")), None)
    if first is not None:
        ordered = ", ".join(f"{score} {summary[score]['ordered_right']} of {summary[score]['separated_pairs']}"
                            for score in SCORES if "ordered_right" in summary.get(score, {}))
        lines += ["", f"Of the {first['pairs']} backbone pairs those datasets compare, the fine-tuned accuracies "
                  f"differ beyond one standard error in {first['separated_pairs']} (`tl_advise.rules.statistics`: "
                  "image by image where the runs recorded it, else from the two accuracies); the other pairs are "
                  "ties on their judging split, and τ over them orders noise. On the separated pairs, the score "
                  f"ordered the two as fine-tuning did: {ordered}."]
    lines += ["", "## Cases", ""]
    for key, case in results.get("cases", {}).items():
        ranking = case.get("ranking") or {}
        lines += [f"### {key}", "", f"ranking {ranking.get('seconds_cold', 0):.1f} s cold, recommends "
                  f"{ranking.get('recommended')} ({ranking.get('strategy')}); similarity "
                  f"{ranking.get('similarity', 0):.2f}", "",
                  "| backbone | logreg | k-NN | LogME | GFLOPs | strategy | fine-tuned acc. | judged on | train s |",
                  "|---|---:|---:|---:|---:|---|---:|---|---:|"]
        for backbone, sc in ranking.get("scores", {}).items():
            ft = case.get("fine_tuned", {}).get(backbone, {})
            acc = f"{ft['accuracy']:.3f}" if ft.get("accuracy") is not None else "–"
            lines.append(f"| {backbone} | {sc['logreg_accuracy']:.3f} | {sc['knn_accuracy']:.3f} | {sc['logme']:.3f} | "
                         f"{sc['gflops'] or 0:.2f} | {ft.get('strategy', '–')} | {acc} | {ft.get('judged_on', '–')} | "
                         f"{ft.get('train_time_s', '–')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    shared = Path(os.environ.get("TL_ADVISE_SHARED", REPO.parent / "shared"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="*",
                   help=f"dataset names under <shared>/data (default: {', '.join(DEFAULT_DATASETS)})")
    p.add_argument("--shared", type=Path, default=shared)
    p.add_argument("--backbones", default=",".join(OFFLINE_BACKBONES), help="comma-separated, at least 3 for a τ")
    p.add_argument("--level", type=int, default=40, help="train images per class (the tiny band's grid level)")
    p.add_argument("--image-size", type=int, default=None,
                   help="training image size (default: each backbone's own, 64 px for the tiny-image sets)")
    p.add_argument("--max-epochs", type=int, default=10, help="cap on head and fine-tune epochs")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/tl-advise-backbone-ranking"))
    p.add_argument("--out", type=Path, default=RESULTS / "backbone_ranking", help="output prefix (no suffix)")
    p.add_argument("--force", action="store_true", help="redo recorded cases")
    p.add_argument("--rank-only", action="store_true", help="rank (cold) every dataset, train nothing")
    p.add_argument("--timing-only", action="store_true", help="only the cold ranking time on hymenoptera")
    p.add_argument("--quick", action="store_true", help="hymenoptera at 10/class, 1 epoch at 64 px")
    p.add_argument("--report", action="store_true", help="rewrite the Markdown from the results file, train nothing")
    p.add_argument("--write-evidence", type=Path, default=None, metavar="RULES_TOML",
                   help="with --report: write the τ summary into the rules file's [ranking.evidence]")
    args = p.parse_args(argv)
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if args.quick:
        args.datasets = args.datasets or ["hymenoptera"]
        args.level, args.max_epochs, args.image_size = 10, 1, 64
        if args.out == RESULTS / "backbone_ranking":
            args.out = RESULTS / "backbone_ranking_quick"
    args.datasets = args.datasets or list(DEFAULT_DATASETS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    results = load_results(args.out.with_suffix(".json"))
    if args.report:
        write(results, args.out)
        if args.write_evidence:
            source = args.out.with_suffix(".json").resolve().relative_to(REPO).as_posix()
            try:
                written = write_ranking_evidence(args.write_evidence.read_text(encoding="utf-8"),
                                                 ranking_evidence(results, source))
            except ValueError as error:
                log.error("--write-evidence: %s", error)
                return 2
            args.write_evidence.write_text(written, encoding="utf-8")
            log.info("[ranking.evidence] written to %s", args.write_evidence)
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch_home(args)
    # Every invocation's command, commit and machine: the cases and the cold timing may come from different ones.
    invocation = provenance(__file__, argv)
    results.setdefault("commands", []).append(invocation)
    # The cold timing belongs to the full run (--quick and --rank-only leave it out unless --timing-only).
    if args.timing_only or (not (args.quick or args.rank_only) and (results.get("cold_ranking") is None or args.force)):
        cold_ranking(results, args)
        results["cold_ranking"]["provenance"] = invocation
        save(results, args.out, args, argv)
        if args.timing_only:
            log.info("cold ranking: %s s", (results.get("cold_ranking") or {}).get("seconds"))
            return 0
    for name in args.datasets:
        run_case(name, results, args, args.out, argv)
    save(results, args.out, args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
