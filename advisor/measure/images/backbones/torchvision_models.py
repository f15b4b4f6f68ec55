"""Every torchvision classification model by name, through the torchvision weights API.

Weights come from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or a download. Offline with an
empty cache, the error names the file and the folder it should be in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from tl_advise.advisor.measure.images.backbones.base import Backbone, Stage, has_batchnorm, merge_lone_norms
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.models import BackboneInfo, Preprocessing

logger = logging.getLogger(__name__)

# Containers whose children are the network's natural stages (torchvision's naming conventions).
_EXPANDABLE = {"features", "trunk_output", "encoder", "layers", "blocks", "stages"}


def classification_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def resolve_weights(arch: str, weights_name: str | None) -> WeightsEnum:
    """``resnet50`` + ``None`` → ``ResNet50_Weights.IMAGENET1K_V2`` (the resolved id, never "DEFAULT")."""
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise BackboneError(f"torchvision has no weights for {arch!r}") from exc
    key = weights_name or "DEFAULT"
    try:
        return enum[key]
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise BackboneError(f"{arch} has no weights {key!r}; choose one of: {names}") from None


def weights_cache_path(weights: WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def load_weights_state(weights: WeightsEnum, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The state dict from the hub cache, downloading it only when it is not there."""
    path = weights_cache_path(weights)
    if path.is_file():
        logger.debug("loading %s from %s", weights, path)
        return torch.load(path, map_location="cpu", weights_only=True)
    logger.info("downloading %s to %s", weights, path.parent)
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch…
        raise BackboneError(
            f"could not get the weights {weights} ({exc.__class__.__name__}: {exc}). "
            f"Offline? Put the file {path.name} in {path.parent} (it comes from {weights.url}), "
            "or point TORCH_HOME at a folder whose hub/checkpoints holds it."
        ) from exc


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The source classifier: the last ``nn.Linear`` registered in the model."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BackboneError(f"{model.__class__.__name__} has no linear classifier to split off")
    return linears[-1]


def replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, attr = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def discover_stages(model: nn.Module, head_name: str) -> list[Stage]:
    """Ordered parameter-bearing blocks, excluding the head; natural containers are expanded."""
    stages: list[Stage] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == head_name or not any(True for _ in child.parameters()):
                continue
            holds_head = head_name.startswith(path + ".")
            if holds_head or (name in _EXPANDABLE and len(list(child.children())) > 1):
                visit(child, path + ".")
            else:
                stages.append(Stage(path, [child]))

    visit(model, "")
    return merge_lone_norms(stages)


def preprocessing_of(weights: WeightsEnum | None) -> Preprocessing:
    if weights is None:  # a random or user-supplied model: the ImageNet defaults
        return Preprocessing(input_size=224, crop_pct=0.875, interpolation="bilinear",
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    tf = weights.transforms()
    crop = int(tf.crop_size[0])
    resize = int(tf.resize_size[0])
    interpolation = tf.interpolation.value
    return Preprocessing(
        input_size=crop, crop_pct=crop / resize, interpolation=interpolation,
        mean=tuple(tf.mean), std=tuple(tf.std),
    )


def split_model(model: nn.Module, *, name: str, weights_id: str, source: str,
                preprocessing: Preprocessing, categories: list[str] | None) -> Backbone:
    head_name, head = find_head(model)
    stages = discover_stages(model, head_name)
    replace_module(model, head_name, nn.Identity())
    info = BackboneInfo(
        name=name, weights=weights_id, source=source,
        feature_dim=int(head.in_features), preprocessing=preprocessing,
        stages=[s.name for s in stages], has_batchnorm=has_batchnorm(model), calibrated=False,
    )
    return Backbone(info=info, body=model, head=head, stages=stages, categories=categories,
                    extra={"head_name": head_name})


def build(arch: str, weights_name: str | None = None, *, pretrained: bool = True,
          progress: bool = False) -> Backbone:
    if arch not in classification_models():
        raise BackboneError(
            f"unknown backbone {arch!r}; `tl-advise backbones` lists the built-in ones and every "
            "torchvision classification model"
        )
    model = torchvision.models.get_model(arch, weights=None)
    if not pretrained:
        return split_model(model, name=arch, weights_id="random", source="random",
                           preprocessing=preprocessing_of(None), categories=None)
    weights = resolve_weights(arch, weights_name)
    model.load_state_dict(load_weights_state(weights, progress=progress))
    return split_model(
        model, name=arch, weights_id=f"{weights.__class__.__name__}.{weights.name}", source="torchvision",
        preprocessing=preprocessing_of(weights), categories=list(weights.meta.get("categories") or []) or None,
    )
