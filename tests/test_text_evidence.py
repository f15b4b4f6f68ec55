"""The text advice's measured evidence: recorded cases (written out by hand, with per-text ``correct`` strings)
-> ``text_advice_quality.py --report`` -> each rule's evidence (margin, s.e., held-out folds, gaps, checked by
hand) -> ``--write-evidence`` into a text rules file that loads -> the text advice's why, alternatives and
confidence. Fast: no torch, no training."""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from test_text_rules import lengths, minilm, signals, summary

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import text_advice_quality as taq
from _quality_report import TEXT_EVIDENCE_NOTE, write_evidence

from tl_advise.rules.text_engine import recommend_text, score_text_similarity
from tl_advise.rules.text_schema import (
    TextCellEvidence,
    TextRuleSet,
    default_text_rules_text,
    load_text_rules,
    text_rules_from_mapping,
)

CLOSE = {"centroid_cosine": 0.3, "knn_gain": 0.0, "logreg_gain": 0.1}  # score 1.0: close
FAR = {"centroid_cosine": 0.0, "knn_gain": -0.3, "logreg_gain": -0.1}  # score 0.0: far


def case(dataset: str, correct: dict[str, str], *, level: str = "16", per_class: float = 16.0, seed: int = 0,
         signals: dict[str, float] | None = None, recorded: tuple[str, str] = ("tfidf_linear", "text-tiny-far"),
         ) -> dict[str, Any]:
    """One recorded case as run_case writes it. ``recorded`` is the advice at recording time: deliberately
    not what the current rules advise, so the report must re-decide it."""
    runs = {s: {"status": "completed", "accuracy": c.count("1") / len(c), "n_judged": len(c), "correct": c}
            for s, c in correct.items()}
    return {"dataset": dataset, "level": level, "seed": seed, "texts_per_class": per_class, "judged_on": "test",
            "runs": runs, "best": None, "regret_pp": None, "seconds": 1.0,
            "advice": {"strategy": recorded[0], "rule": recorded[1], "label": "far", "score": 0.0, "seconds": 0.5,
                       "signals": CLOSE if signals is None else signals}}


# Ten test texts per case. In both datasets the frozen head (text_feature_extraction) is best, then TF-IDF.
A = {"text_feature_extraction": "1111111100", "text_finetune_top": "1111110000",
     "text_full_finetune": "1111100000", "tfidf_linear": "1111111000"}
B = {"text_feature_extraction": "1111111110", "text_finetune_top": "1111111100",
     "text_full_finetune": "1111110000", "tfidf_linear": "1111111100"}


@pytest.fixture(scope="module")
def rules() -> TextRuleSet:
    """The packaged text rules without their measured evidence: these tests write their own."""
    return text_rules_from_mapping(tomllib.loads(_unmeasured_text()), "unmeasured")


def _unmeasured_text() -> str:
    """The packaged text rules as the hand computations below were worked out on: no evidence, and the tiny
    and small close cells a frozen head, the guide's (the packaged table moved both to full fine-tuning on the
    benchmark's evidence)."""
    text = write_evidence(default_text_rules_text(), {}, "x", TEXT_EVIDENCE_NOTE)
    for rule_id in ("text-tiny-close", "text-small-close"):
        start = text.index(f'id = "{rule_id}"')
        end = text.index("[[decision]]", start)
        row = re.sub(r'\n  \{ strategy = "text_feature_extraction",[^\n]*', "", text[start:end], count=1)
        row = row.replace('strategy = "text_full_finetune"\n', 'strategy = "text_feature_extraction"\n', 1)
        text = text[:start] + row + text[end:]
    return text


