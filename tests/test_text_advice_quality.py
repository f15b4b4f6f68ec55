"""The text advice-quality benchmark: its splits, levels and report on synthetic texts (fast), and a ``--quick``
end-to-end run on sst2 (slow, shared), resumed."""

from __future__ import annotations

import argparse
import json
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
