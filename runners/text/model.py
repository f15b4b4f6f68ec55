"""The parts a text strategy trains with: the classifier (encoder + pooling + head), its layer groups, the
optimizer's groups with layer-wise LR decay, the per-step warm-up/decay schedule, and token batches.

Batches are one tensor ``(batch, 2, length)`` — token ids and attention mask stacked — so that the shared
training loop (``runners.train.fit``: phases, early stopping, budget, checkpoints and exact resume), written
for image tensors, trains text unchanged: it moves ``x`` to the device and calls ``model(x)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tl_advise.rules.text_engine import EMBEDDINGS_GROUP, HEAD_GROUP
from tl_advise.runners.data import epoch_generator
from tl_advise.schema.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]
NO_DECAY_SUFFIX = ":no_decay"  # biases and LayerNorm weights take no weight decay [devlin2019]


# --------------------------------------------------------------------------- the model


class TextHead(nn.Module):
    """Standardise the pooled embedding with the training set's mean and spread (fixed buffers: the linear
    head then learns at a normal LR on L2-normalised embeddings, as a scaled logistic regression does),
    dropout, then one linear layer."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, width: int, n_classes: int, *, dropout: float, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float() if mean is not None else torch.zeros(width))
        self.register_buffer("std", std.clone().float().clamp(min=1e-6) if std is not None else torch.ones(width))
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(width, n_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout((pooled - self.mean) / self.std))


