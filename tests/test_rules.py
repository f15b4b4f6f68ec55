"""The rules file and the engine: the decision table, its validation, similarity scoring, warnings, why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tl_advise.rules import (
    SIGNAL_NAMES,
    RuleSet,
    default_rules_text,
    dump_rules,
    engine,
    load_rules,
    ramp_score,
    recommend,
    rules_from_mapping,
    score_similarity,
    signals_from_measurements,
)
from tl_advise.rules.confidence import size_component
from tl_advise.rules.engine import fmt_against
from tl_advise.rules.schema import SIZE_BANDS, _parse_toml
from tl_advise.rules.warnings import REGISTRY as WARNINGS
from tl_advise.rules.warnings import AdviceContext, ClassImbalanceWarning, FewImagesWarning, WarningRule, register
from tl_advise.schema.errors import RulesError
from tl_advise.schema.formatting import counted, fmt_lr
from tl_advise.schema.models import (
    STRATEGY_IDS,
    BackboneInfo,
    BNShift,
    DatasetSummary,
    DuplicateGroup,
    ImageSizeSummary,
    Preprocessing,
    Recommendation,
    Separability,
    SkippedFile,
)
from tl_advise.schema.models import (
    SimilarityReport as Report,
)

STAGES = [f"stage{i}" for i in range(9)]


# --------------------------------------------------------------------------- builders


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules()


def default_data() -> dict[str, Any]:
    return _parse_toml(default_rules_text(), "default")


def make_dataset(images_per_class: float = 2000, **overrides: Any) -> DatasetSummary:
    n = int(images_per_class)
    fields: dict[str, Any] = dict(
        root="/data/x", layout="splits", classes=["a", "b"], n_images=2 * n + 20,
        class_counts={"a": n + 10, "b": n + 10},
        split_counts={"train": {"a": n, "b": n}, "val": {"a": 10, "b": 10}},
        train_split="train", images_per_class=images_per_class, min_images_per_class=n,
        imbalance_ratio=1.0, modes={"RGB": 2 * n + 20},
        image_size=ImageSizeSummary(min_width=200, min_height=200, median_width=256, median_height=240,
                                    max_width=300, max_height=300),
        duplicates=[], skipped=[],
    )
    fields.update(overrides)
    return DatasetSummary(**fields)


def make_similarity(label: str = "similar", *, score: float | None = None, shift_level: str = "none",
                    early: float = 0.2, late: float = 0.2,
                    separability: Separability | None = None) -> Report:
    return Report(
        score=score if score is not None else (0.8 if label == "similar" else 0.2),
        label=label, threshold=0.5, shift_level=shift_level,
        bn_shift=BNShift(early=early, middle=(early + late) / 2, late=late, n_layers=30, profile=[]),
        head=None, separability=separability, components=[], notes=[],
    )


def make_backbone(stages: list[str] | None = None, *, name: str = "efficientnet_lite0",
                  calibrated: bool = True, input_size: int = 224, weights: str | None = None) -> BackboneInfo:
    """An embedded backbone, or a torchvision one when ``weights`` names its enum member."""
    return BackboneInfo(
        name=name, weights=weights or "w", source="torchvision" if weights else "embedded", feature_dim=1280,
        preprocessing=Preprocessing(input_size=input_size, crop_pct=0.875, interpolation="bicubic",
                                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        stages=list(STAGES if stages is None else stages), has_batchnorm=True, calibrated=calibrated,
    )


def make_separability(logreg_gain: float) -> Separability:
    return Separability(n_images=128, n_folds=5, chance=0.5, knn_accuracy=0.7,
                        logreg_accuracy=0.6 + logreg_gain, logme=0.5, pixel_knn_accuracy=0.6,
                        pixel_logreg_accuracy=0.6, pixel_logme=0.3,
                        knn_gain=0.1, logreg_gain=logreg_gain, logme_gain=0.2)


def advise(rules: RuleSet, ipc: float = 2000, label: str = "similar", *,
           dataset: DatasetSummary | None = None, backbone: BackboneInfo | None = None,
           **sim: Any) -> Recommendation:
    """The engine's recommendation for synthetic inputs; ``sim`` goes to ``make_similarity``."""
    return recommend(rules, dataset or make_dataset(ipc), make_similarity(label, **sim),
                     backbone or make_backbone())


def warning_ids(rec: Recommendation) -> set[str]:
    return {w.id for w in rec.warnings}


