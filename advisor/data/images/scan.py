"""Scan an image-classification folder: classes, counts, sizes, modes, duplicates, unreadable files.

A folder's layout (``advisor/data/images/layout.py``: ``root/<class>/…`` or ``root/{train,val,test}/<class>/…``) and a
label manifest (``advisor/data/images/manifest.py``), which names the same things in a table, both become a
:class:`Listing`; from there on the scan is one code path.

The scan is cheap and grows gently with the number of files: one ``os.scandir`` walk with a ``stat`` per
file, then at most one open per file. Byte-identical files are found over every file: only files that
share a byte size with another are read, their first ``HEAD_BYTES`` hashed, and only files that share
size and that prefix are hashed whole. Image *headers* (never pixel data) are read for every file with
``audit="all"``; by default (``"sample"``) for a seeded share of ``AUDIT_FILES`` files (all of them in a
smaller dataset), every file whose extension is not an image's, and — through
:meth:`DatasetScan.audit` — whatever the caller goes on to decode. The dataset is never written to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import logging
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from tl_advise.advisor.data.images.exif import QUARTER_TURNS, exif_orientation
from tl_advise.advisor.data.images.layout import (
    EXPECTED_LAYOUT,
    FLAT_SPLIT,
    ClassDir,
    check_root,
    find_class_dirs,
    find_containers,
    is_ignored,
    split_names,
)
from tl_advise.advisor.timing import StepTimer
from tl_advise.schema.errors import DatasetError
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import (
    AUDIT_MODES,
    AuditMode,
    DatasetSummary,
    DuplicateGroup,
    HeaderAudit,
    ImageSizeSummary,
    SkippedFile,
    printable,
)

if TYPE_CHECKING:
    from tl_advise.advisor.data.images.manifest import ManifestOptions

logger = logging.getLogger(__name__)


# Extensions that are certainly not images. Anything else is opened: PIL decides by content,
# so an image with an odd or missing extension still counts.
NOT_IMAGE_EXTENSIONS = frozenset({
    ".txt", ".csv", ".tsv", ".json", ".jsonl", ".md", ".rst", ".py", ".ipynb", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".xml", ".html", ".htm", ".log", ".sh", ".pdf", ".doc", ".docx",
    ".xls", ".xlsx", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".npy", ".npz",
    ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".h5", ".hdf5", ".mat", ".db", ".sqlite",
})

# Headers read by default: enough to estimate the share of broken files and the modes and sizes to a
# fraction of a percent, and about 2 s of a 2-core machine's time whatever the dataset's size.
AUDIT_FILES = 10_000
# One read per file serves the header, the end-marker check and the duplicate prefix hash of most
# images; larger files are reopened buffered for the header and hashed whole only when their size and
# first HEAD_BYTES match another file's.
HEAD_BYTES = 16 * 1024
HASH_CHUNK_BYTES = 1 << 20
DIGEST_BYTES = 16
# Reads go to a small thread pool in chunks: os.read releases the GIL, which helps on a cold page cache
# or network storage; chunks keep the per-task overhead (a lock and a future) off the per-file cost.
READ_THREADS = 4
READ_CHUNK = 256
# How far from the end an end-of-image marker may sit: a few encoders append a short trailer.
TAIL_BYTES = 1024
# The last bytes of a complete file, per PIL format. JPEG's EOI cannot occur inside entropy-coded
# data (0xFF is always stuffed there), so finding it near the end is a sound "not truncated" test.
END_MARKERS: dict[str, bytes] = {
    "JPEG": b"\xff\xd9",
    "MPO": b"\xff\xd9",
    "PNG": b"IEND\xaeB`\x82",
}

REASON_ZERO_BYTE = "zero-byte file"
REASON_TRUNCATED = "truncated image data"
REASON_NOT_IMAGE = "not an image (cannot identify image file)"

_T = TypeVar("_T")
_R = TypeVar("_R")
_new_object = object.__new__
_set_attr = object.__setattr__


# --------------------------------------------------------------------------- public API


class ImageRecord:
    """One image file: its class and split, byte size and mtime, and — once read — its header.

    Read-only. ``width``, ``height`` and ``mode`` are None while the header has not been read (see
    ``DatasetSummary.audit``). A record keeps its folder (one ``Path`` shared by every file in it) and
    its file name, and builds ``path`` on access: a million records stay small.
    """

    __slots__ = ("class_name", "folder", "height", "label", "mode", "mtime_ns", "name", "size_bytes", "split",
                 "width")
    _FIELDS = ("folder", "name", "class_name", "label", "split", "width", "height", "mode", "size_bytes",
               "mtime_ns")
    folder: Path
    name: str
    class_name: str
    label: int  # index into DatasetScan.classes
    split: str  # "train" / "val" / "test", or "all" for a flat layout
    width: int | None
    height: int | None
    mode: str | None  # PIL mode from the header: L, RGB, RGBA, I;16, CMYK, P ...
    size_bytes: int
    mtime_ns: int

    def __init__(self, path: Path | str, class_name: str, label: int, split: str, width: int | None,
                 height: int | None, mode: str | None, size_bytes: int, mtime_ns: int) -> None:
        path = Path(path)
        self._set(folder=path.parent, name=path.name, class_name=class_name, label=label, split=split,
                  width=width, height=height, mode=mode, size_bytes=size_bytes, mtime_ns=mtime_ns)

    @classmethod
    def _listed(cls, folder: Path, name: str, class_name: str, split: str, size_bytes: int,
                mtime_ns: int) -> ImageRecord:
        """A record from the directory walk, before its header is read and its label known."""
        record = _new_object(cls)
        # Slot by slot, not through _set(**kw): this runs once per file of the dataset.
        _set_attr(record, "folder", folder)
        _set_attr(record, "name", name)
        _set_attr(record, "class_name", class_name)
        _set_attr(record, "label", -1)
        _set_attr(record, "split", split)
        _set_attr(record, "width", None)
        _set_attr(record, "height", None)
        _set_attr(record, "mode", None)
        _set_attr(record, "size_bytes", size_bytes)
        _set_attr(record, "mtime_ns", mtime_ns)
        return record

    def _set(self, **values: Any) -> None:
        # The scan fills in headers and labels after listing; to everyone else a record is immutable.
        for key, value in values.items():
            _set_attr(self, key, value)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"ImageRecord is read-only (cannot set {key!r})")

    @property
    def path(self) -> Path:
        """The absolute path (when the scan made the record)."""
        return self.folder / self.name

    @property
    def path_parts(self) -> tuple[str, ...]:
        """``path.parts`` without building the Path: sorts exactly as the paths do."""
        return (*self.folder.parts, self.name)

    @property
    def header_read(self) -> bool:
        return self.mode is not None

    def _astuple(self) -> tuple[object, ...]:
        return tuple(getattr(self, key) for key in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageRecord):
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._FIELDS[2:])
        return f"ImageRecord(path={self.path!r}, {fields})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickling: DataLoader workers receive records
        return (ImageRecord, (self.path, *(getattr(self, k) for k in self._FIELDS[2:])))


@dataclass
class DatasetScan:
    root: Path
    classes: list[str]
    records: list[ImageRecord]  # readable images only, sorted by (split, class, path)
    summary: DatasetSummary
    step_timings: dict[str, float] = field(default_factory=dict)  # seconds per scan step
    _state: _ScanState | None = field(default=None, repr=False)

    def split_records(self, split: str) -> list[ImageRecord]:
        """The records of one split; "all" means every record, whatever the layout."""
        if split == FLAT_SPLIT:
            return list(self.records)
        return [r for r in self.records if r.split == split]

    @property
    def train_split(self) -> str:
        """The split that drives the size axis: "train" if present, else "all"."""
        return self.summary.train_split

    def audit(self, records: Sequence[ImageRecord], *, progress: bool = False) -> int:
        """Read the headers of ``records`` not read yet (e.g. the sample about to be decoded); drop the
        unreadable ones from the scan and update the summary. Returns how many were dropped."""
        state = self._state
        todo = [r for r in records if not r.header_read]
        if state is None or not todo:
            return 0
        dropped = _read_files(self.root, state, todo, np.ones(len(todo), dtype=bool),
                              np.zeros(len(todo), dtype=bool), progress)[0]
        state.n_audited += len(todo)
        if dropped:
            gone = {id(todo[i]) for i in dropped}
            self.records = [r for r in self.records if id(r) not in gone]
            state.duplicates = _without_paths(state.duplicates,
                                              {display_name(todo[i].path, self.root) for i in dropped})
        self.classes, self.summary = _finish(self.root, state, self.records)
        return len(dropped)


@dataclass
class Listing:
    """What a layout names before any header is read: the seam where a folder walk and a label manifest
    (``advisor/data/images/manifest.py``) meet. Everything after it (headers, classes, duplicates, summary) is shared.

    ``records`` are the listed files with their class, split, byte size and mtime (header not read, label
    not set), sorted by (split, class, path); :func:`list_files` makes them from paths."""

    root: Path  # every file lies under it; relative paths in the report are relative to it
    layout: Literal["flat", "splits"]
    splits: list[str]
    records: list[ImageRecord]
    must_audit: list[int]  # positions in records whose extension is not an image's: their header is always read
    skipped: list[SkippedFile]
    declared: dict[str, list[str]]  # class -> where it is declared, to report a class left without images
    where: str  # what error messages name: the folder, or the manifest
    declares: str  # "has class folders" / "lists the classes"
    hint: str  # how a usable input looks, for error messages
    manifests: list[str] = field(default_factory=list)
    list_seconds: float = 0.0


def scan_dataset(root: str | Path, *, progress: bool = False, audit: AuditMode = "sample", seed: int = 0,
                 manifest: ManifestOptions | None = None) -> DatasetScan:
    """Scan ``root`` — an image folder, or a label manifest (a file, or a folder with a Hugging Face
    ``metadata.csv``) — and summarise it; raises :class:`DatasetError` when it is not a usable dataset.

    ``audit="all"`` reads every image header; ``"sample"`` reads a seeded share (see the module doc).
    """
    from tl_advise.advisor.data.images.manifest import manifest_listing  # builds on this module: imported late

    if audit not in AUDIT_MODES:
        raise ValueError(f"The 'audit' parameter must be one of {', '.join(AUDIT_MODES)}. Got {audit!r} instead.")
    listing = manifest_listing(root, manifest) or list_folders(root)
    return scan_listing(listing, progress=progress, audit=audit, seed=seed)


def list_folders(root: str | Path) -> Listing:
    """The folder layout: ``root/<class>/…`` or ``root/{train,val,test}/<class>/…``."""
    start = time.perf_counter()
    root = check_root(root)
    layout, containers = find_containers(root)
    class_dirs = find_class_dirs(root, containers)
    records, skipped, must_audit = _list_files(root, class_dirs)
    declared: dict[str, list[str]] = {}
    for cd in class_dirs:
        declared.setdefault(cd.class_name, []).append(_relative(root, cd.folder) + "/")
    return Listing(root=root, layout=layout, splits=split_names(layout, containers), records=records,
                   must_audit=must_audit, skipped=skipped, declared=declared, where=str(root),
                   declares="has class folders", hint=EXPECTED_LAYOUT,
                   list_seconds=round(time.perf_counter() - start, 3))


def scan_listing(listing: Listing, *, progress: bool = False, audit: AuditMode = "sample",
                 seed: int = 0) -> DatasetScan:
    """Read the headers a listing's files need, find duplicates and summarise: the same for folders and
    manifests."""
    if audit not in AUDIT_MODES:
        raise ValueError(f"The 'audit' parameter must be one of {', '.join(AUDIT_MODES)}. Got {audit!r} instead.")
    root, records = listing.root, listing.records
    state = _ScanState(layout=listing.layout, splits=listing.splits, declared=listing.declared,
                       where=listing.where, declares=listing.declares, hint=listing.hint,
                       manifests=list(listing.manifests), skipped=list(listing.skipped), audit_mode=audit,
                       seed=seed)
    timer = StepTimer()
    timer.timings["list"] = listing.list_seconds
    with timer.step("read"):
        audit_mask = _audit_share(len(records), listing.must_audit, audit, seed)
        sizes = np.fromiter((r.size_bytes for r in records), dtype=np.int64, count=len(records))
        hash_mask = _shares_size(sizes)
        dropped, digests = _read_files(root, state, records, audit_mask, hash_mask, progress)
        state.n_audited = int(audit_mask.sum())
    with timer.step("duplicates"):
        if dropped:
            keep = np.setdiff1d(np.arange(len(records)), np.asarray(dropped, dtype=np.int64))
            records = [records[i] for i in keep.tolist()]
            sizes, hash_mask, digests = sizes[keep], hash_mask[keep], digests[keep]
        state.duplicates = _find_duplicates(root, records, sizes, hash_mask, digests, progress)
    with timer.step("summary"):
        classes, summary = _finish(root, state, records)
    logger.info(
        "scanned %s: %s in %s, %d skipped, %s, %s read (%s)", listing.where, counted(len(records), "image"),
        counted(len(classes), "class", "classes"), len(summary.skipped),
        counted(len(state.duplicates), "duplicate group"), counted(state.n_audited, "header"), audit,
    )
    return DatasetScan(root=root, classes=classes, records=records, summary=summary,
                       step_timings=timer.timings, _state=state)


def list_files(root: Path, files: Iterable[tuple[Path, str, str]]) -> tuple[list[ImageRecord], list[SkippedFile],
                                                                               list[int]]:
    """Records for ``(absolute path, class, split)`` entries named by a layout other than the folder walk (a
    manifest): each stat-ed (in chunks on the pool), sorted by (split, class, path) as the walk's are.

    Returns the records, the files skipped from their directory entry alone (zero-byte, cannot stat) and
    the positions of the records whose extension is not an image's (see :class:`Listing`)."""
    image_exts = _image_extensions()
    ordered = sorted(files, key=lambda f: (f[2], f[1], f[0].parts))
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    must_audit: list[int] = []
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        stats = _chunked(pool, _stat_paths, [str(path) for path, _, _ in ordered])
        for (path, class_name, split), stat_or_error in zip(ordered, stats, strict=True):
            folder = path.parent
            _add_listed(records, skipped, must_audit, image_exts, folder, "" if folder == root else
                        _relative(root, folder), path.name, _suffix(path.name), class_name, split, stat_or_error)
    return records, skipped, must_audit


