"""Shared fixtures: small synthetic image folders for fast tests, and the real datasets in ../shared."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$TL_ADVISE_SHARED``, else ``../shared`` beside the checkout."""
    return Path(os.environ.get("TL_ADVISE_SHARED", REPO_ROOT.parent / "shared"))


def shared_dataset(name: str) -> Path:
    """A dataset under ``<shared>/data``; skips the test with the reason when it is absent."""
    path = shared_dir() / "data" / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} is absent (set TL_ADVISE_SHARED to the folder holding data/)")
    return path


def write_image(path: Path, *, size: tuple[int, int] = (40, 32), mode: str = "RGB", seed: int = 0,
                fmt: str | None = None) -> Path:
    """Write a small random image; the pattern depends on ``seed`` so files differ byte for byte."""
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr16 = rng.integers(0, 65535, size=(h, w), dtype=np.uint16)
        Image.fromarray(arr16).save(path, format=fmt)
        return path
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=None if mode != "CMYK" else "CMYK")
    if mode not in ("L", "CMYK"):
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def make_class_folder(root: Path, classes: dict[str, int], *, size: tuple[int, int] = (40, 32),
                      ext: str = ".png", seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` with the given number of distinct images per class.

    Each class gets its own mean colour so that features can separate the classes.
    """
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(sorted(classes.items())):
        base = np.array([(k * 97) % 256, (k * 53 + 80) % 256, (k * 151 + 160) % 256], dtype=np.float32)
        for i in range(n):
            noise = rng.normal(0, 25, size=(size[1], size[0], 3))
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            path = root / name / f"img_{i:04d}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``image_folder({"cat": 6, "dog": 6})`` builds a flat class folder under tmp_path."""

    def build(classes: dict[str, int], name: str = "data", **kwargs: object) -> Path:
        return make_class_folder(tmp_path / name, classes, **kwargs)  # type: ignore[arg-type]

    return build


# --------------------------------------------------------------------------- shared helpers (added)


def snapshot_tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (relative path → (size, mtime_ns)), to prove a folder was not written to."""
    out: dict[str, tuple[int, int]] = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        out[path.relative_to(root).as_posix()] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns)
    return out


def truncated_png(path: Path, *, size: tuple[int, int] = (40, 32), seed: int = 5) -> Path:
    """A PNG whose header, chunk CRCs and IEND are intact but whose IDAT holds half the compressed stream:
    the scan (header + end marker) accepts it, only a full decode finds the damage."""
    import io
    import struct
    import zlib

    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    data = buf.getvalue()
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start:start + 4])
    half = data[start + 8:start + 8 + length // 2]
    chunk = struct.pack(">I", len(half)) + b"IDAT" + half + struct.pack(">I", zlib.crc32(b"IDAT" + half))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:start] + chunk + data[start + 12 + length:])
    return path


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the whole test session (never ~/.cache): each sample is embedded once."""
    return tmp_path_factory.mktemp("tl-advise-cache")


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small flat dataset (3 classes × 6 images of 40×32 px) shared by the API and CLI tests."""
    return make_class_folder(tmp_path_factory.mktemp("synthetic") / "data", {"cat": 6, "dog": 6, "fox": 6})


@pytest.fixture
def restore_tl_logging() -> Iterator[None]:
    """The CLI reconfigures the ``tl_advise`` logger (own handler, no propagation); put it back afterwards
    so that ``caplog`` in later tests still sees the package's records."""
    import logging

    logger = logging.getLogger("tl_advise")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.propagate = True
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture(scope="module")
def one_blas_thread() -> Iterator[None]:
    """Multi-threaded BLAS spins for seconds on the tiny cross-validation matrices of a busy 2-core machine."""
    with threadpool_limits(1, "blas"):
        yield


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TL_ADVISE_* from the caller, and a working directory without a pyproject.toml above it."""
    for name in list(os.environ):
        if name.startswith("TL_ADVISE_") and name != "TL_ADVISE_SHARED":
            monkeypatch.delenv(name)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


# --------------------------------------------------------------------------- the fast path

# Fixtures that load the real backbone, embed with it or train: a test that uses one is slow whatever its own
# duration (the fixture's cost lands on whichever test runs first), so `-m "not slow"` leaves it out.
SLOW_FIXTURES = frozenset({"lite", "cold", "warm", "warm_dataset", "odd_json", "weight_files", "session",
                           "run_result", "run_metrics"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


TRACKING_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TL_ADVISE_MLFLOW", "TL_ADVISE_TENSORBOARD",
                      "MLFLOW_ALLOW_FILE_STORE")


@pytest.fixture
def no_tracking_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracking settings from the environment the tests run in: each test sets what it means."""
    for name in TRACKING_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``without("mlflow")`` makes the package unimportable, as when it is not installed."""
    import sys

    def hide(package: str) -> None:
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, package, None)

    yield hide
