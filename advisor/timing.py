"""Named wall-clock steps, for the ``timings`` a report carries (scan, embed, similarity, …).

Steps nest: ``export`` runs inside ``load_backbone``, which runs inside ``measure``, inside the ``total``.
The report keeps them as one flat ``name -> seconds`` map; ``PARENT`` says which step holds which, so a
report shows each step inside the one that contains it and never adds a part to its whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

TOTAL = "total"
# step -> the step it runs inside (the timer checks this as it goes: ``StepTimer.parents``); the rest sit
# directly under the total.
PARENT: dict[str, str] = {
    "imports": "measure", "load_backbone": "measure", "export": "load_backbone", "embed": "measure",
    "similarity": "measure",
}


class StepTimer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.parents: dict[str, str] = {}  # step -> the step that was open when it ran (what PARENT declares)
        self._open: list[str] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as ``name``; a step that runs in pieces (imports) adds up."""
        if self._open:
            self.parents[name] = self._open[-1]
        self._open.append(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._open.pop()
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


def nested_timings(timings: Mapping[str, float]) -> str:
    """``total 19.01 s: scan 0.31 s, measure 18.68 s (imports 1.56 s, load_backbone 13.21 s (export 13.06 s),
    …), rules 0.00 s``: each step inside the one that contains it, so the parts beside each other are disjoint."""
    children: dict[str | None, list[str]] = {}
    for name in timings:
        if name == TOTAL:
            continue
        parent: str | None = PARENT.get(name)
        while parent is not None and parent not in timings:  # a step whose parent was not timed moves up
            parent = PARENT.get(parent)
        children.setdefault(parent, []).append(name)

    def tree(names: list[str]) -> str:
        return ", ".join(f"{name} {timings[name]:.2f} s"
                         + (f" ({tree(children[name])})" if name in children else "") for name in names)

    top = tree(children.get(None, []))
    if TOTAL not in timings:
        return top
    return f"total {timings[TOTAL]:.2f} s" + (f": {top}" if top else "")
