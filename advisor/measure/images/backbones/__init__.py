"""Backbone registry: ``load_backbone(name)`` gives a :class:`Backbone` with its stages and preprocessing."""

from tl_advise.advisor.measure.images.backbones.base import Backbone, Stage
from tl_advise.advisor.measure.images.backbones.registry import DEFAULT_BACKBONE, built_in_backbones, load_backbone

__all__ = ["DEFAULT_BACKBONE", "Backbone", "Stage", "built_in_backbones", "load_backbone"]
