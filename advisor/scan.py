"""Scan an image-classification folder: classes, counts, sizes, modes, duplicates, unreadable files.

Two layouts are understood::

    root/<class>/<images>                      flat: one split, "all"
    root/{train,val,test}/<class>/<images>     splits ("valid" and "validation" read as "val")

A label manifest (``advisor/manifest.py``) names the same things in a table; both become a
:class:`Listing`, and from there on the scan is one code path.

The scan is cheap: file-system metadata and image *headers* only, never a full decode, and only
files that share a byte size with another file are hashed. The dataset is never written to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, TypeVar

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from tl_advise.advisor.errors import DatasetError
from tl_advise.advisor.models import DatasetSummary, DuplicateGroup, ImageSizeSummary, SkippedFile

if TYPE_CHECKING:
    from tl_advise.advisor.manifest import ManifestOptions

logger = logging.getLogger(__name__)

EXPECTED_LAYOUT = "expected root/<class>/<images> or root/{train,val,test}/<class>/<images>"

FLAT_SPLIT = "all"
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")

# Junk that file managers and notebooks leave behind; names starting with "." are hidden too.
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

# Extensions that are certainly not images. Anything else is opened: PIL decides by content,
# so an image with an odd or missing extension still counts.
NOT_IMAGE_EXTENSIONS = frozenset({
    ".txt", ".csv", ".tsv", ".json", ".jsonl", ".md", ".rst", ".py", ".ipynb", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".xml", ".html", ".htm", ".log", ".sh", ".pdf", ".doc", ".docx",
    ".xls", ".xlsx", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".npy", ".npz",
    ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".h5", ".hdf5", ".mat", ".db", ".sqlite",
})

MAX_WORKERS = 8
HASH_CHUNK_BYTES = 1 << 20
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


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class ImageRecord:
    """One readable image, as its header describes it."""

    path: Path  # absolute
    class_name: str
    label: int  # index into DatasetScan.classes
    split: str  # "train" / "val" / "test", or "all" for a flat layout
    width: int
    height: int
    mode: str  # PIL mode from the header: L, RGB, RGBA, I;16, CMYK, P ...
    size_bytes: int
    mtime_ns: int


@dataclass
class DatasetScan:
    root: Path
    classes: list[str]
    records: list[ImageRecord]  # readable images only, sorted by (split, class, path)
    summary: DatasetSummary

    def split_records(self, split: str) -> list[ImageRecord]:
        """The records of one split; "all" means every record, whatever the layout."""
        if split == FLAT_SPLIT:
            return list(self.records)
        return [r for r in self.records if r.split == split]

    @property
    def train_split(self) -> str:
        """The split that drives the size axis: "train" if present, else "all"."""
        return self.summary.train_split


@dataclass
class Listing:
    """What a layout names before any file is opened: the seam where a folder walk and a label manifest
    (``advisor/manifest.py``) meet. Everything after it (headers, classes, duplicates, summary) is shared."""

    root: Path  # every candidate lies under it; relative paths in the report are relative to it
    layout: Literal["flat", "splits"]
    splits: list[str]
    candidates: list[Candidate]
    skipped: list[SkippedFile]
    declared: dict[str, list[str]]  # class -> where it is declared, to report a class left without images
    where: str  # what error messages name: the folder, or the manifest
    declares: str  # "has class folders" / "lists the classes"
    hint: str  # how a usable input looks, for error messages
    manifests: list[str] = field(default_factory=list)


def scan_dataset(root: str | Path, *, progress: bool = False,
                 manifest: ManifestOptions | None = None) -> DatasetScan:
    """Scan ``root`` — an image folder, or a label manifest (a file, or a folder with a Hugging Face
    ``metadata.csv``) — and summarise it; raises :class:`DatasetError` when it is not a usable dataset."""
    from tl_advise.advisor.manifest import manifest_listing  # builds on this module: imported late

    listing = manifest_listing(root, manifest) or list_folders(root)
    return scan_listing(listing, progress=progress)


def list_folders(root: str | Path) -> Listing:
    """The folder layout: ``root/<class>/…`` or ``root/{train,val,test}/<class>/…``."""
    root = _check_root(root)
    layout, containers = _find_containers(root)
    class_dirs = _find_class_dirs(root, containers)
    candidates, skipped = _list_candidates(root, class_dirs)
    declared: dict[str, list[str]] = defaultdict(list)
    for cd in class_dirs:
        declared[cd.class_name].append(_relative(root, cd.folder) + "/")
    return Listing(root=root, layout=layout, splits=_split_names(layout, containers), candidates=candidates,
                   skipped=skipped, declared=dict(declared), where=str(root), declares="has class folders",
                   hint=EXPECTED_LAYOUT)


def scan_listing(listing: Listing, *, progress: bool = False) -> DatasetScan:
    """Read the headers of a listing's files and summarise: the same for folders and manifests."""
    root, skipped = listing.root, listing.skipped
    candidates = listing.candidates
    headers = _parallel_map(_read_header, [c.path for c in candidates], progress, "Reading image headers")
    readable: list[tuple[Candidate, _Header]] = []
    for cand, header in zip(candidates, headers, strict=True):
        if isinstance(header, str):
            skipped.append(SkippedFile(path=cand.rel, reason=header))
        else:
            readable.append((cand, header))

    classes = _classes_with_images(listing, readable, skipped)
    records = _build_records(readable, classes)
    duplicates = _find_duplicates(root, records, progress)
    summary = _summarise(root, listing.layout, classes, listing.splits, records, duplicates, skipped)
    summary.manifests = list(listing.manifests)
    logger.info(
        "scanned %s: %d images in %d classes, %d skipped, %d duplicate groups",
        listing.where, len(records), len(classes), len(skipped), len(duplicates),
    )
    return DatasetScan(root=root, classes=classes, records=records, summary=summary)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _ClassDir:
    split: str
    class_name: str
    folder: Path