def write_rules(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(data: dict[str, Any]) -> str:
    with pytest.raises(RulesError) as info:
        rules_from_mapping(data, "rules.toml")
    return str(info.value)


# --------------------------------------------------------------------------- the default file


def test_default_rules_load_from_package_data(rules: RuleSet) -> None:
    assert rules.schema_version == 1
    assert set(rules.strategies) == set(STRATEGY_IDS)
    assert {row.id for row in rules.decision} == {
        "few-similar", "few-different", "tiny-similar", "tiny-different", "small-similar", "small-different",
        "medium-similar", "medium-different", "large-any"}
    assert rules.similarity.is_calibrated("efficientnet_lite0")
    assert not rules.similarity.is_calibrated("mobilenet_v2")
    assert rules.similarity.is_calibrated("mobilenet_v2:IMAGENET1K_V1")
    assert set(rules.similarity.profile_for("efficientnet_lite0").signals) == set(SIGNAL_NAMES)


def test_every_registered_warning_is_in_the_rules_with_its_class_defaults(rules: RuleSet) -> None:
    assert [warning_id for warning_id, _ in rules.warnings.items()] == list(WARNINGS)
    for warning_id, rule in rules.warnings.items():
        assert type(rule) is WARNINGS[warning_id] and rule == WARNINGS[warning_id]()


def test_a_warning_id_registers_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("class_imbalance")(type("Again", (WarningRule,), {}))


def test_a_rules_file_overrides_one_threshold_and_keeps_the_other_defaults() -> None:
    rules = rules_from_mapping({"extends": "default", "warnings": {"class_imbalance": {"max_ratio": 7.5}}})
    imbalance = rules.warnings.get(ClassImbalanceWarning)
    assert imbalance.max_ratio == 7.5 and imbalance.message == ClassImbalanceWarning().message
    assert rules.warnings.get(FewImagesWarning) == FewImagesWarning()


def test_dump_rules_is_json_of_the_effective_rules(rules: RuleSet) -> None:
    dumped = json.loads(dump_rules(rules))
    assert dumped["size_bands"] == {"few_below": 16, "tiny_below": 500, "small_below": 1000, "large_above": 10000}
    assert [row["id"] for row in dumped["decision"][:4]] == ["few-similar", "few-different", "tiny-similar",
                                                             "tiny-different"]


# --------------------------------------------------------------------------- the decision table


@pytest.mark.parametrize(("ipc", "label", "rule_id", "strategy"), [
    (10, "similar", "few-similar", "feature_extraction"),
    (10, "different", "few-different", "finetune_last_layers"),  # measured: default_rules.toml, few-different
    (300, "similar", "tiny-similar", "feature_extraction"),  # measured: default_rules.toml, tiny-similar
    (300, "different", "tiny-different", "finetune_last_layers"),  # measured: default_rules.toml, tiny-different
    (700, "similar", "small-similar", "finetune_last_layers"),  # measured: default_rules.toml, small-similar
    (700, "different", "small-different", "finetune_last_layers"),  # measured: default_rules.toml, small-different
    (3000, "similar", "medium-similar", "finetune_last_layers"),
    (3000, "different", "medium-different", "finetune_last_layers"),  # measured: medium-different
    (20000, "similar", "large-any", "full_finetune"),
    (20000, "different", "large-any", "full_finetune"),
])
def test_each_cell_maps_to_the_guides_strategy(rules: RuleSet, ipc: int, label: str, rule_id: str,
                                               strategy: str) -> None:
    rec = advise(rules, ipc, label)
    assert (rec.rule_id, rec.strategy) == (rule_id, strategy)
    assert any(s.startswith(f"rule {rule_id} → {strategy}: ") for s in rec.why)


@pytest.mark.parametrize(("ipc", "band"), [
    (15, "few"), (15.5, "few"), (16, "tiny"), (499, "tiny"), (500, "small"),
    (999, "small"), (999.5, "small"), (1000, "medium"),
    (10000, "medium"), (10000.5, "large"), (10001, "large"),
])
def test_size_band_boundaries(rules: RuleSet, ipc: float, band: str) -> None:
    assert rules.size_bands.band_for(ipc) == band
    assert advise(rules, ipc, "similar").rule_id.startswith(band)


def test_large_alternatives_offer_from_scratch_only_when_different(rules: RuleSet) -> None:
    similar = [a.strategy for a in advise(rules, 20000, "similar").alternatives]
    different = [a.strategy for a in advise(rules, 20000, "different").alternatives]
    assert "from_scratch" not in similar
    assert different[-1] == "from_scratch"
    assert all(a.rule_id == "large-any" for a in advise(rules, 20000, "different").alternatives)


# --------------------------------------------------------------------------- which stages


@pytest.mark.parametrize(("ipc", "label", "expected"), [
    (10, "similar", []),                        # feature extraction: frozen
    (10, "different", STAGES[-3:]),             # few, far: finetune_last_layers
    (300, "different", STAGES[-3:]),            # tiny: finetune_last_layers, ceil(0.25 x 9) = 3
    (700, "different", STAGES[-3:]),
    (3000, "similar", STAGES[-3:]),
    (3000, "different", STAGES[-3:]),
    (20000, "similar", STAGES),                 # everything
])
def test_unfreeze_picks_the_last_stages(rules: RuleSet, ipc: int, label: str, expected: list[str]) -> None:
    rec = advise(rules, ipc, label)
    assert rec.unfreeze == expected
    if expected and len(expected) < len(STAGES):
        assert rec.unfreeze_summary == f"last {len(expected)} of 9 stages"


def test_unfreeze_minimum_applies_on_short_backbones(rules: RuleSet) -> None:
    rec = advise(rules, 3000, "similar", backbone=make_backbone(["a", "b", "c", "d"]))
    assert rec.unfreeze == ["c", "d"]  # ceil(0.25 x 4) = 1, but at least 2
    rec = advise(rules, 3000, "different", backbone=make_backbone(["a", "b"]))
    assert rec.unfreeze == ["a", "b"]  # at least 2 of the 2 there are
    assert rec.unfreeze_summary == "all 2 stages"
    # finetune_more_layers: at least 3, capped at the 2 there are
    assert engine.top_stages_to_unfreeze(rules.strategies["finetune_more_layers"], ["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize(("strategy", "expected"), [
    ("feature_extraction", []),
    ("feature_extraction_top_layers", STAGES[-2:]),  # ceil(0.15 x 9) = 2
    ("finetune_last_layers", STAGES[-3:]),           # ceil(0.25 x 9) = 3
    ("finetune_more_layers", STAGES[-5:]),           # ceil(0.5 x 9) = 5
    ("full_finetune", STAGES),
])
def test_each_strategy_unfreezes_its_share_of_the_stages(rules: RuleSet, strategy: str, expected: list[str]) -> None:
    assert engine.top_stages_to_unfreeze(rules.strategies[strategy], STAGES) == expected


@pytest.mark.parametrize("shift_level", ["input", "input_and_semantic"])
def test_input_level_shift_also_unfreezes_the_first_stage(rules: RuleSet, shift_level: str) -> None:
    rec = advise(rules, 3000, "similar", shift_level=shift_level, early=0.7)
    assert rec.unfreeze == ["stage0", *STAGES[-3:]]
    assert rec.unfreeze_summary.startswith("first 1 and last 3 of 9 stages")
    assert rec.schedule[-1].trains == ["head", "stage0", *STAGES[-3:]]
    # the first block is tuned at the backbone LR, not the smallest discriminative rate
    assert rec.learning_rate.per_stage["stage0"] == rec.learning_rate.backbone
    assert any("Lee et al." in s and "stage0" in s for s in rec.why)


@pytest.mark.parametrize(("ipc", "shift_level"), [
    (3000, "semantic"), (3000, "none"), (3000, "unknown"),
    (10, "input"),       # feature extraction unfreezes nothing: nothing to refine
    (20000, "input"),    # full fine-tuning already trains the first stage
])
def test_surgical_rule_stays_out_otherwise(rules: RuleSet, ipc: int, shift_level: str) -> None:
    rec = advise(rules, ipc, "similar", shift_level=shift_level)
    assert rec.unfreeze.count("stage0") == (1 if ipc > 10000 else 0)
    assert "first" not in rec.unfreeze_summary


# --------------------------------------------------------------------------- learning rates, schedule


@pytest.mark.parametrize(("ipc", "label"), [
    (700, "different"), (3000, "similar"), (3000, "different"), (20000, "similar"), (20000, "different")])
def test_finetuning_backbone_lr_is_10_to_100x_below_the_head(rules: RuleSet, ipc: int, label: str) -> None:
    rec = advise(rules, ipc, label)
    lr = rec.learning_rate
    assert lr.backbone is not None
    assert 10 <= lr.head / lr.backbone <= 100
    assert 1e-5 <= lr.backbone <= 1e-4  # the guide's fine-tuning range
    assert all(rate <= lr.backbone for rate in lr.per_stage.values())


def test_backbone_lr_factor_depends_on_similarity(rules: RuleSet) -> None:
    assert advise(rules, 3000, "similar").learning_rate.backbone == pytest.approx(1e-5)
    assert advise(rules, 3000, "different").learning_rate.backbone == pytest.approx(1e-4)


def test_discriminative_rates_decay_down_from_the_top_stage(rules: RuleSet) -> None:
    per_stage = advise(rules, 3000, "similar").learning_rate.per_stage
    assert list(per_stage) == STAGES[-3:]
    assert per_stage["stage8"] == pytest.approx(1e-5)
    assert per_stage["stage7"] == pytest.approx(0.5e-5)
    assert per_stage["stage6"] == pytest.approx(0.25e-5)
    full = advise(rules, 20000, "similar").learning_rate.per_stage
    assert min(full.values()) == pytest.approx(1e-5 * 0.1)  # the floor


def test_two_phase_schedule(rules: RuleSet) -> None:
    rec = advise(rules, 3000, "similar")
    head, finetune = rec.schedule
    assert (head.name, head.trains, head.learning_rate) == ("head", ["head"], 1e-3)
    assert 5 <= head.epochs <= 10
    assert finetune.trains == ["head", *STAGES[-3:]]
    assert finetune.learning_rate == rec.learning_rate.backbone


def test_feature_extraction_has_one_phase_and_a_frozen_backbone(rules: RuleSet) -> None:
    rec = advise(rules, 10, "similar")
    assert rec.strategy == "feature_extraction"
    assert [p.name for p in rec.schedule] == ["head"]
    assert rec.learning_rate.backbone is None and rec.learning_rate.per_stage == {}
    assert rec.gpu_advised is False
    assert rec.unfreeze_summary == "none: the backbone stays frozen"


def test_from_scratch_trains_everything_in_one_phase_at_a_normal_lr(tmp_path: Path) -> None:
    path = write_rules(tmp_path, 'extends = "default"\n[size_bands]\nfew_below = 0\ntiny_below = 0\n'
                       '[[decision]]\nid = "small-any"\nsize = "small"\n'
                       'similarity = "any"\nstrategy = "feature_extraction"\nwhy = "w"\n'
                       '[[decision]]\nid = "medium-any"\nsize = "medium"\nsimilarity = "any"\n'
                       'strategy = "finetune_last_layers"\nwhy = "w"\n'
                       '[[decision]]\nid = "large-any"\nsize = "large"\nsimilarity = "any"\n'
                       'strategy = "from_scratch"\nwhy = "w"\n')
    rec = advise(load_rules(path), 20000, "different")
    assert rec.strategy == "from_scratch"
    (phase,) = rec.schedule
    assert phase.trains == ["head", *STAGES]
    assert phase.learning_rate == pytest.approx(1e-3)


def test_batch_size_is_capped_by_the_training_set(rules: RuleSet) -> None:
    assert advise(rules, 3000, "similar").batch_size == 32
    tiny = make_dataset(20)  # 40 training images, at least 4 batches per epoch: at most 10, a power of two
    rec = advise(rules, 20, "different", dataset=tiny)
    assert (rec.strategy, rec.batch_size) == ("finetune_last_layers", 8)
    assert any("batch size 8 instead of 32" in s for s in rec.why)
    few = advise(rules, dataset=make_dataset(10))  # 20 images: at most 5 per batch
    assert (few.strategy, few.batch_size) == ("feature_extraction", 4)
    assert any("batch size 4 instead of 64: the 20 images of the 'train' split must give" in s for s in few.why)
    # --max-train-per-class 20 on 100 per class: the 40 images that train, not the split's 200
    capped = advise(rules, 20, "different", dataset=make_dataset(100).model_copy(
        update={"train_cap": 20, "images_per_class": 20.0}))
    assert capped.batch_size == 8
    assert any("batch size 8 instead of 32: the 40 images of the 'train' split, at most 20 per class, must give "
               "at least 4 batches per epoch" in s for s in capped.why)


# --------------------------------------------------------------------------- why


def test_why_quotes_measured_numbers_against_thresholds(rules: RuleSet) -> None:
    sim = make_similarity("different", score=0.31, shift_level="semantic", early=0.3, late=0.62)
    rec = recommend(rules, make_dataset(722), sim, make_backbone())
    assert rec.why[0] == "images per class 722 (median, train split) is within 500–1000 → small"
    assert "similarity 0.31 is below the 0.50 needed for 'similar' → different" in rec.why
    assert "late-layer BN shift 0.62 is above 0.45 → semantic shift" in rec.why
    assert "early-layer BN shift 0.30 is at or below 0.40 → no input-level shift" in rec.why
    rule_line = "rule small-different → finetune_last_layers: 500-1,000 images per class"
    assert any(s.startswith(rule_line) for s in rec.why)
    assert any("backbone LR 1e-4 = head LR 1e-3 / 10" in s for s in rec.why)


def test_why_explains_medium_and_large_bands(rules: RuleSet) -> None:
    medium, large = advise(rules, 2400).why[0], advise(rules, 12000.5).why[0]
    assert medium == "images per class 2400 (median, train split) is within 1000–10000 → medium"
    assert large == "images per class 12000.5 (median, train split) is above 10000 → large"


def test_why_shows_extra_digits_when_the_score_sits_on_the_threshold(rules: RuleSet) -> None:
    assert "similarity 0.50 is at or above the 0.50 needed for 'similar' → similar" in advise(
        rules, score=0.5).why
    assert "similarity 0.4999 is below the 0.5000 needed for 'similar' → different" in advise(
        rules, label="different", score=0.4999).why
    assert fmt_against(0.451, 0.45) == ("0.451", "0.450")
    assert fmt_lr(1e-5) == "1e-5" and fmt_lr(2.5e-4) == "2.5e-4"


def test_why_lists_the_voting_signals(rules: RuleSet) -> None:
    verdict = score_similarity(rules, "efficientnet_lite0", {"bn_shift_late": 0.4, "head_max_prob": 0.5,
                                                               "head_entropy": 0.35, "logme": 3.0})
    sim = make_similarity(verdict.label, score=verdict.score)
    sim = sim.model_copy(update={"components": verdict.components})
    why = advise(rules, 3000).why  # no components: no signal sentences
    assert not any("signal score" in s for s in why)
    why = recommend(rules, make_dataset(3000), sim, make_backbone()).why
    signal_lines = [s for s in why if "signal score" in s]
    assert signal_lines[0] == ("late-layer BN shift 0.40 (similar at 0.25, different at 0.55) → "
                               "signal score 0.50, weight 0.50")
    assert not any(s.startswith("LogME") for s in signal_lines)  # weight 0: reported, not voting


# --------------------------------------------------------------------------- similarity scoring


def test_ramp_works_in_both_directions_and_clips() -> None:
    assert ramp_score(0.25, similar_at=0.25, different_at=0.55) == 1.0
    assert ramp_score(0.55, similar_at=0.25, different_at=0.55) == 0.0
    assert ramp_score(0.40, similar_at=0.25, different_at=0.55) == pytest.approx(0.5)
    assert ramp_score(0.05, similar_at=0.25, different_at=0.55) == 1.0  # clipped
    assert ramp_score(0.90, similar_at=0.25, different_at=0.55) == 0.0  # clipped
    assert ramp_score(0.325, similar_at=0.5, different_at=0.15) == pytest.approx(0.5)  # higher = closer
    assert ramp_score(0.9, similar_at=0.5, different_at=0.15) == 1.0


def test_combined_score_is_the_weighted_mean(rules: RuleSet) -> None:
    verdict = score_similarity(rules, "efficientnet_lite0", {
        "bn_shift_late": 0.40,    # 0.5 x weight 0.5
        "head_max_prob": 0.50,    # 1.0 x weight 0.25
        "head_entropy": 0.70,     # 0.0 x weight 0.25
        "logreg_gain": -0.3,      # weight 0: reported only
    })
    assert verdict.score == pytest.approx(0.5)
    assert verdict.label == "similar"  # exactly at the threshold counts as similar
    assert verdict.calibrated is True
    reported = {c.signal for c in verdict.components}
    assert reported == {"bn_shift_late", "head_max_prob", "head_entropy", "logreg_gain"}


def test_score_just_below_threshold_is_different(rules: RuleSet) -> None:
    verdict = score_similarity(rules, "efficientnet_lite0", {"bn_shift_late": 0.4003, "head_max_prob": 0.5,
                                                               "head_entropy": 0.7})
    assert verdict.score < 0.5
    assert verdict.label == "different"


def test_missing_signals_drop_out_and_weights_renormalise(rules: RuleSet) -> None:
    verdict = score_similarity(rules, "efficientnet_lite0", {
        "bn_shift_early": None, "bn_shift_middle": None, "bn_shift_late": None,  # no batch norm
        "head_max_prob": 0.5, "head_entropy": float("nan"),
    })
    assert verdict.score == pytest.approx(1.0)  # only head_max_prob votes
    assert verdict.shift_level == "unknown"
    assert any("bn_shift_late" in n and "renormalised" in n for n in verdict.notes)


def test_no_weighted_signal_falls_back_to_the_rules_score(rules: RuleSet) -> None:
    verdict = score_similarity(rules, "efficientnet_lite0", {"logme": 2.0})
    assert verdict.score == rules.similarity.score_when_no_signals
    assert verdict.label == "different"
    assert any("no weighted signal" in n for n in verdict.notes)


def test_uncalibrated_backbone_falls_back_to_the_default_profile(rules: RuleSet) -> None:
    verdict = score_similarity(rules, "resnet50", {"bn_shift_late": 0.25, "head_max_prob": 0.5,
                                                     "head_entropy": 0.35})
    assert verdict.calibrated is False
    assert verdict.score == pytest.approx(1.0)
    assert any("default profile" in n for n in verdict.notes)
    assert score_similarity(rules, "mobilenet_v2", {"bn_shift_late": 0.2}).calibrated is False
    assert score_similarity(rules, "EfficientNet-Lite0", {"bn_shift_late": 0.2}).calibrated is True
    assert not any("profile" in n for n in score_similarity(rules, "EfficientNet-Lite0", {"bn_shift_late": 0.2}).notes)


def test_profiles_are_looked_up_by_weights_first(rules: RuleSet) -> None:
    sim = rules.similarity
    # The weights the profile was measured with: calibrated, whatever the spelling.
    assert sim.profile_name_for("mobilenet_v2:IMAGENET1K_V1") == "mobilenet_v2:IMAGENET1K_V1"
    assert sim.profile_name_for("MobileNet-V2:imagenet1k_v1") == "mobilenet_v2:IMAGENET1K_V1"
    # Other weights of the same architecture fall back to its (uncalibrated) architecture profile.
    assert sim.profile_name_for("mobilenet_v2:IMAGENET1K_V2") == "mobilenet_v2"
    assert not sim.is_calibrated("mobilenet_v2:IMAGENET1K_V2")
    verdict = score_similarity(rules, "mobilenet_v2:IMAGENET1K_V2", {"bn_shift_late": 0.2})
    assert verdict.calibrated is False
    assert any("uses the 'mobilenet_v2' similarity profile, an uncalibrated placeholder" in n
               for n in verdict.notes), verdict.notes
    # An architecture-level profile serves every weights of it; unknown architectures get the default.
    assert sim.profile_name_for("efficientnet_lite0:anything") == "efficientnet_lite0"
    assert sim.profile_name_for("resnet50:IMAGENET1K_V2") == "default"


def test_lite1_and_lite2_share_the_lite0_profile_they_were_measured_against(rules: RuleSet) -> None:
    sim = rules.similarity
    for name in ("efficientnet_lite1", "EfficientNet-Lite2"):
        assert sim.profile_name_for(name) == "efficientnet_lite0" and sim.is_calibrated(name)
        verdict = score_similarity(rules, name, {"bn_shift_late": 0.25, "head_max_prob": 0.5, "head_entropy": 0.35})
        assert verdict.calibrated and verdict.score == pytest.approx(1.0)
        assert any("uses the 'efficientnet_lite0' similarity profile" in n for n in verdict.notes), verdict.notes
    assert sim.profile_name_for("efficientnet_lite3") == "default"


@pytest.mark.parametrize(("shares", "expected"), [
    ({"resnet50": "resnet18"}, "resnet50 uses 'resnet18', which is not a backbone profile here"),
    ({"resnet50": "default"}, "resnet50 uses 'default', which is not a backbone profile here"),
    ({"EfficientNet-Lite0": "mobilenet_v2:IMAGENET1K_V1"}, "EfficientNet-Lite0 has a profile of its own"),
])
def test_a_shared_profile_must_be_another_backbones_own(shares: dict[str, str], expected: str) -> None:
    data = default_data()
    data["similarity"]["shares"] = shares
    assert expected in error_for(data)


def test_backbone_profile_key_names_torchvision_weights() -> None:
    tv = make_backbone(name="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V1")
    assert tv.profile_key == "mobilenet_v2:IMAGENET1K_V1"
    assert make_backbone().profile_key == "efficientnet_lite0"


@pytest.mark.parametrize(("early", "late", "level"), [
    (0.2, 0.2, "none"), (0.7, 0.2, "input"), (0.2, 0.7, "semantic"), (0.7, 0.7, "input_and_semantic"),
    (0.40, 0.45, "none"),  # at the thresholds: not above
])
def test_shift_level(rules: RuleSet, early: float, late: float, level: str) -> None:
    verdict = score_similarity(rules, "efficientnet_lite0", {"bn_shift_early": early, "bn_shift_late": late})
    assert verdict.shift_level == level


def test_signals_from_measurements() -> None:
    bn = BNShift(early=0.1, middle=0.2, late=0.3, n_layers=3, profile=[])
    signals = signals_from_measurements(bn, None, make_separability(0.1))
    assert signals["bn_shift_late"] == 0.3 and signals["logreg_gain"] == 0.1
    assert signals["head_max_prob"] is None
    assert set(signals) == set(SIGNAL_NAMES)


# --------------------------------------------------------------------------- warnings


def test_clean_dataset_on_a_calibrated_backbone_has_no_warnings(rules: RuleSet) -> None:
    assert advise(rules, 3000, "similar").warnings == []


@pytest.mark.parametrize(("ipc", "label", "fires"), [
    (499, "different", True),    # trains the top stages with < 500 per class
    (500, "different", False),
    (300, "similar", True),
    (10, "similar", False),      # few: feature extraction trains no backbone stage
])
def test_few_images_for_finetuning(rules: RuleSet, ipc: int, label: str, fires: bool, tmp_path: Path) -> None:
    # Without the tiny band, the small rows tune the top stages even below 500 per class; the rows written
    # here carry no evidence, so the guide's warning is not outranked.
    rules = load_rules(write_rules(tmp_path, 'extends = "default"\n[size_bands]\ntiny_below = 0\n'
                                   + "".join(_rows_without_tiny())))
    rec = advise(rules, ipc, label)
    assert ("few_images_for_finetuning" in warning_ids(rec)) is fires
    if fires:
        (msg,) = [w.message for w in rec.warnings if w.id == "few_images_for_finetuning"]
        assert f"{ipc} images per class" in msg and "500" in msg


def _few_images_fields(rules: RuleSet, ipc: float, strategy_id: str, label: str = "similar") -> Any:
    """What few_images_for_finetuning measures when ``strategy_id`` is trained (as --run trains any strategy)."""
    ds, sim, bb = make_dataset(ipc), make_similarity(label), make_backbone()
    recipe = engine.strategy_recipe(rules, strategy_id, ds, sim, bb)
    ctx = AdviceContext(rules, ds, sim, bb, recipe.strategy_id, recipe.rule, recipe.unfreeze)
    return rules.warnings.get(FewImagesWarning).check(ctx)


def test_few_images_warning_is_silent_for_the_measured_cell_only(rules: RuleSet) -> None:
    # The tiny row's measured strategy outranks the guide's rule of thumb...
    rec = advise(rules, 300, "different")
    assert (rec.strategy, rec.rule_id) == ("finetune_last_layers", "tiny-different")
    assert rules.row_for("tiny", "different").evidence is not None
    assert "few_images_for_finetuning" not in warning_ids(rec)
    assert _few_images_fields(rules, 300, "finetune_last_layers", "different") is None
    # ...not for another strategy that tunes backbone stages at the same size,
    assert _few_images_fields(rules, 300, "finetune_more_layers") == {
        "images_per_class": 300, "strategy": "finetune_more_layers", "n_stages": 5, "stages": "5 backbone stages"}
    assert _few_images_fields(rules, 300, "feature_extraction_top_layers")["n_stages"] == 2
    assert _few_images_fields(rules, 300, "feature_extraction") is None  # nothing unfrozen
    # nor for the tiny row's strategy in the few band, where the table picks feature extraction.
    assert _few_images_fields(rules, 10, "finetune_last_layers") == {
        "images_per_class": 10, "strategy": "finetune_last_layers", "n_stages": 3, "stages": "3 backbone stages"}


def _unmeasured(row_id: str, strategy: str | None = None) -> RuleSet:
    """The default rules with one row's evidence removed (and its strategy replaced, if given)."""
    data = default_data()
    if strategy is not None:
        _set_cell(data, row_id, strategy)
    del next(r for r in data["decision"] if r["id"] == row_id)["evidence"]
    return rules_from_mapping(data)


@pytest.mark.parametrize(("row_id", "strategy", "ipc", "stages"), [
    ("tiny-different", "finetune_more_layers", 300, 5),
    ("tiny-different", None, 300, 3),                  # the default tiny cell, stripped of its evidence
    ("few-different", None, 10, 3),                    # the default few cell, stripped of its evidence
])
def test_few_images_warning_fires_for_a_table_cell_without_evidence(row_id: str, strategy: str | None, ipc: int,
                                                                     stages: int) -> None:
    rec = advise(_unmeasured(row_id, strategy), ipc, "different")
    assert rec.rule_id == row_id and rec.strategy == (strategy or "finetune_last_layers")
    (msg,) = [w.message for w in rec.warnings if w.id == "few_images_for_finetuning"]
    assert f"only {ipc} images per class" in msg and f"{rec.strategy} trains {stages} backbone stages:" in msg


@pytest.mark.parametrize(("ratio", "fires"), [(3.0, False), (3.5, True)])
def test_class_imbalance(rules: RuleSet, ratio: float, fires: bool) -> None:
    ds = make_dataset(2000, imbalance_ratio=ratio, split_counts={"train": {"a": 3500, "b": 1000}})
    rec = advise(rules, dataset=ds)
    assert ("class_imbalance" in warning_ids(rec)) is fires
    if fires:
        assert "'a' has 3500" in rec.warnings[0].message and "'b' 1000" in rec.warnings[0].message


def test_a_class_without_training_images_is_named_and_left_out_of_the_imbalance(rules: RuleSet) -> None:
    ds = make_dataset(2000, min_images_per_class=0, imbalance_ratio=1.0,
                      split_counts={"train": {"a": 2000, "b": 2000, "c": 0}, "val": {"a": 10, "b": 10, "c": 10}},
                      classes=["a", "b", "c"], class_counts={"a": 2010, "b": 2010, "c": 10})
    rec = advise(rules, dataset=ds)
    assert "class_imbalance" not in warning_ids(rec)
    (msg,) = [w.message for w in rec.warnings if w.id == "classes_without_training_images"]
    assert msg.startswith("no image in the 'train' split for 1 class that the other splits have ('c'):"), msg
    assert "classes_without_training_images" not in warning_ids(advise(rules, dataset=make_dataset(2000)))


@pytest.mark.parametrize(("modes", "fires"), [
    ({"L": 60, "RGB": 40}, True), ({"I;16": 51, "RGB": 49}, True), ({"L": 50, "RGB": 50}, False),
    ({"RGB": 100}, False)])
def test_greyscale_input(rules: RuleSet, modes: dict[str, int], fires: bool) -> None:
    assert ("greyscale_input" in warning_ids(advise(rules, dataset=make_dataset(2000, modes=modes)))) is fires


@pytest.mark.parametrize(("side", "fires"), [(63, True), (64, False)])
def test_tiny_images(rules: RuleSet, side: int, fires: bool) -> None:
    size = ImageSizeSummary(min_width=side, min_height=side, median_width=side + 10, median_height=side,
                            max_width=side, max_height=side)
    rec = advise(rules, dataset=make_dataset(2000, image_size=size))
    assert ("tiny_images" in warning_ids(rec)) is fires
    if fires:
        assert "224 px" in rec.warnings[0].message


def test_duplicates_and_skipped_files(rules: RuleSet) -> None:
    cross = DuplicateGroup(paths=["train/a/1.png", "val/a/9.png"], splits=["train", "val"], classes=["a"],
                           cross_split=True)
    within = DuplicateGroup(paths=["train/a/1.png", "train/a/2.png"], splits=["train"], classes=["a"],
                            cross_split=False)
    skipped = [SkippedFile(path="train/a/bad.jpg", reason="truncated")]
    assert warning_ids(advise(rules, dataset=make_dataset(2000, duplicates=[cross]))) == {
        "duplicates_across_splits"}
    assert warning_ids(advise(rules, dataset=make_dataset(2000, duplicates=[within]))) == {
        "duplicates_within_split"}
    rec = advise(rules, dataset=make_dataset(2000, skipped=skipped))
    assert warning_ids(rec) == {"skipped_files"}
    assert "train/a/bad.jpg (truncated)" in rec.warnings[0].message


@pytest.mark.parametrize(("name", "weights", "calibrated", "fires"), [
    ("efficientnet_lite0", None, True, False), ("mobilenet_v2", None, True, True),
    ("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1", True, False),
    ("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V2", True, True),
    ("resnet50", None, False, True), ("efficientnet_lite0", None, False, True)])
def test_uncalibrated_backbone(rules: RuleSet, name: str, weights: str | None, calibrated: bool,
                               fires: bool) -> None:
    rec = advise(rules, backbone=make_backbone(name=name, calibrated=calibrated, weights=weights))
    assert ("uncalibrated_backbone" in warning_ids(rec)) is fires


@pytest.mark.parametrize(("gain", "fires"), [(0.02, True), (-0.1, True), (0.021, False), (None, False)])
def test_frozen_features_no_better_than_pixels(rules: RuleSet, gain: float | None, fires: bool) -> None:
    sep = None if gain is None else make_separability(gain)
    rec = advise(rules, separability=sep)
    assert ("frozen_features_no_better_than_pixels" in warning_ids(rec)) is fires


def test_disabled_warning_does_not_fire() -> None:
    data = default_data()
    data["warnings"] = {"class_imbalance": {"enabled": False}}
    ds = make_dataset(2000, imbalance_ratio=10.0)
    assert "class_imbalance" not in warning_ids(advise(rules_from_mapping(data), dataset=ds))


# --------------------------------------------------------------------------- user overrides


def test_user_override_file_changes_the_outcome(tmp_path: Path, rules: RuleSet) -> None:
    assert advise(rules, 300, "similar").rule_id == "tiny-similar"
    path = write_rules(tmp_path, 'extends = "default"\n[size_bands]\nfew_below = 400\n')
    custom = load_rules(path)
    # untouched keys come from the default
    assert (custom.size_bands.tiny_below, custom.size_bands.large_above) == (500, 10000)
    rec = advise(custom, 300, "similar")
    assert (rec.rule_id, rec.strategy) == ("few-similar", "feature_extraction")
    assert rec.why[0].endswith("is below 400 → few")
    assert advise(custom, 400, "similar").why[0].endswith("is within 400–500 → tiny")


def test_complete_user_file_without_extends(tmp_path: Path) -> None:
    text = default_rules_text().replace("similar = 0.01\n", "similar = 0.02\n")
    rec = advise(load_rules(write_rules(tmp_path, text)), 3000, "similar")
    assert rec.learning_rate.backbone == pytest.approx(2e-5)


def test_similarity_threshold_override_changes_the_label(tmp_path: Path) -> None:
    signals = {"bn_shift_late": 0.40, "head_max_prob": 0.5, "head_entropy": 0.7}  # score 0.5
    custom = load_rules(write_rules(tmp_path, 'extends = "default"\n[similarity]\nthreshold = 0.6\n'))
    assert score_similarity(custom, "efficientnet_lite0", signals).label == "different"


# --------------------------------------------------------------------------- bad rules files


def test_unknown_key_is_rejected_with_its_location() -> None:
    data = default_data()
    data["strategies"]["full_finetune"]["learning_rte"] = 1e-3
    expected = "rules.toml: strategies.full_finetune.learning_rte: Extra inputs are not permitted"
    assert expected in error_for(data)


def test_unknown_warning_id_is_rejected() -> None:
    data = default_data()
    data["warnings"] = {"blurry_images": {"enabled": True, "message": "blurry"}}
    assert "warnings.blurry_images: Extra inputs are not permitted" in error_for(data)


def test_bad_strategy_id_names_the_row_and_the_value() -> None:
    data = default_data()
    data["decision"][6]["strategy"] = "finetune_all"
    message = error_for(data)
    where = "rules.toml: decision.6.strategy (row id 'medium-similar'): "
    assert where + "Input should be 'feature_extraction'" in message
    assert "Got 'finetune_all'" in message


def test_negative_lr_is_rejected() -> None:
    data = default_data()
    data["strategies"]["finetune_last_layers"]["head_lr"] = -1e-3
    assert "strategies.finetune_last_layers.head_lr: Input should be greater than 0" in error_for(data)


def test_batchnorm_mode_is_checked() -> None:
    data = default_data()
    data["strategies"]["from_scratch"]["batchnorm"] = "inference"
    assert 'strategies.from_scratch: pretrained = false needs batchnorm = "train"' in error_for(data)
    data["strategies"]["from_scratch"]["batchnorm"] = "frozen"
    assert "strategies.from_scratch.batchnorm: Input should be 'inference' or 'train'" in error_for(data)


def test_recommendation_carries_the_strategys_batchnorm_mode(rules: RuleSet) -> None:
    assert advise(rules, 2000, "different").batchnorm == "inference"
    assert all(s.batchnorm == ("inference" if s.pretrained else "train") for s in rules.strategies.values())


@pytest.mark.parametrize(("section", "key", "value", "where"), [
    (("similarity",), "threshold", 1.5, "similarity.threshold"),
    (("similarity", "backbones", "efficientnet_lite0", "signals", "bn_shift_late"), "weight", -0.5,
     "similarity.backbones.efficientnet_lite0.signals.bn_shift_late.weight"),
    (("strategies", "full_finetune"), "unfreeze_top_fraction", 1.2,
     "strategies.full_finetune.unfreeze_top_fraction"),
    (("strategies", "full_finetune"), "finetune_epochs", -1, "strategies.full_finetune.finetune_epochs"),
    (("learning_rate", "backbone_factor"), "similar", 0.0, "learning_rate.backbone_factor.similar"),
])
def test_out_of_range_values_are_rejected(section: tuple[str, ...], key: str, value: float,
                                          where: str) -> None:
    data = default_data()
    table = data
    for part in section:
        table = table[part]
    table[key] = value
    assert f"rules.toml: {where}: " in error_for(data)


def test_uncovered_cell_is_rejected() -> None:
    data = default_data()
    data["decision"] = [row for row in data["decision"] if row["id"] != "medium-different"]
    assert "cell (size=medium, similarity=different) is not covered by any row" in error_for(data)


def test_doubly_covered_cell_is_rejected() -> None:
    data = default_data()
    data["decision"].append({"id": "large-similar", "size": "large", "similarity": "similar",
                             "strategy": "full_finetune", "why": "again"})
    expected = "cell (size=large, similarity=similar) is covered by 2 rows: large-any, large-similar"
    assert expected in error_for(data)


def test_referenced_strategy_needs_its_table() -> None:
    data = default_data()
    del data["strategies"]["from_scratch"]
    expected = "decision.8.alternatives.1.strategy: 'from_scratch' has no [strategies.from_scratch] table"
    assert expected in error_for(data)


def test_unknown_message_field_is_rejected() -> None:
    data = default_data()
    data["warnings"] = {"class_imbalance": {"message": "ratio {ratoi}"}}
    assert "warnings.class_imbalance: message uses unknown field(s) ['ratoi']" in error_for(data)


def test_missing_default_profile_is_rejected() -> None:
    data = default_data()
    del data["similarity"]["backbones"]["default"]
    assert "similarity.backbones: a 'default' profile is required" in error_for(data)


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "schema_version = 1\n[size_bands]\nsmall_below = = 5\n")
    with pytest.raises(RulesError, match=r"rules\.toml: TOML syntax error: .*line 3"):
        load_rules(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"nope\.toml: rules file not found"):
        load_rules(tmp_path / "nope.toml")


