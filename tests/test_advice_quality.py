"""The advice-quality benchmark: its pure scoring/calibration parts on synthetic numbers (fast), and a
``--quick`` end-to-end run on one real dataset (slow)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, make_class_folder, shared_dataset

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import _quality_judgement as qj
import _quality_levels as ql
import _quality_metrics as qm
import _quality_report as qr


def test_std_error_and_regret() -> None:
    assert qm.std_error(0.5, 100) == pytest.approx(0.05)
    assert qm.std_error(1.0, 10) == 0.0
    assert math.isnan(qm.std_error(0.5, 0))
    acc = {"feature_extraction": 0.80, "full_finetune": 0.85}
    assert qm.regret_pp(acc, "feature_extraction") == pytest.approx(5.0)
    assert qm.regret_pp(acc, "full_finetune") == 0.0
    assert qm.best_strategy(acc) == "full_finetune"
    # Exact ties go to the cheaper strategy (earlier in STRATEGIES).
    assert qm.best_strategy({"full_finetune": 0.9, "feature_extraction": 0.9}) == "feature_extraction"


def _runs(accuracy: dict[str, float], n: int) -> dict[str, dict]:
    return {s: {"accuracy": a, "n_judged": n} for s, a in accuracy.items()}


def test_agreement_counts_ties_within_one_standard_error() -> None:
    acc = {"feature_extraction": 0.80, "finetune_last_layers": 0.85, "from_scratch": 0.50}
    # n=40, no per-image results: s.e. of 0.85 - 0.80 is sqrt((.1275 + .16) / 40) = 0.085 -> a tie.
    assert qm.agrees(_runs(acc, 40), "feature_extraction")
    assert not qm.agrees(_runs(acc, 40), "from_scratch")
    # n=10000: s.e. ~0.0055 -> 5 pp behind is a real loss.
    assert not qm.agrees(_runs(acc, 10000), "feature_extraction")
    assert qm.tied_best(_runs(acc, 40)) == ["feature_extraction", "finetune_last_layers"]
    # A perfect best score still allows one image's worth of noise.
    assert qm.agrees(_runs({"feature_extraction": 1.0, "full_finetune": 0.99}, 100), "full_finetune")
    # Per-image results pair the comparison: the same 5-point gap on 100 images, every differing image going
    # to the best, is beyond noise (paired s.e. 0.022), where the unpaired s.e. (0.054) calls it a tie.
    runs = _runs({"feature_extraction": 0.80, "finetune_last_layers": 0.85}, 100)
    assert qm.agrees(runs, "feature_extraction")
    runs["feature_extraction"]["correct"] = "0" * 5 + "1" * 80 + "0" * 15
    runs["finetune_last_layers"]["correct"] = "1" * 5 + "1" * 80 + "0" * 15
    assert not qm.agrees(runs, "feature_extraction")


def test_cost_ratio() -> None:
    assert qm.cost_ratio(5.0, [50.0, 30.0, 20.0]) == pytest.approx(0.05)
    assert math.isnan(qm.cost_ratio(5.0, []))


def test_lr_check_within_factor_three() -> None:
    sweep = {1e-5: 0.70, 3e-5: 0.75, 1e-4: 0.80, 3e-4: 0.85, 1e-3: 0.60}
    far = qm.lr_check(1e-5, sweep, n_judged=10000)
    assert far.best_lr == 3e-4 and not far.within_3x and not far.within_3x_tied
    near = qm.lr_check(1e-4, sweep, n_judged=10000)
    assert near.within_3x and near.ratio == pytest.approx(1 / 3)
    # With 20 validation images (s.e. 8 pp) 0.80 ties 0.85, so 4e-5 (x2.5 from 1e-4) is accepted tie-aware only.
    tied = qm.lr_check(4e-5, sweep, n_judged=20)
    assert not tied.within_3x and tied.within_3x_tied


def test_the_sweeps_third_steps_are_within_factor_three() -> None:
    """The sweep trains rates rounded to three digits: advised ÷3 runs as 0.000333, 3.003x away, and counts."""
    for factor in (1 / 3, 3.0):
        rate = qm.sweep_rate(1e-3, factor)
        check = qm.lr_check(1e-3, {rate: 0.80, 1e-3: 0.70, qm.sweep_rate(1e-3, 10.0): 0.60}, n_judged=10000)
        assert check.best_lr == rate and check.within_3x, (factor, check)
    assert not qm.lr_check(1e-3, {qm.sweep_rate(1e-3, 0.1): 0.80, 1e-3: 0.70}, n_judged=10000).within_3x


def _case(dataset: str, score_signal: float, fe: float, top: float, level: str = "10/class") -> qm.Case:
    return qm.Case(dataset=dataset, level=level, band="small", signals={"bn_shift_late": score_signal},
                   accuracy={"feature_extraction": fe, "feature_extraction_top_layers": top}, n_judged=100)


TABLE = {("small", "similar"): "feature_extraction", ("small", "different"): "feature_extraction_top_layers"}
WEIGHTINGS: dict[str, qm.Weighting] = {"late": {"bn_shift_late": (1.0, 1.0, 0.0)}}


def test_combined_score_matches_the_engine_ramp() -> None:
    from tl_advise.rules import ramp_score

    weighting = {"a": (0.5, 0.25, 0.55), "b": (0.5, 0.5, 0.15), "c": (0.0, 1.0, 0.0)}
    signals = {"a": 0.4, "b": 0.3, "c": 0.9}
    expected = 0.5 * ramp_score(0.4, 0.25, 0.55) + 0.5 * ramp_score(0.3, 0.5, 0.15)
    assert qm.combined_score(signals, weighting) == pytest.approx(expected)
    # An unmeasured signal drops out and the others are renormalised.
    assert qm.combined_score({"a": 0.4, "b": None}, weighting) == pytest.approx(ramp_score(0.4, 0.25, 0.55))
    assert qm.combined_score({}, weighting, when_none=0.3) == 0.3


def test_threshold_fit_and_leave_one_dataset_out() -> None:
    # High score -> frozen features win; low score -> tuning the top wins. The boundary lies in (0.3, 0.7).
    cases = [_case("a", 0.9, 0.95, 0.90), _case("b", 0.7, 0.90, 0.85), _case("c", 0.3, 0.70, 0.80),
             _case("d", 0.1, 0.60, 0.75)]
    fit = qm.fit_threshold(cases, WEIGHTINGS, TABLE, prior_threshold=0.5)
    assert fit.mean_regret_pp == 0.0 and 0.3 < fit.threshold <= 0.7
    lodo = qm.leave_one_dataset_out(cases, WEIGHTINGS, TABLE, prior_threshold=0.5)
    assert [r.dataset for r in lodo] == ["a", "b", "c", "d"]
    assert all(r.held_out_regret_pp["10/class"] == 0.0 for r in lodo)
    # Held out, the edge case "b" cannot move the boundary: its fit comes from a, c, d only.
    cases[1] = _case("b", 0.3, 0.90, 0.85)  # now out of line with the others
    in_sample = qm.fit_threshold(cases, WEIGHTINGS, TABLE, prior_threshold=0.5)
    held_b = next(r for r in qm.leave_one_dataset_out(cases, WEIGHTINGS, TABLE, 0.5) if r.dataset == "b")
    assert held_b.held_out_regret_pp["10/class"] == pytest.approx(5.0)
    assert in_sample.mean_regret_pp <= 5.0 / 4 + 1e-9


def test_threshold_ties_stay_near_the_prior() -> None:
    cases = [_case("a", 0.9, 0.9, 0.9), _case("b", 0.1, 0.9, 0.9)]  # nothing to learn
    assert qm.fit_threshold(cases, WEIGHTINGS, TABLE, prior_threshold=0.5).threshold == pytest.approx(0.5)


def _paired_case(dataset: str, seed: int, correct: dict[str, int], n: int = 400) -> dict[str, Any]:
    """A recorded case whose strategies got the first ``correct[s]`` of ``n`` judging images right (paired:
    the weaker one's right images are the stronger one's too)."""
    runs = {s: {"accuracy": k / n, "n_judged": n, "correct": "1" * k + "0" * (n - k)} for s, k in correct.items()}
    return {"dataset": dataset, "level": "10/class", "seed": seed, "size_band": "few", "n_judged": n, "runs": runs,
            "advice": {"label": "different", "strategy": "feature_extraction"}, "test_is_source_split": True}


def test_a_cell_moves_from_its_prior_only_beyond_noise() -> None:
    def averages(gains: dict[str, int]) -> list[qm.SeedAverage]:
        return qm.seed_averages([_paired_case(d, seed, {"feature_extraction": 300, "finetune_last_layers": 300 + g})
                                 for d, g in gains.items() for seed in (0, 1)])

    prior = "feature_extraction"
    # 8 and 6 of 400 images ahead on two datasets: beyond one s.e. of the clustered difference.
    ahead = averages({"a": 8, "b": 6})
    assert qm.refit_cell(ahead, prior) == "finetune_last_layers"
    # Ahead on one dataset, even on the other: the least regret picks the challenger, the noise check does not.
    split = averages({"a": 8, "b": 0})
    assert qm.refit_cell(split, prior) == prior
    assert qm.refit_cell(split, prior, beyond_noise=False) == "finetune_last_layers"
    # A table: cells without cases keep their prior.
    cells = [("few", "different")] * len(ahead)
    table = qm.refit_table(ahead, cells, {("few", "different"): prior, ("few", "similar"): prior})
    assert table == {("few", "different"): "finetune_last_layers", ("few", "similar"): prior}


def test_subsets_of_one_source_are_one_dataset() -> None:
    assert qm.source_of("eurosat_small") == qm.source_of("eurosat_medium") == "eurosat"
    assert qm.source_of("hymenoptera") == "hymenoptera" and qm.source_of("not-a-known-set") == "not-a-known-set"
    assert qm.held_name("eurosat_small", "10/class") == "eurosat_small@10/class"
    assert qm.held_name("hymenoptera", "10/class") == "10/class"
    # Ahead on two subsets of one source, even on another source: one source ahead, one not — a tie, where
    # the same gains on two independent sources would move the cell.
    gains = {"eurosat_small": 8, "eurosat_medium": 8, "c": 0}
    cases = [_paired_case(d, seed, {"feature_extraction": 300, "finetune_last_layers": 300 + g})
             for d, g in gains.items() for seed in (0, 1)]
    assert qm.refit_cell(qm.seed_averages(cases), "feature_extraction") == "feature_extraction"
    independent = [{**c, "dataset": c["dataset"].replace("eurosat_", "")} for c in cases]
    assert qm.refit_cell(qm.seed_averages(independent), "feature_extraction") == "finetune_last_layers"


@pytest.mark.slow
@pytest.mark.shared
def test_quick_benchmark_end_to_end(tmp_path: Path) -> None:
    data = shared_dataset("lfw_faces_vs_nonfaces")
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import advice_quality

    out = tmp_path / "aq" / "advice_quality"
    first = ["--quick", str(data), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert advice_quality.main(first) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    (case,) = results["cases"]
    assert set(case["runs"]) == set(qm.STRATEGIES)
    assert case["regret_pp"] >= 0 and case["cost_ratio"] > 0
    assert {p["factor"] for p in case["lr_sweep"]["points"]} == {0.1, 1 / 3, 1.0, 3.0, 10.0}
    assert all(r["image_size"] == 64 for r in case["runs"].values())
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()

    # As if recorded under a table that picked another strategy: --rescore re-judges it with the current
    # rules, trains none of the six again, and re-runs the LR sweep for the new pick.
    other = next(s for s in ("feature_extraction", "full_finetune") if s != case["advice"]["strategy"])
    recorded = {**case, "advice": {**case["advice"], "strategy": other, "rule_id": "old"},
                "lr_sweep": {"param": "head_lr", "points": []}}
    out.with_suffix(".json").write_text(json.dumps({**results, "cases": [recorded]}))
    args = ["--quick", "--rescore", str(data), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert advice_quality.main(args) == 0
    rescored = json.loads(out.with_suffix(".json").read_text())
    (again,) = rescored["cases"]
    assert (again["advice"]["strategy"], again["runs"]) == (case["advice"]["strategy"], case["runs"])
    assert again["regret_pp"] == case["regret_pp"]
    assert again["lr_sweep"]["param"] == case["lr_sweep"]["param"] and len(again["lr_sweep"]["points"]) == 5
    expected = [f"benchmarks/advice_quality.py {' '.join(c)}" for c in (first, args)]
    assert [c["command"] for c in rescored["commands"]] == expected
    assert all(len(c["commit"]) == 40 and c["machine"]["cpu_count"] for c in rescored["commands"])

    # As if its advice had been measured on another sample: --readvise measures it again, cold, on the rebuilt
    # level folder, and keeps every run.
    stale = {**again, "advice": {**again["advice"], "sample_images": 1, "time_s": -1.0}}
    out.with_suffix(".json").write_text(json.dumps({**rescored, "cases": [stale]}))
    args = ["--quick", "--readvise", str(data), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert advice_quality.main(args) == 0
    (readvised,) = json.loads(out.with_suffix(".json").read_text())["cases"]
    assert readvised["runs"] == case["runs"] and readvised["advice"]["strategy"] == case["advice"]["strategy"]
    assert readvised["advice"]["sample_images"] == case["advice"]["sample_images"]
    assert readvised["advice"]["time_s"] > 0


def test_levels_below_the_dataset_size_then_full(tmp_path: Path) -> None:

    flat = make_class_folder(tmp_path / "flat", {"a": 10, "b": 12})  # 8 / 10 train after the 20 % hold-out
    assert ql.levels_for(flat, [4], seed=0) == [4]
    assert ql.levels_for(flat, [4], seed=0, full=True) == [4, None]
    # A level the dataset cannot reach is replaced by the whole dataset, once.
    assert ql.levels_for(flat, [4, 8, 50], seed=0) == [4, None]
    assert ql.level_name(None) == "full" and ql.level_name(4) == "4/class"


def test_a_train_test_layout_holds_validation_out_of_train(tmp_path: Path) -> None:

    src = tmp_path / "src"
    make_class_folder(src / "train", {"a": 10, "b": 10})
    make_class_folder(src / "test", {"a": 3, "b": 3}, seed=1)
    counts = ql.build_level(src, tmp_path / "level", 5, seed=0)
    level = tmp_path / "level"
    assert sorted(p.name for p in level.iterdir()) == ["test", "train", "val"]
    assert counts == {"a": 5, "b": 5}
    for cls in ("a", "b"):
        train, val, test = ({p.name for p in (level / split / cls).iterdir()} for split in ("train", "val", "test"))
        assert len(val) == 2 and not train & val  # 20 % of train/ held out, never trained on
        assert train | val <= {p.name for p in (src / "train" / cls).iterdir()}
        assert test == {p.name for p in (src / "test" / cls).iterdir()}
        for name in train:  # copies of the source bytes
            assert (level / "train" / cls / name).read_bytes() == (src / "train" / cls / name).read_bytes()
    # A rebuild gives the same file identities (path, size, mtime): a case's checkpoints stay resumable.
    identities = {(p.relative_to(level), p.stat().st_size, p.stat().st_mtime_ns) for p in level.rglob("*.png")}
    assert {mtime for _, _, mtime in identities} == {ql.COPY_MTIME_NS}
    ql.build_level(src, level, 5, seed=0)
    assert {(p.relative_to(level), p.stat().st_size, p.stat().st_mtime_ns) for p in level.rglob("*.png")} == identities
    assert ql.levels_for(src, [5, 100], seed=0) == [5, None]  # 8 train per class after hold-out


def test_seeds_are_separate_cases_and_old_files_keep_their_seed(tmp_path: Path) -> None:
    import advice_quality

    args = advice_quality.parse_args(["--seeds", "0,1", "--max-epochs", "10", str(tmp_path)])
    assert args.seeds == [0, 1]
    budget = advice_quality.budget_of(args)
    old = {"budget": {**budget, "seed": 1, "lr_sweep": False}, "commands": ["x"],
           "cases": [{"dataset": "d", "level": "full", "runs": {}}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(old))
    loaded = advice_quality.load_results(path, budget)
    assert [ql.case_key(c) for c in loaded["cases"]] == [("d", "full", 1, None)]
    merged = dict(loaded)
    advice_quality.merge_case(merged, {"dataset": "d", "level": "full", "seed": 0, "runs": {}})
    advice_quality.merge_case(merged, {"dataset": "d", "level": "full", "seed": 1, "runs": {"x": 1}})
    assert sorted(ql.case_key(c) for c in merged["cases"]) == [("d", "full", 0, None), ("d", "full", 1, None)]
    other = advice_quality.budget_of(advice_quality.parse_args(["--max-epochs", "2", str(tmp_path)]))
    assert advice_quality.load_results(path, other)["cases"] == []  # another budget starts over


def test_skipping_a_strategy_needs_the_evidence(tmp_path: Path) -> None:
    import advice_quality

    with pytest.raises(SystemExit):
        advice_quality.parse_args(["--skip", "from_scratch", str(tmp_path)])
    with pytest.raises(SystemExit):
        advice_quality.parse_args(["--skip", "no_such_strategy", "--skip-why", "x", str(tmp_path)])
    args = advice_quality.parse_args(["--skip", "from_scratch", "--skip-why", "far behind", str(tmp_path)])
    assert args.skip == ["from_scratch"]


def _recorded_case(strategy: str, images_per_class: float, label: str, signals: dict[str, float]) -> dict:
    """A case as advice_quality.json records it, with every strategy's run (no LR sweep)."""
    accuracy = {"feature_extraction": 0.93, "feature_extraction_top_layers": 0.90, "finetune_last_layers": 0.95,
                "finetune_more_layers": 0.89, "full_finetune": 0.88, "from_scratch": 0.78}
    runs = {s: {"accuracy": a, "n_judged": 270, "head_lr": 1e-3, "backbone_lr": None if s == "feature_extraction"
                else 1e-4} for s, a in accuracy.items()}
    return {"dataset": "x", "level": "600/class", "images_per_class": images_per_class, "size_band": "small",
            "n_judged": 270, "image_size": 64, "runs": runs, "lr_sweep": None,
            "advice": {"strategy": strategy, "rule_id": "old", "label": label, "score": 0.0, "signals": signals},
            "regret_pp": 5.0, "agree_raw": False, "agree_within_se": False, "best": "finetune_last_layers"}


