"""Feature-extraction runner (embeddings computed once) vs the same head with the frozen backbone run
every epoch — same data, same head, same batches, same seed, in one run.

    .venv/bin/python benchmarks/bench_feature_extraction.py [--dataset hymenoptera] [--epochs 10]

Both sides use the runners' own training loop (``runners.train.fit``) with early stopping switched off,
so the only difference is where the features come from. Target (issue #3): the same validation
accuracy, and at least 5x faster for 10 epochs. Writes benchmarks/results/feature_extraction.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from _provenance import provenance
from torch.utils.data import DataLoader, Dataset

from tl_advise.advisor.data.images.scan import ImageRecord, scan_dataset
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.advisor.measure.images.embed import default_workers, embed
from tl_advise.advisor.measure.images.imaging import eval_transform, open_rgb
from tl_advise.runners.data import epoch_generator
from tl_advise.runners.feature_extraction import feature_batches
from tl_advise.runners.heads import ClassifierHead
from tl_advise.runners.train import Batch, PhasePlan, PreparedPhase, TrainingJob, fit, predict_batches

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("bench_feature_extraction")
BATCH_SIZE = 32
HEAD_LR = 1e-3
NO_EARLY_STOP = 10**6


class _Images(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, records: list[ImageRecord], backbone: Backbone) -> None:
        self.records = records
        self.transform = eval_transform(backbone.preprocessing)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        return self.transform(open_rgb(str(record.path))), record.label


def _frozen_batches(backbone: Backbone, images: _Images, index_batches: Iterator[Batch]) -> Iterator[Batch]:
    """The baseline: every batch of images goes through the frozen backbone, every epoch."""
    batches = [idx.tolist() for idx, _ in index_batches]
    loader = DataLoader(images, batch_sampler=batches, num_workers=default_workers(),
                        generator=torch.Generator())  # its own generator: the global RNG drives dropout
    for x, y in loader:
        with torch.no_grad():  # not around the yield: grad mode is thread state, the head must train
            features = backbone.body(x.contiguous(memory_format=torch.channels_last))
        yield features, y


def _train_head(backbone: Backbone, n_classes: int, train_batches: object, val_batches: object,
                epochs: int, seed: int, state_dir: Path) -> tuple[float, float]:
    """Train the guide's head with the runners' loop; returns (val accuracy, seconds)."""
    torch.manual_seed(seed)
    head = ClassifierHead(backbone.info.feature_dim, n_classes)

    def prepare(_phase: PhasePlan) -> PreparedPhase:
        return PreparedPhase(torch.optim.Adam(head.parameters(), lr=HEAD_LR), [])

    start = time.perf_counter()
    result = fit(TrainingJob(
        strategy="feature_extraction", model=head, phases=[PhasePlan("head", epochs, [])],
        prepare_phase=prepare, train_batches=train_batches, n_train_batches=1,  # type: ignore[arg-type]
        val_batches=val_batches, device=torch.device("cpu"),  # type: ignore[arg-type]
        state_path=state_dir / "state.pt", fingerprint="bench", patience=NO_EARLY_STOP, progress=False,
    ))
    seconds = time.perf_counter() - start
    head.load_state_dict(result.best_state)
    logits, labels = predict_batches(head, val_batches(), torch.device("cpu"))  # type: ignore[operator]
    return float((logits.argmax(1) == labels).float().mean()), seconds


def run(dataset: Path, epochs: int, seed: int) -> dict[str, object]:
    scan = scan_dataset(dataset)
    train = scan.split_records(scan.train_split)
    if "val" in scan.summary.split_counts:
        val = scan.split_records("val")
    else:  # a flat dataset: every fifth image validates
        train, val = [r for i, r in enumerate(train) if i % 5], train[::5]
    backbone = load_backbone().eval()
    backbone.body.to(memory_format=torch.channels_last)
    n_classes = len(scan.classes)
    train_y = torch.tensor([r.label for r in train])
    val_y = torch.tensor([r.label for r in val])

    with tempfile.TemporaryDirectory() as tmp:
        # Ours: embed once (no cache: the cold cost is counted), then train on the stored features.
        start = time.perf_counter()
        train_set = embed(backbone, train, root=scan.root, device=torch.device("cpu"), cache=ArrayCache(None),
                          collect_bn=False)
        val_set = embed(backbone, val, root=scan.root, device=torch.device("cpu"), cache=ArrayCache(None),
                        collect_bn=False)
        embed_s = time.perf_counter() - start
        train_x, val_x = torch.from_numpy(train_set.features), torch.from_numpy(val_set.features)
        ours_acc, ours_train_s = _train_head(
            backbone, n_classes,
            lambda e: feature_batches(train_x, train_y, BATCH_SIZE, epoch_generator(seed, e)),
            lambda: feature_batches(val_x, val_y, 256), epochs, seed, Path(tmp) / "ours")

        # Baseline: the same batches, but the frozen backbone runs over the images every epoch.
        train_images, val_images = _Images(train, backbone), _Images(val, backbone)
        train_idx, val_idx = torch.arange(len(train)), torch.arange(len(val))
        base_acc, base_s = _train_head(
            backbone, n_classes,
            lambda e: _frozen_batches(backbone, train_images, feature_batches(
                train_idx, train_y, BATCH_SIZE, epoch_generator(seed, e))),
            lambda: _frozen_batches(backbone, val_images, feature_batches(val_idx, val_y, 256)),
            epochs, seed, Path(tmp) / "baseline")

    ours_s = embed_s + ours_train_s
    return {
        "dataset": dataset.name, "epochs": epochs, "seed": seed, "n_train": len(train), "n_val": len(val),
        "ours": {"embed_once_s": round(embed_s, 2), "head_training_s": round(ours_train_s, 2),
                 "total_s": round(ours_s, 2), "val_accuracy": round(ours_acc, 4)},
        "baseline": {"total_s": round(base_s, 2), "val_accuracy": round(base_acc, 4)},
        "speedup": round(base_s / ours_s, 2),
        "provenance": provenance(__file__),
    }


def markdown(r: dict[str, object]) -> str:
    ours, base = r["ours"], r["baseline"]
    assert isinstance(ours, dict) and isinstance(base, dict)
    return "\n".join([
        f"Feature-extraction runner on `{r['dataset']}` ({r['n_train']} train / {r['n_val']} val images, "
        f"{r['epochs']} head epochs, seed {r['seed']}, CPU):",
        "",
        "| | val accuracy | time |",
        "|---|---|---|",
        f"| embeddings computed once (ours) | {ours['val_accuracy']:.4f} | {ours['total_s']:.1f} s "
        f"(embedding {ours['embed_once_s']:.1f} s + head {ours['head_training_s']:.1f} s) |",
        f"| frozen backbone run every epoch | {base['val_accuracy']:.4f} | {base['total_s']:.1f} s |",
        "",
        f"Speed-up: **{r['speedup']}×** (target ≥ 5×).",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("TL_ADVISE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--dataset", default="hymenoptera")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    dataset = args.shared / "data" / args.dataset
    if not dataset.is_dir():
        logger.error("dataset %s is absent (set TL_ADVISE_SHARED)", dataset)
        return 2
    result = run(dataset, args.epochs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feature_extraction.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "feature_extraction.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
