"""What one strategy's runner needs, and the fingerprint that ties its checkpoint to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tl_advise.advisor.api import AdviceSession
from tl_advise.advisor.measure.cache import digest
from tl_advise.advisor.measure.images.embed import backbone_key
from tl_advise.runners import distributed
from tl_advise.runners.data import Splits, resized
from tl_advise.runners.distributed import LR_SCALING, BatchSplit
from tl_advise.runners.recipes import Recipe
from tl_advise.runners.tracking import RunLogger
from tl_advise.runners.train import EpochCallback
from tl_advise.schema.models import Preprocessing, RunSettings
from tl_advise.schema.run_options import RunOptions

MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"
RESULT_FILE = "run.json"


@dataclass
class StrategyContext:
    session: AdviceSession
    recipe: Recipe
    splits: Splits
    options: RunOptions
    device: torch.device
    folder: Path  # <output_dir>/<strategy>
    output_dir: Path
    epoch_callback: EpochCallback | None = None
    epoch_logger: RunLogger | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.session.scan.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return resized(self.session.backbone.preprocessing, self.recipe.image_size)

    @property
    def num_workers(self) -> int:
        if self.options.num_workers is not None:
            return self.options.num_workers
        from tl_advise.advisor.measure.images.embed import default_workers

        return default_workers()

    @property
    def batch_split(self) -> BatchSplit:
        """The recipe's batch over the processes of this run (one: all of it)."""
        return BatchSplit.of(self.recipe.batch_size, distributed.world().size)

    def fingerprint(self) -> str:
        """Everything that changes the numbers: backbone, recipe, the exact images, seed, patience."""
        root = self.session.scan.root

        def files(records: list) -> list[tuple[str, int, int]]:
            return [(r.path.relative_to(root).as_posix(), r.size_bytes, r.mtime_ns) for r in records]

        return digest(backbone_key(self.session.backbone), self.recipe.model_dump(mode="json"),
                      files(self.splits.train), files(self.splits.val), self.options.seed, self.options.patience)

    @property
    def patience(self) -> int | None:
        """Epochs without a val-loss improvement before a phase stops; None when the recipe has no early stop."""
        return self.options.patience if self.recipe.regularization.early_stopping else None

    def settings(self, *, train_transform: list[str]) -> RunSettings:
        """The run record: the recipe as trained (one field list, the recipe's own), what was built from it,
        and how its batch was split over the processes."""
        split = self.batch_split
        return RunSettings(**dict(self.recipe), train_transform=train_transform, n_train=len(self.splits.train),
                           n_val=len(self.splits.val), world_size=split.world_size, batch_size_per_rank=split.per_rank,
                           effective_batch_size=split.effective, lr_scaling=LR_SCALING)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.output_dir).as_posix()
