"""Embedding a sample with the real default backbone: shapes, the per-file cache and its failure modes,
undecodable files, and the decoding every backbone relies on (``open_rgb`` / ``to_rgb``)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import snapshot_tree, truncated_png, write_image
from PIL import Image

from tl_advise.advisor.data.images.scan import scan_dataset
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.advisor.measure.images.embed import EmbeddingSet, embed
from tl_advise.advisor.measure.images.embedding import Batch, BNReference, embed_sample
from tl_advise.advisor.measure.images.imaging import (
    PIXEL_BASELINE_SIZE,
    eval_transform,
    open_rgb,
    pixel_baseline,
    to_rgb,
)

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

CPU = torch.device("cpu")
CLASSES = {"ants": 3, "bees": 3}
N_IMAGES = sum(CLASSES.values())


@pytest.fixture(scope="module")
def lite() -> Backbone:
    return load_backbone()


def run_embed(backbone: Backbone, folder: Path, cache: ArrayCache | None, **kwargs: object) -> EmbeddingSet:
    scan = scan_dataset(folder)
    kwargs.setdefault("num_workers", 0)
    return embed(backbone, scan.records, root=scan.root, device=CPU, cache=cache, **kwargs)


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tl_advise.advisor.measure.cache" and r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- results


@pytest.mark.slow
def test_embedding_shapes_and_ranges(lite: Backbone, image_folder: Callable[..., Path], tmp_path: Path) -> None:
    folder = image_folder(CLASSES)
    result = run_embed(lite, folder, ArrayCache(tmp_path / "cache"))
    n = N_IMAGES
    assert result.features.shape == (n, 1280) and result.features.dtype == np.float32
    assert np.isfinite(result.features).all() and result.features.std() > 0
    assert ((result.entropy >= 0) & (result.entropy <= 1)).all()
    assert ((result.max_prob > 0) & (result.max_prob <= 1)).all()
    assert ((result.top1 >= 0) & (result.top1 < 1000)).all()
    assert result.pixels.shape == (n, 1024) and result.pixels.dtype == np.uint8
    assert result.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert result.forward_passes == n and result.cache_hits == 0 and result.failed == []
    assert result.bn is not None and len(result.bn.layers) == 49
    assert result.bn.layers == [name for name, _ in lite.batchnorm_layers()]
    for (_, bn), mean, var in zip(lite.batchnorm_layers(), result.bn.mean, result.bn.var, strict=True):
        assert mean.shape == var.shape == (bn.num_features,)
        assert (var >= 0).all()


@pytest.mark.slow
def test_features_are_the_backbone_output(lite: Backbone, image_folder: Callable[..., Path], tmp_path: Path) -> None:
    """The batched, channels-last pass gives what one image through body() gives."""
    folder = image_folder(CLASSES)
    result = run_embed(lite, folder, ArrayCache(tmp_path / "cache"))
    record = result.records[4]
    x = eval_transform(lite.preprocessing)(open_rgb(str(record.path))).unsqueeze(0)
    with torch.inference_mode():
        direct = lite.body(x)
        probs = lite.head(direct).softmax(-1)[0]
    np.testing.assert_allclose(result.features[4], direct[0].numpy(), rtol=1e-3, atol=1e-4)
    assert result.top1[4] == int(probs.argmax())
    np.testing.assert_allclose(result.max_prob[4], float(probs.max()), rtol=1e-3)
    expected_pixels = pixel_baseline(open_rgb(str(record.path)))
    assert np.array_equal(result.pixels[4], expected_pixels)


@pytest.mark.slow
def test_warm_cache_does_no_forward_pass(lite: Backbone, image_folder: Callable[..., Path], tmp_path: Path) -> None:
    folder = image_folder(CLASSES)
    cache = ArrayCache(tmp_path / "cache")
    cold = run_embed(lite, folder, cache)
    warm = run_embed(lite, folder, cache)
    assert warm.forward_passes == 0 and warm.cache_hits == N_IMAGES
    assert np.array_equal(warm.features, cold.features)
    assert np.array_equal(warm.pixels, cold.pixels)
    assert cold.bn is not None and warm.bn is not None
    assert all(np.array_equal(a, b) for a, b in zip(cold.bn.mean, warm.bn.mean, strict=True))
    # A fresh cache object on the same folder reads the same entries.
    again = run_embed(lite, folder, ArrayCache(tmp_path / "cache"))
    assert again.forward_passes == 0 and np.array_equal(again.features, cold.features)
    # BN statistics describe the sample as a whole: one touched file re-runs the sample to collect them.
    target = folder / "ants" / "img_0000.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = run_embed(lite, folder, cache)
    assert touched.forward_passes == N_IMAGES and touched.bn is not None


@pytest.mark.slow
def test_touched_file_alone_is_recomputed(lite: Backbone, image_folder: Callable[..., Path], tmp_path: Path) -> None:
    folder = image_folder(CLASSES)
    cache = ArrayCache(tmp_path / "cache")
    cold = run_embed(lite, folder, cache, collect_bn=False)
    assert cold.bn is None and cold.forward_passes == N_IMAGES
    touched = folder / "bees" / "img_0001.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    warm = run_embed(lite, folder, cache, collect_bn=False)
    assert warm.forward_passes == 1 and warm.cache_hits == N_IMAGES - 1
    np.testing.assert_allclose(warm.features, cold.features, rtol=1e-4, atol=1e-5)  # same pixels
    # New content under the same name is a new embedding, for that row only.
    write_image(touched, seed=99)
    changed = run_embed(lite, folder, cache, collect_bn=False)
    assert changed.forward_passes == 1
    row = [r.path for r in changed.records].index(touched)
    assert not np.allclose(changed.features[row], cold.features[row])
    others = [i for i in range(N_IMAGES) if i != row]
    np.testing.assert_allclose(changed.features[others], cold.features[others], rtol=1e-4, atol=1e-5)




@pytest.mark.slow
def test_embedding_without_a_cache(lite: Backbone, image_folder: Callable[..., Path]) -> None:
    folder = image_folder({"ants": 1, "bees": 1})
    for cache in (None, ArrayCache(None)):
        result = run_embed(lite, folder, cache)
        assert result.features.shape == (2, 1280) and result.bn is not None


@pytest.mark.slow
def test_embedding_without_a_cache_and_without_bn(lite: Backbone, image_folder: Callable[..., Path]) -> None:
    folder = image_folder(CLASSES)
    result = run_embed(lite, folder, None, collect_bn=False)
    assert result.features.shape == (N_IMAGES, 1280) and result.bn is None
    assert result.forward_passes == N_IMAGES


# --------------------------------------------------------------------------- a cache that misbehaves


@pytest.mark.slow
def test_corrupt_cache_entries_warn_once_and_recompute(lite: Backbone, image_folder: Callable[..., Path],
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = image_folder(CLASSES)
    cache_dir = tmp_path / "cache"
    cold = run_embed(lite, folder, ArrayCache(cache_dir))
    entries = sorted(cache_dir.rglob("*.npz"))
    assert {p.parent.name for p in entries} == {"embeddings", "bnstats"}
    for path in entries:
        path.write_bytes(b"this is not a zip file" * 10)
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        again = run_embed(lite, folder, ArrayCache(cache_dir))
    assert again.forward_passes == N_IMAGES
    np.testing.assert_allclose(again.features, cold.features, rtol=1e-4, atol=1e-5)
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1, [w.getMessage() for w in warnings]
    assert "unreadable" in warnings[0].getMessage()
    # ... and the rewritten entries are good again.
    caplog.clear()
    third = run_embed(lite, folder, ArrayCache(cache_dir))
    assert third.forward_passes == 0 and not cache_warnings(caplog)


def test_corrupt_json_entry_warns_and_reads_as_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = ArrayCache(tmp_path / "cache")
    cache.save_json("measurements", "k", {"a": 1})
    assert cache.load_json("measurements", "k") == {"a": 1}
    (path,) = (tmp_path / "cache").rglob("k.json")
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        assert cache.load_json("measurements", "k") is None
    assert len(cache_warnings(caplog)) == 1
    assert not list((tmp_path / "cache").rglob(".tmp-*")), "no temporary files are left behind"


class _FakeEngine:
    """An ``EmbeddingEngine`` without a network: one BN layer, features that number the images, and a count
    of the images it was asked to embed."""

    name = "fake"
    default_batch_size = 4
    categories = None
    cache_key = "fake-engine"
    device = "cpu"
    info = SimpleNamespace(name="fake")

    def __init__(self) -> None:
        self.embedded = 0

    def bn_reference(self) -> BNReference:
        return BNReference(["bn1"], [np.zeros(2)], [np.ones(2)], [1e-5])

    def batches(self, paths: Sequence[Path], *, batch_size: int, num_workers: int,
                collect_bn: bool) -> Iterator[Batch]:
        n = len(paths)
        self.embedded += n
        yield Batch(index=np.arange(n), errors=[""] * n, features=np.repeat(np.arange(n, dtype=np.float32), 3)
                    .reshape(n, 3), logits=np.zeros((n, 4), np.float32), pixels=np.zeros((n, 1024), np.uint8),
                    bn_mean=[np.ones((n, 2), np.float32)], bn_sq=[np.full((n, 2), 2.0, np.float32)])


@pytest.mark.parametrize("kind", ["embeddings", "bnstats"])
def test_cache_entry_without_the_arrays_it_needs_warns_once_and_is_recomputed(
        kind: str, image_folder: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scan = scan_dataset(image_folder(CLASSES))
    cache_dir = tmp_path / "cache"

    def run() -> tuple[EmbeddingSet, int]:
        engine = _FakeEngine()
        result = embed_sample(engine, scan.records, root=scan.root, cache=ArrayCache(cache_dir),  # type: ignore[arg-type]
                              num_workers=0)
        return result, engine.embedded

    cold, _ = run()
    (entry,) = cache_dir.rglob(f"{kind}/*.npz")
    np.savez(entry, x=np.zeros(3))  # still a valid .npz, as by another tool or version
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        again, embedded = run()
    assert embedded == N_IMAGES
    np.testing.assert_array_equal(again.features, cold.features)
    assert again.bn is not None and cold.bn is not None
    np.testing.assert_array_equal(again.bn.var[0], cold.bn.var[0])
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and "lacks the array" in warnings[0].getMessage()
    caplog.clear()  # ... and the rewritten entry is good again
    assert run()[1] == 0 and not cache_warnings(caplog)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions; see the file-as-folder variant")
def test_unwritable_cache_folder_warns_and_still_embeds(lite: Backbone, image_folder: Callable[..., Path],
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = image_folder(CLASSES)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING, logger="tl_advise"):
            result = run_embed(lite, folder, ArrayCache(locked / "cache"))
    finally:
        locked.chmod(0o700)
    assert result.features.shape == (N_IMAGES, 1280)
    assert len(cache_warnings(caplog)) == 1


@pytest.mark.slow
def test_cache_path_that_is_a_file_warns_and_still_embeds(lite: Backbone, image_folder: Callable[..., Path],
                                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Writing is impossible even for root when the cache 'folder' is a file."""
    folder = image_folder(CLASSES)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        result = run_embed(lite, folder, ArrayCache(blocker))
    assert result.features.shape == (N_IMAGES, 1280) and result.bn is not None
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and "cannot write the cache" in warnings[0].getMessage()
    assert blocker.read_text().startswith("a file")