FAR = {"bn_shift_late": 0.57, "head_max_prob": 0.13, "head_entropy": 0.71}  # pneumoniamnist's signals
CLOSE = {"bn_shift_late": 0.27, "head_max_prob": 0.71, "head_entropy": 0.24}  # hymenoptera's


def test_rescore_judges_recorded_runs_with_the_current_rules(tmp_path: Path) -> None:
    import advice_quality

    from tl_advise.rules import load_rules

    rules = load_rules(None)
    args = advice_quality.parse_args(["--work-dir", str(tmp_path), str(tmp_path)])
    # Recorded under a table whose small/different cell was the guide's feature_extraction_top_layers.
    old = _recorded_case("feature_extraction_top_layers", 600, "different", FAR)
    new = advice_quality.rescore_case(old, tmp_path, args, rules)
    expected = rules.row_for("small", "different")
    assert (new["advice"]["strategy"], new["advice"]["rule_id"]) == (expected.strategy, expected.id)
    assert new["regret_pp"] == pytest.approx(qm.regret_pp(
        {s: v["accuracy"] for s, v in old["runs"].items()}, expected.strategy))
    assert new["runs"] == old["runs"] and new["advice"]["signals"] == FAR
    assert new["advice"]["backbone_lr"] == old["runs"][expected.strategy]["backbone_lr"]


