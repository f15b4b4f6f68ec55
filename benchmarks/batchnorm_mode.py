"""Batch norm while fine-tuning: the rules' ``batchnorm`` setting, "inference" against "train", same run.

    .venv/bin/python benchmarks/batchnorm_mode.py                       # pneumoniamnist, finetune_last_layers
    .venv/bin/python benchmarks/batchnorm_mode.py DATA --strategy finetune_more_layers --device cuda

Trains one strategy twice with identical settings (seed, epochs, image size, data), once per mode, with
a rules override that changes nothing else (``extends = "default"``), and writes every epoch's validation
numbers to ``benchmarks/results/batchnorm_mode.{md,json}``. The question it answers: does switching the
unfrozen stages' batch norm to batch statistics at the start of fine-tuning cost accuracy?
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from _provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODES = ("train", "inference")

log = logging.getLogger("batchnorm_mode")


def override(strategy: str, mode: str, folder: Path) -> Path:
    path = folder / f"batchnorm-{mode}.toml"
    path.write_text(f'extends = "default"\n\n[strategies.{strategy}]\nbatchnorm = "{mode}"\n', encoding="utf-8")
    return path


def train(args: argparse.Namespace, mode: str, work: Path) -> dict[str, Any]:
    from tl_advise.advisor.api import advise_session
    from tl_advise.runners import RunOptions, run_advice

    session = advise_session(args.data, rules=override(args.strategy, mode, work), device=args.device,
                             cache_dir=work / "cache", seed=args.seed)
    report = run_advice(session, RunOptions(
        output_dir=work / f"run-{mode}", strategies=[args.strategy], head_epochs=args.head_epochs,
        finetune_epochs=args.finetune_epochs, image_size=args.image_size, patience=args.patience,
        seed=args.seed, device=args.device, num_workers=0, progress=False))
    run = report.runs[0]
    if run.val is None or run.settings is None:
        raise SystemExit(f"{args.strategy} ({mode}) failed: {run.error}")
    assert run.settings.batchnorm == mode
    return {"mode": mode, "val_accuracy": run.val.accuracy, "best_epoch": run.best_epoch,
            "train_time_s": run.train_time_s, "curves": [c.model_dump() for c in run.curves]}


def markdown(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Batch norm while fine-tuning",
        "",
        f"`{args.strategy}` on `{Path(args.data).name}`: {args.head_epochs} head + {args.finetune_epochs} "
        f"fine-tune epochs, {args.image_size} px, patience {args.patience}, seed {args.seed}, {args.device}. "
        "Validation accuracy (%) after every epoch; the kept model is the epoch with the lowest validation loss.",
        "",
        "| batchnorm | " + " | ".join(f"{c['phase']} {c['epoch']}" for c in runs[0]["curves"]) + " | kept |",
        "|---|" + "---|" * (len(runs[0]["curves"]) + 1),
    ]
    for r in runs:
        cells = " | ".join(f"{100 * c['val_accuracy']:.1f}" for c in r["curves"])
        lines.append(f"| {r['mode']} | {cells} | {100 * r['val_accuracy']:.1f} (epoch {r['best_epoch']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data" / "pneumoniamnist"))
    p.add_argument("--strategy", default="finetune_last_layers")
    p.add_argument("--head-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patience", type=int, default=10, help="high: show every epoch, not early stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS / "batchnorm_mode")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tl-advise-bn-") as tmp:
        runs = [train(args, mode, Path(tmp)) for mode in MODES]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"provenance": provenance(__file__, argv), "data": str(args.data), "strategy": args.strategy, "runs": runs},
        indent=1), encoding="utf-8")
    text = markdown(args, runs)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