def test_error_in_an_override_file_names_that_file(tmp_path: Path) -> None:
    path = write_rules(tmp_path, 'extends = "default"\n[size_bands]\nsmall_below = -3\n', name="mine.toml")
    expected = r"mine\.toml: size_bands\.small_below: Input should be greater than 0"
    with pytest.raises(RulesError, match=expected):
        load_rules(path)


def test_a_partial_file_without_extends_is_told_to_extend_the_default(tmp_path: Path) -> None:
    """Eleven 'Field required' lines hid the one fix."""
    path = write_rules(tmp_path, "[similarity]\nthreshold = 0.4\n", name="mine.toml")
    with pytest.raises(RulesError) as raised:
        load_rules(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: a rules file is either whole or an override of the default, and this one "
                              "lacks schema_version, size_bands, ")  # similarity is there, and only lacks keys
    assert 'put extends = "default" on its first line' in message and "\n" not in message
    assert load_rules(write_rules(tmp_path, 'extends = "default"\n[similarity]\nthreshold = 0.4\n')) \
        .similarity.threshold == 0.4


def test_extends_only_default(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="only \"default\" can be extended"):
        load_rules(write_rules(tmp_path, 'extends = "other"\n'))


def _rows_without_tiny() -> list[str]:
    """The default decision rows but the tiny one, as TOML (arrays replace the default's whole)."""
    rows = [row for row in default_data()["decision"] if row["size"] != "tiny"]
    return [f'[[decision]]\nid = "{r["id"]}"\nsize = "{r["size"]}"\nsimilarity = "{r["similarity"]}"\n'
            f'strategy = "{r["strategy"]}"\nwhy = "w"\n' for r in rows]


