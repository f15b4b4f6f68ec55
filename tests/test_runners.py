"""Fast tests of the runners' pure parts: splits, verdict, metrics, recipes, transforms, checkpoints, signals."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_class_folder, write_image
from torchvision import transforms as T

from tl_advise.advisor.data.images.scan import ImageRecord, scan_dataset
from tl_advise.advisor.measure.images.backbones import load_backbone
from tl_advise.cli.commands import main
from tl_advise.runners import RunOptions
from tl_advise.runners.api import strategies_to_run
from tl_advise.runners.checkpoint import atomic_save, load
from tl_advise.runners.data import make_splits, stratified_holdout, subsample_per_class, train_transform
from tl_advise.runners.feature_extraction import feature_batches
from tl_advise.runners.heads import ClassifierHead
from tl_advise.runners.metrics import classification_metrics
from tl_advise.runners.options import check_output_dir
from tl_advise.runners.recipes import Recipe, apply_options
from tl_advise.runners.train import sigterm_as_keyboard_interrupt
from tl_advise.runners.trained_model import load_trained_model, resolve_model_file, save_model
from tl_advise.runners.verdict import decide
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import (
    Augmentation,
    DuplicateGroup,
    LRSchedule,
    Metrics,
    Preprocessing,
    Regularization,
    StrategyRun,
)

ROOT = Path("/data")
PRE = Preprocessing(input_size=64, crop_pct=0.875, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                    std=(0.5, 0.5, 0.5))


def _record(name: str, cls: str, label: int) -> ImageRecord:
    return ImageRecord(path=ROOT / cls / name, class_name=cls, label=label, split="all", width=8, height=8,
                       mode="RGB", size_bytes=100, mtime_ns=0)


# --------------------------------------------------------------------------- splits


def test_holdout_is_stratified_seeded_and_keeps_duplicates_together() -> None:
    records = [_record(f"{i}.png", cls, k) for k, cls in enumerate(("a", "b")) for i in range(10)]
    groups = [DuplicateGroup(paths=["a/0.png", "a/1.png", "a/2.png"], splits=["all"], classes=["a"],
                             cross_split=False),
              DuplicateGroup(paths=["b/5.png", "b/6.png"], splits=["all"], classes=["b"], cross_split=False)]
    for seed in range(20):
        train, val = stratified_holdout(records, ROOT, groups, fraction=0.2, seed=seed)
        assert len(train) + len(val) == 20 and not {r.path for r in train} & {r.path for r in val}
        assert {r.class_name for r in val} == {"a", "b"}
        for group in groups:
            sides = {any(r.path == ROOT / p for r in val) for p in group.paths}
            assert len(sides) == 1, f"seed {seed}: duplicates {group.paths} split across train and val"
    assert stratified_holdout(records, ROOT, groups, fraction=0.2, seed=3) == \
        stratified_holdout(records, ROOT, groups, fraction=0.2, seed=3)


def test_subsample_per_class_caps_every_class() -> None:
    records = [_record(f"{i}.png", cls, k) for k, cls in enumerate(("a", "b")) for i in range(10)]
    kept = subsample_per_class(records, 3, seed=0)
    assert sorted(r.class_name for r in kept) == ["a"] * 3 + ["b"] * 3
    assert subsample_per_class(records, None, seed=0) == records


def test_dataset_val_split_is_used_and_test_reported(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        make_class_folder(tmp_path / "data" / split, {"cat": n, "dog": n}, seed=len(split))
    splits = make_splits(scan_dataset(tmp_path / "data"), val_fraction=0.2, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 4)
    assert "val/ split" in splits.validation


def test_flat_folder_gets_a_holdout(image_folder: Callable[..., Path]) -> None:
    splits = make_splits(scan_dataset(image_folder({"cat": 10, "dog": 10})), val_fraction=0.2, seed=0)
    assert (len(splits.train), len(splits.val), splits.test) == (16, 4, [])
    assert "hold-out" in splits.validation


# --------------------------------------------------------------------------- verdict


def _metrics(accuracy: float, n: int, correct: str | None = None) -> Metrics:
    return Metrics(accuracy=accuracy, balanced_accuracy=accuracy, macro_f1=accuracy, per_class_accuracy={},
                   confusion_matrix=[], n_images=n, loss=1.0, correct=correct)


def _run(strategy: str, accuracy: float | None, status: str = "completed", n: int = 10,
         test: Metrics | None = None) -> StrategyRun:
    val = None if accuracy is None else _metrics(accuracy, n)
    return StrategyRun(strategy=strategy, status=status, val=val, test=test)


def test_verdict_confirmed_when_best_or_within_margin() -> None:
    best = decide("feature_extraction", [_run("feature_extraction", 0.9), _run("full_finetune", 0.8)], 0.01)
    assert (best.status, best.best, best.gap) == ("confirmed", "feature_extraction", 0.0)
    close = decide("feature_extraction", [_run("feature_extraction", 0.90), _run("full_finetune", 0.91)], 0.01)
    assert close.status == "confirmed" and close.best == "full_finetune" and close.gap == pytest.approx(0.01)
    tie = decide("feature_extraction", [_run("full_finetune", 0.9), _run("feature_extraction", 0.9)], 0.0)
    assert tie.status == "confirmed" and tie.best == "feature_extraction"
    # The status is its own field, which every format prints beside the message: not repeated in it.
    assert close.message.startswith("feature_extraction (0.900) is within the 1.0 pts margin")
    # No test split: the validation split judged, and the message says it is optimistic.
    assert close.judged_on == "val" and "no test split" in close.message


def test_verdict_refuted_names_the_winner_and_the_gap() -> None:
    verdict = decide("feature_extraction", [_run("feature_extraction", 0.70), _run("full_finetune", 0.85),
                                            _run("from_scratch", 0.0, "failed")], 0.01)
    assert (verdict.status, verdict.best, verdict.gap) == ("refuted", "full_finetune", pytest.approx(0.15))
    assert verdict.message.startswith("full_finetune beat the recommended feature_extraction by 15.0 pts")


# Two strategies on the same 100 test images: full_finetune right on 8 images where feature_extraction is wrong,
# feature_extraction right on 2 where full_finetune is wrong, both right on 80.
_FE = "0" * 8 + "1" * 2 + "1" * 80 + "0" * 10
_FT = "1" * 8 + "0" * 2 + "1" * 80 + "0" * 10


def test_a_test_split_judges_when_every_strategy_has_one() -> None:
    # On validation feature_extraction is ahead; on the test split full_finetune is.
    runs = [_run("feature_extraction", 0.95, test=_metrics(0.82, 100, _FE)),
            _run("full_finetune", 0.90, test=_metrics(0.88, 100, _FT))]
    verdict = decide("feature_extraction", runs, 0.01)
    assert (verdict.judged_on, verdict.n_judged, verdict.best) == ("test", 100, "full_finetune")
    assert verdict.status == "refuted" and "judged on the test split (100 images)" in verdict.message
    # One strategy without a test score: every strategy is judged on validation instead.
    mixed = [_run("feature_extraction", 0.95, test=_metrics(0.82, 100, _FE)), _run("full_finetune", 0.90)]
    assert decide("feature_extraction", mixed, 0.01).judged_on == "val"


def test_auto_margin_is_one_standard_error_of_the_paired_gap() -> None:
    runs = [_run("feature_extraction", 0.9, test=_metrics(0.82, 100, _FE)),
            _run("full_finetune", 0.9, test=_metrics(0.88, 100, _FT))]
    verdict = decide("feature_extraction", runs, "auto")
    # Gap 0.06; per-image differences: eight +1, two -1: variance 0.10 - 0.0036, x 100/99, s.e. sqrt(./100)
    se = (0.0964 * 100 / 99 / 100) ** 0.5  # 0.0312
    assert verdict.margin == pytest.approx(se, abs=1e-6) and verdict.se == pytest.approx(se, abs=1e-6)
    assert verdict.status == "refuted" and "paired image by image" in verdict.margin_rule
    assert verdict.p_value == pytest.approx(2 * (1 + 10 + 45) / 2**10)  # exact McNemar, 2 of 10 discordant
    assert "disagree on 10 images (8 vs 2" in verdict.message
    # 0.80 vs 0.85 without per-image results: the unpaired s.e. (0.054) makes the 5-point gap a tie; paired,
    # with the five images on which they differ all going to full_finetune, the same gap is beyond noise.
    loose = [_run("feature_extraction", 0.9, test=_metrics(0.80, 100)), _run("full_finetune", 0.9,
                                                                           test=_metrics(0.85, 100))]
    unpaired = decide("feature_extraction", loose, "auto")
    assert unpaired.margin == pytest.approx((0.80 * 0.20 / 100 + 0.85 * 0.15 / 100) ** 0.5, abs=1e-6)
    assert unpaired.status == "confirmed" and "unpaired" in unpaired.margin_rule
    a, b = "0" * 5 + "1" * 80 + "0" * 15, "1" * 5 + "1" * 80 + "0" * 15
    tight = [_run("feature_extraction", 0.9, test=_metrics(0.80, 100, a)),
             _run("full_finetune", 0.9, test=_metrics(0.85, 100, b))]
    assert decide("feature_extraction", tight, "auto").status == "refuted"
    # One image apart is never beyond noise, whatever the s.e. formula gives.
    perfect = decide("feature_extraction", [_run("feature_extraction", 0.95, n=20), _run("full_finetune", 1.0, n=20)],
                     "auto")
    assert perfect.margin >= 0.05 and perfect.status == "confirmed"
    assert decide("feature_extraction", runs, 0.05).margin_rule == "fixed (--margin)"


def test_verdict_names_the_pixel_baseline_when_nothing_beat_it() -> None:
    runs = [_run("feature_extraction", 0.76), _run("full_finetune", 0.44)]
    below = decide("feature_extraction", runs, "auto", pixel_baseline=0.95)
    assert below.beat_pixel_baseline is False and below.pixel_baseline == 0.95
    assert "no strategy beat the raw-pixel baseline (0.950" in below.message
    above = decide("feature_extraction", runs, "auto", pixel_baseline=0.50)
    assert above.beat_pixel_baseline is True and "raw-pixel" not in above.message
    assert decide("feature_extraction", runs, "auto").beat_pixel_baseline is None


def test_verdict_not_compared_when_alone_or_recommended_missing() -> None:
    alone = decide("feature_extraction", [_run("feature_extraction", 0.8)], 0.01)
    assert alone.status == "not_compared" and "0.800" in alone.message
    failed = decide("feature_extraction", [_run("feature_extraction", None, "failed"), _run("full_finetune", 0.8)],
                    0.01)
    assert failed.status == "not_compared" and failed.best is None


# --------------------------------------------------------------------------- metrics


def test_metrics_match_a_hand_count() -> None:
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 0], ["a", "b", "c"], loss=0.5)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.per_class_accuracy == {"a": pytest.approx(2 / 3), "b": 1.0, "c": 0.0}
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m.confusion_matrix == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert (m.n_images, m.loss) == (6, 0.5)


# --------------------------------------------------------------------------- recipes and options


def _recipe(**kw: object) -> Recipe:
    base: dict[str, object] = dict(
        strategy="finetune_last_layers", pretrained=True, unfreeze=["s1", "s2"], head_lr=1e-3, backbone_lr=1e-4,
        per_stage_lr={"s1": 5e-5, "s2": 1e-4}, optimizer="adamw", weight_decay=0.01, batchnorm="inference",
        head_epochs=5, finetune_epochs=20, batch_size=32, image_size=224, augmentation=Augmentation(),
        regularization=Regularization(), lr_schedule=LRSchedule())
    return Recipe(**(base | kw))


def test_options_override_the_recipe_and_the_budget_caps_epochs() -> None:
    options = RunOptions(output_dir=Path("/tmp/x"), max_epochs=3, backbone_lr=1e-5, batch_size=8, image_size=96)
    recipe = apply_options(_recipe(), options)
    assert (recipe.head_epochs, recipe.finetune_epochs, recipe.batch_size, recipe.image_size) == (3, 3, 8, 96)
    assert recipe.backbone_lr == 1e-5
    assert recipe.per_stage_lr == {"s1": pytest.approx(5e-6), "s2": pytest.approx(1e-5)}  # shape kept
    frozen = apply_options(_recipe(unfreeze=[], finetune_epochs=0), options.model_copy(update={"finetune_epochs": 4}))
    assert frozen.finetune_epochs == 0  # nothing to fine-tune


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="extra"):
        RunOptions(output_dir=Path("x"), epochs=3)
    with pytest.raises(ValueError):
        RunOptions(output_dir=Path("x"), val_fraction=1.5)


def test_output_dir_inside_the_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside the dataset"):
        check_output_dir(tmp_path / "data" / "runs", tmp_path / "data")
    with pytest.raises(ConfigError, match="is the dataset itself; tl-advise never writes into the dataset"):
        check_output_dir(tmp_path / "data", tmp_path / "data")
    assert check_output_dir(tmp_path / "runs", tmp_path / "data") == (tmp_path / "runs").resolve()


def test_strategy_selection() -> None:
    out = Path("/tmp/x")
    alternatives: list = ["finetune_last_layers", "full_finetune"]
    assert strategies_to_run("feature_extraction", RunOptions(output_dir=out), alternatives) == ["feature_extraction"]
    assert strategies_to_run("feature_extraction", RunOptions(output_dir=out, compare=True), alternatives) == \
        ["feature_extraction", "finetune_last_layers", "full_finetune"]
    explicit = RunOptions(output_dir=out, compare=True, strategies=["from_scratch", "from_scratch"])
    assert strategies_to_run("feature_extraction", explicit, alternatives) == ["from_scratch"]


# --------------------------------------------------------------------------- transforms and batches


def test_train_transform_follows_the_recipe() -> None:
    photo = train_transform(PRE, Augmentation(crop_scale=(0.5, 1.0), hflip=True, mixup_alpha=0.2))
    kinds = [type(t) for t in photo.transforms]
    assert kinds == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]  # mixup: per batch
    crop = photo.transforms[0]
    assert crop.scale == (0.5, 1.0) and crop.size == (64, 64)
    plain = train_transform(PRE, Augmentation(color_jitter=0.2))
    assert not any(isinstance(t, T.RandomHorizontalFlip | T.RandomVerticalFlip) for t in plain.transforms)
    assert any(isinstance(t, T.CenterCrop) for t in plain.transforms)


def test_feature_batches_never_leave_a_single_image_batch() -> None:
    x, y = torch.randn(9, 4), torch.arange(9)
    sizes = [len(b[1]) for b in feature_batches(x, y, 4, torch.Generator().manual_seed(0))]
    assert sizes == [4, 5] and sum(sizes) == 9
    assert [len(b[1]) for b in feature_batches(x, y, 4)] == [4, 4, 1]  # evaluation keeps every image


# --------------------------------------------------------------------------- checkpoints and signals


def test_atomic_save_leaves_only_the_final_file(tmp_path: Path) -> None:
    atomic_save({"a": torch.ones(2), "n": 3}, tmp_path / "state.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert load(tmp_path / "state.pt")["n"] == 3


def test_sigterm_interrupts_training_and_the_old_handler_comes_back() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_keyboard_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts the sleep at once
    assert signal.getsignal(signal.SIGTERM) == previous


# --------------------------------------------------------------------------- damaged model files and run folders


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What save_model writes for an untrained two-class model on the default backbone (random weights)."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    body = load_backbone("efficientnet_lite0", pretrained=False).body
    save_model(path, body=body, head=ClassifierHead(1280, 2), class_names=["cat", "dog"],
               backbone_name="efficientnet_lite0", weights="random", preprocessing=PRE, strategy="feature_extraction")
    assert load_trained_model(path)[1] == ["cat", "dog"]  # the file as written loads
    return load(path)


@pytest.mark.usefixtures("restore_tl_logging")  # main() sets up logging on the captured stderr
@pytest.mark.parametrize(("change", "reason"), [
    ({"body": {}}, "RuntimeError: Error(s) in loading state_dict for EfficientNet: Missing key(s)"),
    ({"backbone": 5}, "its 'backbone' should be str, not int"),
    ({"backbone": "nosuchnet"}, "unknown backbone 'nosuchnet'"),
    ({"head_config": {}}, "its 'head_config.in_features': Field required"),
    ({"head_config": "x"}, "its 'head_config' should be dict, not str"),
    ({"head_config": {"in_features": 10, "n_classes": 2, "dropout": 0.5, "hidden": 256}},
     "its head takes 10 features but efficientnet_lite0 gives 1280"),
    ({"head": {"0.weight": "x"}}, "its 'head' is not a state dict"),
    ({"class_names": ["cat"]}, "its head predicts 2 classes but it names 1"),
    ({"preprocessing": {}}, "its 'preprocessing.input_size': Field required"),
], ids=lambda v: "-".join(v) if isinstance(v, dict) else None)
def test_a_damaged_model_file_is_exit_2_naming_it(saved_model: dict[str, Any], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str], change: dict[str, Any],
                                                  reason: str) -> None:
    model = tmp_path / "model.pt"
    torch.save({**saved_model, **change}, model)
    image = write_image(tmp_path / "cat.png")
    for images in (image, tmp_path / "absent.png"):  # the model is read first, whatever the images
        assert main(["predict", str(model), str(images)]) == 2
        err = capsys.readouterr().err
        assert f"{model} is not a model tl-advise can load: {reason}" in err, err
        assert "train one with tl-advise DATA --run" in err
        assert "Traceback" not in err and "internal error" not in err and len(err) < 500


@pytest.mark.usefixtures("restore_tl_logging")  # main() sets up logging on the captured stderr
@pytest.mark.parametrize(("metrics", "reason"), [
    ({"run": {"files": {"model:x": 5}}}, "run.files['model:x'] should be a path, not a number"),
    ({"run": {"files": {"model:x": "../x/model.pt"}}},
     "run.files['model:x'] should be a path inside the run folder, not '../x/model.pt'"),
    ({"run": {"files": {"model:x": "/tmp/model.pt"}}},
     "run.files['model:x'] should be a path inside the run folder, not '/tmp/model.pt'"),
    ({"run": {"verdict": {"recommended": [1]}}}, "run.verdict.recommended should be a string, not a list"),
    ({"run": "x"}, "run should be an object, not a string"),
    ([1], "it holds a list, not an object"),
])
def test_a_malformed_metrics_json_is_exit_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      metrics: Any, reason: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["predict", str(run), str(write_image(tmp_path / "cat.png"))]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.json'} is unusable: ValueError: {reason}" in err, err
    assert "models found: none" in err and "Traceback" not in err and "internal error" not in err
    # The one model in the folder still answers.
    (run / "feature_extraction").mkdir()
    (run / "feature_extraction" / "model.pt").write_bytes(b"")
    assert resolve_model_file(run) == run / "feature_extraction" / "model.pt"