def test_the_evidence_numbers_match_a_hand_computation(rules: TextRuleSet) -> None:
    judged = taq.seed_judgement([case("a", A), case("b", B)], rules)
    # Re-decided with the current rules on the recorded signals and size: tiny (16 per class), close.
    assert [(r["rule_id"], r["recommended"], r["regret_pp"], r["tie"]) for r in judged["cases"]] == [
        ("text-tiny-close", "text_feature_extraction", 0.0, True)] * 2
    e = judged["rule_evidence"]["text-tiny-close"]
    # Runner-up: the best other mean accuracy over the cases: tfidf (0.7 + 0.8) over top (0.6 + 0.8).
    assert e["strategy"] == "text_feature_extraction" and e["runner_up"] == "tfidf_linear"
    assert (e["cases"], e["datasets"], e["seeds"], e["judged_on"]) == (2, ["a", "b"], 1, "test")
    # Paired, text by text: in each dataset FE is right on one text tfidf got wrong, never the reverse:
    # d = +0.1, s.e. sqrt(var(d) / n) = sqrt((0.1 - 0.01) * 10/9 / 10) = 0.1 (= one text). Clustered by dataset:
    # mean 0.1, s.e. sqrt(0.1² + 0.1²) / 2 (the dataset means agree: no spread).
    assert e["margin_pp"] == pytest.approx(10.0)
    assert e["se_pp"] == pytest.approx(100 * math.sqrt(0.02) / 2)
    # Gaps: FE - top = (0.2 + 0.1) / 2, FE - full = (0.3 + 0.3) / 2, FE - tfidf = 0.1.
    assert e["gaps_pp"] == pytest.approx({"tfidf_linear": 10.0, "text_finetune_top": 15.0,
                                          "text_full_finetune": 30.0})
    # Each dataset left out: the other one alone also picks FE (regret 0 there).
    assert (e["held_out_folds"], e["held_out_agree"], e["held_out_regret_pp"], e["mean_regret_pp"]) == (2, 2, 0.0, 0.0)


def test_seeds_average_before_the_judgement_and_a_fold_can_disagree(rules: TextRuleSet) -> None:
    # c: two seeds; there TF-IDF beats the frozen head (6 vs 9 and 7 vs 9 right): left out, a and b still pick
    # FE (agree); with b left out, a + c pick tfidf: mean regret of FE over (a, c) = (0 + 25) / 2 = 12.5 >
    # tfidf's (10 + 0) / 2 = 5 -> disagree. Same for a left out.
    c0 = {"text_feature_extraction": "1111110000", "text_finetune_top": "1111100000",
          "text_full_finetune": "1111000000", "tfidf_linear": "1111111110"}
    c1 = {"text_feature_extraction": "1111111000", "text_finetune_top": "1111100000",
          "text_full_finetune": "1111000000", "tfidf_linear": "1111111110"}
    cases = [case("a", A), case("b", B), case("c", c0, seed=0), case("c", c1, seed=1)]
    judged = taq.seed_judgement(cases, rules)
    c_row = next(r for r in judged["cases"] if r["dataset"] == "c")
    assert c_row["seeds"] == [0, 1] and c_row["accuracy"]["text_feature_extraction"] == pytest.approx(0.65)
    assert c_row["regret_pp"] == pytest.approx(25.0) and not c_row["tie"]
    e = judged["rule_evidence"]["text-tiny-close"]
    assert (e["cases"], e["seeds"], e["held_out_folds"], e["held_out_agree"]) == (3, 1, 3, 1)
    # Folds: a out -> tfidf chosen on (b, c), judged on a: 10 pp; b out -> tfidf, on b: 10 pp; c out -> FE: 25.
    assert e["held_out_regret_pp"] == pytest.approx((10 + 10 + 25) / 3)
    # Runner-up tfidf (0.7 + 0.8 + 0.9); margin per dataset +0.1, +0.1, over c's seeds (-0.3 - 0.2) / 2.
    assert e["runner_up"] == "tfidf_linear"
    assert e["margin_pp"] == pytest.approx(100 * (0.1 + 0.1 - 0.25) / 3)