def _set_cell(data: dict[str, Any], row_id: str, strategy: str) -> dict[str, Any]:
    """``data`` with row ``row_id`` advising ``strategy``; its old strategy takes that alternative's place."""
    row = next(r for r in data["decision"] if r["id"] == row_id)
    row["alternatives"] = [{**a, "strategy": row["strategy"]} if a["strategy"] == strategy else a
                           for a in row.get("alternatives", [])]
    row["strategy"] = strategy
    return data


def _data_without_bands(*bands: str) -> dict[str, Any]:
    """The default rules without the given lower bands (``few``, ``tiny``): edge 0, rows dropped."""
    data = default_data()
    for band in bands:
        data["size_bands"][f"{band}_below"] = 0
    data["decision"] = [row for row in data["decision"] if row["size"] not in bands]
    return data


def test_few_band_splits_by_the_domain(rules: RuleSet) -> None:
    close, far = advise(rules, 15, "similar"), advise(rules, 15, "different")
    assert (close.rule_id, close.strategy, close.unfreeze) == ("few-similar", "feature_extraction", [])
    assert (far.rule_id, far.strategy, far.unfreeze) == ("few-different", "finetune_last_layers", STAGES[-3:])
    for rec in (close, far):
        assert rec.why[0] == "images per class 15 (median, train split) is below 16 → few"
    # The measured cell needs no warning about fine-tuning below 500 per class: its evidence outranks it.
    assert "few_images_for_finetuning" not in warning_ids(far)
    assert advise(rules, 16, "different").rule_id == "tiny-different"


