"""Backbones: the embedded default's real ImageNet weights, its stages, the torchvision path offline,
local checkpoints (``weights_file``) and the errors that name what is wrong."""

from __future__ import annotations

import pickle
import re
import shutil
import urllib.error
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dir
from PIL import Image
from torch import nn

from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.advisor.measure.images.backbones import efficientnet_lite0 as lite0
from tl_advise.advisor.measure.images.backbones.registry import parse_spec
from tl_advise.advisor.measure.images.imaging import eval_transform, open_rgb
from tl_advise.schema.errors import BackboneError

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photographs")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
EGYPTIAN_CAT, ESPRESSO = 285, 967
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


class NotATensor:
    """Anything that is not a tensor: ``weights_only=True`` must refuse to unpickle it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.fixture(scope="module")
def lite() -> Backbone:
    return load_backbone().eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-image's photographs as PNG files, so the tool's own decoding and preprocessing are tested."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee", "rocket"):
        out[name] = folder / f"{name}.png"
        Image.fromarray(getattr(skimage_data, name)()).save(out[name])
    return out


def probabilities(backbone: Backbone, path: Path) -> torch.Tensor:
    x = eval_transform(backbone.preprocessing)(open_rgb(str(path))).unsqueeze(0)
    with torch.inference_mode():
        return backbone.head(backbone.body(x)).softmax(-1)[0]


def body_params(backbone: Backbone) -> dict[int, str]:
    return {id(p): name for name, p in backbone.body.named_parameters()}


def empty_torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh TORCH_HOME; any attempt to download raises URLError (no network is ever tried)."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(url: str, *args: object, **kwargs: object) -> object:
        raise urllib.error.URLError(f"offline test: refused to download {url}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home / "hub" / "checkpoints"


# --------------------------------------------------------------------------- the default's real weights


@pytest.mark.slow
def test_chelsea_is_a_cat(lite: Backbone, photos: dict[str, Path]) -> None:
    probs = probabilities(lite, photos["chelsea"])
    top3 = probs.topk(3).indices.tolist()
    assert top3[0] in CAT_CLASSES, (top3, lite.categories and lite.categories[top3[0]])
    assert EGYPTIAN_CAT in top3
    assert float(probs[281:286].sum()) > 0.8  # nearly all the mass on the cat classes
    assert lite.categories is not None and lite.categories[EGYPTIAN_CAT] == "Egyptian cat"


def test_coffee_is_an_espresso(lite: Backbone, photos: dict[str, Path]) -> None:
    probs = probabilities(lite, photos["coffee"])
    assert int(probs.argmax()) == ESPRESSO
    assert float(probs[ESPRESSO]) > 0.5


def test_rocket_is_a_rocket_like_class(lite: Backbone, photos: dict[str, Path]) -> None:
    # ImageNet has no "rocket"; missile / projectile / space shuttle are the right answers.
    probs = probabilities(lite, photos["rocket"])
    assert int(probs.argmax()) in {657, 744, 812}


@pytest.mark.slow
def test_random_weights_differ_from_pretrained(lite: Backbone, photos: dict[str, Path]) -> None:
    random = load_backbone(pretrained=False).eval()
    assert random.info.source == "random" and random.info.weights == "random"
    assert lite.info.source == "embedded"
    pretrained_state, random_state = lite.body.state_dict(), random.body.state_dict()
    assert pretrained_state.keys() == random_state.keys()
    conv = "conv_stem.weight"
    assert not torch.equal(pretrained_state[conv], random_state[conv])
    assert not torch.equal(lite.head.weight, random.head.weight)
    # A random network has no idea what a cat is.
    assert float(probabilities(random, photos["chelsea"])[281:286].sum()) < 0.5


# --------------------------------------------------------------------------- structure


def test_default_backbone_structure(lite: Backbone) -> None:
    assert lite.info.feature_dim == 1280
    assert lite.head.in_features == 1280 and lite.head.out_features == 1000
    assert len(lite.batchnorm_layers()) == 49
    assert lite.info.has_batchnorm
    names = [s.name for s in lite.stages]
    assert names == ["stem", *(f"blocks.{i}" for i in range(7)), "conv_head"]
    assert lite.info.stages == names
    assert lite.preprocessing.input_size == 224 and lite.preprocessing.resize_size == 256


def test_stages_cover_every_body_parameter_exactly_once(lite: Backbone) -> None:
    params = body_params(lite)
    seen: dict[int, str] = {}
    for stage in lite.stages:
        assert stage.parameters(), f"stage {stage.name} has no parameters"
        for p in stage.parameters():
            assert id(p) in params, f"stage {stage.name} holds a parameter outside the body"
            assert id(p) not in seen, f"{params[id(p)]} is in both {seen[id(p)]} and {stage.name}"
            seen[id(p)] = stage.name
    missing = sorted(params[i] for i in set(params) - set(seen))
    assert not missing, f"parameters in no stage: {missing[:5]}"


def test_head_is_not_in_the_body(lite: Backbone) -> None:
    assert not set(map(id, lite.head.parameters())) & set(body_params(lite))
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        assert lite.body(x).shape == (1, 1280)


# --------------------------------------------------------------------------- remap_by_position


@pytest.mark.slow
def test_remap_by_position_renames_in_order() -> None:
    model = lite0.create_model()
    target = model.state_dict()
    source = OrderedDict((f"other.{i}", t.clone()) for i, t in enumerate(target.values()))
    remapped = lite0.remap_by_position(source, model)
    assert list(remapped) == list(target)
    first = next(iter(target))
    assert torch.equal(remapped[first], source["other.0"])


@pytest.mark.slow
def test_remap_by_position_refuses_a_shape_mismatch() -> None:
    model = lite0.create_model()
    source = OrderedDict(model.state_dict())
    key = "conv_stem.weight"
    source[key] = torch.zeros(source[key].shape[0] + 1, *source[key].shape[1:])
    with pytest.raises(BackboneError, match=re.escape("conv_stem.weight")):
        lite0.remap_by_position(source, model)


@pytest.mark.slow
def test_remap_by_position_refuses_a_count_mismatch() -> None:
    model = lite0.create_model()
    source = OrderedDict(list(model.state_dict().items())[:-1])
    with pytest.raises(BackboneError, match="tensors"):
        lite0.remap_by_position(source, model)


# --------------------------------------------------------------------------- names and specs


def test_parse_spec() -> None:
    assert parse_spec("resnet50:IMAGENET1K_V1") == ("resnet50", "IMAGENET1K_V1")
    assert parse_spec(" resnet50 ") == ("resnet50", None)


@pytest.mark.parametrize("spec", ["no_such_network", "efficientnet_lite0:IMAGENET1K_V1"])
def test_unknown_backbone_names_are_refused(spec: str) -> None:
    with pytest.raises(BackboneError) as info:
        load_backbone(spec)
    assert spec.split(":")[0] in str(info.value)


def test_unknown_torchvision_weights_name_lists_the_choices() -> None:
    with pytest.raises(BackboneError, match="IMAGENET1K_V1"):
        load_backbone("mobilenet_v2:NO_SUCH_WEIGHTS")


# --------------------------------------------------------------------------- torchvision, offline


@pytest.mark.slow
@pytest.mark.shared
def test_torchvision_backbone_from_the_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 photos: dict[str, Path]) -> None:
    weights = shared_dir() / "weights" / MOBILENET_FILE
    if not weights.is_file():
        pytest.skip(f"{weights} is absent (set TL_ADVISE_SHARED to the folder holding weights/)")
    checkpoints = empty_torch_home(monkeypatch, tmp_path)
    shutil.copy(weights, checkpoints / MOBILENET_FILE)

    net = load_backbone("mobilenet_v2:IMAGENET1K_V1").eval()
    assert net.info.source == "torchvision"
    assert net.info.weights == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert net.info.feature_dim == 1280 and net.head.out_features == 1000
    assert net.preprocessing.interpolation == "bilinear"
    assert net.categories is not None and len(net.categories) == 1000
    probs = probabilities(net, photos["chelsea"])
    assert int(probs.argmax()) in CAT_CLASSES
    # Its discovered stages also cover the body exactly once.
    stage_ids = [id(p) for s in net.stages for p in s.parameters()]
    assert len(stage_ids) == len(set(stage_ids))
    assert set(stage_ids) == set(body_params(net))


@pytest.mark.slow
def test_missing_torchvision_weights_name_the_file_and_folder(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    checkpoints = empty_torch_home(monkeypatch, tmp_path)
    with pytest.raises(BackboneError) as info:
        load_backbone("resnet18")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(checkpoints) in message
    assert "URLError" in message
    assert list(checkpoints.iterdir()) == []


# --------------------------------------------------------------------------- weights_file


@pytest.mark.slow
def test_weights_file_with_a_plain_state_dict(tmp_path: Path) -> None:
    model = lite0.create_model()  # random init, so the loaded numbers are recognisably these
    path = tmp_path / "lite0.pth"
    torch.save(model.state_dict(), path)
    net = load_backbone("efficientnet_lite0", weights_file=path)
    assert net.info.source == "file" and str(path.resolve()) in net.info.weights
    assert torch.equal(net.body.state_dict()["conv_stem.weight"], model.state_dict()["conv_stem.weight"])
    assert torch.equal(net.head.weight, model.classifier.weight)
    assert net.head.out_features == 1000 and net.categories is not None


@pytest.mark.slow
def test_weights_file_wrapped_and_prefixed(tmp_path: Path) -> None:
    """Training scripts save {"state_dict": …} and DataParallel prefixes every key with "module."."""
    model = lite0.create_model()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    net = load_backbone("efficientnet_lite0", weights_file=path)
    assert torch.equal(net.head.bias, model.classifier.bias)


@pytest.mark.slow
def test_weights_file_with_a_ten_class_head(tmp_path: Path) -> None:
    model = lite0.create_model()
    model.classifier = nn.Linear(1280, 10)
    path = tmp_path / "finetuned.pth"
    torch.save(model.state_dict(), path)
    net = load_backbone("efficientnet_lite0", weights_file=path)
    assert net.head.out_features == 10
    assert torch.equal(net.head.weight, model.classifier.weight)
    assert net.categories is None  # not ImageNet any more
    with torch.inference_mode():
        assert net.head(net.body(torch.zeros(1, 3, 224, 224))).shape == (1, 10)


def test_weights_file_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(BackboneError, match="weights_only=True"):
        load_backbone("efficientnet_lite0", weights_file=path)


def test_weights_file_that_is_a_plain_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"x": NotATensor()}, protocol=2))
    with pytest.raises(BackboneError, match="weights_only=True"):
        load_backbone("efficientnet_lite0", weights_file=path)


def test_weights_file_that_is_not_a_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(BackboneError, match="not a state_dict"):
        load_backbone("efficientnet_lite0", weights_file=path)


@pytest.mark.slow
def test_weights_file_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(BackboneError, match="tensors"):
        load_backbone("efficientnet_lite0", weights_file=path)
    with pytest.raises(BackboneError, match="does not fit"):
        load_backbone("resnet18", weights_file=path)


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(BackboneError, match="does not exist") as info:
        load_backbone("efficientnet_lite0", weights_file=path)
    assert str(path) in str(info.value)


@pytest.mark.slow
def test_embedded_weights_are_the_packaged_file() -> None:
    path = lite0.embedded_weights_path()
    assert path.is_file() and path.suffix == ".pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = lite0.create_model().state_dict()
    assert len(state) == len(expected)
    assert [tuple(t.shape) for t in state.values()] == [tuple(t.shape) for t in expected.values()]
    assert np.isfinite(next(iter(state.values())).numpy()).all()