def test_rescore_defers_the_sweep_of_another_strategy_with_no_lr_sweep(tmp_path: Path) -> None:
    import advice_quality

    from tl_advise.rules import load_rules

    rules = load_rules(None)
    args = advice_quality.parse_args(["--work-dir", str(tmp_path), "--no-lr-sweep", str(tmp_path)])
    old = {**_recorded_case("feature_extraction_top_layers", 600, "different", FAR), "lr_sweep": {"rates": []}}
    new = advice_quality.rescore_case(old, tmp_path, args, rules)
    assert new["advice"]["strategy"] != old["advice"]["strategy"]
    assert new["lr_sweep"] is None  # it judged the old recommendation: a later run with sweeps redoes it
    kept = {**old, "advice": {**old["advice"], "strategy": rules.row_for("small", "different").strategy}}
    assert advice_quality.rescore_case(kept, tmp_path, args, rules)["lr_sweep"] == {"rates": []}


def test_calibration_judges_the_pixel_rule_as_a_cell_of_its_own() -> None:
    from tl_advise.rules import load_rules

    rules = load_rules(None)
    pixels = {**FAR, "logreg_gain": -0.1}  # raw pixels as good as frozen features: the pixel rule decides
    features = {**FAR, "logreg_gain": 0.3}
    cases = []
    for dataset, signals in (("xray", pixels), ("sat", features)):
        case = _recorded_case("feature_extraction", 100, "different", signals)
        cases.append({**case, "dataset": dataset, "level": "100/class", "size_band": "tiny", "seed": 0})
    fit = qj.calibrate(cases, rules)["table_fit"]
    assert fit["current"][f"{rules.pixel_baseline.id}-different"] == rules.pixel_baseline.strategy
    assert fit["guide"]["tiny-different"] == "feature_extraction_top_layers"
    # Each cell is refit from the guide's on its own case: the satellite tiles move the tiny band's cell (the
    # best is 5 pp ahead of the guide's, beyond noise); the X-rays' best is 2 pp ahead of the pixel cell's frozen
    # head, within noise on 270 images, so that cell stays.
    best = max(cases[0]["runs"], key=lambda s: cases[0]["runs"][s]["accuracy"])
    assert fit["in_sample"][f"{rules.pixel_baseline.id}-different"] == "feature_extraction"
    assert fit["in_sample"]["tiny-different"] == best
    assert fit["measured"] == [f"{rules.pixel_baseline.id}-different", "tiny-different"]
    # Held out, each dataset's cell has no other case to learn from: the guide's strategy is its answer.
    accuracy = {s: v["accuracy"] for s, v in cases[1]["runs"].items()}
    assert fit["lodo_per_dataset"]["sat"]["100/class"] == pytest.approx(
        qm.regret_pp(accuracy, "feature_extraction_top_layers"))
    assert fit["least_regret"]["lodo_per_dataset"]["sat"] == fit["lodo_per_dataset"]["sat"]


