"""TensorBoard scalars for ``--run``: one event folder per strategy under ``<output_dir>/tensorboard``.

``tensorboard --logdir <output_dir>/tensorboard`` then shows the strategies side by side: train and
val loss, val accuracy, the LR of every param group, the phase (0 head, 1 fine-tuning) and seconds per
epoch, each against the epoch counted over the whole run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from tl_advise.runners.tracking import (
    AnyStrategyRun,
    EndStatus,
    EpochRecord,
    RunLogger,
    epoch_scalars,
    final_scalars,
    flat_params,
)


class TensorBoardLogger(RunLogger):
    name = "TensorBoard"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writers: dict[str, SummaryWriter] = {}
        self._had_events: dict[str, bool] = {}
        self._epochs_logged: dict[str, int] = {}

    def _writer(self, strategy: str) -> SummaryWriter:
        if strategy not in self._writers:
            folder = self.log_dir / strategy
            self._had_events[strategy] = any(folder.glob("events.out.tfevents.*"))
            self._writers[strategy] = SummaryWriter(log_dir=str(folder))
        return self._writers[strategy]

    def start_strategy(self, strategy: str, params: dict[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in flat_params(params).items())  # Markdown code block
        self._writer(strategy).add_text("recipe", text)

    def log_epoch(self, record: EpochRecord) -> None:
        writer = self._writer(record.strategy)
        for tag, value in epoch_scalars(record).items():
            writer.add_scalar(tag, value, global_step=record.log.epoch)
        writer.flush()
        self._epochs_logged[record.strategy] = self._epochs_logged.get(record.strategy, 0) + 1

    def end_strategy(self, run: AnyStrategyRun, folder: Path) -> None:
        writer = self._writer(run.strategy)
        if not self._epochs_logged.get(run.strategy) and not self._had_events[run.strategy]:
            # Read back from an earlier run that was not tracked: its curve still belongs here (no LRs).
            for log in run.curves:
                for tag, value in (("loss/train", log.train_loss), ("loss/val", log.val_loss),
                                   ("accuracy/val", log.val_accuracy)):
                    writer.add_scalar(tag, value, global_step=log.epoch)
        step = run.best_epoch or run.epochs_run
        for tag, value in final_scalars(run).items():
            writer.add_scalar(f"final/{tag}", value, global_step=step)
        writer.flush()

    def close(self, status: EndStatus) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