def display_name(path: Path, root: Path) -> str:
    """How a file is named in every report: relative to the root, posix, printable (see models.printable)."""
    return printable(path.relative_to(root).as_posix())


def _size_axis(train_counts: Sequence[int]) -> dict[str, Any]:
    """The summary's fields that the decision table's size axis reads, from the training counts per class: the
    median over the classes that have training images (one without any is the classes_without_training_images
    warning, not a class of 0 images on the size axis)."""
    return dict(
        images_per_class=float(statistics.median([n for n in train_counts if n] or [0])),
        min_images_per_class=min(train_counts),
        # Among the classes that have training images: one with none is its own warning
        # (classes_without_training_images), and would make this infinite, which JSON cannot hold.
        imbalance_ratio=float(max(train_counts)) / min((n for n in train_counts if n), default=1),
    )


def capped_for_training(summary: DatasetSummary, cap: int | None) -> DatasetSummary:
    """The summary as runs under --max-train-per-class see it: at most ``cap`` training images per class on
    the size axis, so that the advice is for the images that train."""
    if cap is None:
        return summary
    counts = [min(n, cap) for n in summary.split_counts.get(summary.train_split, summary.class_counts).values()]
    return summary.model_copy(update={"train_cap": cap, **_size_axis(counts)})


def without_undecodable(scan: DatasetScan, failed: Sequence[SkippedFile]) -> DatasetScan:
    """The scan minus files whose header read fine but whose data did not decode (found while embedding):
    they join the skipped files and leave every count, so a class is never counted with images it lacks.
    The scan passed in is left as it was."""
    gone = {f.path for f in failed}
    if not gone or scan._state is None:
        return scan
    gone_names = {p.rpartition("/")[2] for p in gone}
    records = [r for r in scan.records
               if printable(r.name) not in gone_names or display_name(r.path, scan.root) not in gone]
    classes_left = {r.class_name for r in records}
    if len(classes_left) < 2:
        raise DatasetError(f"{scan.root}: fewer than 2 classes have images that decode "
                           f"({len(gone)} undecodable); {scan._state.hint}")
    if classes_left != set(scan.classes):
        # Labels change: fresh records, so that the records of the scan passed in keep theirs.
        records = [ImageRecord(r.path, r.class_name, r.label, r.split, r.width, r.height, r.mode, r.size_bytes,
                               r.mtime_ns) for r in records]
    state = dataclasses.replace(scan._state, skipped=[*scan._state.skipped, *failed],
                                duplicates=_without_paths(scan._state.duplicates, gone))
    classes, summary = _finish(scan.root, state, records)
    return DatasetScan(root=scan.root, classes=classes, records=records, summary=summary,
                       step_timings=dict(scan.step_timings), _state=state)


