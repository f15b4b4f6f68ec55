"""Train the advised strategy in your own Lightning loop, from tl-advise's building blocks (docs/building-blocks.md).

    pip install "tl-advise[lightning]"
    tl-advise DATA --format json -o advice.json             # advise once (or let this script do it)
    python docs/examples/lightning_finetune.py DATA --advice advice.json [--strategy S] [--max-epochs N]

Two phases, as ``--run`` trains them: the new head on the frozen backbone, then the advised stages at their
per-stage learning rates. Each phase is one ``Trainer.fit``; ``configure_optimizers`` returns the phase's advised
optimizer and its warm-up + cosine schedule (stepped once per epoch), the training step uses the advised loss and
mixup, and the frozen batch-norm layers stay in inference mode. Like ``--run``, a phase starts from the best
weights so far (lowest validation loss) and early-stops when the recipe says so.

DATA is a class folder (``DATA/<class>/...``), or ``DATA/train`` + ``DATA/val`` ones; without ``val`` a seeded
20 % of the images validate.
"""

from __future__ import annotations

import argparse
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from tl_advise.advisor import advise_session
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.runners import RunOptions, blocks
from tl_advise.schema.models import AdviceResult, StrategyId

logger = logging.getLogger("lightning_finetune")

PATIENCE = 3  # as --run: epochs without a val-loss improvement before a phase stops