@dataclass(frozen=True)
class Candidate:
    """A file a layout names with its class and split, before its header is read."""

    path: Path
    rel: str  # relative to root, posix
    split: str
    class_name: str


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    mode: str
    size_bytes: int
    mtime_ns: int


def _check_root(root: str | Path) -> Path:
    # abspath, not resolve(): keep the user's spelling of symlinked folders in the output.
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist; {EXPECTED_LAYOUT}")
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a folder or a label manifest (.csv, .tsv, .jsonl, .parquet); "
                           f"{EXPECTED_LAYOUT}")
    return path


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _visible_entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) of ``folder``, hidden ones left out, sorted by name."""
    try:
        entries = sorted(p for p in folder.iterdir() if not _is_ignored(p.name))
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    dirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if not p.is_dir()]
    return dirs, files


def _find_containers(root: Path) -> tuple[Literal["flat", "splits"], list[tuple[str, Path]]]:
    """The folders that hold class folders, each with its split name."""
    dirs, _ = _visible_entries(root)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    if not split_dirs:
        return "flat", [(FLAT_SPLIT, root)]
    others = [d.name for d in dirs if d not in split_dirs]
    if others:
        logger.warning(
            "%s has split folders (%s); ignoring the other top-level folders: %s",
            root, ", ".join(d.name for d in split_dirs), ", ".join(others),
        )
    containers = [(SPLIT_ALIASES[d.name.lower()], d) for d in split_dirs]
    seen = Counter(split for split, _ in containers)
    for split, n in seen.items():
        if n > 1:
            logger.warning("%s has %d folders for the split %r; their images are merged", root, n, split)
    containers.sort(key=lambda sc: (SPLIT_ORDER.index(sc[0]), sc[1].name))
    return "splits", containers


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in Image.registered_extensions()


def _find_class_dirs(root: Path, containers: Sequence[tuple[str, Path]]) -> list[_ClassDir]:
    class_dirs: list[_ClassDir] = []
    saw_files = False
    for split, container in containers:
        dirs, files = _visible_entries(container)
        loose_images = [f for f in files if _is_image_name(f)]
        where = "the root" if container == root else f"split folder {container.name}/"
        saw_files = saw_files or bool(files)
        if files:
            logger.debug("ignoring %d loose files in %s: %s", len(files), where, [f.name for f in files])
        if loose_images and not dirs:
            if container == root:
                raise DatasetError(
                    f"{root} holds {len(loose_images)} image files but no class folders; "
                    f"{EXPECTED_LAYOUT} (one sub-folder per class)"
                )
            logger.warning(
                "%s holds %d unlabelled images and no class folders; they are ignored",
                where, len(loose_images),
            )
        class_dirs.extend(_ClassDir(split, d.name, d) for d in dirs)
    if not class_dirs:
        found = "only loose files" if saw_files else "nothing"
        raise DatasetError(f"{root} holds no class folders (found {found}); {EXPECTED_LAYOUT}")
    return class_dirs


def _split_names(layout: str, containers: Sequence[tuple[str, Path]]) -> list[str]:
    if layout == "flat":
        return [FLAT_SPLIT]
    return sorted({split for split, _ in containers}, key=SPLIT_ORDER.index)


# --------------------------------------------------------------------------- files


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _list_candidates(
    root: Path, class_dirs: Sequence[_ClassDir]
) -> tuple[list[Candidate], list[SkippedFile]]:
    """Every visible file under each class folder (recursive), minus obvious non-images."""
    candidates: list[Candidate] = []
    skipped: list[SkippedFile] = []
    for cd in class_dirs:
        for path in _walk_files(root, cd.folder, skipped):
            rel = _relative(root, path)
            ext = path.suffix.lower()
            if ext in NOT_IMAGE_EXTENSIONS:
                skipped.append(SkippedFile(path=rel, reason=f"not an image file (extension {ext})"))
                continue
            candidates.append(Candidate(path=path, rel=rel, split=cd.split, class_name=cd.class_name))
    return candidates, skipped


def _walk_files(root: Path, folder: Path, skipped: list[SkippedFile]) -> Iterator[Path]:
    def on_error(exc: OSError) -> None:
        where = _relative(root, Path(exc.filename)) if exc.filename else _relative(root, folder)
        skipped.append(SkippedFile(path=where, reason=f"cannot list folder ({exc.strerror or exc})"))

    # Symlinked sub-folders are not followed: a link loop must not hang the scan.
    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not _is_ignored(d))
        base = Path(dirpath)
        for name in sorted(filenames):
            if not _is_ignored(name):
                yield base / name


def _read_header(path: Path) -> _Header | str:
    """The header of one file, or the reason it is skipped. Never decodes pixel data."""
    try:
        st = path.stat()
        if st.st_size == 0:
            return REASON_ZERO_BYTE
        with path.open("rb") as fh:
            try:
                with Image.open(fh) as im:
                    width, height = im.size
                    mode, fmt = im.mode, im.format or ""
            except UnidentifiedImageError:
                return REASON_NOT_IMAGE
            except Image.DecompressionBombError as exc:
                return f"image too large to decode safely ({exc})"
            except (SyntaxError, ValueError, EOFError) as exc:  # PIL's parsers raise these on bad headers
                return f"corrupt image header ({exc})"
            if _is_truncated(fh, fmt, st.st_size):
                return REASON_TRUNCATED
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return _Header(width, height, mode, st.st_size, st.st_mtime_ns)


def _is_truncated(fh: BinaryIO, fmt: str, size: int) -> bool:
    """Whether a format with a known end marker lacks it near the end of the file."""
    marker = END_MARKERS.get(fmt)
    if marker is None:
        return False  # no cheap check for this format: trust the header
    fh.seek(max(0, size - TAIL_BYTES))
    return marker not in fh.read()


def _parallel_map(
    fn: Callable[[_T], _R], items: Sequence[_T], progress: bool, desc: str
) -> list[_R]:
    """``[fn(x) for x in items]`` on a thread pool (the work is I/O bound), in input order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool, tqdm(
        total=len(items), desc=desc, unit="file", disable=not progress, leave=False
    ) as bar:
        results: list[_R] = []
        for result in pool.map(fn, items):
            results.append(result)
            bar.update(1)
    return results


