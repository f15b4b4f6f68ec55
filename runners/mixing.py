"""Batch mixing (mixup / cutmix) with timm's own ``Mixup``: soft targets, label smoothing folded in as timm does."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from tl_advise.schema.models import Augmentation

Batch = tuple[torch.Tensor, torch.Tensor]
BatchMixer = Callable[[torch.Tensor, torch.Tensor], Batch]


def batch_mixer(augmentation: Augmentation, *, label_smoothing: float, n_classes: int) -> BatchMixer | None:
    """(images, labels) -> (mixed images, soft targets), or None when the recipe mixes nothing.

    With both alphas set, timm picks mixup or cutmix for each batch (even odds). The targets carry the
    recipe's label smoothing, so the loss is timm's ``SoftTargetCrossEntropy`` (``train.fit`` uses it).
    """
    if not augmentation.mixes_batches:
        return None
    mixup = Mixup(mixup_alpha=augmentation.mixup_alpha, cutmix_alpha=augmentation.cutmix_alpha,
                  label_smoothing=label_smoothing, num_classes=n_classes)

    def mix(images: torch.Tensor, labels: torch.Tensor) -> Batch:
        if len(labels) % 2 == 0:
            mixed, targets = mixup(images, labels)
            return mixed, targets
        # timm mixes a batch with its own reverse, which needs an even batch: the odd image out trains
        # unmixed, with the same smoothed target, rather than being dropped.
        last = mixup_target(labels[-1:], n_classes, lam=1.0, smoothing=label_smoothing)
        if len(labels) == 1:
            return images, last
        mixed, targets = mixup(images[:-1], labels[:-1])
        return torch.cat([mixed, images[-1:]]), torch.cat([targets, last])

    return mix


def training_loss(*, label_smoothing: float, mixes_batches: bool) -> nn.Module:
    """The training loss: timm's ``SoftTargetCrossEntropy`` on mixed batches (their soft targets already carry
    the label smoothing), else cross-entropy with the recipe's label smoothing."""
    if mixes_batches:
        return SoftTargetCrossEntropy()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