# --------------------------------------------------------------------------- files that do not decode


@pytest.mark.slow
def test_undecodable_image_is_reported_not_fatal(lite: Backbone, image_folder: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    clean = image_folder({"ants": 3, "bees": 3}, name="clean")
    broken = tmp_path / "broken"
    shutil.copytree(clean, broken)
    bad = truncated_png(broken / "ants" / "img_0001_bad.png")
    before = snapshot_tree(broken)
    scan = scan_dataset(broken)
    assert bad in [r.path for r in scan.records], "the scan reads headers only, so it cannot see this"
    cache = ArrayCache(tmp_path / "cache")
    # Small batches and a worker process: the broken file sits in the middle of a batch.
    result = embed(lite, scan.records, root=scan.root, device=CPU, cache=cache, batch_size=4, num_workers=1)
    assert [f.path for f in result.failed] == ["ants/img_0001_bad.png"]
    assert "cannot decode" in result.failed[0].reason
    assert bad not in [r.path for r in result.records]
    assert result.features.shape == (6, 1280) and len(result.records) == 6
    # Its blank stand-in must not leak into the BN statistics: they equal those of the clean copy.
    reference = run_embed(lite, clean, ArrayCache(tmp_path / "cache-clean"))
    assert result.bn is not None and reference.bn is not None
    for a, b in zip(result.bn.mean, reference.bn.mean, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(result.features, reference.features, rtol=1e-3, atol=1e-4)
    # A failure is not cached as a result: the next run tries (and reports) the file again.
    again = embed(lite, scan.records, root=scan.root, device=CPU, cache=cache, num_workers=0)
    assert again.forward_passes == 1 and [f.path for f in again.failed] == ["ants/img_0001_bad.png"]
    # Nothing was written into the dataset (listing, sizes and mtimes), only into the cache folder.
    assert snapshot_tree(broken) == before
    assert list((tmp_path / "cache").rglob("*.npz"))


# --------------------------------------------------------------------------- decoding


def channel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def test_to_rgb_greyscale() -> None:
    out = to_rgb(Image.new("L", (3, 2), 77))
    assert out.mode == "RGB" and out.size == (3, 2)
    assert channel(out, (1, 1)) == (77, 77, 77)


def test_to_rgb_composites_alpha_on_white() -> None:
    arr = np.array([[[0, 0, 0, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    out = to_rgb(Image.fromarray(arr, mode="RGBA"))
    assert out.mode == "RGB"
    assert channel(out, (0, 0)) == (255, 255, 255)  # transparent → the white background
    assert channel(out, (1, 0)) == (10, 20, 30)  # opaque → itself
    assert all(abs(c - 127) <= 1 for c in channel(out, (2, 0)))  # half-transparent black → mid grey
    la = to_rgb(Image.fromarray(np.array([[[0, 0], [50, 255]]], dtype=np.uint8), mode="LA"))
    assert channel(la, (0, 0)) == (255, 255, 255) and channel(la, (1, 0)) == (50, 50, 50)


def test_to_rgb_scales_16_bit_instead_of_clipping() -> None:
    arr = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    red = [channel(to_rgb(img), (x, 0))[0] for x in range(4)]
    assert red[0] == 0 and red[1] <= 1 and 126 <= red[2] <= 128 and red[3] == 255


def test_open_rgb_16_bit_png_uses_the_full_range(tmp_path: Path) -> None:
    gradient = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "g16.png"
    Image.fromarray(gradient).save(path)
    out = np.asarray(open_rgb(str(path)))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert (out == 255).mean() < 0.01  # clipping would make nearly every pixel white
    assert abs(float(out.mean()) - 127.5) < 2
    written = write_image(tmp_path / "noise16.png", mode="I;16", seed=3)
    noise = np.asarray(open_rgb(str(written)))
    assert 100 < noise.mean() < 155  # uniform 16-bit noise stays mid-grey on average


def test_to_rgb_32_bit_integer_scaled_by_its_maximum() -> None:
    img = Image.fromarray(np.array([[0, 500, 1000]], dtype=np.int32))
    assert img.mode == "I"
    red = [channel(to_rgb(img), (x, 0))[0] for x in range(3)]
    assert red[0] == 0 and 126 <= red[1] <= 128 and red[2] == 255


def test_to_rgb_cmyk(tmp_path: Path) -> None:
    assert channel(to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))), (0, 0)) == (255, 255, 255)
    assert channel(to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0))), (0, 0)) == (255, 0, 0)
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    r, g, b = channel(open_rgb(str(path)), (16, 16))
    assert r > 240 and g < 15 and b < 15


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_becomes_white(tmp_path: Path, fmt: str) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    path = tmp_path / f"p.{fmt.lower()}"
    img.save(path, format=fmt, transparency=0)
    out = open_rgb(str(path))
    assert out.mode == "RGB"
    assert channel(out, (0, 0)) == (255, 255, 255)
    assert channel(out, (1, 0)) == (255, 0, 0)