def test_tiny_band_splits_by_the_domain(rules: RuleSet) -> None:
    close, far = advise(rules, 300, "similar"), advise(rules, 300, "different")
    assert (close.rule_id, close.strategy, close.unfreeze) == ("tiny-similar", "feature_extraction", [])
    assert (far.rule_id, far.strategy, far.unfreeze) == ("tiny-different", "finetune_last_layers", STAGES[-3:])
    for rec in (close, far):
        assert rec.why[0] == "images per class 300 (median, train split) is within 16–500 → tiny"
    assert advise(rules, 499, "similar").rule_id == "tiny-similar"
    assert advise(rules, 500, "different").rule_id == "small-different"


def test_size_bands_edges_and_ranges(rules: RuleSet) -> None:
    bands = rules.size_bands
    assert bands.bands == SIZE_BANDS
    assert bands.edges() == [(16, "few", "tiny"), (500, "tiny", "small"), (1000, "small", "medium"),
                             (10000, "medium", "large")]
    assert [bands.range_of(b) for b in SIZE_BANDS] == [
        (None, 16), (16, 500), (500, 1000), (1000, 10000), (10000, None)]
    # No few band: the tiny band opens at 0 images per class.
    no_few = rules_from_mapping(_data_without_bands("few")).size_bands
    assert no_few.bands == ("tiny", "small", "medium", "large")
    assert no_few.edges()[0] == (500, "tiny", "small") and len(no_few.edges()) == 3
    assert (no_few.range_of("tiny"), no_few.band_for(10)) == ((None, 500), "tiny")
    # Neither: the guide's three-band table, small from 0.
    neither = rules_from_mapping(_data_without_bands("few", "tiny"))
    assert neither.size_bands.edges() == [(1000, "small", "medium"), (10000, "medium", "large")]
    assert (neither.size_bands.range_of("small"), neither.size_bands.band_for(10)) == ((None, 1000), "small")
    assert advise(neither, 10).why[0] == "images per class 10 (median, train split) is below 1000 → small"


