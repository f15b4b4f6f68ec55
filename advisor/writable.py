"""The one check for every path tl-advise writes (the cache, ``-o``, the run's output folder): never the
dataset, never inside it. The dataset is read-only to us; a folder written into it would also be read
back as a class by the next scan."""

from __future__ import annotations

import os
from pathlib import Path

from tl_advise.advisor.errors import ConfigError


def resolved(path: str | Path) -> Path:
    """Absolute, ``~`` expanded, symbolic links followed as far as the path exists."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def check_write_path(path: str | Path, dataset: str | Path, what: str) -> Path:
    """``path`` resolved; ``ConfigError`` when it is the dataset folder or anywhere inside it.

    ``what`` names the option in the message (``--cache-dir``, ``-o``, ``--output-dir``).
    """
    target = resolved(path)
    root = resolved(dataset)
    if target == root or target.is_relative_to(root):
        raise ConfigError(
            f"{what} {target} is inside the dataset {root}; tl-advise never writes into the dataset. "
            f"Choose a path outside it."
        )
    return target
