"""The recommendation's optimizer by name, over parameter groups with their own learning rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from tl_advise.schema.errors import ConfigError

SGD_MOMENTUM = 0.9


def make_optimizer(name: str, groups: Sequence[dict[str, Any]], *, weight_decay: float) -> torch.optim.Optimizer:
    """``groups``: ``{"params": [...], "lr": float, "name": str}`` each; empty groups are left out."""
    kept = [dict(g) for g in groups if g["params"]]
    if not kept:
        raise ConfigError("nothing to train: every parameter group is empty")
    key = name.lower()
    if key == "adam":
        return torch.optim.Adam(kept, weight_decay=weight_decay)
    if key == "adamw":
        return torch.optim.AdamW(kept, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(kept, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay)
    raise ConfigError(f"The optimizer must be one of adam, adamw, sgd. Got {name!r} instead.")


def make_scheduler(optimizer: torch.optim.Optimizer, *, epochs: int, warmup_epochs: int = 0
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """A phase's learning-rate schedule, stepped once per epoch: cosine decay to 0 over the phase; with
    ``warmup_epochs``, first a linear warm-up (epoch e of w at (e + 1) / (w + 1) of the rate), then cosine
    over the epochs that remain."""
    if warmup_epochs <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    decay_epochs = max(epochs - warmup_epochs, 1)

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / decay_epochs))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