def test_few_edge_above_the_tiny_edge_is_rejected() -> None:
    data = default_data()
    data["size_bands"]["few_below"] = 600
    assert "size_bands: few_below must not exceed tiny_below" in error_for(data)
    data = _data_without_bands("tiny")
    data["size_bands"]["few_below"] = 1200  # without a tiny band, small_below is the bound
    assert "size_bands: few_below must not exceed tiny_below (or small_below" in error_for(data)
    data["size_bands"]["few_below"] = 1000
    assert rules_from_mapping(data).size_bands.range_of("small") == (1000, 1000)


@pytest.mark.parametrize(("band", "rows"), [("few", "few-different, few-similar"),
                                            ("tiny", "tiny-different, tiny-similar")])
def test_a_row_for_an_undefined_lower_band_is_rejected(band: str, rows: str) -> None:
    data = default_data()
    data["size_bands"][f"{band}_below"] = 0
    assert f"row(s) {rows} use a size band this file does not define" in error_for(data)


# --------------------------------------------------------------------------- confidence and the pixel bar


def test_confidence_is_low_for_an_unmeasured_cell_and_names_the_runner_up(rules: RuleSet) -> None:
    rec = advise(rules, 20000, "similar")  # the large band: the guide's cell, never measured
    assert rules.row_for("large", "similar").evidence is None
    assert rec.confidence.level == "low"
    assert any("not measured" in r for r in rec.confidence.reasons)
    assert rec.confidence.runner_up == rec.alternatives[0].strategy
    assert f"--run --strategies {rec.strategy},{rec.confidence.runner_up}" in (rec.confidence.suggestion or "")


def _measured(rules: RuleSet, margin_pp: float, se_pp: float = 1.0,
              cells: dict[str, str] | None = None) -> RuleSet:
    """The default rules with evidence on every row: the row's strategy ahead of a runner-up by margin_pp.

    ``cells`` (row id -> strategy) changes those rows' strategies first.
    """
    data = default_data()
    for row_id, strategy in (cells or {}).items():
        _set_cell(data, row_id, strategy)
    for row in data["decision"]:
        runner_up = next(s for s in STRATEGY_IDS if s != row["strategy"])
        row["evidence"] = {"source": "test", "cases": 3, "datasets": ["a", "b"], "seeds": 2,
                           "mean_regret_pp": 0.0, "runner_up": runner_up, "margin_pp": margin_pp, "se_pp": se_pp,
                           "held_out_folds": 2, "held_out_agree": 2, "held_out_regret_pp": 0.0, "judged_on": "test"}
    return rules_from_mapping(data)


def test_evidence_trained_on_another_backbone_is_at_most_medium() -> None:
    """The rules' margins are the benchmark backbone's: advising for another one (--for, --backbone) caps the
    evidence at [confidence].other_backbone and says whose margins they are."""
    separated = _measured(load_rules(), 3.0)
    assert advise(separated, 40, "different", score=0.2).confidence.level == "high"
    other = advise(separated, 40, "different", score=0.2, backbone=make_backbone(name="mobilenet_v2"))
    assert other.confidence.level == "medium"
    (reason,) = [r for r in other.confidence.reasons if r.startswith("measured")]
    assert reason.endswith("trained with efficientnet_lite0, not mobilenet_v2: how the rule carries over to another "
                           "backbone is measured apart (benchmarks/README.md)")
    unmeasured = advise(load_rules(), 3000, "similar", score=0.9, backbone=make_backbone(name="mobilenet_v2"))
    assert not any("trained with" in r for r in unmeasured.confidence.reasons)  # nothing measured to qualify


def test_evidence_measured_on_the_target_backbone_is_its_own() -> None:
    """A rule measured training the advised backbone too (backbone_evidence, keyed by its profile key) is judged
    on those margins, uncapped, and says which backbone they are; any other backbone keeps the cap."""
    data = default_data()
    for row in data["decision"]:
        runner_up = next(s for s in STRATEGY_IDS if s != row["strategy"])
        row["evidence"] = {"source": "lite0.json", "cases": 3, "datasets": ["a", "b"], "seeds": 2,
                           "mean_regret_pp": 0.0, "runner_up": runner_up, "margin_pp": 3.0, "se_pp": 1.0,
                           "held_out_folds": 2, "held_out_agree": 2, "held_out_regret_pp": 0.0, "judged_on": "test",
                           "gaps_pp": {runner_up: 3.0}}
        row["backbone_evidence"] = {"mobilenet_v2:IMAGENET1K_V1": {
            **row["evidence"], "source": "mnv2.json", "margin_pp": -2.0, "gaps_pp": {runner_up: -2.0}}}
    rules = rules_from_mapping(data)
    row = rules.row_for("tiny", "different")
    assert row.backbone_evidence["mobilenet_v2:IMAGENET1K_V1"].backbone == "mobilenet_v2:IMAGENET1K_V1"
    assert row.evidence is not None and row.evidence.backbone is None  # the benchmark backbone's

    mobilenet = make_backbone(name="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V1")
    own = advise(rules, 40, "different", score=0.2, backbone=mobilenet)
    assert (own.confidence.level, own.confidence.runner_up) == ("low", row.evidence.runner_up)
    (reason,) = [r for r in own.confidence.reasons if r.startswith("measured")]
    assert reason.startswith("measured training mobilenet_v2:IMAGENET1K_V1 on 3 cases") and "mnv2.json" in reason
    assert "trained with" not in reason
    assert any("training mobilenet_v2:IMAGENET1K_V1" in w and "-2.0" in w for w in own.why)
    alternative = next(a for a in own.alternatives if a.strategy == row.evidence.runner_up)
    assert "2.0 pp ahead of" in alternative.reason  # its gap as measured on this backbone

    other_weights = make_backbone(name="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V2")
    capped = advise(rules, 40, "different", score=0.2, backbone=other_weights)
    assert capped.confidence.level == "medium"
    assert any("trained with efficientnet_lite0, not mobilenet_v2:IMAGENET1K_V2" in r
               for r in capped.confidence.reasons)
    assert advise(rules, 40, "different", score=0.2).confidence.level == "high"  # the default backbone


