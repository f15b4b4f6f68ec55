"""What every backbone offers the advisor and the runners, whatever library built it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tl_advise.schema.models import BackboneInfo, Preprocessing


@dataclass
class Stage:
    """An ordered group of layers (input → head). Runners freeze and unfreeze whole stages."""

    name: str
    modules: list[nn.Module]

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]


@dataclass
class Backbone:
    """A pretrained classifier split into ``body`` (image → pooled features) and its source ``head``.

    ``body(x)`` returns the pre-logits embedding (``feature_dim`` wide); ``head(body(x))`` gives the
    source-task logits (ImageNet for the built-in weights).
    """

    info: BackboneInfo
    body: nn.Module
    head: nn.Module
    stages: list[Stage]
    categories: list[str] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing

    def to(self, device: torch.device | str) -> Backbone:
        self.body.to(device)
        self.head.to(device)
        return self

    def eval(self) -> Backbone:
        self.body.eval()
        self.head.eval()
        return self

    def batchnorm_layers(self) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
        """BN layers with running statistics, in forward order (registration order)."""
        return [
            (name, m)
            for name, m in self.body.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None
        ]


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def merge_lone_norms(stages: list[Stage]) -> list[Stage]:
    """A stage that is only a normalisation layer belongs with the layer it normalises (the one before)."""
    merged: list[Stage] = []
    for stage in stages:
        if merged and all(isinstance(m, _NORM_TYPES) for m in stage.modules):
            merged[-1] = Stage(f"{merged[-1].name}+{stage.name}", merged[-1].modules + stage.modules)
        else:
            merged.append(stage)
    return merged
