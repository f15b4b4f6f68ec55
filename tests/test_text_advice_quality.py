"""The text advice-quality benchmark: its splits, levels and report on synthetic texts (fast), and a ``--quick``
end-to-end run on sst2 (slow, shared), resumed."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from text_fixtures import tiny_dataset

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import text_advice_quality as taq

from tests.conftest import shared_dir


def args(**overrides: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"split_seed": 1000, "max_test": None, "max_val": 200, **overrides})


def test_without_a_test_split_one_is_carved_out_once(tmp_path: Path) -> None:
    dataset = tiny_dataset(tmp_path, train=300, val=None, test=None)
    pool, val, test, how = taq.judged_splits(dataset, args())
    assert len(test) == 200 and len(pool) == 400 and val == [] and "carved" in how  # 20% is 120: at least 200
    assert {e.label for e in test} == {"negative", "positive"}
    assert not {e.text for e in pool} & {e.text for e in test}
    assert taq.judged_splits(dataset, args())[2] == test  # the same texts for every level and seed


def test_the_datasets_own_splits_judge_and_validate(tmp_path: Path) -> None:
    dataset = tiny_dataset(tmp_path, train=30, val=150, test=60)
    pool, val, test, how = taq.judged_splits(dataset, args(max_test=50))
    assert len(pool) == 60 and len(val) == 200 and len(test) == 50 and "test split (50 of 120" in how
    assert sum(e.label == "positive" for e in test) == 25


def test_levels_stop_where_the_full_set_begins(tmp_path: Path) -> None:
    pool = tiny_dataset(tmp_path, train=100, val=None, test=None).examples
    assert taq.levels_for(pool, [16, 64, 256, 1000], True) == [16, 64, None]
    assert taq.levels_for(pool, [16], False) == [16]
    data = taq.case_dataset(tiny_dataset(tmp_path, train=100, val=None, test=None), pool, [], pool[:10], 16, 0)
    assert len(data.subset("train")) == 32 and len(data.subset("test")) == 10


def test_the_report_reads_the_cases() -> None:
    runs = {s: {"accuracy": a, "status": "completed"} for s, a in zip(taq.STRATEGIES, (0.8, 0.85, 0.83, 0.7),
                                                                      strict=True)}
    case = {"dataset": "d", "level": "16", "seed": 0, "texts_per_class": 16.0, "runs": runs,
            "best": "text_finetune_top", "regret_pp": 5.0, "gap_se_pp": 2.0, "advice_within_noise": False,
            "seconds": 10.0,
            "advice": {"strategy": "text_feature_extraction", "rule": "text-tiny-close", "label": "close",
                       "score": 1.0, "seconds": 2.0}}
    results = {"budget": {"max_length": 32}, "commands": [], "cases": [case]}
    text = taq.markdown(results)
    assert "mean regret 5.0 pp" in text and "| 5.0 ± 2.0 |" in text and "| text-tiny-close | 0.800 |" in text


@pytest.mark.slow
@pytest.mark.shared
def test_quick_runs_one_case_and_a_rerun_skips_it(tmp_path: Path) -> None:
    if not (shared_dir() / "text" / "sst2").is_dir():
        pytest.skip(f"{shared_dir() / 'text' / 'sst2'} is absent (set TL_ADVISE_SHARED to the folder holding text/)")
    out = tmp_path / "quick"
    argv = ["--quick", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--shared", str(shared_dir())]
    assert taq.main(argv) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    (case,) = results["cases"]
    assert (case["dataset"], case["level"], case["seed"], case["n_test"]) == ("sst2", "16", 0, 200)
    assert set(case["runs"]) == set(taq.STRATEGIES)
    for run in case["runs"].values():
        assert run["status"] == "completed" and len(run["correct"]) == 200
    assert case["regret_pp"] >= 0 and case["judged_on"] == "test"
    assert results["commands"][0]["command"].startswith("benchmarks/text_advice_quality.py --quick")
    assert not (tmp_path / "work" / "sst2@16-seed0").exists()
    assert taq.main(argv) == 0  # resumed: the case is recorded, nothing trains
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["cases"] == results["cases"] and len(again["commands"]) == 2


# --------------------------------------------------------------------------- the LR sweep (training stubbed)

TINY_INFO = {"name": "tiny-bert", "weights": "random (tests)", "source": "folder", "architecture": "bert",
             "hidden_size": 16, "n_layers": 6, "max_length": 128, "normalize": True, "lowercase": True}


def fake_session(tmp_path: Path, recommended: str = "text_full_finetune", label: str = "close") -> Any:
    """What the sweep reads of an advice session: the rules, the dataset summary (16 per class: the tiny band), the
    backbone, the close/far label and the advice."""
    from types import SimpleNamespace

    from tl_advise.advisor.data.text.scan import summarise
    from tl_advise.rules.text_schema import load_text_rules
    from tl_advise.schema.text import TextBackboneInfo

    result = SimpleNamespace(dataset=summarise(tiny_dataset(tmp_path, train=16)), lengths=None,
                             backbone=TextBackboneInfo(**TINY_INFO), similarity=SimpleNamespace(label=label),
                             recommendation=SimpleNamespace(strategy=recommended))
    return SimpleNamespace(rules=load_text_rules(), result=result)


class FakeTraining:
    """Stands in for ``train_strategy``: records what would train; the accuracy peaks at ``best`` x the advised."""

    def __init__(self, advised: float, best_factor: float = 3.0, n: int = 400) -> None:
        self.calls: list[tuple[str, dict[str, float]]] = []
        self.best, self.n = advised * best_factor, n

    def __call__(self, session: Any, strategy: str, out: Path, seed: int, args: argparse.Namespace,
                 **rates: float) -> dict[str, Any]:
        self.calls.append((strategy, rates))
        (rate,) = rates.values()
        distance = abs(math.log10(rate / self.best))
        return {"accuracy": round(0.9 - 0.2 * distance, 4), "n_judged": self.n, "train_time_s": 1.5}


def sweep_args(**overrides: Any) -> argparse.Namespace:
    return taq.parse_args(["--out", "/nonexistent/out", "--max-length", "32", *overrides.pop("argv", [])])


ADVISED = {"text_full_finetune": ("encoder_lr", 2e-5), "text_finetune_top": ("encoder_lr", 2e-5),
           "text_feature_extraction": ("head_lr", 1e-3), "tfidf_linear": ("tfidf_c", 10.0)}
FAR_TINY_RATE = 6e-5  # text-tiny-far's own encoder rate for the whole encoder (rules/text_rules.toml)


@pytest.mark.parametrize("strategy", sorted(ADVISED))
def test_the_sweep_trains_the_other_factors_at_their_rates(tmp_path: Path, strategy: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    param, advised = ADVISED[strategy]
    session = fake_session(tmp_path, strategy)
    recipe = taq.advised_recipe(session, strategy)
    training = FakeTraining(advised)
    monkeypatch.setattr(taq, "train_strategy", training)
    main = {"accuracy": 0.85, "n_judged": 400, "train_time_s": 9.0}
    sweep = taq.lr_sweep(session, recipe, main, tmp_path / "lr", 0, sweep_args())
    others = [f for f in taq.LR_FACTORS if f != 1.0]
    assert training.calls == [(strategy, {param: taq.sweep_rate(advised, f)}) for f in others]  # x1 not retrained
    assert (sweep["strategy"], sweep["param"], sweep["advised"]) == (strategy, param, advised)
    assert [p["factor"] for p in sweep["points"]] == list(taq.LR_FACTORS)
    x1 = next(p for p in sweep["points"] if p["factor"] == 1.0)
    assert (x1["lr"], x1["accuracy"], x1["n_judged"]) == (advised, 0.85, 400)
    # judged: the best is the x3 point (0.9), the advised rate within x3 of it
    assert sweep["best_lr"] == pytest.approx(3 * advised) and sweep["within_3x"] and sweep["within_3x_tied"]
    assert sweep["ratio"] == pytest.approx(1 / 3, rel=1e-2)


def test_a_failed_sweep_point_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = fake_session(tmp_path)
    training = FakeTraining(2e-5, best_factor=10.0)
    monkeypatch.setattr(taq, "train_strategy", lambda *a, **rates: None if 2e-4 in rates.values()
                        else training(*a, **rates))
    sweep = taq.lr_sweep(session, taq.advised_recipe(session, "text_full_finetune"),
                         {"accuracy": 0.5, "n_judged": 400, "train_time_s": 1.0}, tmp_path, 0, sweep_args())
    assert [p["factor"] for p in sweep["points"]] == [0.1, 1 / 3, 1.0, 3.0]
    assert sweep["best_lr"] == pytest.approx(6e-5) and sweep["within_3x"]


def test_the_sweep_overrides_reach_the_runner_options() -> None:
    options = taq.run_options(sweep_args(), Path("/tmp/x"), ["text_finetune_top"], 3, encoder_lr=6e-5)
    assert (options.encoder_lr, options.head_lr, options.tfidf_c) == (6e-5, None, None)
    assert (options.strategies, options.seed, options.max_length) == (["text_finetune_top"], 3, 32)


def test_a_recorded_run_that_no_longer_matches_its_recipe_is_not_a_sweep_point(tmp_path: Path) -> None:
    session = fake_session(tmp_path)
    recipe, rules = taq.advised_recipe(session, "text_full_finetune"), session.rules
    args = taq.parse_args(["--out", "/nonexistent/out"])
    assert taq.recorded_mismatch({"encoder_lr": 2e-5, "max_length": 128}, recipe, args, rules) is None
    assert taq.recorded_mismatch({}, recipe, args, rules) is None  # recorded before rates were: the strategy's
    assert "encoder_lr 3e-05" in (taq.recorded_mismatch({"encoder_lr": 3e-5}, recipe, args, rules) or "")
    assert "max length 64" in (taq.recorded_mismatch({"max_length": 64}, recipe, args, rules) or "")
    far = taq.advised_recipe(fake_session(tmp_path, label="far"), "text_full_finetune")  # the far cell's own rate
    assert "encoder_lr 2e-05, the rules now give 6e-05" in (taq.recorded_mismatch({}, far, args, rules) or "")


def recorded_case(dataset: str = "d", level: str = "16", seed: int = 0, n: int = 40) -> dict[str, Any]:
    """A case as the benchmark records it (before the sweep), far from the backbone (no signals): the current
    rules recommend text_full_finetune for it."""
    accuracy = dict(zip(taq.STRATEGIES, (0.6, 0.65, 0.75, 0.7), strict=True))
    rates = {"text_full_finetune": FAR_TINY_RATE, "text_finetune_top": 2e-5}
    runs = {s: {"status": "completed", "error": None, "accuracy": a, "n_judged": n,
                "correct": [i < round(a * n) for i in range(n)], "train_time_s": 3.0, "max_length": 128,
                "epochs_run": 3, "encoder_lr": rates.get(s)} for s, a in accuracy.items()}
    return {"dataset": dataset, "level": level, "seed": seed, "texts_per_class": float(level), "n_test": n,
            "runs": runs, "best": "text_full_finetune", "regret_pp": 15.0, "gap_se_pp": 5.0,
            "advice_within_noise": False, "seconds": 30.0,
            "advice": {"strategy": "text_feature_extraction", "rule": "text-tiny-far", "label": "far", "score": 0.0,
                       "seconds": 2.0, "backbone": "all-minilm-l6-v2", "signals": {}}}


def write_dataset(root: Path) -> Path:
    """A tiny text set on disk (train and test split files) that ``read_text_dataset`` reads."""
    import csv

    examples = tiny_dataset(root, train=70, val=None, test=20).examples
    for split in ("train", "test"):
        with (root / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((e.text, e.label) for e in examples if e.split == split)
    return root


def test_recorded_cases_get_only_their_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_dataset(tmp_path / "d")
    out = tmp_path / "results"
    argv = [str(data), "--levels", "16,64", "--seeds", "0,1", "--out", str(out), "--work-dir", str(tmp_path / "w")]
    budget = taq.budget_of(taq.parse_args(argv))
    cases = [recorded_case(), recorded_case(seed=1)]  # 64/class is not recorded
    out.with_suffix(".json").write_text(json.dumps({"budget": budget, "commands": [], "cases": cases}))
    training = FakeTraining(FAR_TINY_RATE)
    monkeypatch.setattr(taq, "train_strategy", training)
    monkeypatch.setattr(taq, "case_session", lambda *a, **k: (fake_session(tmp_path / "s", label="far"), 1.0))
    monkeypatch.setattr(taq, "load_backbone", lambda args: None)
    monkeypatch.setattr(taq, "run_case", lambda *a, **k: pytest.fail("--sweep-recorded trained a new case"))

    assert taq.main([*argv, "--sweep-recorded"]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    seed0, seed1 = sorted(results["cases"], key=taq.case_key)
    assert [rates for _, rates in training.calls] == [{"encoder_lr": taq.sweep_rate(FAR_TINY_RATE, f)}
                                                      for f in taq.LR_FACTORS if f != 1.0]
    assert seed0["lr_sweep"]["strategy"] == "text_full_finetune" and seed0["lr_sweep"]["within_3x"]
    assert next(p for p in seed0["lr_sweep"]["points"] if p["factor"] == 1.0)["accuracy"] == 0.75  # the recorded run
    assert {k: v for k, v in seed0.items() if k != "lr_sweep"} == cases[0]  # nothing else of the case moved
    assert "lr_sweep" not in seed1  # the sweep's seed is 0
    assert results["seed_judgement"]["targets"]["lr_checked"] == 1

    training.calls.clear()  # resumed: every sweep is there, nothing trains
    assert taq.main([*argv, "--sweep-recorded"]) == 0
    assert training.calls == [] and len(json.loads(out.with_suffix(".json").read_text())["commands"]) == 2


def test_sweep_recorded_leaves_a_file_of_another_budget_alone(tmp_path: Path) -> None:
    out = tmp_path / "results"
    text = json.dumps({"budget": {"max_length": 999}, "commands": [], "cases": [recorded_case()]})
    out.with_suffix(".json").write_text(text)
    assert taq.main([str(tmp_path), "--out", str(out), "--sweep-recorded"]) == 2
    assert out.with_suffix(".json").read_text() == text


def test_the_report_judges_the_recorded_sweeps_again_and_prints_the_lr_target(tmp_path: Path) -> None:
    case = recorded_case()
    points = [{"factor": f, "lr": taq.sweep_rate(FAR_TINY_RATE, f), "accuracy": a, "n_judged": 40,
               "train_time_s": 2.0} for f, a in zip(taq.LR_FACTORS, (0.5, 0.7, 0.75, 0.8, 0.6), strict=True)]
    # recorded with a stale verdict: --report judges it again with the current check
    case["lr_sweep"] = {"strategy": "text_full_finetune", "param": "encoder_lr", "advised": FAR_TINY_RATE,
                        "points": points, "seconds": 8.0, "best_lr": 1.0, "ratio": 1.0, "within_3x": False,
                        "within_3x_tied": False}
    other_strategy = {**recorded_case(level="64"), "lr_sweep": {
        **case["lr_sweep"], "strategy": "text_feature_extraction", "param": "head_lr", "advised": 1e-3}}
    other_rate = {**recorded_case(level="32"), "lr_sweep": {**case["lr_sweep"], "advised": 2e-5}}  # the rate before
    out = tmp_path / "results"
    cases = [case, other_strategy, other_rate]
    out.with_suffix(".json").write_text(json.dumps({"budget": {}, "commands": [], "cases": cases}))
    assert taq.main(["--report", "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    sweep = results["cases"][0]["lr_sweep"]
    assert sweep["best_lr"] == pytest.approx(1.8e-4) and sweep["within_3x"] and sweep["within_3x_tied"]
    text = out.with_suffix(".md").read_text()
    assert "LR within ×3 of the sweep's best: 1/1 raw, 1/1 tie-aware" in text  # the other two are not counted
    assert "2 sweep(s) of a strategy or around a value the current rules no longer advise" in text
    lines = text.splitlines()
    row = ("| d | 16 | 0 | text_full_finetune | encoder_lr | 6e-05 | 0.500 | 0.700 | 0.750 | 0.800 | 0.600 | 0.00018 "
           "| yes / yes | 8 |")
    header, separator = lines[lines.index(row) - 2:lines.index(row)]
    assert header.count("|") == separator.count("|") == row.count("|") and header.startswith("| dataset | level")


def far_case(dataset: str, accuracy: dict[str, float], n: int = 400) -> dict[str, Any]:
    """A tiny-band case far from the backbone (no signals) with the given accuracy per strategy on ``n`` texts."""
    case = recorded_case(dataset=dataset, n=n)
    case["runs"] = {s: {**case["runs"][s], "accuracy": a, "correct": [i < round(a * n) for i in range(n)]}
                    for s, a in accuracy.items()}
    return case


def test_the_held_out_judgement_refits_the_table_without_the_judged_dataset() -> None:
    from tl_advise.rules.text_schema import load_text_rules

    full_ahead = dict(zip(taq.STRATEGIES, (0.55, 0.6, 0.9, 0.5), strict=True))
    top_ahead = dict(zip(taq.STRATEGIES, (0.55, 0.8, 0.7, 0.5), strict=True))
    cases = [far_case("a", full_ahead), far_case("b", full_ahead), far_case("c", top_ahead)]
    held = taq.seed_judgement(cases, load_text_rules(None))["held_out"]
    assert taq.TEXT_GUIDE_TABLE[("tiny", "far")] == "text_finetune_top"
    beyond_noise = held["beyond_noise"]
    # c left out: a and b move the far tiny cell off the guide's top layers (30 points ahead, beyond noise)...
    assert beyond_noise["lodo_advised"]["c"] == {"16": "text_full_finetune"}
    assert beyond_noise["lodo_per_dataset"]["c"]["16"] == pytest.approx(10.0)
    # ...a left out: b and c disagree, each counted once: no move beyond noise, the guide's cell judges a.
    assert beyond_noise["lodo_advised"]["a"] == {"16": "text_finetune_top"}
    assert beyond_noise["lodo_per_dataset"]["a"]["16"] == pytest.approx(30.0)
    assert beyond_noise["lodo_mean_regret_pp"] == pytest.approx((30 + 30 + 10) / 3)
    # One strategy for every cell, by the least mean regret over the other two: whole-encoder tuning each time
    # ((0 + 10) / 2 against (30 + 0) / 2 with a left out).
    one = held["one_strategy"]
    assert {s for fold in one["lodo_advised"].values() for s in fold.values()} == {"text_full_finetune"}
    assert one["lodo_within_se"] == [2, 3]
    text = taq.markdown({"budget": {}, "commands": [], "cases": cases,
                         "seed_judgement": taq.seed_judgement(cases, load_text_rules(None))})
    assert ("one strategy for every cell, the least mean regret: mean regret 3.33 pp, worst c 10.00 pp, within one "
            "s.e. 2/3 (67 %); text_full_finetune in every fold") in text


def test_the_sweeps_say_which_side_of_the_advised_rate_the_best_lies_on() -> None:
    from tl_advise.rules.text_schema import load_text_rules

    rules = load_text_rules(None)

    def swept(dataset: str, accuracies: tuple[float, ...]) -> dict[str, Any]:
        case = far_case(dataset, dict(zip(taq.STRATEGIES, (0.5, 0.6, accuracies[2], 0.55), strict=True)))
        points = [{"factor": f, "lr": taq.sweep_rate(FAR_TINY_RATE, f), "accuracy": a, "n_judged": 400,
                   "train_time_s": 1.0} for f, a in zip(taq.LR_FACTORS, accuracies, strict=True)]
        case["lr_sweep"] = {"strategy": "text_full_finetune", "param": "encoder_lr", "advised": FAR_TINY_RATE,
                            "points": points, "seconds": 5.0, "best_lr": max(points, key=lambda p: p["accuracy"])["lr"]}
        return case

    higher = swept("a", (0.6, 0.65, 0.7, 0.8, 0.75))  # 10 points at x3 on 400 texts: beyond noise
    tied = swept("b", (0.6, 0.69, 0.7, 0.71, 0.65))  # 1 point at x3: a tie
    assert taq.lr_directions([higher, tied], rules) == {"far": {"higher": 1, "at": 1, "lower": 0}}


def test_retrain_stale_trains_only_the_runs_whose_rate_the_rules_moved(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    data = write_dataset(tmp_path / "d")
    out = tmp_path / "results"
    argv = [str(data), "--levels", "16", "--seeds", "0", "--out", str(out), "--work-dir", str(tmp_path / "w"),
            "--no-lr-sweep", "--retrain-stale"]
    case = {**recorded_case(), "verdict": "confirmed"}
    case["runs"]["text_full_finetune"]["encoder_lr"] = 2e-5  # trained before the far tiny cell had its own rate
    budget = taq.budget_of(taq.parse_args(argv))
    out.with_suffix(".json").write_text(json.dumps({"budget": budget, "commands": [], "cases": [case]}))
    trained: list[tuple[list[str], int]] = []

    def run_text_advice(session: Any, options: Any) -> Any:
        trained.append((list(options.strategies), options.seed))
        return SimpleNamespace(runs=[SimpleNamespace(strategy=s) for s in options.strategies])

    retrained_run = {**case["runs"]["text_full_finetune"], "accuracy": 0.8, "encoder_lr": FAR_TINY_RATE,
                     "correct": [i < 32 for i in range(40)]}
    monkeypatch.setattr("tl_advise.runners.text.run_text_advice", run_text_advice)
    monkeypatch.setattr(taq, "run_record", lambda run: retrained_run)
    rebuilt = {**case["advice"], "strategy": "text_full_finetune", "seconds": 1.0}  # the advice as it is now
    monkeypatch.setattr(taq, "advice_record", lambda result, seconds: rebuilt)
    monkeypatch.setattr(taq, "case_session", lambda *a, **k: (fake_session(tmp_path / "s", label="far"), 1.0))
    monkeypatch.setattr(taq, "load_backbone", lambda args: None)
    monkeypatch.setattr(taq, "run_case", lambda *a, **k: pytest.fail("--retrain-stale trained a new case"))

    assert taq.main(argv) == 0
    (got,) = json.loads(out.with_suffix(".json").read_text())["cases"]
    assert trained == [(["text_full_finetune"], 0)]
    assert got["runs"]["text_full_finetune"] == retrained_run
    assert {s: r for s, r in got["runs"].items() if s != "text_full_finetune"} == {
        s: r for s, r in case["runs"].items() if s != "text_full_finetune"}  # the other runs kept as recorded
    # judged again over every run; --run's verdict was over the strategies trained together: gone
    assert (got["best"], got["regret_pp"], got["verdict"]) == ("text_full_finetune", 0.0, None)
    assert got["advice"] == rebuilt  # the regret is judged against the advice the runs trained for
    assert got["retrained"][0]["strategies"] == {
        "text_full_finetune": "recorded at encoder_lr 2e-05, the rules now give 6e-05"}

    trained.clear()  # resumed: nothing is stale, nothing trains
    assert taq.main(argv) == 0 and trained == []


def test_a_new_sweep_keeps_the_one_it_replaces() -> None:
    case = {**recorded_case(), "lr_sweep": {"advised": 2e-5}}
    got = taq.with_sweep(case, {"advised": FAR_TINY_RATE})
    assert got["lr_sweep"] == {"advised": FAR_TINY_RATE} and got["lr_sweeps_before"] == [{"advised": 2e-5}]
    assert "lr_sweeps_before" not in taq.with_sweep(recorded_case(), {"advised": FAR_TINY_RATE})