@dataclass
class _ScanState:
    """What the scan keeps so that a later :meth:`DatasetScan.audit` can redo the summary."""

    layout: Literal["flat", "splits"]
    splits: list[str]
    declared: dict[str, list[str]]  # see Listing
    where: str
    declares: str
    hint: str
    manifests: list[str]
    skipped: list[SkippedFile]  # file-level: unreadable, not images, unlistable folders, undecodable
    audit_mode: AuditMode
    seed: int
    n_audited: int = 0
    n_unreadable: int = 0  # found by reading: header, truncation, I/O errors
    duplicates: list[DuplicateGroup] = field(default_factory=list)


# --------------------------------------------------------------------------- files


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _suffix(name: str) -> str:
    """``Path(name).suffix``, lower-cased, without building a Path."""
    i = name.rfind(".")
    return name[i:].lower() if 0 < i < len(name) - 1 else ""


def _image_extensions() -> frozenset[str]:
    return frozenset(Image.registered_extensions())


def _list_files(root: Path, class_dirs: Sequence[ClassDir]
                ) -> tuple[list[ImageRecord], list[SkippedFile], list[int]]:
    """Every visible file under each class folder (recursive), in path order, with its size and mtime.

    Returns the records (header not read), the files skipped from their name or directory entry alone
    (obvious non-images, zero-byte, unreadable entries, unlistable folders) and the positions of the
    records whose extension is not an image's: their content must be read to know what they are.
    """
    image_exts = _image_extensions()
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    must_audit: list[int] = []
    # Class folders of one (split, class) are disjoint subtrees, so walking them in this order and each
    # one in path order gives records sorted by (split, class, path) without a sort.
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        for cd in sorted(class_dirs, key=lambda c: (c.split, c.class_name, c.folder.parts)):
            for folder, folder_rel, entries in _walk(root, cd.folder, skipped):
                names = [e.name for e in entries]
                for name, stat_or_error in zip(names, _chunked(pool, _stat_entries, entries), strict=True):
                    ext = _suffix(name)
                    if ext in NOT_IMAGE_EXTENSIONS:
                        skipped.append(SkippedFile(path=f"{folder_rel}/{name}",
                                                   reason=f"not an image file (extension {ext})"))
                        continue
                    if ext in image_exts and not isinstance(stat_or_error, OSError) and stat_or_error.st_size:
                        # The common case inline (what _add_listed does for it): a call per file costs ~5 %.
                        records.append(ImageRecord._listed(folder, name, cd.class_name, cd.split,
                                                           stat_or_error.st_size, stat_or_error.st_mtime_ns))
                    else:
                        _add_listed(records, skipped, must_audit, image_exts, folder, folder_rel, name, ext,
                                    cd.class_name, cd.split, stat_or_error)
    return records, skipped, must_audit


