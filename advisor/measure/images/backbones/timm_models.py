"""Any timm model by name (online: timm fetches its weights from the Hugging Face Hub), split into stages
from the model's own ``feature_info``.

``convnext_tiny``, ``vit_small_patch16_224.augreg_in21k_ft_in1k`` or ``timm/resnet50.a1_in1k`` name a timm
model; a name torchvision also knows (``resnet50``) stays torchvision's unless it is written ``timm/…``.
Offline with nothing in the Hugging Face cache, the error says so and names the offline backbones.

Stages: timm lists, per model, the modules whose outputs are its feature maps (``feature_info``: ResNet's
``act1, layer1 … layer4``, ConvNeXt's ``stages.0 … stages.3``, a ViT's ``blocks.0 … blocks.11``). Each such
module closes a stage; the modules before it that are not a feature module themselves (a stem) join it, and
what follows the last one (a final norm, a head convolution) is the last stage. Models without
``feature_info`` fall back to the torchvision-style discovery (``torchvision_models.discover_stages``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from torch import nn

from tl_advise.advisor.measure.images.backbones.base import Backbone, Stage, has_batchnorm, merge_lone_norms
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.models import BackboneInfo, Preprocessing

logger = logging.getLogger(__name__)

PREFIX = "timm/"
_INTERPOLATIONS = {"bicubic", "bilinear", "nearest"}


def split_name(spec_name: str) -> tuple[str, str]:
    """``timm/convnext_tiny.fb_in1k`` → (``convnext_tiny.fb_in1k``, ``convnext_tiny``): the name timm is
    given and its architecture."""
    full = spec_name.removeprefix(PREFIX)
    return full, full.split(".", 1)[0]


def is_timm_model(spec_name: str) -> bool:
    """Whether timm knows the architecture (no download: timm's registry is in the package)."""
    import timm

    _, arch = split_name(spec_name)
    return bool(arch) and bool(timm.is_model(arch))


def feature_modules(model: nn.Module) -> list[str]:
    """The module names of timm's ``feature_info`` (empty when the model has none)."""
    info = getattr(model, "feature_info", None)
    if not info:
        return []
    names: list[str] = []
    for entry in info:
        module = entry.get("module") if isinstance(entry, dict) else None
        if isinstance(module, str) and module and module not in names:
            names.append(module)
    return names


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def stages_from_feature_info(model: nn.Module, boundaries: Iterable[str], head_name: str) -> list[Stage]:
    """Ordered stages, each closed by a feature module (see the module docstring); the head is not a stage.

    Children are visited in registration order (timm registers modules in forward order); a container that
    holds a feature module or the head deeper down is expanded.
    """
    ends = [b for b in boundaries if b]
    units: list[tuple[str, nn.Module]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == head_name:
                continue
            deeper = head_name.startswith(path + ".") or any(b.startswith(path + ".") for b in ends)
            if deeper:
                visit(child, path + ".")
            elif _has_params(child) or path in ends:
                units.append((path, child))

    visit(model, "")
    missing = [b for b in ends if b not in {p for p, _ in units}]
    if missing:
        raise BackboneError(f"{model.__class__.__name__}: feature_info names modules it does not have "
                            f"({', '.join(missing)})")
    stages: list[Stage] = []
    pending: list[tuple[str, nn.Module]] = []
    for path, module in units:
        if _has_params(module):
            pending.append((path, module))
        if path in ends and pending:
            stages.append(_stage(pending))
            pending = []
    if pending:
        stages.append(_stage(pending))
    return merge_lone_norms(stages)


def _stage(parts: list[tuple[str, nn.Module]]) -> Stage:
    return Stage("+".join(path for path, _ in parts), [module for _, module in parts])


def preprocessing_of(model: nn.Module) -> Preprocessing:
    from timm.data import resolve_model_data_config

    cfg: dict[str, Any] = resolve_model_data_config(model)
    interpolation = cfg.get("interpolation", "bicubic")
    size = cfg.get("input_size", (3, 224, 224))
    return Preprocessing(
        input_size=int(size[-1]), crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bicubic",
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
    )


def classifier_name(model: nn.Module) -> str | None:
    """The dotted name of the source classifier: timm's ``pretrained_cfg["classifier"]`` (``fc``,
    ``head.fc``, ``classifier``) when it names a linear layer, else None."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier")
    if isinstance(name, str):
        try:
            if isinstance(model.get_submodule(name), nn.Linear):
                return name
        except AttributeError:
            return None
    return None


def split_model(model: nn.Module, *, name: str, weights_id: str, source: str) -> Backbone:
    """Body (image → pooled features) and source head, with stages from ``feature_info``."""
    from tl_advise.advisor.measure.images.backbones import torchvision_models

    head_name = classifier_name(model)
    head: nn.Module
    if head_name is None:
        head_name, head = torchvision_models.find_head(model)
    else:
        head = model.get_submodule(head_name)
    assert isinstance(head, nn.Linear)
    ends = feature_modules(model)
    stages = (stages_from_feature_info(model, ends, head_name) if ends
              else torchvision_models.discover_stages(model, head_name))
    torchvision_models.replace_module(model, head_name, nn.Identity())
    info = BackboneInfo(
        name=name, weights=weights_id, source="timm" if source == "timm" else "random",
        feature_dim=int(head.in_features), preprocessing=preprocessing_of(model),
        stages=[s.name for s in stages], has_batchnorm=has_batchnorm(model), calibrated=False,
    )
    categories = None
    if head.out_features == 1000:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        categories = list(_IMAGENET_CATEGORIES)
    return Backbone(info=info, body=model, head=head, stages=stages, categories=categories,
                    extra={"head_name": head_name, "timm_name": split_name(name)[0]})


OFFLINE_HINT = ("Offline? timm fetches pretrained weights from the Hugging Face Hub; with no network, fill its "
                "cache (HF_HOME) on a machine that has one, or use an offline backbone: efficientnet_lite0 (the "
                "default), efficientnet_lite1, efficientnet_lite2, or a torchvision name whose weights file is in "
                "$TORCH_HOME/hub/checkpoints (`tl-advise backbones`)")


def build(spec_name: str, *, pretrained: bool = True) -> Backbone:
    import timm

    full, arch = split_name(spec_name)
    if not is_timm_model(spec_name):
        raise BackboneError(f"unknown backbone {spec_name!r}: neither tl-advise, torchvision nor timm knows "
                            f"{arch!r}; `tl-advise backbones --all` lists the names")
    if not pretrained:
        model = timm.create_model(full, pretrained=False)
        return split_model(model, name=spec_name, weights_id="random", source="random")
    try:
        model = timm.create_model(full, pretrained=True)
    except Exception as exc:  # no network, no such pretrained tag, a Hub error …
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise BackboneError(f"could not get timm's pretrained weights for {full!r} "
                            f"({exc.__class__.__name__}: {first}). {OFFLINE_HINT}") from None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    tag = cfg.get("tag") or ""
    weights_id = f"timm:{arch}.{tag}" if tag else f"timm:{full}"
    return split_model(model, name=spec_name, weights_id=weights_id, source="timm")