def test_a_backbones_own_cases_move_its_cell_and_only_its() -> None:
    """A backbone_evidence table with a strategy moves that backbone's advice (the recipe, the why, the
    alternatives follow it); the benchmark backbone and any other keep the rule's; the rule's own evidence may
    not move it."""
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    assert row["strategy"] == "finetune_last_layers"
    shared = {"source": "lite0.json", "cases": 4, "datasets": ["a", "b"], "seeds": 2, "mean_regret_pp": 0.0,
              "runner_up": "finetune_more_layers", "margin_pp": 2.0, "se_pp": 0.7, "held_out_folds": 2,
              "held_out_agree": 2, "held_out_regret_pp": 0.0, "judged_on": "test",
              "gaps_pp": {"finetune_more_layers": 2.0, "feature_extraction_top_layers": 3.0}}
    row["evidence"] = shared
    row["backbone_evidence"] = {"mobilenet_v2:IMAGENET1K_V1": {
        **shared, "source": "mnv2.json", "strategy": "feature_extraction_top_layers",
        "runner_up": "finetune_last_layers", "margin_pp": 0.3, "se_pp": 1.2,
        "gaps_pp": {"finetune_last_layers": 0.3, "feature_extraction": 2.1}}}
    rules = rules_from_mapping(data)

    mobilenet = make_backbone(name="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V1")
    own = advise(rules, 40, "different", score=0.2, backbone=mobilenet)
    assert (own.strategy, own.rule_id) == ("feature_extraction_top_layers", "tiny-different")
    assert own.unfreeze == engine.top_stages_to_unfreeze(rules.strategies["feature_extraction_top_layers"],
                                                          list(mobilenet.stages))
    (line,) = [w for w in own.why if w.startswith("rule tiny-different")]
    assert line.startswith("rule tiny-different → feature_extraction_top_layers for mobilenet_v2:IMAGENET1K_V1: the "
                           "rule's finetune_last_layers trailed on this backbone's own cases")
    assert "feature_extraction_top_layers tied with the runner-up, finetune_last_layers, by +0.3 ± 1.2 pp" in line
    table = next(a for a in own.alternatives if a.strategy == "finetune_last_layers")
    assert table.reason.startswith("rule tiny-different's strategy on the benchmark backbone")
    assert "0.3 pp behind feature_extraction_top_layers" in table.reason  # the gap as this backbone measured it
    assert own.confidence.level == "medium"  # tied with its runner-up on this backbone's cases
    # Measured at this size on this backbone: the guide's rule of thumb against fine-tuning stays silent.
    assert not any(w.id == "few_images_for_finetuning" for w in own.warnings)

    assert advise(rules, 40, "different", score=0.2).strategy == "finetune_last_layers"
    other_weights = make_backbone(name="mobilenet_v2", weights="MobileNet_V2_Weights.IMAGENET1K_V2")
    assert advise(rules, 40, "different", score=0.2, backbone=other_weights).strategy == "finetune_last_layers"

    row["evidence"] = {**shared, "strategy": "feature_extraction_top_layers"}
    with pytest.raises(RulesError, match="only another backbone's evidence"):
        rules_from_mapping(data)


def test_backbone_evidence_must_be_the_backbone_it_is_keyed_by() -> None:
    data = default_data()
    row = data["decision"][0]
    row["backbone_evidence"] = {"mobilenet_v2:IMAGENET1K_V1": {
        "source": "x.json", "cases": 1, "datasets": ["a"], "seeds": 1, "mean_regret_pp": 0.0,
        "runner_up": next(s for s in STRATEGY_IDS if s != row["strategy"]), "margin_pp": 1.0, "se_pp": 1.0,
        "backbone": "resnet50"}}
    with pytest.raises(RulesError, match=r"says it trained 'resnet50'"):
        rules_from_mapping(data)


def test_confidence_follows_the_weakest_margin() -> None:
    separated, tied = _measured(load_rules(), 3.0), _measured(load_rules(), 0.5)
    # Tiny band, far from the threshold; the few band beside it advises the same: only the evidence counts.
    assert advise(separated, 40, "different", score=0.2).confidence.level == "high"
    assert advise(tied, 40, "different", score=0.2).confidence.level == "medium"
    # The tiny band's label changes the strategy: near the threshold the other label's cell is the runner-up.
    near_tiny = advise(separated, 40, "different", score=0.49)
    assert (near_tiny.confidence.level, near_tiny.confidence.runner_up) == ("low", "feature_extraction")
    # The medium band's does not: the guide's medium-different cell brings one back.
    guide = _measured(load_rules(), 3.0, cells={"medium-different": "finetune_more_layers"})
    # Medium band, where the label changes the strategy: a score near the threshold is low confidence,
    # and the runner-up is what the other label's cell advises.
    near = advise(guide, 3000, "similar", score=0.52)
    other = guide.row_for("medium", "different").strategy
    assert near.strategy != other
    assert (near.confidence.level, near.confidence.runner_up) == ("low", other)
    assert advise(guide, 3000, "similar", score=0.60).confidence.level == "medium"
    assert advise(guide, 3000, "similar", score=0.90).confidence.level == "high"
    # Close to a band edge whose neighbour advises otherwise (small below 1,000): low, then medium, then high.
    assert advise(guide, 1100, "different", score=0.1).confidence.level == "low"  # x1.10
    assert advise(guide, 1400, "different", score=0.1).confidence.level == "medium"  # x1.40
    assert advise(guide, 1000 * 1.7, "different", score=0.1).confidence.level == "high"  # x1.70 from 1,000


@pytest.mark.parametrize(("ipc", "level"), [(600, "low"), (700, "medium"), (900, "high")])
def test_size_confidence_near_the_small_edge(rules: RuleSet, ipc: int, level: str) -> None:
    # [confidence] size ratios 1.25 / 1.6: 600/500 = x1.2, 700/500 = x1.4, 900/500 = x1.8. Close data: the tiny
    # band's frozen head against the small band's last stages.
    size = size_component(rules, "small", make_dataset(ipc), make_similarity("similar"), "finetune_last_layers")
    assert size.level == level
    assert size.runner_up == "feature_extraction" and "edge of the tiny band" in size.reason


@pytest.mark.parametrize("ipc", [1, 2, 9.5])
def test_below_the_smallest_measured_size_the_confidence_is_low(rules: RuleSet, ipc: float) -> None:
    """The grid trained 10 images per class at its smallest: below that no evidence speaks for the size, however
    far the dataset is from a band edge that matters."""
    assert rules.confidence.measured_from_per_class == 10
    size = size_component(rules, "few", make_dataset(ipc), make_similarity("similar"), "feature_extraction")
    assert size.level == "low" and "below the 10 per class the benchmark trained at its smallest" in size.reason
    assert advise(rules, ipc, "similar").confidence.level == "low"
    assert size_component(rules, "few", make_dataset(10), make_similarity("similar"), "feature_extraction").level \
        == "high"


def test_confidence_near_a_band_edge_names_the_other_bands_strategy(rules: RuleSet) -> None:
    near = advise(rules, 600, "similar")
    assert (near.strategy, near.confidence.level, near.confidence.runner_up) == (
        "finetune_last_layers", "low", "feature_extraction")
    assert "--run --strategies finetune_last_layers,feature_extraction" in (near.confidence.suggestion or "")
    # Just below the edge the other way round: x1.19 from 500, the small band's strategy is the runner-up.
    below = advise(rules, 420, "similar")
    assert (below.strategy, below.confidence.level, below.confidence.runner_up) == (
        "feature_extraction", "low", "finetune_last_layers")
    # The few and tiny rows advise alike for each label: their edge at 16 limits nothing.
    for label in ("similar", "different"):
        size = size_component(rules, "tiny", make_dataset(18), make_similarity(label),
                              rules.row_for("tiny", label).strategy)
        assert size.level == "high" and "edge of the few band" not in size.reason
    # At 100 per class the size is not what limits the confidence: the tiny row's evidence is.
    far = advise(rules, 100, "different", score=0.2)
    evidence = rules.row_for("tiny", "different").evidence
    assert evidence is not None
    if evidence.separated and evidence.judged_on == "test":
        assert far.confidence.level == "high" and far.confidence.suggestion is None
    elif evidence.separated:  # judged on the early-stopping split: optimistic
        assert far.confidence.level == rules.confidence.early_stopping_split
    else:
        assert far.confidence.level == rules.confidence.tied and far.confidence.runner_up == evidence.runner_up


def test_evidence_from_one_dataset_is_never_high_confidence() -> None:
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    row["evidence"] = {"source": "test", "cases": 3, "datasets": ["only"], "seeds": 2, "mean_regret_pp": 0.0,
                       "runner_up": "feature_extraction", "margin_pp": 3.0, "se_pp": 1.0}
    one = advise(rules_from_mapping(data), 40, "different")
    assert one.confidence.level == "medium"
    assert any("on one dataset only" in r for r in one.confidence.reasons), one.confidence.reasons
    row["evidence"].update(datasets=["only", "another"], held_out_folds=2, held_out_agree=2, judged_on="test")
    assert advise(rules_from_mapping(data), 40, "different").confidence.level == "high"
    # The shipped pixel rule: three datasets, but with one left out the other two chose another strategy
    # (in-sample), and its margin over the runner-up is within noise: medium, never high.
    rules = load_rules()
    evidence = rules.pixel_baseline.evidence
    assert evidence is not None and len(evidence.datasets) == 3
    assert evidence.held_out_agree < evidence.held_out_folds and evidence.margin_pp < evidence.se_pp
    pixels = advise(rules, 180, "different", separability=make_separability(-0.25))
    assert (pixels.rule_id, pixels.confidence.level) == (rules.pixel_baseline.id, "medium")
    assert any(f"tied {evidence.runner_up} within noise" in r for r in pixels.confidence.reasons), \
        pixels.confidence.reasons


