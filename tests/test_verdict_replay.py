"""--run's verdict and the advice-quality benchmark say the same thing of every recorded case: both read the
gap to the best through tl_advise.rules.statistics, and this replays the recorded runs through each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tl_advise.runners.verdict import decide
from tl_advise.schema.models import Metrics, StrategyRun

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import advice_quality  # noqa: E402

RESULTS = [REPO / "benchmarks" / "results" / f"{name}.json"
           for name in ("advice_quality_10ep", "advice_quality_heldout")]


def _metrics(run: dict) -> Metrics:
    return Metrics(accuracy=run["accuracy"], balanced_accuracy=run.get("balanced_accuracy", run["accuracy"]),
                   macro_f1=0.0, per_class_accuracy={}, confusion_matrix=[], n_images=run["n_judged"], loss=0.0,
                   correct=run.get("correct"))


def _recorded_cases() -> list[tuple[str, dict]]:
    cases = []
    for path in RESULTS:
        if path.is_file():
            for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
                if case["advice"]["strategy"] in case["runs"]:
                    cases.append((f"{path.stem}:{case['dataset']}@{case['level']}#{case.get('seed', 0)}", case))
    return cases


CASES = _recorded_cases()


@pytest.mark.parametrize(("name", "case"), CASES, ids=[n for n, _ in CASES])
def test_the_verdict_and_the_benchmark_agree_on_a_recorded_case(name: str, case: dict) -> None:
    recommended = case["advice"]["strategy"]
    # The judging split's numbers as the runner reports them: as "test" when the case was judged on test.
    on_test = case.get("judged_on") == "test"
    runs = [StrategyRun(strategy=s, status="completed", val=_metrics(r), test=_metrics(r) if on_test else None)
            for s, r in case["runs"].items()]
    verdict = decide(recommended, runs, "auto")
    judged = advice_quality.judgement(case["runs"], recommended)
    assert (verdict.status == "confirmed") == judged["agree_within_se"], (name, verdict.message)
    assert verdict.judged_on == ("test" if on_test else "val")


def test_recorded_cases_exist() -> None:
    assert len(CASES) >= 20, "the 10-epoch grid's results file holds every recorded case"


def test_a_gap_of_exactly_one_standard_error_is_a_tie_in_both() -> None:
    """2 of 60 images apart, 3 against 1 discordant: the paired s.e. is exactly the gap (1/30). The verdict's
    ``--margin auto`` must read it as the statistics module does (a tie), not against a rounded margin."""
    recommended = "1" * 42 + "0" * 18
    best = "1" * 41 + "0" + "111" + "0" * 15  # 3 images only it gets right, 1 only the recommended does
    runs = {"feature_extraction": {"accuracy": recommended.count("1") / 60, "n_judged": 60, "correct": recommended},
            "finetune_more_layers": {"accuracy": best.count("1") / 60, "n_judged": 60, "correct": best}}
    verdict = decide("feature_extraction", [StrategyRun(strategy=s, status="completed", val=_metrics(r),
                                                        test=_metrics(r)) for s, r in runs.items()], "auto")
    assert (verdict.best, verdict.gap, verdict.margin) == ("finetune_more_layers", 0.033333, 0.033333)
    assert verdict.status == "confirmed" and advice_quality.judgement(runs, "feature_extraction")["agree_within_se"]
