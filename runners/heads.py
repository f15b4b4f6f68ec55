"""The new classifier head and the backbone body + head model that the runners train."""

from __future__ import annotations

import torch
from torch import nn

HIDDEN_UNITS = 256  # the guide's dense 256


class ClassifierHead(nn.Sequential):
    """The guide's head on pooled features: batch norm → dense 256 ReLU → dropout → linear (logits)."""

    def __init__(self, in_features: int, n_classes: int, *, dropout: float = 0.5,
                 hidden: int = HIDDEN_UNITS) -> None:
        super().__init__(
            nn.BatchNorm1d(in_features),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
        self.in_features = in_features
        self.n_classes = n_classes
        self.dropout = dropout
        self.hidden = hidden

    def config(self) -> dict[str, float | int]:
        return {"in_features": self.in_features, "n_classes": self.n_classes, "dropout": self.dropout,
                "hidden": self.hidden}


class TransferModel(nn.Module):
    """``head(body(x))``. While no body parameter trains, the body runs without autograd (faster, and
    nothing in it can change)."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def body_trains(self) -> bool:
        return any(p.requires_grad for p in self.body.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.body_trains():
            features = self.body(x)
        else:
            with torch.no_grad():
                features = self.body(x)
        return self.head(features)