def _add_listed(records: list[ImageRecord], skipped: list[SkippedFile], must_audit: list[int],
                image_exts: frozenset[str], folder: Path, folder_rel: str, name: str, ext: str, class_name: str,
                split: str, stat_or_error: os.stat_result | OSError) -> None:
    """One listed file (``folder_rel`` is its folder relative to the root, "" for the root itself): a
    record, or a skipped entry when its stat says it cannot be an image. Runs once per file."""
    if isinstance(stat_or_error, OSError):
        exc = stat_or_error
        skipped.append(SkippedFile(path=f"{folder_rel}/{name}" if folder_rel else name,
                                   reason=f"unreadable ({exc.strerror or exc})"))
    elif stat_or_error.st_size == 0:
        skipped.append(SkippedFile(path=f"{folder_rel}/{name}" if folder_rel else name, reason=REASON_ZERO_BYTE))
    else:
        if ext not in image_exts:
            must_audit.append(len(records))
        records.append(ImageRecord._listed(folder, name, class_name, split, stat_or_error.st_size,
                                           stat_or_error.st_mtime_ns))


def _chunked(pool: ThreadPoolExecutor, fn: Callable[[Sequence[_T]], list[_R]], items: Sequence[_T]
             ) -> Iterator[_R]:
    """``fn`` over ``items`` in chunks on the pool, results in order (one chunk runs here)."""
    chunks = [items[i:i + READ_CHUNK] for i in range(0, len(items), READ_CHUNK)]
    for chunk in (pool.map(fn, chunks) if len(chunks) > 1 else map(fn, chunks)):
        yield from chunk


