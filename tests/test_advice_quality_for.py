"""The advice-quality benchmark on a second backbone (``--for``, issue #26 item 3b): one target per results file,
the target in every case's key and record (fast), and a ``--quick`` run on MobileNetV2 (slow, shared data)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO_ROOT, shared_dataset, shared_dir

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import _quality_levels as ql
import _quality_metrics as qm
import advice_quality
from _offline_weights import SHARED_WEIGHTS

TARGET = "mobilenet_v2:IMAGENET1K_V1"
CLOSE = {"bn_shift_late": 0.27, "head_max_prob": 0.71, "head_entropy": 0.24}  # hymenoptera's probe signals


def _results_file(path: Path, cases: list[dict[str, Any]], target: str | None = None) -> Path:
    """A results file of ``cases`` under the budget of ``--max-epochs 10`` (with ``--for target``)."""
    args = advice_quality.parse_args(["--max-epochs", "10", *(["--for", target] if target else []), str(path)])
    path.write_text(json.dumps({"budget": advice_quality.budget_of(args), "commands": [], "cases": cases}))
    return path


def _main(out: Path, *extra: str) -> int:
    return advice_quality.main(["--max-epochs", "10", "--out", str(out.with_suffix("")),
                                "--work-dir", str(out.parent / "work"), *extra, str(out.parent)])


def test_a_results_file_holds_the_cases_of_one_target(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    case = {"dataset": "d", "level": "10/class", "seed": 0, "runs": {}}
    default_file = _results_file(tmp_path / "default.json", [case])
    target_file = _results_file(tmp_path / "target.json", [{**case, "target": TARGET}], TARGET)
    written = {p: p.read_bytes() for p in (default_file, target_file)}
    with caplog.at_level(logging.ERROR, logger="advice_quality"):
        # Refused, with exit 2 and a message rather than a traceback, before anything is trained or rewritten.
        assert _main(default_file, "--for", TARGET) == 2
        assert "holds the cases of one target only" in caplog.text and "the default backbone (no --for)" in caplog.text
        caplog.clear()
        assert _main(target_file) == 2
        assert f"holds cases of --for {TARGET}, not of the default backbone" in caplog.text
        assert _main(target_file, "--for", "efficientnet_lite2") == 2
        assert _main(target_file, "--report") == 2  # a report reads the file under its own target too
        # Merging another target's cases is refused as well.
        assert _main(tmp_path / "new.json", "--for", TARGET, "--report", "--import-from", str(default_file)) == 2
        # A target whose weights file the shared folder lacks: refused before any download is tried.
        caplog.clear()
        assert _main(tmp_path / "new.json", "--for", TARGET, "--shared", str(tmp_path / "no-shared")) == 2
        assert "cannot load offline" in caplog.text
    assert {p: p.read_bytes() for p in written} == written
    assert not (tmp_path / "new.json").exists()


def test_a_target_is_part_of_the_case_key_the_record_and_the_budget(tmp_path: Path) -> None:
    plain = advice_quality.parse_args(["--work-dir", str(tmp_path), str(tmp_path)])
    tuned = advice_quality.parse_args(["--for", TARGET, "--work-dir", str(tmp_path), str(tmp_path)])
    # The default backbone's budget, key and work folder are as before --for: old files load and resume.
    assert "target" not in advice_quality.budget_of(plain)
    assert advice_quality.budget_of(tuned) == {**advice_quality.budget_of(plain), "target": TARGET}
    case = {"dataset": "d", "level": "10/class", "seed": 1}
    assert ql.case_key(case) == ("d", "10/class", 1, None)
    assert ql.case_key({**case, "target": TARGET}) == ("d", "10/class", 1, TARGET)
    assert advice_quality.case_work_dir(plain, "d", "10/class", 1) == tmp_path / "d@10_class@seed1"
    assert advice_quality.case_work_dir(tuned, "d", "10/class", 1) == \
        tmp_path / "d@10_class@seed1@mobilenet_v2_IMAGENET1K_V1"
    # A case advised for a target records it and the probe; the default backbone's records neither.
    session = SimpleNamespace(result=SimpleNamespace(probe=SimpleNamespace(profile_key="efficientnet_lite0")))
    assert advice_quality.backbones_record(session, None) == {}
    assert advice_quality.backbones_record(session, TARGET) == {"target": TARGET, "probe": "efficientnet_lite0"}
    results: dict[str, Any] = {"cases": []}
    for recorded in (case, {**case, "target": TARGET}, {**case, "runs": {"x": 1}}):
        advice_quality.merge_case(results, recorded)
    # The default backbone's case replaced by its re-run, the target's kept beside it.
    assert {ql.case_key(c): c.get("runs") for c in results["cases"]} == {("d", "10/class", 1, None): {"x": 1},
                                                                         ("d", "10/class", 1, TARGET): None}


def test_rescore_scores_a_target_s_case_with_its_probe(tmp_path: Path) -> None:
    from tl_advise.rules import load_rules, score_similarity

    rules = load_rules(None)
    runs = {s: {"accuracy": 0.9, "n_judged": 100, "head_lr": 1e-3, "backbone_lr": 1e-4} for s in qm.STRATEGIES}
    case = {"dataset": "x", "level": "40/class", "seed": 0, "target": TARGET, "probe": "efficientnet_lite0",
            "images_per_class": 40, "runs": runs, "lr_sweep": None,
            "advice": {"backbone": "mobilenet_v2", "strategy": "feature_extraction", "rule_id": "old",
                       "label": "similar", "score": 0.0, "signals": CLOSE}}
    args = advice_quality.parse_args(["--for", TARGET, "--work-dir", str(tmp_path), str(tmp_path)])
    rescored = advice_quality.rescore_case(case, tmp_path, args, rules)
    # The signals are the probe's: scored with the target's own profile they would give another score.
    probe_score = score_similarity(rules, "efficientnet_lite0", CLOSE).score
    assert rescored["advice"]["score"] == pytest.approx(probe_score)
    assert probe_score != pytest.approx(score_similarity(rules, "mobilenet_v2", CLOSE).score)
    assert (rescored["target"], rescored["probe"], rescored["runs"]) == (TARGET, "efficientnet_lite0", runs)
    row = rules.row_for("tiny", "similar")  # judged with the target's own cell, where its cases moved it
    assert rescored["advice"]["strategy"] == row.strategy_for(TARGET, row.strategy)


@pytest.mark.slow
@pytest.mark.shared
def test_quick_benchmark_on_a_second_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """``--quick --for mobilenet_v2`` end to end: the advice for the target, every strategy trained on it at the
    grid's image size, the case recorded with its target and skipped on a re-run (~2 min on 2 busy cores)."""
    data = shared_dataset("lfw_faces_vs_nonfaces")
    weights = shared_dir() / "weights" / SHARED_WEIGHTS[TARGET]
    if not weights.is_file():
        pytest.skip(f"{weights} is absent: {TARGET} cannot load offline (set TL_ADVISE_SHARED)")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "unused"))  # the benchmark sets its own; restored after
    out = tmp_path / "aq"
    args = ["--quick", "--for", TARGET, "--no-lr-sweep", "--skip", "from_scratch", "--skip-why",
            "smoke run: the slowest strategy", "--shared", str(shared_dir()), str(data), "--out", str(out),
            "--work-dir", str(tmp_path / "work")]
    assert advice_quality.main(args) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["budget"]["target"] == TARGET
    (case,) = results["cases"]
    assert (case["target"], case["probe"], case["advice"]["backbone"]) == (TARGET, "efficientnet_lite0", "mobilenet_v2")
    assert set(case["runs"]) == set(qm.STRATEGIES) - {"from_scratch"}
    assert all(r["image_size"] == 64 for r in case["runs"].values())  # the grid's size, not MobileNetV2's 224 px
    assert all(stage.startswith("features.") for stage in case["runs"]["full_finetune"]["unfreeze"])  # its stages
    assert f"Trained backbone: **{TARGET}**" in out.with_suffix(".md").read_text()
    with caplog.at_level(logging.INFO, logger="advice_quality"):
        assert advice_quality.main(args) == 0
    assert "already in" in caplog.text
    assert json.loads(out.with_suffix(".json").read_text())["cases"] == [case]


def test_a_targets_report_writes_its_own_evidence_and_never_the_doc(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    with pytest.raises(SystemExit) as exit_info:
        advice_quality.parse_args(["--report", "--for", TARGET, "--write-doc", str(doc), str(tmp_path)])
    assert exit_info.value.code == 2 and not doc.exists()
    own = advice_quality.target_evidence(TARGET)
    assert own["backbone"] == TARGET and f"--for {TARGET} --write-evidence; not edited by hand" in own["note"]
    assert advice_quality.target_evidence(None) == {}  # the default backbone: its `evidence` tables