class AdvisedFinetune(L.LightningModule):
    """The advised model, trained one phase per ``Trainer.fit`` (set ``phase`` before each)."""

    def __init__(self, advised: blocks.TrainingBlocks) -> None:
        super().__init__()
        self.advised = advised
        self.model = advised.model  # the backbone copy + new head: the only module with weights
        self.loss = advised.loss
        self.phase: blocks.PhasePlan = advised.phases[0]
        self.setup_: blocks.PhaseSetup | None = None
        self.best_loss = float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.lrs_at_epoch_start: list[tuple[str, dict[str, float]]] = []  # (phase, LR per param group)
        self.frozen_bn_training: list[bool] = []  # per epoch: whether a frozen BN layer was in train mode (never)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        # Freezes the model for this phase and builds its optimizer (per-stage param groups) and schedule.
        self.setup_ = self.advised.setup_phase(self.phase)
        # Lightning warns about modules in eval mode when training starts: the frozen batch norm, on purpose.
        self.setup_.train_mode(self.model)
        return {"optimizer": self.setup_.optimizer,
                "lr_scheduler": {"scheduler": self.setup_.scheduler, "interval": "epoch"}}

    def on_train_epoch_start(self) -> None:
        assert self.setup_ is not None
        self.setup_.train_mode(self.model)  # model.train(), frozen batch norm kept in inference mode
        self.lrs_at_epoch_start.append((self.phase.name, self.setup_.learning_rates()))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if batch_idx == 0 and self.setup_ is not None:
            self.frozen_bn_training.append(any(bn.training for bn in self.setup_.frozen_batchnorm))
        if self.advised.mixup is not None:  # soft targets; the advised loss is the soft-target one then
            images, labels = self.advised.mixup(images, labels)
        loss = self.loss(self.model(images), labels)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.log("val_loss", F.cross_entropy(logits, labels), prog_bar=True, batch_size=len(images))
        self.log("val_acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True, batch_size=len(images))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        val_loss = float(self.trainer.callback_metrics["val_loss"])
        if val_loss < self.best_loss:
            self.best_loss = val_loss
            self.best_state = copy.deepcopy(self.model.state_dict())


@dataclass
class Outcome:
    advised: blocks.TrainingBlocks
    module: AdvisedFinetune
    epochs_per_phase: dict[str, int] = field(default_factory=dict)  # epochs trained
    val_loss: float = float("inf")


ImageSet: TypeAlias = ImageFolder | Subset[Any]


def image_folders(data: Path, advised: blocks.TrainingBlocks, seed: int) -> tuple[ImageSet, ImageSet]:
    """(train, val) image datasets with the advised train and eval transforms."""
    train_root = data / "train" if (data / "train").is_dir() else data
    train = ImageFolder(str(train_root), transform=advised.train_transform)
    if train.classes != advised.class_names:
        raise SystemExit(f"{train_root} has classes {train.classes}; the advice has {advised.class_names}")
    if (data / "val").is_dir():
        return train, ImageFolder(str(data / "val"), transform=advised.eval_transform)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, len(order) // 5)
    evaluated = ImageFolder(str(train_root), transform=advised.eval_transform)
    return Subset(train, order[n_val:]), Subset(evaluated, order[:n_val])


def train(data: Path, result: AdviceResult, backbone: Backbone, *, strategy: StrategyId | None = None,
          options: RunOptions | None = None, output_dir: Path = Path("lightning-runs"), num_workers: int = 0,
          seed: int = 0) -> Outcome:
    """Train ``strategy`` (default: the recommended one) of ``result`` on ``data``, phase by phase."""
    L.seed_everything(seed, workers=True)
    advised = blocks.from_advice(result, backbone, strategy=strategy, options=options, seed=seed)
    logger.info("%s: phases %s", advised.strategy, ", ".join(f"{p.name} {p.epochs} ep" for p in advised.phases))
    train_set, val_set = image_folders(data, advised, seed)
    batch_size = advised.recipe.batch_size
    last_alone = len(train_set) % batch_size == 1  # batch norm cannot train on a batch of one image
    train_loader: DataLoader[Any] = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                               num_workers=num_workers, drop_last=last_alone)
    val_loader: DataLoader[Any] = DataLoader(val_set, batch_size=64, num_workers=num_workers)

    module = AdvisedFinetune(advised)
    outcome = Outcome(advised, module)
    for phase in advised.phases:
        if module.best_state is not None:  # a phase starts from the best weights so far, as --run does
            module.model.load_state_dict(module.best_state)
        module.phase = phase
        callbacks: list[Callback] = ([EarlyStopping(monitor="val_loss", patience=PATIENCE)]
                     if advised.recipe.regularization.early_stopping else [])
        trainer = L.Trainer(max_epochs=phase.epochs, default_root_dir=output_dir / advised.strategy / phase.name,
                            callbacks=callbacks, enable_checkpointing=False, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            accelerator="auto", devices=1)
        trainer.fit(module, train_loader, val_loader)
        outcome.epochs_per_phase[phase.name] = trainer.current_epoch
    if module.best_state is not None:
        module.model.load_state_dict(module.best_state)
    outcome.val_loss = module.best_loss
    return outcome


def main(argv: list[str] | None = None) -> Outcome:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--advice", type=Path, help="an advice saved with `tl-advise DATA --format json -o FILE`")
    parser.add_argument("--strategy", help="train this strategy instead of the recommended one")
    parser.add_argument("--max-epochs", type=int, help="cap every phase at this many epochs (as --budget Nep)")
    parser.add_argument("--image-size", type=int, help="train at this input size (as --image-size)")
    parser.add_argument("--output-dir", type=Path, default=Path("lightning-runs"))
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    if args.advice is not None:
        result = AdviceResult.model_validate_json(args.advice.read_text(encoding="utf-8"))
        backbone = load_backbone(result.backbone.name)
    else:
        session = advise_session(args.data)
        result, backbone = session.result, session.backbone
    options = RunOptions(output_dir=args.output_dir, max_epochs=args.max_epochs, image_size=args.image_size)
    outcome = train(args.data, result, backbone, strategy=args.strategy, options=options,
                    output_dir=args.output_dir, num_workers=args.workers)
    print(f"{outcome.advised.strategy}: epochs {outcome.epochs_per_phase}, best val loss {outcome.val_loss:.4f}")
    return outcome


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
