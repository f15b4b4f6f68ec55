"""``RunOptions``: every knob of ``--run`` in one validated place (overrides and budget).

In the schema layer so that the command line can validate a run's options (and the API can type them)
without importing the runners, which import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tl_advise.schema.models import StrategyId


class RunOptions(BaseModel):
    """What to train and under which budget. ``None`` means "as the recommendation says"."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    compare: bool = False
    strategies: list[StrategyId] | None = None
    max_epochs: int | None = Field(default=None, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0)
    head_epochs: int | None = Field(default=None, ge=0)
    finetune_epochs: int | None = Field(default=None, ge=0)
    head_lr: float | None = Field(default=None, gt=0)
    backbone_lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=2)
    image_size: int | None = Field(default=None, ge=16)
    max_train_images_per_class: int | None = Field(default=None, ge=1)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    patience: int = Field(default=3, ge=1)
    margin: float | Literal["auto"] = Field(
        default="auto", description="'auto': one binomial s.e. of the best val accuracy; or a fixed accuracy gap")
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    progress: bool = True
    num_workers: int | None = Field(default=None, ge=0)
    # Experiment tracking: None = TensorBoard when installed / MLflow when MLFLOW_TRACKING_URI is set;
    # True = required (missing package: an error); False = off.
    tensorboard: bool | None = None
    mlflow: bool | None = None
    mlflow_experiment: str = Field(default="tl-advise", min_length=1)

    @model_validator(mode="after")
    def _something_trains(self) -> RunOptions:
        if self.head_epochs == 0 and self.finetune_epochs == 0:
            raise ValueError("head_epochs 0 and finetune_epochs 0 leave nothing to train; give one phase an epoch")
        return self

    def budget(self) -> dict[str, float | int | bool | str | None]:
        """The options that change what is trained, as recorded in the report."""
        return {
            "max_epochs": self.max_epochs,
            "time_budget_s": self.time_budget_s,
            "head_epochs": self.head_epochs,
            "finetune_epochs": self.finetune_epochs,
            "head_lr": self.head_lr,
            "backbone_lr": self.backbone_lr,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "max_train_images_per_class": self.max_train_images_per_class,
            "val_fraction": self.val_fraction,
            "patience": self.patience,
            "seed": self.seed,
        }