def _stat_entries(entries: Sequence[os.DirEntry[str]]) -> list[os.stat_result | OSError]:
    """A cold inode is a disk read: this runs on the pool."""
    out: list[os.stat_result | OSError] = []
    for entry in entries:
        try:
            out.append(entry.stat())
        except OSError as exc:  # a dangling symlink, a file removed while we look
            out.append(exc)
    return out


def _stat_paths(paths: Sequence[str]) -> list[os.stat_result | OSError]:
    out: list[os.stat_result | OSError] = []
    for path in paths:
        try:
            out.append(os.stat(path))
        except OSError as exc:
            out.append(exc)
    return out


def _walk(root: Path, top: Path, skipped: list[SkippedFile]
          ) -> Iterator[tuple[Path, str, list[os.DirEntry[str]]]]:
    """(folder, its path relative to root, its file entries in name order) for ``top`` and every folder
    below, in path order: a folder's files and sub-folders interleave by name, as sorting paths would.

    Hidden entries are left out; symlinked sub-folders are not followed (a link loop must not hang the
    scan); a folder that cannot be listed is reported and skipped.
    """
    stack: list[tuple[Path, str, Iterator[os.DirEntry[str]]]] = []

    def enter(folder: Path) -> None:
        rel = _relative(root, folder)
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not is_ignored(e.name)), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedFile(path=rel, reason=f"cannot list folder ({exc.strerror or exc})"))
            return
        stack.append((folder, rel, iter(entries)))

    enter(top)
    while stack:
        folder, rel, entries = stack[-1]
        files: list[os.DirEntry[str]] = []
        descend: Path | None = None
        for entry in entries:
            if _is_dir(entry):
                if not entry.is_symlink():
                    descend = folder / entry.name
                    break
                continue
            files.append(entry)
        if files:
            yield folder, rel, files
        if descend is None:
            stack.pop()
        else:
            enter(descend)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _audit_share(n: int, must_audit: Sequence[int], mode: AuditMode, seed: int) -> np.ndarray:
    """Which of ``n`` listed files get their header read: all, or a seeded share plus ``must_audit``."""
    if mode == "all" or n <= AUDIT_FILES:
        return np.ones(n, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    mask[random.Random(seed).sample(range(n), AUDIT_FILES)] = True
    mask[np.asarray(must_audit, dtype=np.int64)] = True
    return mask


def _shares_size(sizes: np.ndarray) -> np.ndarray:
    """Which files share their byte size with another file: only those can be duplicates."""
    if not len(sizes):
        return np.zeros(0, dtype=bool)
    _, inverse, counts = np.unique(sizes, return_inverse=True, return_counts=True)
    return np.asarray(counts[inverse] > 1)


_Header = tuple[int, int, str]  # width, height, mode


def _read_files(root: Path, state: _ScanState, records: Sequence[ImageRecord], audit_mask: np.ndarray,
                hash_mask: np.ndarray, progress: bool) -> tuple[list[int], np.ndarray]:
    """Open each file that needs it once: header (``audit_mask``), prefix digest (``hash_mask``).

    Fills in the headers, adds the unreadable files to ``state.skipped`` and returns their positions,
    and the prefix digests as an (n, 2) uint64 array (zero where not hashed).
    """
    digests = np.zeros((len(records), 2), dtype=np.uint64)
    todo = np.flatnonzero(audit_mask | hash_mask)

    def inspect(i: int) -> tuple[_Header | str | None, bytes | None]:
        r = records[i]
        return _inspect(f"{r.folder}{os.sep}{r.name}", r.size_bytes, bool(audit_mask[i]), bool(hash_mask[i]))

    dropped: list[int] = []
    results = _chunked_map(inspect, todo, progress, "Reading image headers")
    for i, (header, digest) in zip(todo.tolist(), results, strict=True):
        if isinstance(header, str):
            state.skipped.append(SkippedFile(path=_relative(root, records[i].path), reason=header))
            state.n_unreadable += 1
            dropped.append(i)
            continue
        if header is not None:
            record = records[i]
            _set_attr(record, "width", header[0])
            _set_attr(record, "height", header[1])
            _set_attr(record, "mode", header[2])
        if digest is not None:
            digests[i] = np.frombuffer(digest, dtype=np.uint64)
    return dropped, digests


def _inspect(path: str, size: int, audit: bool, want_digest: bool) -> tuple[_Header | str | None, bytes | None]:
    """(header or the reason the file is skipped, or None when not asked; prefix digest or None)."""
    try:
        fd = os.open(path, os.O_RDONLY)  # os.open/os.read: a quarter cheaper than a file object
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None
    try:
        head = os.read(fd, HEAD_BYTES)
        digest = hashlib.blake2b(head, digest_size=DIGEST_BYTES).digest() if want_digest else None
        if not audit:
            return None, digest
        if len(head) >= size:  # the whole file is in memory
            return _read_header(io.BytesIO(head), size, path), digest
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return _read_header(fh, size, path), digest
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})", None
    finally:
        os.close(fd)


