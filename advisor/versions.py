"""Versions and identities that cache keys are made of; nothing here imports torch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # not installed, or running from a source tree that is not installed
        return "0+unknown"


def tool_version() -> str:
    return package_version("tl-advise")


def weights_identity(weights: str | Path | None) -> object:
    """A local weights file as (resolved path, size, mtime): a changed file is a different backbone."""
    if weights is None:
        return None
    path = Path(weights)
    stat = path.stat() if path.is_file() else None
    return str(path.resolve()), stat.st_size if stat else None, stat.st_mtime_ns if stat else None
