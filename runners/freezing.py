"""Which backbone stages train: ``requires_grad`` per stage, and frozen batch norm kept in inference mode.

Freezing is a pure function of (backbone, stage names) and is re-applied at the start of every phase
and after every resume, so a resumed run can never silently train (or freeze) the wrong layers.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from tl_advise.advisor.measure.images.backbones import Backbone
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import BatchNormMode


def check_stage_names(backbone: Backbone, names: Iterable[str]) -> list[str]:
    known = [s.name for s in backbone.stages]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)} for {backbone.name}; "
                          f"its stages are: {', '.join(known)}")
    return [n for n in known if n in set(names)]


def trainable_modules(backbone: Backbone, stage_names: Iterable[str]) -> list[nn.Module]:
    """The body's modules that train: those of the named stages, or the whole body when every stage is named
    (so layers outside any stage train too in a full fine-tune)."""
    wanted = set(stage_names)
    if wanted and wanted >= {s.name for s in backbone.stages}:
        return [backbone.body]
    return [m for stage in backbone.stages if stage.name in wanted for m in stage.modules]


def freeze_body(backbone: Backbone, train_stages: Iterable[str]) -> list[nn.Module]:
    """Freeze every body parameter, then unfreeze ``train_stages``; returns the training modules."""
    modules = trainable_modules(backbone, train_stages)
    for p in backbone.body.parameters():
        p.requires_grad_(False)
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    return modules


def frozen_batchnorm(backbone: Backbone, training_modules: Iterable[nn.Module], *, mode: BatchNormMode
                     ) -> list[nn.Module]:
    """The body's BN layers to keep in inference mode: those outside every training module, or, in
    ``"inference"`` mode, all of them. Switching the unfrozen stages' BN to batch statistics on a distant
    domain changes the features under the trained head at once: measured on pneumoniamnist, the first
    fine-tuning epoch lost 7 points of validation accuracy, which early stopping then never recovered."""
    layers: list[nn.Module] = [m for m in backbone.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if mode == "inference":
        return layers
    inside = {id(m) for module in training_modules for m in module.modules()}
    return [m for m in layers if id(m) not in inside]


def set_train_mode(model: nn.Module, frozen_bn: Iterable[nn.Module]) -> None:
    """``model.train()``, except frozen BN layers, which keep using (and keeping) their running statistics."""
    model.train()
    for bn in frozen_bn:
        bn.eval()
