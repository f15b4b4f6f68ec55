"""The torch-free preprocessing both engines share equals torchvision's eval transform, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tl_advise.advisor.measure.images.imaging import eval_transform
from tl_advise.advisor.measure.images.preprocess import network_input
from tl_advise.schema.models import Preprocessing

LITE0 = Preprocessing(input_size=224, crop_pct=0.875, interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                      std=(0.5, 0.5, 0.5))
IMAGENET = Preprocessing(input_size=224, crop_pct=224 / 256, interpolation="bilinear",
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
SMALL = Preprocessing(input_size=32, crop_pct=1.0, interpolation="nearest", mean=(0.1, 0.2, 0.3),
                      std=(0.9, 0.8, 0.7))


def random_rgb(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@settings(max_examples=25, deadline=None)
@given(width=st.integers(8, 420), height=st.integers(8, 420), seed=st.integers(0, 2**16),
       pre=st.sampled_from([LITE0, IMAGENET, SMALL]))
def test_network_input_is_torchvisions_eval_transform(width: int, height: int, seed: int,
                                                      pre: Preprocessing) -> None:
    img = random_rgb(width, height, seed)
    ours = network_input(img, pre)
    theirs = eval_transform(pre)(img).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (3, pre.input_size, pre.input_size)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("size", [(256, 256), (224, 300), (20, 10)])
def test_exact_sizes_and_padding(size: tuple[int, int]) -> None:
    """The no-resize shortcut (already the right size) and zero padding (smaller than the crop) too."""
    img = random_rgb(*size, seed=1)
    for pre in (LITE0, SMALL):
        np.testing.assert_array_equal(network_input(img, pre), eval_transform(pre)(img).numpy())
