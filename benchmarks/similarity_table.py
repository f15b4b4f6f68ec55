"""The similarity signals and the combined score on every shared dataset, as a Markdown table.

    .venv/bin/python benchmarks/similarity_table.py [--backbone mobilenet_v2] [--probes] [--json out.json]

A person's label ("close"/"far" from ImageNet photos) comes from ../shared/README.md; the table shows
whether the combined score orders the datasets the same way. ``--probes`` adds the controlled probes of
similarity-notes point 9 (greyscale, 32 px and 28 px-greyscale copies of hymenoptera, written to a
temporary folder, never into ../shared) and scikit-learn's digits; ``--json`` writes every raw signal,
which is what the anchors of a backbone's profile in ``rules/default_rules.toml`` are set from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _provenance import provenance
from PIL import Image

from tl_advise.advisor import advise
from tl_advise.advisor.data.images.sample_data import write_digits
from tl_advise.rules import signals_from_measurements

REPO = Path(__file__).resolve().parents[1]
# What a person says about each dataset (../shared/README.md, "closeness to ImageNet photos").
PERSON_LABEL = {
    "hymenoptera": "close",
    "flowers5_small": "close",
    "lfw_faces_vs_nonfaces": "in between",
    "eurosat_small": "far",
    "pneumoniamnist": "far",
}


def _greyscale(im: Image.Image) -> Image.Image:
    return im.convert("L").convert("RGB")


def _shrink(px: int) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.convert("RGB").resize((px, px), Image.Resampling.BILINEAR)


# Controlled probes [similarity-notes 9]: the content stays ImageNet-like, the image statistics move.
PROBES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "hymenoptera greyscale": _greyscale,
    "hymenoptera 32 px": _shrink(32),
    "hymenoptera 28 px greyscale": lambda im: _greyscale(_shrink(28)(im)),
}


def write_probe(src: Path, dest: Path, transform: Callable[[Image.Image], Image.Image]) -> Path:
    """A transformed copy of the train split of ``src`` (class folders kept) under ``dest``."""
    for cls in sorted(p for p in (src / "train").iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir()):
            with Image.open(f) as im:
                transform(im).save(dest / cls.name / f"{f.stem}.png")
    return dest


def row(name: str, person: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    r = advise(folder, backbone=args.backbone, per_class=args.per_class, seed=args.seed, cache_dir=args.cache_dir)
    s = r.similarity
    return {"dataset": name, "person": person, "score": s.score, "label": s.label,
            "strategy": r.recommendation.strategy, "calibrated": r.backbone.calibrated,
            "signals": signals_from_measurements(s.bn_shift, s.head, s.separability),
            "pixel_logreg": s.separability.pixel_logreg_accuracy if s.separability else None,
            "logreg": s.separability.logreg_accuracy if s.separability else None}


def markdown(rows: list[dict[str, Any]], backbone: str) -> str:
    header = ("dataset", "a person says", "BN shift early / late", "head max prob / entropy",
              "logreg: features vs pixels", "score", "label", "strategy")
    lines = [f"Backbone `{backbone}`.", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        sig = r["signals"]

        def pair(a: str, b: str, sig: dict[str, float] = sig) -> str:
            return f"{sig[a]:.2f} / {sig[b]:.2f}" if a in sig and b in sig else "n/a"

        sep = f"{r['logreg']:.2f} vs {r['pixel_logreg']:.2f}" if r["logreg"] is not None else "n/a"
        lines.append(f"| `{r['dataset']}` | {r['person']} | {pair('bn_shift_early', 'bn_shift_late')} | "
                     f"{pair('head_max_prob', 'head_entropy')} | {sep} | {r['score']:.2f} | {r['label']} | "
                     f"`{r['strategy']}` |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("TL_ADVISE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--probes", action="store_true", help="add greyscale / low-resolution probes and digits")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw signal here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not (args.shared / "data").is_dir():
        logging.error("no datasets under %s/data (set TL_ADVISE_SHARED)", args.shared)
        return 2
    rows = [row(name, person, args.shared / "data" / name, args) for name, person in PERSON_LABEL.items()]
    if args.probes:
        with tempfile.TemporaryDirectory(prefix="tl-advise-probes-") as tmp:
            for i, (name, transform) in enumerate(PROBES.items()):
                folder = write_probe(args.shared / "data" / "hymenoptera", Path(tmp) / f"probe{i}", transform)
                rows.append(row(name, "close content, moved statistics", folder, args))
            write_digits(Path(tmp) / "digits")
            rows.append(row("sklearn digits", "far", Path(tmp) / "digits", args))
    print(markdown(rows, args.backbone))
    if args.json:
        args.json.write_text(json.dumps({"backbone": args.backbone, "per_class": args.per_class, "seed": args.seed,
                                         "provenance": provenance(__file__), "rows": rows}, indent=2),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