def _read_header(fh: BinaryIO, size: int, path: str) -> _Header | str:
    """The header of one file, or the reason it is skipped. Never decodes pixel data."""
    try:
        with Image.open(fh) as im:
            width, height = im.size
            mode, fmt = im.mode, im.format or ""
            if exif_orientation(im) in QUARTER_TURNS:  # sizes as the image is shown and decoded
                width, height = height, width
    except UnidentifiedImageError:
        return REASON_NOT_IMAGE
    except Image.DecompressionBombError as exc:
        return f"image too large to decode safely ({exc})"
    except (SyntaxError, ValueError, EOFError) as exc:  # PIL's parsers raise these on bad headers
        return f"corrupt image header ({exc})"
    if _is_truncated(fh, fmt, size):
        return REASON_TRUNCATED
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        # Pillow decodes these with a bare DecompressionBombWarning (the CLI silences it): name the file.
        logger.warning("%s is %d x %d px (%.0f Mpx, above Pillow's decompression-bomb limit of %.0f Mpx): "
                       "decoding it takes much memory", printable(path), width, height,
                       width * height / 1e6, Image.MAX_IMAGE_PIXELS / 1e6)
    return width, height, mode


def _is_truncated(fh: BinaryIO, fmt: str, size: int) -> bool:
    """Whether a format with a known end marker lacks it near the end of the file."""
    marker = END_MARKERS.get(fmt)
    if marker is None:
        return False  # no cheap check for this format: trust the header
    fh.seek(max(0, size - TAIL_BYTES))
    return marker not in fh.read()


