"""The recommendation's optimizer by name, over parameter groups with their own learning rates."""

from __future__ import annotations

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