def test_a_case_far_from_the_source_goes_to_the_far_rule(rules: TextRuleSet) -> None:
    judged = taq.seed_judgement([case("a", A, signals=FAR, recorded=("text_feature_extraction", "x"))], rules)
    (row,) = judged["cases"]
    assert (row["rule_id"], row["label"], row["band"]) == ("text-tiny-far", "far", "tiny")
    e = judged["rule_evidence"]["text-tiny-far"]
    assert e["held_out_folds"] == 0 and e["datasets"] == ["a"]  # one dataset: nothing to hold out


def evidence_rules(evidence: dict[str, Any], source: str = "benchmarks/results/t.json") -> tuple[str, TextRuleSet]:
    text = write_evidence(_unmeasured_text(), evidence, source, TEXT_EVIDENCE_NOTE)
    return text, text_rules_from_mapping(tomllib.loads(text), "written")


def test_write_evidence_round_trips_into_text_rules_that_load(rules: TextRuleSet) -> None:
    evidence = taq.seed_judgement([case("a", A), case("b", B)], rules)["rule_evidence"]
    text, written = evidence_rules(evidence)
    row = written.row_for("tiny", "close")
    assert isinstance(row.evidence, TextCellEvidence)
    assert (row.evidence.runner_up, row.evidence.margin_pp, row.evidence.se_pp) == ("tfidf_linear", 10.0, 7.07)
    assert (row.evidence.held_out_folds, row.evidence.held_out_agree, row.evidence.judged_on) == (2, 2, "test")
    assert row.evidence.gaps_pp == {"tfidf_linear": 10.0, "text_finetune_top": 15.0, "text_full_finetune": 30.0}
    assert row.evidence.separated
    assert sum(r.evidence is not None for r in written.decision) == 1  # the other rows stay unmeasured
    assert text.count(TEXT_EVIDENCE_NOTE) == 1
    # Written again: the generated table is replaced, not added to; without evidence, the packaged file is back.
    assert write_evidence(text, evidence, "benchmarks/results/t.json", TEXT_EVIDENCE_NOTE) == text
    assert write_evidence(text, {}, "x", TEXT_EVIDENCE_NOTE) == _unmeasured_text()


def advise(rules: TextRuleSet) -> Any:
    sim = score_text_similarity(rules, signals(cosine=0.3, knn_gain=0.0))
    return recommend_text(rules, summary=summary(40), lengths=lengths(30), similarity=sim, backbone=minilm())


