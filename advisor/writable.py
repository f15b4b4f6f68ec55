"""The one check for every path tl-advise writes (the cache, ``-o``, the run's output folder): never the
dataset, never inside it. The dataset is read-only to us; a folder written into it would also be read
back as a class by the next scan."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tl_advise.schema.errors import ConfigError


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
        where = "is the dataset itself" if target == root else f"is inside the dataset {root}"
        raise ConfigError(f"{what} {target} {where}; tl-advise never writes into the dataset. Choose a path "
                          "outside it.")
    return target


def check_can_create(path: str | Path, what: str) -> None:
    """Refuse, before any work, a file or folder that could never be written: the nearest folder that exists
    above it is a file, or is not writable. (The cache is exempt: a cache that cannot be written only warns.)"""
    target = resolved(path)
    above = next(p for p in target.parents if p.exists())
    if not above.is_dir():
        raise ConfigError(f"{what} {target} cannot be created: {above} is a file, not a folder. Choose another "
                          "path.")
    if not os.access(above, os.W_OK):
        raise ConfigError(f"{what} {target} cannot be created: the folder {above} is not writable. Choose "
                          "another path.")


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = False) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it over the old one: a crash,
    a kill or a full disk (``OSError``, re-raised) leaves the previous file as it was, never half a file.
    ``durable`` also flushes it to the disk before the rename (checkpoints: worth a resume)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _mode_for(path))
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(exc, OSError) and isinstance(exc.__context__, OSError):
            # A serializer that wraps the failed write (torch.save raises RuntimeError over ENOSPC): the
            # OSError is what happened, and what the caller can act on.
            raise exc.__context__ from exc
        raise


def _mode_for(path: Path) -> int:
    """The permissions ``open(path, "w")`` would leave: the old file's, else 0o666 less the umask. mkstemp's
    0o600 would hide a report, a model or a shared cache entry from everyone but its writer."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_UMASK


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: once, at import, before any thread writes
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def atomic_write_text(text: str, path: Path) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))