def test_palette_without_transparency_keeps_its_colours() -> None:
    img = Image.new("P", (1, 1))
    img.putpalette([0, 128, 255] + [0, 0, 0] * 255)
    assert channel(to_rgb(img), (0, 0)) == (0, 128, 255)


@pytest.mark.parametrize("size", [(1000, 800), (2048, 300), (513, 1100), (3000, 2000), (256, 256)])
@pytest.mark.slow
def test_jpeg_draft_never_goes_below_the_draft_size(tmp_path: Path, size: tuple[int, int]) -> None:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=80)
    draft = 256
    out = open_rgb(str(path), draft_size=draft)
    assert out.mode == "RGB"
    assert min(out.size) >= min(draft, min(size))
    assert out.width <= w and out.height <= h
    assert open_rgb(str(path)).size == size  # without a draft size: full resolution
    if min(size) >= 2 * draft:  # DCT scaling really happened
        assert out.width < w


def test_draft_size_is_ignored_for_png(tmp_path: Path) -> None:
    path = write_image(tmp_path / "big.png", size=(600, 520))
    assert open_rgb(str(path), draft_size=128).size == (600, 520)


def test_pixel_baseline_is_a_writable_1024_uint8_vector() -> None:
    out = pixel_baseline(Image.new("RGB", (40, 32), (100, 100, 100)))
    assert out.shape == (PIXEL_BASELINE_SIZE * PIXEL_BASELINE_SIZE,) == (1024,)
    assert out.dtype == np.uint8 and out.flags.writeable
    assert (out == 100).all()
    out[0] = 7  # a read-only view of PIL memory would raise here
    assert out[0] == 7
    gradient = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1)))
    row = pixel_baseline(gradient).reshape(32, 32)[0]
    assert (np.diff(row.astype(int)) >= 0).all() and row[-1] > row[0]