# --------------------------------------------------------------------------- classes and records


def _classes_with_images(
    listing: Listing,
    readable: Sequence[tuple[Candidate, _Header]],
    skipped: list[SkippedFile],
) -> list[str]:
    """Sorted class names that have at least one readable image; raises when fewer than two."""
    found = sorted(listing.declared)
    with_images = sorted({cand.class_name for cand, _ in readable})
    if not with_images:
        raise DatasetError(
            f"{listing.where} {listing.declares} ({_name_list(found)}) but no readable images "
            f"({len(skipped)} files skipped); {listing.hint}"
        )
    for name in sorted(set(found) - set(with_images)):
        # An empty class cannot be learned; report where it was declared so the user sees why it is gone.
        skipped.extend(SkippedFile(path=where, reason="no readable images") for where in listing.declared[name])
        logger.warning("class %r has no readable images and is left out", name)
    if len(with_images) < 2:
        raise DatasetError(
            f"{listing.where} has only one class with images, {with_images[0]!r}; a classifier needs at least "
            f"2 classes; {listing.hint}"
        )
    return with_images


def _name_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _build_records(
    readable: Iterable[tuple[Candidate, _Header]], classes: Sequence[str]
) -> list[ImageRecord]:
    label_of = {name: i for i, name in enumerate(classes)}
    records = [
        ImageRecord(
            path=cand.path,
            class_name=cand.class_name,
            label=label_of[cand.class_name],
            split=cand.split,
            width=h.width,
            height=h.height,
            mode=h.mode,
            size_bytes=h.size_bytes,
            mtime_ns=h.mtime_ns,
        )
        for cand, h in readable
    ]
    records.sort(key=lambda r: (r.split, r.class_name, r.path))
    return records