def test_evidence_judged_on_the_early_stopping_split_is_at_most_medium() -> None:
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    row["evidence"] = {"source": "test", "cases": 4, "datasets": ["a", "b"], "seeds": 3, "mean_regret_pp": 0.0,
                       "runner_up": "feature_extraction", "margin_pp": 3.0, "se_pp": 1.0,
                       "held_out_folds": 2, "held_out_agree": 2, "held_out_regret_pp": 0.0, "judged_on": "val"}
    val = advise(rules_from_mapping(data), 40, "different")
    assert val.confidence.level == "medium"
    (reason,) = [r for r in val.confidence.reasons if "measured on" in r]
    assert "judged on validation splits" in reason and "optimistic" in reason
    row["evidence"]["judged_on"] = "test"
    test = advise(rules_from_mapping(data), 40, "different")
    assert test.confidence.level == "high"
    assert not any("optimistic" in r for r in test.confidence.reasons)


def test_evidence_chosen_in_sample_is_at_most_medium() -> None:
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    row["evidence"] = {"source": "test", "cases": 4, "datasets": ["a", "b"], "seeds": 3, "mean_regret_pp": 0.0,
                       "runner_up": "feature_extraction", "margin_pp": 3.0, "se_pp": 1.0,
                       "held_out_folds": 2, "held_out_agree": 1, "held_out_regret_pp": 2.5}
    in_sample = advise(rules_from_mapping(data), 40, "different")
    assert in_sample.confidence.level == "medium"
    assert any("in-sample" in r and "1 of 2 folds" in r and "2.5 pp" in r for r in in_sample.confidence.reasons)
    # Evidence from before the held-out fields (no folds recorded) is in-sample too.
    for key in ("held_out_folds", "held_out_agree", "held_out_regret_pp"):
        del row["evidence"][key]
    assert advise(rules_from_mapping(data), 40, "different").confidence.level == "medium"


def test_a_label_that_decides_nothing_gives_no_similarity_reason() -> None:
    rules = _measured(load_rules(), 3.0)
    small = advise(rules, 700, "different", score=0.49)  # both small rows tune the last stages
    assert not any("similarity" in r for r in small.confidence.reasons), small.confidence.reasons


@pytest.mark.parametrize(("gain", "level"), [(0.03, "low"), (0.10, "medium"), (0.25, "high")])
def test_the_pixel_rules_cut_off_is_a_margin_in_standard_errors(gain: float, level: str) -> None:
    # 128 sample images, pixels 0.60, features 0.60 + gain: s.e. of the gain sqrt((p(1-p) + 0.24) / 128);
    # 0.03: 0.01 / 0.061 = 0.2 s.e. from the 0.02 cut-off; 0.10: 0.08 / 0.059 = 1.3; 0.25: 0.23 / 0.054 = 4.3.
    rules = _measured(load_rules(), 3.0)
    advice = advise(rules, 40, "different", separability=make_separability(gain))
    assert advice.strategy == "finetune_last_layers" and advice.confidence.level == level
    reason = next(r for r in advice.confidence.reasons if "cut-off" in r)
    assert "on the other side the advice would be feature_extraction" in reason
    if level == "low":
        assert advice.confidence.runner_up == "feature_extraction"


def test_pixels_as_good_outside_the_pixel_rules_bands_is_low_confidence() -> None:
    rules = _measured(load_rules(), 3.0)
    assert "medium" not in rules.pixel_baseline.bands
    advice = advise(rules, 3000, "different", separability=make_separability(-0.25))
    assert advice.rule_id != rules.pixel_baseline.id and advice.confidence.level == "low"
    assert any("was measured in the" in r and "never judged on such data" in r for r in advice.confidence.reasons)


def test_the_pixel_rule_decides_in_its_band_and_the_bar_is_always_shown(rules: RuleSet) -> None:
    pixels_win = make_separability(-0.25)
    tiny = advise(rules, 180, "different", separability=pixels_win)
    assert (tiny.rule_id, tiny.strategy) == (rules.pixel_baseline.id, rules.pixel_baseline.strategy)
    assert any(r.startswith(f"rule {rules.pixel_baseline.id}") for r in tiny.why)
    assert tiny.pixel_baseline is not None and tiny.pixel_baseline.beats_features
    assert tiny.pixel_baseline.accuracy == pytest.approx(0.6)
    assert all(a.strategy != tiny.strategy for a in tiny.alternatives)
    assert advise(rules, 10, "different", separability=pixels_win).rule_id == rules.pixel_baseline.id  # few too
    # Outside the measured bands the table decides; the bar is still reported.
    medium = advise(rules, 2000, "different", separability=pixels_win)
    assert medium.rule_id == rules.row_for("medium", "different").id
    assert medium.pixel_baseline is not None and medium.pixel_baseline.beats_features
    features_win = advise(rules, 180, "different", separability=make_separability(0.3))
    assert features_win.rule_id == rules.row_for("tiny", "different").id
    assert features_win.pixel_baseline is not None and not features_win.pixel_baseline.beats_features
    assert advise(rules, 180, "different").pixel_baseline is None  # not measured: no bar


def test_when_the_pixel_rule_replaces_the_table_its_cell_is_the_first_alternative(rules: RuleSet) -> None:
    rec = advise(rules, 180, "different", separability=make_separability(-0.25))
    row = rules.row_for("tiny", "different")
    assert rec.strategy != row.strategy
    first = rec.alternatives[0]
    assert (first.strategy, first.rule_id) == (row.strategy, row.id)
    assert first.reason.startswith(rules.pixel_baseline.table_reason.format(rule_id=row.id)) and "{" not in first.reason
    evidence = rules.pixel_baseline.evidence
    assert evidence is not None and row.strategy in evidence.gaps_pp  # the measured gap follows, from the table
    assert first.reason.endswith(f"({evidence.gaps_pp[row.strategy]:.1f} pp behind feature_extraction over the "
                                 f"rule's {counted(evidence.cases, 'measured case')})")
    assert [a.strategy for a in rec.alternatives].count(row.strategy) == 1


def test_confidence_asks_the_pixel_rule_what_the_other_side_would_advise(rules: RuleSet) -> None:
    pixels_win = make_separability(-0.25)
    # Both labels go to the pixel rule at 180 per class: the label does not matter, whatever the score.
    rec = advise(rules, 180, "different", separability=pixels_win, score=0.48)
    assert not any("similarity" in r for r in rec.confidence.reasons)
    # Near the small band's edge the pixel rule stops applying: that edge is the size margin.
    near = advise(rules, 450, "different", separability=pixels_win)
    assert near.confidence.level == "low" and near.confidence.runner_up == rules.row_for("small", "different").strategy
    assert "from the 500 edge of the small band" in near.confidence.reasons[0]
    # The few band's edge is no margin for it: the pixel rule decides on both sides of 16.
    assert not any("edge of the few band" in r
                   for r in advise(rules, 18, "different", separability=pixels_win).confidence.reasons)


def test_the_pixel_rules_table_reason_fills_only_the_row_id() -> None:
    data = default_data()
    data["pixel_baseline"]["table_reason"] = "rule {rule_id} at {images_per_class}"
    assert "unknown placeholder(s) images_per_class" in error_for(data)


def test_confidence_rules_are_validated() -> None:
    data = default_data()
    data["confidence"]["similarity_margin_low"] = 0.5
    assert "similarity_margin_low must not exceed" in error_for(data)
    data = default_data()
    data["pixel_baseline"]["strategy"] = "nope"
    assert "pixel_baseline" in error_for(data)


def test_a_figure_typed_into_a_rules_prose_is_refused() -> None:
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    row["why"] = "it won by 2.3 pp on the flowers"
    assert "'2.3 pp' is a measured figure typed by hand" in error_for(data)
    data = default_data()
    data["pixel_baseline"]["why"] = "fine-tuning fell 22 points behind"
    assert "'22 points'" in error_for(data)
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    row["alternatives"][0]["reason"] = "reached 94.6 % on the X-rays"
    assert "'94.6 %'" in error_for(data)


def test_the_rules_why_ends_with_its_evidence_in_words() -> None:
    data = default_data()
    row = next(r for r in data["decision"] if r["id"] == "tiny-different")
    row["evidence"] = {"source": "test", "cases": 4, "datasets": ["a", "b", "c"], "seeds": 3, "mean_regret_pp": 0.4,
                       "runner_up": "finetune_more_layers", "margin_pp": 2.26, "se_pp": 0.9, "held_out_folds": 3,
                       "held_out_agree": 3, "held_out_regret_pp": 0.5, "judged_on": "test",
                       "gaps_pp": {"feature_extraction": 3.14, "full_finetune": -0.42}}
    advice = advise(rules_from_mapping(data), 40, "different")
    why = next(w for w in advice.why if w.startswith("rule tiny-different"))
    assert why.endswith("measured on 4 cases from 3 datasets (3+ seeds, judged on held-out test splits): "
                        "finetune_last_layers ahead of the runner-up, finetune_more_layers, by +2.3 ± 0.9 pp (each "
                        "dataset counted once), mean regret 0.4 pp; with each dataset left out in turn the others "
                        "chose it in 3 of 3 folds")
    reasons = {a.strategy: a.reason for a in advice.alternatives}
    assert reasons["feature_extraction"].endswith(
        "(3.1 pp behind finetune_last_layers over the rule's 4 measured cases)")
