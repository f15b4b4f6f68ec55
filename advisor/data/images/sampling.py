"""A seeded, stratified sample of the dataset: what the advisor embeds."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from tl_advise.advisor.data.images.scan import ImageRecord, display_name
from tl_advise.advisor.defaults import DEFAULT_PER_CLASS, DEFAULT_TOTAL
from tl_advise.schema.models import DuplicateGroup, printable


def without_duplicates(records: Sequence[ImageRecord], root: Path,
                       duplicates: Sequence[DuplicateGroup]) -> list[ImageRecord]:
    """Keep one file of each byte-identical group, so a copy cannot sit on both sides of a CV fold."""
    extra_copies = {p for group in duplicates for p in sorted(group.paths)[1:]}
    if not extra_copies:
        return list(records)
    # Report paths are printable (escaped) names: compare file names first, so that only a record whose
    # name is a copy's builds its Path (which matters with a million records).
    extra_names = {p.rpartition("/")[2] for p in extra_copies}
    return [r for r in records
            if printable(r.name) not in extra_names or display_name(r.path, root) not in extra_copies]


def stratified_sample(records: Sequence[ImageRecord], *, per_class: int | None = DEFAULT_PER_CLASS,
                      total: int | None = DEFAULT_TOTAL, seed: int = 0) -> list[ImageRecord]:
    """Up to ``per_class`` images from every class, at most ``total`` overall (None: no cap).

    When ``total`` binds, every class gets the same share, so small classes are never crowded out.
    The result is deterministic for a seed and sorted like the input.
    """
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_class[record.class_name].append(i)
    cap = per_class
    if total is not None and by_class:
        share = max(total // len(by_class), 1)
        cap = share if cap is None else min(cap, share)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for name in sorted(by_class):
        members = sorted(by_class[name], key=lambda i: records[i].path_parts)  # path order
        if cap is not None and len(members) > cap:
            members = rng.sample(members, cap)
        chosen.update(members)
    return [records[i] for i in sorted(chosen)]