class TextClassifier(nn.Module):
    """A Hugging Face encoder, pooled as the backbone pools (mean over the mask, L2-normalised where the
    model's pipeline does so), then the head. ``forward`` takes the stacked ``(batch, 2, length)`` tensor."""

    def __init__(self, encoder: nn.Module, head: TextHead, *, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.pooling, self.normalize = pooling, normalize

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


def layer_modules(encoder: nn.Module) -> dict[str, nn.Module]:
    """``embeddings``, ``layer.0`` … of a BERT-style encoder (BERT, MiniLM, RoBERTa, ELECTRA: ``embeddings`` and
    ``encoder.layer``; DistilBERT: ``embeddings`` and ``transformer.layer``)."""
    embeddings = getattr(encoder, "embeddings", None)
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if stack is None:
        stack = getattr(getattr(encoder, "transformer", None), "layer", None)
    if embeddings is None or stack is None:
        raise ConfigError(f"{type(encoder).__name__}: the text runners tune BERT-style encoders (embeddings and a "
                          "list of transformer layers); this one has another structure")
    return {EMBEDDINGS_GROUP: embeddings, **{f"layer.{i}": layer for i, layer in enumerate(stack)}}


def freeze_for(model: TextClassifier, tuned: Sequence[str]) -> list[nn.Module]:
    """Freeze the whole encoder, then unfreeze the ``tuned`` layer groups (the head always trains). Returns the
    encoder modules to keep in inference mode (the frozen ones: no dropout where nothing learns)."""
    modules = layer_modules(model.encoder)
    unknown = [t for t in tuned if t not in modules]
    if unknown:
        raise ConfigError(f"unknown layer group(s) {', '.join(unknown)}; this encoder has {', '.join(modules)}")
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    for name in tuned:
        for p in modules[name].parameters():
            p.requires_grad_(True)
    for p in model.head.parameters():
        p.requires_grad_(True)
    frozen = [m for name, m in modules.items() if name not in tuned]
    pooler = getattr(model.encoder, "pooler", None)  # unused by mean pooling: never trains
    return [*frozen, *([pooler] if isinstance(pooler, nn.Module) else [])]


def _split_decay(named: Sequence[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay = [p for n, p in named if p.requires_grad and not (n.endswith("bias") or "LayerNorm" in n
                                                             or "layer_norm" in n)]
    keep = [p for n, p in named if p.requires_grad and (n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n)]
    return decay, keep


def param_groups(model: TextClassifier, rates: Mapping[str, float], *, weight_decay: float) -> list[dict[str, Any]]:
    """One optimizer group per layer group at its rate (``rates``: group -> LR, the head included), each split
    into the parameters with weight decay and those without (biases, LayerNorm)."""
    return module_param_groups({HEAD_GROUP: model.head, **layer_modules(model.encoder)}, rates,
                               weight_decay=weight_decay)


def module_param_groups(modules: Mapping[str, nn.Module], rates: Mapping[str, float], *, weight_decay: float
                        ) -> list[dict[str, Any]]:
    """``param_groups`` over named modules: the group ``name`` of each module named in ``rates`` (in the order of
    ``rates``) and ``name:no_decay``; parameters that do not train and empty groups left out."""
    groups: list[dict[str, Any]] = []
    for name, lr in rates.items():
        decay, keep = _split_decay(list(modules[name].named_parameters()))
        groups.append({"params": decay, "lr": lr, "name": name, "weight_decay": weight_decay})
        groups.append({"params": keep, "lr": lr, "name": name + NO_DECAY_SUFFIX, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def group_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Layer group -> peak LR, read back from the optimizer (``initial_lr`` once a schedule wraps it)."""
    rates: dict[str, float] = {}
    for group in optimizer.param_groups:
        name = str(group.get("name", "?")).removesuffix(NO_DECAY_SUFFIX)
        rates.setdefault(name, float(group.get("initial_lr", group["lr"])))
    return rates


def trainable_groups(model: TextClassifier) -> list[str]:
    """The layer groups (head included) with a parameter that has ``requires_grad``, bottom to top."""
    modules: dict[str, nn.Module] = {**layer_modules(model.encoder), HEAD_GROUP: model.head}
    return [name for name, m in modules.items() if any(p.requires_grad for p in m.parameters())]


# --------------------------------------------------------------------------- the schedule


class PerStepWarmupDecay(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over ``warmup_share`` of ``total_steps``, then linear decay to 0 (BERT's schedule),
    stepped after every optimizer step (a post hook). The loop's once-per-epoch ``step()`` is a no-op, and the
    state (steps taken) is saved and resumed with the loop's checkpoint."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_share: float) -> None:
        self._per_step = False
        total = max(total_steps, 1)
        warmup = math.ceil(warmup_share * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(total - warmup, 1))

        super().__init__(optimizer, factor)
        self._per_step = True
        optimizer.register_step_post_hook(lambda *_: self.advance())

    def advance(self) -> None:
        super().step()

    def step(self, epoch: int | None = None) -> None:
        if not getattr(self, "_per_step", False):  # the constructor's initial step
            super().step()


# --------------------------------------------------------------------------- batches


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def pack(ids: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """``(len(ids), 2, longest)``: ids padded with ``pad_id``, and the attention mask."""
    longest = max((len(x) for x in ids), default=1)
    out = torch.full((len(ids), 2, longest), 0, dtype=torch.long)
    out[:, 0] = pad_id
    for i, x in enumerate(ids):
        out[i, 0, :len(x)] = torch.tensor(x, dtype=torch.long)
        out[i, 1, :len(x)] = 1
    return out


def batch_starts(n_texts: int, batch_size: int) -> list[int]:
    """Where each training batch of an epoch starts; a last batch of one text is folded into the one before
    (a batch of one gives a noisy step)."""
    starts = list(range(0, n_texts, batch_size))
    if len(starts) > 1 and n_texts - starts[-1] == 1:
        starts.pop()
    return starts


def train_batches(ids: Sequence[Sequence[int]], labels: torch.Tensor, batch_size: int, *, seed: int, epoch: int,
                  pad_id: int) -> Iterator[Batch]:
    """One epoch's batches, shuffled by (seed, epoch) only (a resumed run sees the same ones); a last batch of
    one text is folded into the one before."""
    order = torch.randperm(len(ids), generator=epoch_generator(seed, epoch)).tolist()
    starts = batch_starts(len(order), batch_size)
    for i, start in enumerate(starts):
        chunk = order[start:starts[i + 1] if i + 1 < len(starts) else len(order)]
        yield pack([ids[j] for j in chunk], pad_id), labels[chunk]


def eval_order(ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Longest first: each evaluation batch pads to about its own length."""
    return np.argsort([-len(x) for x in ids], kind="stable")


def eval_batches(ids: Sequence[Sequence[int]], labels: torch.Tensor, batch_size: int, *, pad_id: int
                 ) -> Iterator[Batch]:
    """Batches in :func:`eval_order` (use :func:`predict_in_order` for results in the split's order)."""
    order = eval_order(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size].tolist()
        yield pack([ids[j] for j in chunk], pad_id), labels[chunk]


def restore_order(values: torch.Tensor, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Rows produced in :func:`eval_order` put back in the split's order."""
    out = torch.empty_like(values)
    out[torch.from_numpy(eval_order(ids).copy())] = values
    return out
