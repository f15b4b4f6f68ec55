"""Judging the advice-quality cases: the summary over cases, the seed-averaged judgement with each rule's
evidence, and the calibration of the similarity threshold and the decision table's cells (in-sample and
leave-one-dataset-out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from _quality_levels import case_key, case_order
from _quality_metrics import (
    GUIDE_TABLE,
    Case,
    SeedAverage,
    Weighting,
    case_regret,
    cell_evidence,
    combined_score,
    fit_threshold,
    held_name,
    judge,
    leave_one_dataset_out,
    mean,
    refit_table,
    regret_pp,
    seed_averages,
    source_of,
)

from tl_advise.advisor.defaults import DEFAULT_BACKBONE  # what advise_session uses; the cases record it
from tl_advise.rules import statistics


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


def calibrate(cases_json: Sequence[dict[str, Any]], rules: Any, backbone: str | None = None) -> dict[str, Any]:
    """In-sample and leave-one-dataset-out fits of (weighting, threshold) and of the table's cells, on the
    seed-averaged cases (the signals of each dataset x level's first seed: the advice's own sample); ``backbone``:
    the cases trained that backbone (``--for``), whose own cells are the current table."""
    from tl_advise.rules import decide

    bands = rules.size_bands.bands
    table = {(b, lab): (row := rules.row_for(b, lab)).strategy_for(backbone, row.strategy)
             for b in bands for lab in ("similar", "different")}
    pixel = rules.pixel_baseline
    if pixel.enabled:  # the pixel-baseline rule is a cell of its own, across the bands it applies in
        cell = pixel.strategy_for(backbone, pixel.strategy)
        table.update({(pixel.id, lab): cell for lab in ("similar", "different")})

    def cell_band(band: str, signals: dict[str, Any]) -> str:
        deciding = decide(rules, band, "different", signals.get("logreg_gain")).rule_id  # the pixel rule: any label
        return pixel.id if deciding == pixel.id else band

    first = {(c["dataset"], c["level"]): c for c in sorted(cases_json, key=lambda c: -case_key(c)[2])}
    averages = [a for a in seed_averages(cases_json)
                if all(table[(a.band, lab)] in a.accuracy for lab in ("similar", "different"))]
    cases = [Case(dataset=a.dataset, level=a.level, band=cell_band(a.band, signals), accuracy=a.accuracy,
                  n_judged=a.n_judged * len(a.seeds), signals=signals)
             for a in averages for signals in [first[(a.dataset, a.level)]["advice"]["signals"]]]
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
    cells = [(c.band, label) for c, label in zip(cases, labels, strict=True)]
    guide = {cell: GUIDE_TABLE.get(cell, strategy) for cell, strategy in table.items()}
    table_in = refit_table(averages, cells, guide)
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
            "guide": {f"{b}-{lab}": s for (b, lab), s in guide.items()},
            "in_sample": {f"{b}-{lab}": s for (b, lab), s in table_in.items()},
            "in_sample_mean_regret_pp": mean([regret_pp(c.accuracy, table_in[cell])
                                              for c, cell in zip(cases, cells, strict=True)]),
            "measured": sorted({f"{b}-{lab}" for b, lab in cells}),
            **table_lodo(averages, cells, guide, beyond_noise=True),
            "least_regret": table_lodo(averages, cells, guide, beyond_noise=False),
        },
    }


def table_lodo(averages: Sequence[SeedAverage], cells: Sequence[tuple[str, str]], guide: Mapping[tuple[str, str], str],
               *, beyond_noise: bool) -> dict[str, Any]:
    """The issue's targets judged leave-one-source-out: each source's seed averages advised by the cells refit
    from ``guide`` on the other sources' (``cells[i]`` is ``averages[i]``'s; ``beyond_noise``: a cell moves only
    when another strategy is ahead beyond noise, otherwise to the least mean regret). Image and text alike."""
    per_case: dict[str, dict[str, float]] = {}
    advised: dict[str, dict[str, str]] = {}  # source -> held-out case -> the refit cell's strategy
    ties: list[bool] = []  # each held-out case: the refit cell's strategy within one s.e. of the best
    for source in sorted({source_of(a.dataset) for a in averages}):
        train = [i for i, a in enumerate(averages) if source_of(a.dataset) != source]
        fitted = refit_table([averages[i] for i in train], [cells[i] for i in train], dict(guide),
                             beyond_noise=beyond_noise)
        held = [i for i, a in enumerate(averages) if source_of(a.dataset) == source]
        judged = {i: judge(averages[i], fitted[cells[i]]) for i in held}
        per_case[source] = {held_name(averages[i].dataset, averages[i].level): judged[i].regret_pp for i in held}
        advised[source] = {held_name(averages[i].dataset, averages[i].level): fitted[cells[i]] for i in held}
        ties += [judged[i].tie for i in held]
    per_source = {d: mean(list(levels.values())) for d, levels in per_case.items()}
    worst = max(per_source, key=lambda d: per_source[d])
    every = [v for d in per_case.values() for v in d.values()]
    return {"lodo_mean_regret_pp": mean(every), "lodo_max_regret_pp": max(every), "lodo_per_dataset": per_case,
            "lodo_advised": advised, "lodo_worst_dataset": {"dataset": worst, "mean_regret_pp": per_source[worst]},
            "lodo_within_se": [sum(ties), len(ties)]}


def _deciding_rule(avg: SeedAverage, first_case: dict[str, Any], rules: Any) -> Any:
    from tl_advise.rules import decide

    return decide(rules, avg.band, avg.label, first_case["advice"]["signals"].get("logreg_gain"))


def seed_judgement(cases_json: Sequence[dict[str, Any]], rules: Any, backbone: str | None = None) -> dict[str, Any]:
    """Every dataset x level judged on its seed-averaged accuracies, the targets over them, and the evidence
    for each rule of the current rules (generated: it is what the rules file's ``evidence`` tables hold).

    ``backbone``: the cases trained that backbone (``--for``), whose own cells may move (:func:`moved_cells`);
    the rows and targets are then the advice that backbone gets, the evidence its ``backbone_evidence``."""
    first = {(c["dataset"], c["level"]): c for c in sorted(cases_json, key=lambda c: -case_key(c)[2])}
    averages = seed_averages(sorted(cases_json, key=case_order))

    def decision(a: SeedAverage) -> tuple[str, str]:
        d = _deciding_rule(a, first[(a.dataset, a.level)], rules)  # the benchmark backbone's cell: never moved
        return d.rule_id, d.strategy

    rows, evidence = judge_by_rule(averages, decision)
    if backbone is not None and (moved := moved_cells(averages, decision, evidence)):
        shared = {rule_id: evidence[rule_id]["strategy"] for rule_id in moved}

        def own_cell(a: SeedAverage) -> tuple[str, str]:
            rule_id, strategy = decision(a)
            return rule_id, moved.get(rule_id, strategy)

        rows, evidence = judge_by_rule(averages, own_cell)
        for rule_id, strategy in shared.items():
            evidence[rule_id]["moved_from"] = strategy
    sweeps = [c["lr_sweep"] for c in cases_json if c.get("lr_sweep")]
    targets = {**regret_targets(rows), "lr_checked": len(sweeps), "lr_within_3x": sum(s["within_3x"] for s in sweeps),
               "lr_within_3x_tied": sum(s["within_3x_tied"] for s in sweeps)}
    return {"cases": rows, "targets": targets, "rule_evidence": evidence}


def moved_cells(averages: Sequence[SeedAverage], decision: Callable[[SeedAverage], tuple[str, str]],
                evidence: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """The rules whose cell another backbone's own cases move: the rule's strategy trailed the runner-up beyond
    noise, no dataset left out chose it, and the runner-up was chosen with every dataset left out in turn (its
    own evidence ``held_out``). rule id -> the runner-up."""
    moved = {}
    for rule_id, e in evidence.items():
        if statistics.compare(e["margin_pp"], e["se_pp"]) != "behind" or e["held_out_folds"] < 2 \
                or e["held_out_agree"] > 0:
            continue
        members = [a for a in averages if decision(a)[0] == rule_id]
        own = cell_evidence(members, e["runner_up"])
        if own is not None and own.held_out_folds >= 2 and own.held_out_agree == own.held_out_folds:
            moved[rule_id] = e["runner_up"]
    return moved


def judge_by_rule(averages: Sequence[SeedAverage], decision: Callable[[SeedAverage], tuple[str, str]]
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(rows, rule evidence): each seed average judged against the strategy of the rule that decides it
    (``decision``: seed average -> (rule id, strategy), the current rules' decision on the recorded signals and
    size), and each rule's evidence over the cases it decides (:func:`cell_evidence`). Image and text alike."""
    rows, by_rule = [], {}
    for a in averages:
        rule_id, strategy = decision(a)
        j = judge(a, strategy)
        by_rule.setdefault(rule_id, (strategy, []))[1].append(a)
        rows.append({"dataset": a.dataset, "level": a.level, "band": a.band, "label": a.label, "seeds": list(a.seeds),
                     "n_judged": a.n_judged, "recommended": strategy, "rule_id": rule_id,
                     "best": j.best, "regret_pp": j.regret_pp, "se_pp": j.se_pp, "tie": j.tie,
                     "accuracy": a.accuracy, "spread": {s: list(v) for s, v in a.spread.items()}})
    evidence = {}
    for rule_id, (strategy, members) in by_rule.items():
        e = cell_evidence(members, strategy)
        if e is not None:
            evidence[rule_id] = {"strategy": strategy, **e.__dict__}
    return rows, evidence


def regret_targets(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The seed-averaged targets over judged rows: mean regret, the worst dataset, ties, repeated cases."""
    by_dataset: dict[str, list[float]] = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], []).append(r["regret_pp"])
    repeated = [r for r in rows if len(r["seeds"]) >= 2]
    return {
        "n_cases": len(rows), "mean_regret_pp": mean([r["regret_pp"] for r in rows]),
        "max_dataset_mean_regret_pp": max((mean(v) for v in by_dataset.values()), default=float("nan")),
        "worst_dataset": max(by_dataset, key=lambda d: mean(by_dataset[d])) if by_dataset else None,
        "within_se": sum(r["tie"] for r in rows),
        "cases_with_2_seeds": len(repeated),
        "repeated_small_medium": sorted({f"{r['band']}/{r['label']}" for r in repeated
                                         if r["band"] in ("small", "medium")}),
    }


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