def test_the_confidence_reads_not_measured_held_out_and_in_sample(rules: TextRuleSet) -> None:
    rec = advise(rules)
    assert rec.confidence.level == "medium"
    assert any("no benchmark evidence: the guide's cell, not measured" in r for r in rec.confidence.reasons)

    evidence = taq.seed_judgement([case("a", A), case("b", B)], rules)["rule_evidence"]
    rec = advise(evidence_rules(evidence)[1])
    assert rec.confidence.level == "high"  # beyond noise and held out: the only evidence counted out of sample
    (reason,) = [r for r in rec.confidence.reasons if r.startswith("measured")]
    assert "beat tfidf_linear beyond noise (+10.0 ± 7.1 pp)" in reason
    assert "in-sample" not in reason
    why = next(w for w in rec.why if w.startswith("rule text-tiny-close"))
    assert why.endswith("measured on 2 cases from 2 datasets (1+ seed, judged on held-out test splits): "
                        "text_feature_extraction ahead of the runner-up, tfidf_linear, by +10.0 ± 7.1 pp (each "
                        "dataset counted once), mean regret 0.0 pp; with each dataset left out in turn the others "
                        "chose it in 2 of 2 folds")
    sim = score_text_similarity(evidence_rules(evidence)[1], signals(cosine=0.3, knn_gain=0.0))
    bert = recommend_text(evidence_rules(evidence)[1], summary=summary(40), lengths=lengths(30), similarity=sim,
                          backbone=minilm(12, 512, name="bert-base-uncased"))
    assert bert.confidence.level == "medium"  # the same evidence, trained with another encoder
    assert any(r.endswith("trained with all-minilm-l6-v2, not bert-base-uncased: how the rule carries over to "
                          "another backbone is measured apart (benchmarks/README.md)") for r in bert.confidence.reasons)
    reasons = {a.strategy: a.reason for a in rec.alternatives}
    assert reasons["text_finetune_top"].endswith("(15.0 pp behind text_feature_extraction over the rule's 2 measured "
                                                 "cases)")
    assert reasons["tfidf_linear"].endswith("(10.0 pp behind text_feature_extraction over the rule's 2 measured "
                                            "cases)")
    assert "text_full_finetune" not in reasons  # the benchmark's runner-up (tfidf_linear) is listed already

    # One fold in which the other datasets chose otherwise: in-sample, at most [confidence].in_sample.
    in_sample = {**evidence["text-tiny-close"], "held_out_agree": 1, "held_out_regret_pp": 5.0}
    rec = advise(evidence_rules({"text-tiny-close": in_sample})[1])
    assert rec.confidence.level == "medium" and rec.confidence.weakest == "evidence"
    assert any("in-sample: chosen on these cases; with each dataset left out in turn the others chose it in 1 of 2 "
               "folds, 5.0 pp mean regret on the dataset left out" in r for r in rec.confidence.reasons)

    # The runner-up ahead beyond noise: low, and the runner-up is named and listed first.
    behind = {**evidence["text-tiny-close"], "runner_up": "text_full_finetune", "margin_pp": -4.0, "se_pp": 1.0}
    rec = advise(evidence_rules({"text-tiny-close": behind})[1])
    assert rec.confidence.level == "low" and rec.confidence.runner_up == "text_full_finetune"
    assert any("text_full_finetune scored higher than text_feature_extraction (-4.0 ± 1.0 pp)" in r
               for r in rec.confidence.reasons)
    assert rec.alternatives[0].strategy == "text_full_finetune"
    assert rec.alternatives[0].reason.startswith("the benchmark's runner-up for rule text-tiny-close: 4.0 ± 1.0 pp "
                                                 "ahead of text_feature_extraction")

    # A margin that rounds to zero reads +0.0, never -0.0.
    level = {**evidence["text-tiny-close"], "runner_up": "text_full_finetune", "margin_pp": -0.04, "se_pp": 1.3}
    rec = advise(evidence_rules({"text-tiny-close": level})[1])
    assert any("tied text_full_finetune within noise (+0.0 ± 1.3 pp)" in r
               for r in rec.confidence.reasons)


def test_report_writes_the_evidence_into_the_text_rules(tmp_path: Path) -> None:
    out = tmp_path / "tq"
    results = {"budget": {"max_length": 32}, "commands": [], "cases": [case("a", A), case("b", B)]}
    out.with_suffix(".json").write_text(json.dumps(results), encoding="utf-8")
    rules_file = tmp_path / "text_rules.toml"
    rules_file.write_text(_unmeasured_text(), encoding="utf-8")
    assert taq.main(["--report", "--out", str(out), "--rules", str(rules_file), "--write-evidence",
                     str(rules_file)]) == 0
    row = load_text_rules(rules_file).row_for("tiny", "close")
    assert row.evidence is not None and row.evidence.source == str(out.with_suffix(".json").resolve())
    assert row.evidence.held_out and row.evidence.margin_pp == 10.0
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "## Seed-averaged judgement (current rules)" in md and "[decision.evidence]" in md
    assert "| text-tiny-close | text_feature_extraction | 2 | a, b | 1 | 0.00 | tfidf_linear | +10.00 ± 7.07 | yes |" \
        in md
    recorded = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert recorded["cases"] == results["cases"]  # the report trains nothing and moves no recorded case
    assert recorded["seed_judgement"]["rule_evidence"]["text-tiny-close"]["held_out_agree"] == 2
