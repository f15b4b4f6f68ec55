"""A corpus of broken and exotic inputs, for the adversarial CLI tests: what a real image folder can hold.

``build_corpus(root)`` writes a flat dataset with a few good images per class and, beside them, one entry
of every kind in ``KINDS`` (each a small real file, never a mock). ``add_entry(root, kind, ...)`` writes one
entry, so that a property test can draw them. ``tree_digest(root)`` hashes names (as bytes), contents,
modes and link targets: equal digests before and after a run prove the dataset was not written to.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import make_class_folder, truncated_png
from PIL import Image

# Names a file system allows and a careless tool does not: bytes that are not UTF-8, a newline, an escape
# sequence, a backslash, spaces, a non-Latin script, a leading dash.
ODD_NAMES: dict[str, bytes] = {
    "non_utf8": b"bad\xff\xfe.png",
    "newline": b"two\nlines.png",
    "escape": b"esc\x1b[31mred.png",
    "backslash": b"back\\slash.png",
    "spaces": b"  spaced  out .png",
    "unicode": "ünïcødé-写真.png".encode(),
    "dash": b"-o.png",
}


def _png_bytes(arr: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _rgb(seed: int, size: tuple[int, int] = (40, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_header_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` × ``height`` with a few bytes of pixel data and an IEND: the
    header (and a cheap end-marker check) accept it; only a decode finds it empty."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) \
        + _chunk(b"IEND", b"")


def exif_rotated_jpeg(seed: int, orientation: int = 6) -> bytes:
    """A 48×32 JPEG stored sideways with an EXIF orientation tag (a viewer shows it 32×48)."""
    img = Image.fromarray(_rgb(seed, (48, 32)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _palette_with_transparency(seed: int) -> bytes:
    img = Image.fromarray(_rgb(seed)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save_png(img, transparency=0)


def _save_png(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _sixteen_bit(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 65535, (32, 40), dtype=np.uint16)
    return _save_png(Image.fromarray(arr))


# kind -> (file name as bytes, content maker(seed) -> bytes); links and folders are made in add_entry.
_FILES: dict[str, tuple[bytes, Callable[[int], bytes]]] = {
    "zero_byte": (b"empty.png", lambda seed: b""),
    "not_an_image": (b"notes.jpg", lambda seed: b"this is text, not a JPEG\n" * 4),
    "text_file": (b"readme.txt", lambda seed: b"labels were checked by hand\n"),
    "truncated_jpeg": (b"cut.jpg", lambda seed: _jpeg(Image.fromarray(_rgb(seed)))[:200]),
    "garbage_png": (b"garbage.png", lambda seed: b"\x89PNG\r\n\x1a\n" + os.urandom(64)),
    "huge_header": (b"huge.png", lambda seed: huge_header_png(12_000, 9_000)),
    "bomb_header": (b"bomb.png", lambda seed: huge_header_png(40_000, 40_000)),
    "exif_rotated": (b"rotated.jpg", exif_rotated_jpeg),
    "cmyk_jpeg": (b"cmyk.jpg", lambda seed: _jpeg(Image.fromarray(_rgb(seed)).convert("CMYK"))),
    "sixteen_bit_png": (b"deep.png", _sixteen_bit),
    "palette_png": (b"palette.png", _palette_with_transparency),
    "grey_alpha_png": (b"la.png", lambda seed: _save_png(Image.fromarray(_rgb(seed)).convert("LA"))),
    "one_bit_png": (b"mono.png", lambda seed: _save_png(Image.fromarray(_rgb(seed)).convert("1"))),
    "hidden": (b".hidden.png", lambda seed: _png_bytes(_rgb(seed))),
    **{f"name_{key}": (name, lambda seed: _png_bytes(_rgb(seed + 1000))) for key, name in ODD_NAMES.items()},
}
_SPECIAL = ("truncated_png", "symlink_to_image", "dangling_symlink", "symlink_loop_file", "symlink_loop_dir",
            "nested_folder", "empty_class", "cross_class_duplicate")
KINDS: tuple[str, ...] = (*_FILES, *_SPECIAL)
# Entries the scan must leave out (the rest are images it may use, or ignored names).
BROKEN = frozenset({"zero_byte", "not_an_image", "text_file", "truncated_jpeg", "garbage_png", "bomb_header",
                    "truncated_png", "dangling_symlink", "symlink_loop_file"})


def add_entry(root: Path, kind: str, class_name: str, seed: int = 0) -> None:
    """Write one entry of ``kind`` into ``root/<class_name>/`` (the folder is made if needed)."""
    folder = os.fsencode(root / class_name)
    os.makedirs(folder, exist_ok=True)
    tag = f"{seed}_".encode()
    if kind in _FILES:
        name, make = _FILES[kind]
        prefix = b"." if name.startswith(b".") else b""
        path = os.path.join(folder, prefix + tag + name.lstrip(b"."))
        with open(path, "wb") as fh:
            fh.write(make(seed))
    elif kind == "truncated_png":
        truncated_png(root / class_name / f"{seed}_half.png", seed=seed)
    elif kind == "symlink_to_image":
        target = root / class_name / f"{seed}_target.png"
        target.write_bytes(_png_bytes(_rgb(seed + 2000)))
        (root / class_name / f"{seed}_link.png").symlink_to(target.name)
    elif kind == "dangling_symlink":
        (root / class_name / f"{seed}_dangling.png").symlink_to("no-such-file.png")
    elif kind == "symlink_loop_file":
        (root / class_name / f"{seed}_loop.png").symlink_to(f"{seed}_loop.png")
    elif kind == "symlink_loop_dir":
        (root / class_name / f"{seed}_loop_dir").symlink_to("..")
    elif kind == "nested_folder":
        nested = root / class_name / f"{seed}_sub" / "deeper"
        nested.mkdir(parents=True, exist_ok=True)
        (nested / "nested.png").write_bytes(_png_bytes(_rgb(seed + 3000)))
    elif kind == "empty_class":
        (root / f"empty_{seed}").mkdir(exist_ok=True)
    elif kind == "cross_class_duplicate":
        data = _png_bytes(_rgb(seed + 4000))
        (root / class_name / f"{seed}_twin.png").write_bytes(data)
        other = root / f"{class_name}_twin"
        make_class_folder(root, {other.name: 2}, seed=seed + 5)
        (other / f"{seed}_twin.png").write_bytes(data)
    else:
        raise ValueError(f"unknown corpus kind {kind!r}; choose from {', '.join(KINDS)}")


def build_corpus(root: Path, *, per_class: int = 4, kinds: tuple[str, ...] = KINDS) -> Path:
    """Two classes of ``per_class`` good images each, plus one entry of every kind, spread over them."""
    make_class_folder(root, {"cat": per_class, "dog": per_class})
    for i, kind in enumerate(kinds):
        add_entry(root, kind, ("cat", "dog")[i % 2], seed=i)
    return root


def tree_digest(root: Path) -> str:
    """A hash of everything under ``root``: names as bytes, file types and modes, contents, link targets."""
    digest = hashlib.sha256()
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest.update(os.path.relpath(path, base) + b"\0" + str(stat.S_IFMT(st.st_mode)).encode()
                          + str(stat.S_IMODE(st.st_mode)).encode() + b"\0")
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                try:
                    with open(path, "rb") as fh:
                        digest.update(fh.read())
                except OSError as exc:  # a permission case: its metadata still counts
                    digest.update(str(exc.errno).encode())
    return digest.hexdigest()