def _chunked_map(fn: Callable[[Any], _R], items: Sequence[Any] | np.ndarray, progress: bool, desc: str
                 ) -> Iterator[_R]:
    """``fn`` over ``items`` on a small thread pool, in chunks, results in input order."""
    chunks = (items[i:i + READ_CHUNK] for i in range(0, len(items), READ_CHUNK))

    def run(chunk: Sequence[Any] | np.ndarray) -> list[_R]:
        return [fn(item) for item in (chunk.tolist() if isinstance(chunk, np.ndarray) else chunk)]

    from tqdm import tqdm  # here: reading a text dataset imports this module's constants, not its progress bar

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool, tqdm(
        total=len(items), desc=desc, unit="file", disable=not progress, leave=False
    ) as bar:
        for results in pool.map(run, chunks):
            bar.update(len(results))
            yield from results


# --------------------------------------------------------------------------- classes and summary


def _finish(root: Path, state: _ScanState, records: Sequence[ImageRecord]) -> tuple[list[str], DatasetSummary]:
    """Classes, labels and the summary of the records as they stand (after a scan or an audit)."""
    classes, empty = _classes_with_images(state, records)
    label_of = {name: i for i, name in enumerate(classes)}
    for r in records:
        label = label_of[r.class_name]
        if r.label != label:
            r._set(label=label)
    summary = _summarise(root, state, classes, records, empty)
    return classes, summary


def _classes_with_images(state: _ScanState, records: Sequence[ImageRecord]) -> tuple[list[str], list[str]]:
    """(sorted class names with at least one image, where the classes left out for having none were
    declared); raises when fewer than two classes have images."""
    found = sorted(state.declared)
    with_images = sorted({r.class_name for r in records})
    if not with_images:
        raise DatasetError(
            f"{state.where} {state.declares} ({_name_list(found)}) but no readable images "
            f"({len(state.skipped)} files skipped); {state.hint}"
        )
    empty: list[str] = []
    for name in sorted(set(found) - set(with_images)):
        # An empty class cannot be learned; report where it was declared so the user sees why it is gone.
        empty.extend(state.declared[name])
        logger.warning("class %r has no readable images and is left out", name)
    if len(with_images) < 2:
        raise DatasetError(
            f"{state.where} has only one class with images, {with_images[0]!r}; a classifier needs at least "
            f"2 classes; {state.hint}"
        )
    return with_images, empty


