"""The ranking's shared decode (``advisor/measure/images/shared_decode.py``): one decode per image for several
candidates' preprocessings, the same bits as ``load_for_network``; and the embedding pass's own timing of its
batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_advise.advisor.measure.images.preprocess import load_for_network
from tl_advise.advisor.measure.images.shared_decode import SharedDecoder, decoded_size
from tl_advise.advisor.ranking import pass_throughput
from tl_advise.schema.models import Preprocessing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE0 = Preprocessing(input_size=224, crop_pct=0.875, interpolation="bilinear", mean=MEAN, std=STD)  # resize 256
LITE2 = Preprocessing(input_size=260, crop_pct=0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)


def _photo(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([(xx * (3 + c) + yy * (5 - c)) % 256 for c in range(3)], axis=-1)
    noise = rng.integers(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8)).convert(mode)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("shared-decode")
    made = []
    # 1400×1100: JPEG-drafted to 1/4 for a 256 px resize but to 1/2 for a 297 px one (two decodes);
    # a 500×375 photo (one decode for both), a rotated one (EXIF orientation 6), a greyscale one and a PNG.
    for name, img, kwargs in [
        ("large.jpg", _photo(1400, 1100, 0), {"quality": 90}),
        ("photo.jpg", _photo(500, 375, 1), {"quality": 90}),
        ("grey.jpg", _photo(320, 300, 2, "L"), {}),
        ("small.png", _photo(90, 60, 3), {}),
    ]:
        img.save(folder / name, **kwargs)
        made.append(folder / name)
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo(480, 360, 4).save(folder / "rotated.jpg", exif=exif.tobytes(), quality=90)
    made.append(folder / "rotated.jpg")
    return made


def test_the_large_jpeg_drafts_to_two_sizes(images: list[Path]) -> None:
    assert decoded_size(str(images[0]), LITE0.resize_size) == (350, 275)
    assert decoded_size(str(images[0]), LITE2.resize_size) == (700, 550)
    assert decoded_size(str(images[1]), LITE0.resize_size) == decoded_size(str(images[1]), LITE2.resize_size)


def test_shared_decode_gives_load_for_networks_bits_with_one_decode_per_size(images: list[Path]) -> None:
    decoder = SharedDecoder()
    for pre in (LITE0, LITE2):
        for path in images:
            shared_x, shared_pixels = decoder.load(str(path), pre)
            x, pixels = load_for_network(str(path), pre)
            assert shared_x.dtype == x.dtype and shared_x.shape == (3, pre.input_size, pre.input_size)
            np.testing.assert_array_equal(shared_x, x)
            np.testing.assert_array_equal(shared_pixels, pixels)
    assert decoder.decodes == len(images) + 1  # the large JPEG at two draft scales
    assert decoder.reuses == len(images) - 1


def test_past_its_memory_budget_the_decoder_decodes_again_with_the_same_bits(images: list[Path]) -> None:
    decoder = SharedDecoder(max_bytes=0)
    for pre in (LITE0, LITE2):
        x, _ = decoder.load(str(images[1]), pre)
        np.testing.assert_array_equal(x, load_for_network(str(images[1]), pre)[0])
    assert (decoder.decodes, decoder.reuses) == (2, 0)


def test_images_per_second_from_the_embedding_pass_by_hand() -> None:
    # The first batch warms up; a partial last batch (another shape) is left out.
    assert pass_throughput([(32, 9.0), (32, 2.0), (32, 2.0), (10, 5.0)], 32) == (16.0, 64)
    assert pass_throughput([(32, 9.0)], 32) is None  # nothing after the warm-up: a separate pass
    assert pass_throughput([(18, 1.0)], 32) is None
    assert pass_throughput([], 32) is None
