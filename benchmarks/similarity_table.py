"""The similarity signals and the combined score on every shared dataset, as a Markdown table.

    .venv/bin/python benchmarks/similarity_table.py [--per-class 64] [--seed 0] [--cache-dir DIR]

A person's label ("close"/"far" from ImageNet photos) comes from ../shared/README.md; the table shows
whether the combined score orders the datasets the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tl_advise.advisor import advise

REPO = Path(__file__).resolve().parents[1]
# What a person says about each dataset (../shared/README.md, "closeness to ImageNet photos").
PERSON_LABEL = {
    "hymenoptera": "close",
    "flowers5_small": "close",
    "lfw_faces_vs_nonfaces": "in between",
    "eurosat_small": "far",
    "pneumoniamnist": "far",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("TL_ADVISE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not (args.shared / "data").is_dir():
        logging.error("no datasets under %s/data (set TL_ADVISE_SHARED)", args.shared)
        return 2
    header = ("dataset", "a person says", "BN shift early / late", "head max prob / entropy",
              "logreg: features vs pixels", "score", "label", "strategy")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, person in PERSON_LABEL.items():
        r = advise(args.shared / "data" / name, per_class=args.per_class, seed=args.seed, cache_dir=args.cache_dir)
        s = r.similarity
        bn = f"{s.bn_shift.early:.2f} / {s.bn_shift.late:.2f}" if s.bn_shift else "n/a"
        head = f"{s.head.mean_max_prob:.2f} / {s.head.mean_entropy:.2f}" if s.head else "n/a"
        sep = (f"{s.separability.logreg_accuracy:.2f} vs {s.separability.pixel_logreg_accuracy:.2f}"
               if s.separability else "n/a")
        print(f"| `{name}` | {person} | {bn} | {head} | {sep} | {s.score:.2f} | {s.label} | "
              f"`{r.recommendation.strategy}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