# --------------------------------------------------------------------------- duplicates


def _hash_file(path: Path) -> str | None:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        logger.warning("cannot hash %s: %s", path, exc.strerror or exc)
        return None
    return digest.hexdigest()


def _find_duplicates(root: Path, records: Sequence[ImageRecord], progress: bool) -> list[DuplicateGroup]:
    """Groups of byte-identical files; only files sharing a byte size with another are hashed."""
    by_size: dict[int, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_size[r.size_bytes].append(r)
    candidates = [r for group in by_size.values() if len(group) > 1 for r in group]
    digests = _parallel_map(_hash_file, [r.path for r in candidates], progress, "Hashing same-size files")

    by_digest: dict[tuple[int, str], list[ImageRecord]] = defaultdict(list)
    for r, digest in zip(candidates, digests, strict=True):
        if digest is not None:
            by_digest[(r.size_bytes, digest)].append(r)

    groups = [_duplicate_group(root, rs) for rs in by_digest.values() if len(rs) > 1]
    groups.sort(key=lambda g: g.paths)
    return groups


def _duplicate_group(root: Path, records: Sequence[ImageRecord]) -> DuplicateGroup:
    splits = sorted({r.split for r in records})
    return DuplicateGroup(
        paths=sorted(_relative(root, r.path) for r in records),
        splits=splits,
        classes=sorted({r.class_name for r in records}),
        cross_split=len(splits) > 1,
    )


# --------------------------------------------------------------------------- summary


def _summarise(
    root: Path,
    layout: Literal["flat", "splits"],
    classes: Sequence[str],
    splits: Sequence[str],
    records: Sequence[ImageRecord],
    duplicates: list[DuplicateGroup],
    skipped: list[SkippedFile],
) -> DatasetSummary:
    per_split = Counter((r.split, r.class_name) for r in records)
    split_counts = {s: {c: per_split[(s, c)] for c in classes} for s in splits}
    class_counts = {c: sum(split_counts[s][c] for s in splits) for c in classes}

    train_split = "train" if "train" in split_counts else FLAT_SPLIT
    if layout == "splits" and train_split == FLAT_SPLIT:
        logger.warning("%s has no train split; sizes are judged on every split together", root)
    train_counts = list(split_counts.get(train_split, class_counts).values())

    modes = Counter(r.mode for r in records)
    return DatasetSummary(
        root=str(root),
        layout=layout,
        classes=list(classes),
        n_images=len(records),
        class_counts=class_counts,
        split_counts=split_counts,
        train_split=train_split,
        images_per_class=float(statistics.median(train_counts)),
        min_images_per_class=min(train_counts),
        # A class absent from train would make this infinite, which JSON cannot hold.
        imbalance_ratio=float(max(train_counts)) / max(min(train_counts), 1),
        modes=dict(sorted(modes.items(), key=lambda kv: (-kv[1], kv[0]))),
        image_size=_size_summary(records),
        duplicates=duplicates,
        skipped=sorted(skipped, key=lambda s: s.path),
    )


def _size_summary(records: Sequence[ImageRecord]) -> ImageSizeSummary:
    widths = [r.width for r in records]
    heights = [r.height for r in records]
    return ImageSizeSummary(
        min_width=min(widths),
        min_height=min(heights),
        median_width=float(statistics.median(widths)),
        median_height=float(statistics.median(heights)),
        max_width=max(widths),
        max_height=max(heights),
    )
