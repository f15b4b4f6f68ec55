"""``RunOptions``: every knob of ``--run`` in one validated place (overrides and budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tl_advise.advisor.errors import ConfigError
from tl_advise.advisor.models import StrategyId


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


def check_output_dir(output_dir: Path, dataset_root: Path) -> Path:
    """The output folder, resolved; refused when it is the dataset or inside it (the dataset is read-only)."""
    out = output_dir.expanduser().resolve()
    root = dataset_root.resolve()
    if out == root or out.is_relative_to(root):
        raise ConfigError(
            f"The output folder {out} is inside the dataset {root}; the dataset is never written to. "
            "Choose a folder outside it, e.g. ./tl-advise-runs"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"The output folder {out} exists and is not a folder.")
    return out
