"""On-disk cache of per-image embeddings and per-sample BN statistics.

It is an optimisation, never a requirement: a cache that cannot be read or written logs one warning
and the run recomputes. Files are written atomically (temporary file, then rename), so an interrupted
run never leaves a half-written entry. The cache lives in the user cache dir, never in the dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import platformdirs

from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.advisor.writable import atomic_write
from tl_advise.schema.models import CacheGroup, CacheUsage

logger = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_FORMAT = 2  # bump when what is stored changes meaning (2: images decoded upright, EXIF orientation)
_VERSION_FOLDER = re.compile(r"v(\d+)")


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("tl-advise"))


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_identity(record: ImageRecord, root: Path) -> str:
    """What makes a cached per-file result stale: the path, the size, the modification time."""
    return f"{record.path.relative_to(root).as_posix()}|{record.size_bytes}|{record.mtime_ns}"


class ArrayCache:
    """Named ``.npz`` entries under one folder; ``None`` as folder disables it."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def _warn_once(self, message: str, *args: object) -> None:
        """One warning per kind of problem: an unwritable folder fails every entry alike, but an unreadable
        entry and a missing array are two things to hear about."""
        if message in self._warned:
            logger.debug(message, *args)
        else:
            logger.warning(message, *args)
            self._warned.add(message)

    def _path(self, kind: str, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"v{CACHE_FORMAT}" / kind / f"{key}.npz"

    def path_of(self, kind: str, key: str, suffix: str) -> Path:
        """Where an entry with its own file type (``.onnx``) lives."""
        return self._path(kind, key).with_suffix(suffix)

    def load(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        if self.folder is None:
            return None
        path = self._path(kind, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except Exception as exc:  # truncated file, bad zip, permissions …
            self._warn_once("cache entry %s is unreadable (%s); recomputing it", path, exc)
            return None

    def read(self, kind: str, key: str, reader: Callable[[dict[str, np.ndarray]], T]) -> T | None:
        """The entry as ``reader`` turns it into what the caller needs, or None (then the caller recomputes
        and overwrites it). A valid ``.npz`` need not hold what ``reader`` needs (another version wrote it, or
        something replaced it): a missing name or arrays that do not line up are a miss with one warning, the
        same for every reader instead of a KeyError deep in each."""
        arrays = self.load(kind, key)
        if arrays is None:
            return None
        try:
            return reader(arrays)
        except KeyError as exc:
            self._warn_once("cache entry %s lacks the array %s; recomputing it", self._path(kind, key), exc)
        except (IndexError, TypeError, ValueError) as exc:
            self._warn_once("cache entry %s does not fit this version (%s: %s); recomputing it",
                            self._path(kind, key), type(exc).__name__, exc)
        return None

    def save(self, kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        if self.folder is None:
            return
        self._write(self._path(kind, key), lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]

    def load_json(self, kind: str, key: str) -> dict[str, object] | None:
        if self.folder is None:
            return None
        path = self._path(kind, key).with_suffix(".json")
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self._warn_once("cache entry %s is unreadable (%s); recomputing it", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def save_json(self, kind: str, key: str, data: dict[str, object]) -> None:
        if self.folder is None:
            return
        payload = json.dumps(data).encode()
        self._write(self._path(kind, key).with_suffix(".json"), lambda fh: fh.write(payload))

    def save_file(self, kind: str, key: str, suffix: str, source: Path) -> None:
        if self.folder is None:
            return
        self._write(self.path_of(kind, key, suffix), lambda fh: fh.write(source.read_bytes()))

    def _write(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        """Atomic (see ``atomic_write``): a failed write keeps the previous entry and warns once."""
        try:
            atomic_write(path, write)
        except OSError as exc:
            self._warn_once("cannot write the cache at %s (%s); results are not cached", path.parent, exc)

    def read_only(self) -> ArrayCache:
        """The same entries, never written: for the processes of a distributed run other than rank 0
        (one writer per entry; the others' rows reach the cache through rank 0)."""
        return _ReadOnlyCache(self.folder)


class _ReadOnlyCache(ArrayCache):
    def _write(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        return None


def _groups(folder: Path) -> list[tuple[CacheGroup, Path]]:
    """Every ``v<N>/<kind>/`` folder under ``folder`` with what it holds. Only these are tl-advise's: a cache
    folder shared with anything else keeps the rest untouched."""
    if not folder.is_dir():
        return []
    found = []
    for version_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _VERSION_FOLDER.fullmatch(p.name)):
        version = int(version_dir.name[1:])
        for kind_dir in sorted(p for p in version_dir.iterdir() if p.is_dir()):
            children = list(kind_dir.iterdir())
            # An entry is a file, or a folder (an extracted text model: 90 MB that a file count reported as 0).
            keys = {c.name if c.is_dir() else c.name.split(".", 1)[0]
                    for c in children if not c.name.startswith(".")}  # not a write in flight
            found.append((CacheGroup(version=version, kind=kind_dir.name, entries=len(keys),
                                     bytes=sum(_size(c) for c in children), current=version == CACHE_FORMAT),
                          kind_dir))
    return found


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def cache_usage(folder: Path) -> CacheUsage:
    """What the cache folder holds, per format version and kind."""
    return CacheUsage(folder=str(folder), groups=[group for group, _ in _groups(folder)])


def clear_cache(folder: Path, *, kinds: Collection[str] = (), stale_only: bool = False) -> CacheUsage:
    """Remove the entries of ``kinds`` (all when empty), or with ``stale_only`` those of older formats only;
    returns what was removed. Safe beside a running advice: its next write recreates the folder, and an
    entry it still needs is computed again."""
    removed = []
    for group, kind_dir in _groups(folder):
        if (kinds and group.kind not in kinds) or (stale_only and group.current):
            continue
        shutil.rmtree(kind_dir, ignore_errors=True)
        removed.append(group)
        with contextlib.suppress(OSError):  # not empty: another kind, or a write that just arrived
            kind_dir.parent.rmdir()
    return CacheUsage(folder=str(folder), groups=removed)