def _name_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _summarise(root: Path, state: _ScanState, classes: Sequence[str], records: Sequence[ImageRecord],
               empty_class_folders: list[str]) -> DatasetSummary:
    per_split = Counter((r.split, r.class_name) for r in records)
    split_counts = {s: {c: per_split[(s, c)] for c in classes} for s in state.splits}
    class_counts = {c: sum(split_counts[s][c] for s in state.splits) for c in classes}

    train_split = "train" if "train" in split_counts else FLAT_SPLIT
    if state.layout == "splits" and train_split == FLAT_SPLIT:
        logger.warning("%s has no train split; sizes are judged on every split together", root)
    train_counts = list(split_counts.get(train_split, class_counts).values())

    read = [r for r in records if r.header_read]
    modes = Counter(r.mode for r in read)
    return DatasetSummary(
        root=str(root),
        layout=state.layout,
        classes=list(classes),
        n_images=len(records),
        class_counts=class_counts,
        split_counts=split_counts,
        train_split=train_split,
        **_size_axis(train_counts),
        modes=dict(sorted(modes.items(), key=lambda kv: (-kv[1], kv[0]))),
        image_size=_size_summary(read),
        duplicates=state.duplicates,
        skipped=sorted(state.skipped, key=lambda s: s.path),
        empty_class_folders=sorted(empty_class_folders),
        manifests=state.manifests,
        audit=HeaderAudit(mode=state.audit_mode, n_audited=state.n_audited, n_not_audited=len(records) - len(read),
                          n_unreadable=state.n_unreadable, seed=state.seed),
    )


def _size_summary(records: Sequence[ImageRecord]) -> ImageSizeSummary:
    widths = [r.width or 0 for r in records]
    heights = [r.height or 0 for r in records]
    if not widths:
        widths = heights = [0]
    return ImageSizeSummary(
        min_width=min(widths),
        min_height=min(heights),
        median_width=float(statistics.median(widths)),
        median_height=float(statistics.median(heights)),
        max_width=max(widths),
        max_height=max(heights),
    )


# --------------------------------------------------------------------------- duplicates


def _find_duplicates(root: Path, records: Sequence[ImageRecord], sizes: np.ndarray, hash_mask: np.ndarray,
                     digests: np.ndarray, progress: bool) -> list[DuplicateGroup]:
    """Groups of byte-identical files: same size and prefix digest, then (when the file is longer than
    the prefix) the same digest of the whole file."""
    candidates = np.flatnonzero(hash_mask)
    if len(candidates) < 2:
        return []
    d = digests[candidates]
    order = candidates[np.lexsort((d[:, 1], d[:, 0], sizes[candidates]))]
    keys = np.column_stack((sizes[order].astype(np.uint64), digests[order]))
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    bounds = np.r_[starts, len(order)]
    same_prefix = [order[a:b].tolist() for a, b in itertools.pairwise(bounds.tolist()) if b - a > 1]

    groups: list[list[ImageRecord]] = []
    to_hash: list[list[ImageRecord]] = []
    for members in same_prefix:
        group = [records[i] for i in members]
        (to_hash if group[0].size_bytes > HEAD_BYTES else groups).append(group)
    if to_hash:
        flat = [r for group in to_hash for r in group]
        full = _chunked_map(_hash_file, [str(r.path) for r in flat], progress, "Hashing same-size files")
        by_digest: dict[tuple[int, str], list[ImageRecord]] = {}
        for r, digest in zip(flat, full, strict=True):
            if digest is not None:
                by_digest.setdefault((r.size_bytes, digest), []).append(r)
        groups += [rs for rs in by_digest.values() if len(rs) > 1]

    result = [_duplicate_group(root, rs) for rs in groups]
    result.sort(key=lambda g: g.paths)
    return result


def _hash_file(path: str) -> str | None:
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        logger.warning("cannot hash %s: %s", path, exc.strerror or exc)
        return None
    return digest.hexdigest()


def _duplicate_group(root: Path, records: Iterable[ImageRecord]) -> DuplicateGroup:
    records = list(records)
    splits = sorted({r.split for r in records})
    return DuplicateGroup(
        paths=sorted(_relative(root, r.path) for r in records),
        splits=splits,
        classes=sorted({r.class_name for r in records}),
        cross_split=len(splits) > 1,
    )


def _without_paths(groups: Sequence[DuplicateGroup], gone: set[str]) -> list[DuplicateGroup]:
    """Duplicate groups after some files were dropped; a group left with one file is no group."""
    out = []
    for g in groups:
        paths = [p for p in g.paths if p not in gone]
        if len(paths) == len(g.paths):
            out.append(g)
        elif len(paths) > 1:
            out.append(g.model_copy(update={"paths": paths}))
    return out