def test_a_case_folder_from_another_recipe_is_set_aside_and_trained_again(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import advice_quality

    from tl_advise import runners
    from tl_advise.schema.errors import StaleCheckpointError

    calls: list[Path] = []

    def run_advice(session: object, options: Any) -> Any:
        calls.append(options.output_dir)
        if len(calls) == 1:
            raise StaleCheckpointError(f"{options.output_dir}/x/state.pt was written by a run with other settings")
        return type("Result", (), {"runs": []})()

    monkeypatch.setattr(runners, "run_advice", run_advice)
    out = tmp_path / "runs"
    (out / "capped" / "finetune_last_layers").mkdir(parents=True)
    args = advice_quality.parse_args(["--work-dir", str(tmp_path), str(tmp_path)])
    assert advice_quality.train_strategies(None, ["finetune_last_layers"], out, args, 64) == {}
    assert calls == [out / "capped", out / "capped"]
    (stale,) = [p for p in out.iterdir() if p.name.startswith("capped.stale-")]
    assert (stale / "finetune_last_layers").is_dir() and not (out / "capped").exists()


def test_rescore_refuses_a_case_whose_similarity_label_moves(tmp_path: Path) -> None:
    import advice_quality

    from tl_advise.rules import load_rules

    args = advice_quality.parse_args(["--work-dir", str(tmp_path), str(tmp_path)])
    moved = _recorded_case("feature_extraction", 600, "different", CLOSE)  # these signals read "similar" now
    with pytest.raises(advice_quality.RescoreError, match="label moves"):
        advice_quality.rescore_case(moved, tmp_path, args, load_rules(None))


def test_cases_are_listed_by_dataset_then_size() -> None:

    cases = [{"dataset": d, "level": lv} for d, lv in [("pneumoniamnist", "full"), ("mine", "10/class"),
                                                       ("pneumoniamnist", "600/class"), ("hymenoptera", "full"),
                                                       ("pneumoniamnist", "40/class")]]
    ordered = [(c["dataset"], c["level"]) for c in sorted(cases, key=ql.case_order)]
    assert ordered == [("hymenoptera", "full"), ("pneumoniamnist", "40/class"), ("pneumoniamnist", "600/class"),
                       ("pneumoniamnist", "full"), ("mine", "10/class")]


def test_level_names_round_trip() -> None:

    for level in (None, 10, 600):
        assert ql.level_from_name(ql.level_name(level)) == level


def _seed_case(seed: int, accuracy: dict[str, float], n_judged: int = 100, level: str = "full") -> dict:
    return {"dataset": "d", "level": level, "seed": seed, "size_band": "small", "n_judged": n_judged,
            "advice": {"strategy": "feature_extraction", "label": "different", "signals": {}},
            "runs": {s: {"accuracy": a, "n_judged": n_judged} for s, a in accuracy.items()}}


def test_seed_averages_judge_ties_across_seeds() -> None:
    cases = [_seed_case(0, {"feature_extraction": 0.90, "finetune_last_layers": 0.94}),
             _seed_case(1, {"feature_extraction": 0.92, "finetune_last_layers": 0.90})]
    (avg,) = qm.seed_averages(cases)
    assert avg.seeds == (0, 1) and avg.accuracy["feature_extraction"] == pytest.approx(0.91)
    assert avg.spread["finetune_last_layers"] == (0.90, 0.94)
    j = qm.judge(avg)
    assert j.best == "finetune_last_layers" and j.regret_pp == pytest.approx(1.0) and j.tie  # 1 pp < 3 pp s.e.
    # The same gap on both seeds, and a large validation set: not a tie.
    steady = [_seed_case(s, {"feature_extraction": 0.90, "finetune_last_layers": 0.95}, n_judged=2000) for s in (0, 1)]
    j = qm.judge(qm.seed_averages(steady)[0])
    assert j.regret_pp == pytest.approx(5.0) and not j.tie


def test_cell_evidence_separates_only_beyond_noise() -> None:
    strong = qm.seed_averages([_seed_case(s, {"feature_extraction": 0.95, "finetune_last_layers": 0.90},
                                          n_judged=1000, level=lv) for s in (0, 1) for lv in ("40/class", "full")])
    e = qm.cell_evidence(strong, "feature_extraction")
    assert e is not None and (e.cases, e.seeds, e.runner_up) == (2, 2, "finetune_last_layers")
    assert e.margin_pp == pytest.approx(5.0) and e.margin_pp > e.se_pp and e.mean_regret_pp == 0.0
    assert e.held_out_folds == 0  # one dataset: nothing to hold out
    weak = qm.seed_averages([_seed_case(0, {"feature_extraction": 0.91, "finetune_last_layers": 0.90}, n_judged=50)])
    e = qm.cell_evidence(weak, "feature_extraction")
    assert e is not None and e.margin_pp == pytest.approx(1.0) and e.margin_pp < e.se_pp


def _dataset_case(dataset: str, level: str, accuracy: dict[str, float]) -> dict:
    return {**_seed_case(0, accuracy, n_judged=1000, level=level), "dataset": dataset}


def test_cell_evidence_counts_each_dataset_once_and_holds_out_each_in_turn() -> None:
    a, b = "feature_extraction", "finetune_last_layers"
    # Dataset x: three levels, a ahead by 6 pp; dataset y: one level, b ahead by 2 pp.
    cases = [_dataset_case("x", lv, {a: 0.96, b: 0.90}) for lv in ("10/class", "40/class", "100/class")]
    cases.append(_dataset_case("y", "10/class", {a: 0.88, b: 0.90}))
    e = qm.cell_evidence(qm.seed_averages(cases), a)
    assert e is not None and e.datasets == ["x", "y"] and e.cases == 4
    # Clustered: (6 + -2) / 2 = 2 pp, not the case mean (6 * 3 - 2) / 4 = 4 pp.
    assert e.margin_pp == pytest.approx(2.0)
    # Held out: without x the cell would choose b (x's regret 6 pp); without y it chooses a (y's regret 2 pp).
    assert (e.held_out_folds, e.held_out_agree) == (2, 1)
    assert e.held_out_regret_pp == pytest.approx((6.0 + 2.0) / 2)


def test_another_backbones_cell_moves_only_on_separated_held_out_evidence() -> None:
    """--report --for B: a rule's cell moves for B when its strategy trails the runner-up beyond noise, no
    dataset left out chooses it, and every fold chooses the runner-up; the evidence is then the runner-up's."""
    a, b = "feature_extraction", "feature_extraction_top_layers"

    def judged(accuracies: dict[str, dict[str, float]]) -> tuple[list[qm.SeedAverage], dict]:
        averages = qm.seed_averages([_dataset_case(d, "40/class", acc) for d, acc in accuracies.items()])
        return averages, qj.judge_by_rule(averages, lambda _: ("tiny-similar", a))[1]

    averages, evidence = judged({"x": {a: 0.85, b: 0.88}, "y": {a: 0.70, b: 0.73}})
    assert qj.moved_cells(averages, lambda _: ("tiny-similar", a), evidence) == {"tiny-similar": b}
    # One dataset for the rule's strategy: a fold chooses it, nothing moves.
    averages, evidence = judged({"x": {a: 0.85, b: 0.90}, "y": {a: 0.74, b: 0.73}})
    assert qj.moved_cells(averages, lambda _: ("tiny-similar", a), evidence) == {}
    # Behind on both, but within noise (50 judged images each): nothing moves.
    small = qm.seed_averages([{**_seed_case(0, acc, n_judged=50, level="40/class"), "dataset": d}
                              for d, acc in {"x": {a: 0.85, b: 0.86}, "y": {a: 0.70, b: 0.71}}.items()])
    evidence = qj.judge_by_rule(small, lambda _: ("tiny-similar", a))[1]
    assert qj.moved_cells(small, lambda _: ("tiny-similar", a), evidence) == {}


def test_the_rules_evidence_is_what_the_results_file_gives() -> None:
    """Every `evidence` table in the default rules is the benchmark's own output for its source file."""

    from tl_advise.rules import load_rules

    rules = load_rules(None)
    measured_rules = [*rules.decision, rules.pixel_baseline]
    recorded = [(rule.id, evidence) for rule in measured_rules
                for evidence in (rule.evidence, *rule.backbone_evidence.values()) if evidence]
    assert recorded, "the default rules carry no benchmark evidence"
    assert any(evidence.backbone for _, evidence in recorded), "no other backbone's evidence"
    for rule_id, evidence in recorded:
        results = json.loads((REPO_ROOT / evidence.source).read_text(encoding="utf-8"))
        assert {case.get("target") for case in results["cases"]} == {evidence.backbone}, evidence.source
        measured = qj.seed_judgement(results["cases"], rules, evidence.backbone)["rule_evidence"][rule_id]
        assert (measured["cases"], measured["datasets"], measured["seeds"], measured["runner_up"]) == (
            evidence.cases, evidence.datasets, evidence.seeds, evidence.runner_up), rule_id
        assert (measured["strategy"] if "moved_from" in measured else None) == evidence.strategy, rule_id
        for field in ("mean_regret_pp", "margin_pp", "se_pp"):
            assert getattr(evidence, field) == pytest.approx(measured[field], abs=0.006), (rule_id, field)


def test_another_backbones_evidence_is_written_beside_the_default_ones() -> None:
    """--report --for B --write-evidence: B's backbone_evidence tables, the default evidence untouched, and
    rewriting either one moves nothing."""
    import tomllib

    from tl_advise.rules import default_rules_text, load_rules
    from tl_advise.rules.schema import rules_from_mapping

    text = default_rules_text()
    before = load_rules(None)
    row = before.decision[1]
    e = {"strategy": row.strategy, "cases": 2, "datasets": ["a", "b"], "seeds": 2, "mean_regret_pp": 0.5,
         "runner_up": "full_finetune", "margin_pp": -1.5, "se_pp": 0.7, "held_out_folds": 2, "held_out_agree": 1,
         "held_out_regret_pp": 0.6, "judged_on": "test", "gaps_pp": {"full_finetune": -1.5}}
    key = "mobilenet_v2:IMAGENET1K_V1"
    note = "# [benchmark] generated by x --for B --write-evidence; not edited by hand"
    written = qr.write_evidence(text, {row.id: e}, "mnv2.json", note=note, only=[row.id], backbone=key)
    after = rules_from_mapping(tomllib.loads(written))
    own = after.decision[1].backbone_evidence[key]
    assert (own.source, own.backbone, own.runner_up, own.margin_pp) == ("mnv2.json", key, "full_finetune", -1.5)
    assert [r.evidence for r in after.decision] == [r.evidence for r in before.decision]
    assert after.decision[1].evidence_for(key) == own and after.decision[1].evidence_for("resnet50") == row.evidence
    assert qr.write_evidence(written, {row.id: e}, "mnv2.json", note=note, only=[row.id], backbone=key) == written
    if row.evidence is not None:  # the default backbone's table rewritten: the other backbone's stays where it was
        default = {**e, **row.evidence.model_dump(exclude={"source", "backbone"})}
        again = qr.write_evidence(written, {row.id: default}, row.evidence.source, only=[row.id])
        assert rules_from_mapping(tomllib.loads(again)).decision[1].backbone_evidence[key] == own
        assert again == written


def test_evidence_for_some_rules_leaves_the_others_evidence_as_it_was() -> None:
    from tl_advise.rules import default_rules_text, load_rules
    from tl_advise.rules.schema import rules_from_mapping

    text = default_rules_text()
    before = load_rules(None)
    pixel = {"strategy": "feature_extraction", "cases": 7, "datasets": ["a", "b", "c"], "seeds": 2,
             "mean_regret_pp": 0.5, "runner_up": "finetune_last_layers", "margin_pp": 1.5, "se_pp": 0.7,
             "held_out_folds": 3, "held_out_agree": 3, "held_out_regret_pp": 0.6, "judged_on": "test",
             "gaps_pp": {"finetune_last_layers": 1.5}}
    tiny = {**pixel, "strategy": before.decision[1].strategy}
    written = qr.write_evidence(text, {"pixel-baseline": pixel, before.decision[1].id: tiny}, "held_out.json",
                                only=["pixel-baseline"])
    import tomllib

    after = rules_from_mapping(tomllib.loads(written))
    assert after.pixel_baseline.evidence is not None
    assert (after.pixel_baseline.evidence.source, after.pixel_baseline.evidence.cases) == ("held_out.json", 7)
    assert [row.evidence for row in after.decision] == [row.evidence for row in before.decision]
    assert written.count(qr.EVIDENCE_NOTE) == text.count(qr.EVIDENCE_NOTE)
    # Written again: the same file (the generated tables and notes move nowhere).
    assert qr.write_evidence(written, {"pixel-baseline": pixel}, "held_out.json", only=["pixel-baseline"]) == written
    with pytest.raises(ValueError, match="no evidence here for rule"):
        qr.write_evidence(text, {"pixel-baseline": pixel}, "held_out.json", only=["tiny-any"])


def test_the_doc_s_generated_blocks_are_the_report_s_sections_and_nothing_else() -> None:

    report = "# Report\n\n## Calibration\n\n- regret 1.0\n```toml\n# rule x\n```\n\n## Other\n\n- not this\n"
    doc = "# Doc\n\nhand text\n\n<!-- generated: Calibration -->\nstale\n<!-- end generated -->\n\nmore hand text\n"
    once = qr.write_doc(doc, report)
    assert once == ("# Doc\n\nhand text\n\n<!-- generated: Calibration -->\n### Calibration\n\n- regret 1.0\n"
                    "```toml\n# rule x\n```\n<!-- end generated -->\n\nmore hand text\n")
    assert qr.write_doc(once, report) == once
    with pytest.raises(ValueError, match="no section '## Missing'"):
        qr.write_doc("<!-- generated: Missing --><!-- end generated -->", report)
