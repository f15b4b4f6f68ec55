"""The runners on real images: a 60-image subset of flowers5_small, the default backbone, small inputs.

Kept small enough for a 2-core CPU (the whole file runs in about two minutes).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import shared_dataset
from torch import nn

from tl_advise.advisor.api import AdviceSession, advise_session
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.runners import RunOptions, load_trained_model, predict, run_advice
from tl_advise.runners.checkpoint import load
from tl_advise.runners.data import make_splits
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import StrategyRun

pytestmark = [pytest.mark.slow, pytest.mark.shared]

PER_CLASS = 20  # 5 classes → 80 train / 20 val with the 20 % hold-out
SMALL = {"image_size": 64, "progress": False, "num_workers": 0, "patience": 10}


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_dataset("flowers5_small")
    root = tmp_path_factory.mktemp("flowers") / "data"
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:PER_CLASS]:
            shutil.copy2(image, root / class_dir.name / image.name)
    return root


@pytest.fixture(scope="module")
def session(flowers: Path, tmp_path_factory: pytest.TempPathFactory) -> AdviceSession:
    return advise_session(flowers, cache_dir=tmp_path_factory.mktemp("cache"), device="cpu")


def _only(report_runs: list[StrategyRun]) -> StrategyRun:
    assert len(report_runs) == 1
    run = report_runs[0]
    assert run.status == "completed", run.error
    return run


def _count_body_images(backbone: Backbone) -> tuple[list[int], Callable[[], None]]:
    seen = [0]

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen[0] += inputs[0].shape[0]

    handle = backbone.body.register_forward_pre_hook(hook)
    return seen, handle.remove


def _stage_keys(backbone: Backbone) -> dict[str, list[str]]:
    """Stage name → the body's state-dict keys (parameters and BN buffers) that belong to it."""
    names = {id(m): name for name, m in backbone.body.named_modules()}
    keys: dict[str, list[str]] = {}
    for stage in backbone.stages:
        prefixes = [names[id(m)] + "." for m in stage.modules]
        keys[stage.name] = [k for k in backbone.body.state_dict() if any(k.startswith(p) for p in prefixes)]
    return keys


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], keys: list[str]) -> list[str]:
    return [k for k in keys if not torch.equal(before[k].float(), after[k].float())]


def _last_body(strategy_dir: Path) -> dict[str, torch.Tensor]:
    """The body after the last epoch (the resumable state; the best model may be an earlier epoch's)."""
    model = load(strategy_dir / "state.pt")["model"]
    return {k.removeprefix("body."): v for k, v in model.items() if k.startswith("body.")}


# --------------------------------------------------------------------------- feature extraction


def test_feature_extraction_learns(session: AdviceSession, tmp_path: Path) -> None:
    report = run_advice(session, RunOptions(output_dir=tmp_path, strategies=["feature_extraction"],
                                            head_epochs=10, progress=False, num_workers=0))
    run = _only(report.runs)
    assert run.val is not None and run.val.accuracy >= 0.6  # chance is 0.2
    assert report.verdict.status == "not_compared"
    for name in ("metrics.json", "report.md", "learning_curves.png", "feature_extraction/model.pt"):
        assert (tmp_path / name).is_file()


def test_feature_extraction_embeds_each_image_once(session: AdviceSession, tmp_path: Path) -> None:
    seen, remove = _count_body_images(session.backbone)
    try:
        # At the backbone's own input size the advisor's cached embeddings are reused: no forward at all.
        run_advice(session, RunOptions(output_dir=tmp_path / "fe224", strategies=["feature_extraction"],
                                       head_epochs=2, progress=False, num_workers=0))
        assert seen[0] == 0
        options = RunOptions(output_dir=tmp_path / "fe96", strategies=["feature_extraction"], head_epochs=4,
                             **SMALL | {"image_size": 96})
        run = _only(run_advice(session, options).runs)
        assert run.settings is not None and run.epochs_run == 4
        # Each image went through the backbone exactly once, for 4 head epochs and the final metrics.
        assert seen[0] == run.settings.n_train + run.settings.n_val
        seen[0] = 0
        run_advice(session, options.model_copy(update={"output_dir": tmp_path / "fe96-again"}))
        assert seen[0] == 0  # warm cache
    finally:
        remove()


def test_saved_model_predicts_what_was_measured(session: AdviceSession, tmp_path: Path) -> None:
    report = run_advice(session, RunOptions(output_dir=tmp_path, strategies=["feature_extraction"],
                                            head_epochs=4, **SMALL | {"image_size": 96}))
    run = _only(report.runs)
    model_path = tmp_path / (run.checkpoint or "")
    model, classes, _ = load_trained_model(model_path)
    assert classes == session.scan.classes
    assert isinstance(model, nn.Module) and not model.training
    val = make_splits(session.scan, val_fraction=0.2, seed=0).val
    predicted = predict(model_path, [r.path for r in val])
    accuracy = sum(p == r.class_name for p, r in zip(predicted, val, strict=True)) / len(val)
    assert run.val is not None and accuracy == pytest.approx(run.val.accuracy)


# --------------------------------------------------------------------------- two-phase fine-tuning


@pytest.mark.parametrize("batchnorm", ["inference", "train"])
def test_finetune_trains_exactly_the_named_stages(session: AdviceSession, tmp_path: Path, flowers: Path,
                                                  batchnorm: str) -> None:
    if batchnorm != session.rules.strategies["finetune_last_layers"].batchnorm:
        override = tmp_path / "rules.toml"
        override.write_text(f'extends = "default"\n[strategies.finetune_last_layers]\nbatchnorm = "{batchnorm}"\n')
        session = advise_session(flowers, rules=override, cache_dir=session.cache.folder, device="cpu")
    pretrained = {k: v.clone() for k, v in session.backbone.body.state_dict().items()}
    report = run_advice(session, RunOptions(output_dir=tmp_path / "run", strategies=["finetune_last_layers"],
                                            head_epochs=1, finetune_epochs=1, max_train_images_per_class=6,
                                            **SMALL))
    run = _only(report.runs)
    assert run.settings is not None and run.settings.batchnorm == batchnorm
    named = run.settings.unfreeze
    assert named == ["blocks.5", "blocks.6", "conv_head"]
    assert [c.phase for c in run.curves] == ["head", "finetune"]
    # The session's own backbone is never trained in place.
    assert all(torch.equal(v, pretrained[k]) for k, v in session.backbone.body.state_dict().items())

    trained = _last_body(tmp_path / "run" / "finetune_last_layers")
    for stage, keys in _stage_keys(session.backbone).items():
        changed = _changed(pretrained, trained, keys)
        if stage in named:
            weights = [k for k in keys if k.endswith("weight")]
            assert set(weights) <= set(changed), f"{stage}: some weights did not train"
            # "inference" keeps the ImageNet BN statistics of unfrozen stages; "train" re-estimates them.
            bn_moved = any("running_mean" in k for k in changed)
            assert bn_moved is (batchnorm == "train"), f"{stage}: BN statistics moved: {bn_moved}"
        else:
            assert changed == [], f"frozen stage {stage} changed: {changed[:3]}"


def test_head_phase_alone_leaves_the_backbone_untouched(session: AdviceSession, tmp_path: Path) -> None:
    pretrained = {k: v.clone() for k, v in session.backbone.body.state_dict().items()}
    report = run_advice(session, RunOptions(output_dir=tmp_path, strategies=["feature_extraction_top_layers"],
                                            head_epochs=1, finetune_epochs=0, max_train_images_per_class=6,
                                            **SMALL))
    _only(report.runs)
    trained = _last_body(tmp_path / "feature_extraction_top_layers")
    assert _changed(pretrained, trained, list(pretrained)) == []  # BN running stats included


def test_from_scratch_trains_every_stage_from_random_weights(session: AdviceSession, tmp_path: Path) -> None:
    report = run_advice(session, RunOptions(output_dir=tmp_path, strategies=["from_scratch"],
                                            finetune_epochs=1, max_train_images_per_class=6, **SMALL))
    run = _only(report.runs)
    assert run.settings is not None and not run.settings.pretrained
    torch.manual_seed(0)  # the runner seeds before building the random backbone
    initial = load_backbone(session.backbone.name, pretrained=False).body.state_dict()
    trained = _last_body(tmp_path / "from_scratch")
    for stage, keys in _stage_keys(session.backbone).items():
        assert _changed(initial, trained, keys), f"{stage} did not train"


# --------------------------------------------------------------------------- interrupt and resume


class _StopAt:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, strategy: str, epochs_done: int) -> None:
        if strategy != "feature_extraction" and epochs_done == self.epoch:
            raise KeyboardInterrupt


def _comparable(run: StrategyRun) -> tuple[object, ...]:
    curves = [(c.phase, c.epoch, c.train_loss, c.val_loss, c.val_accuracy) for c in run.curves]
    return run.strategy, run.status, run.best_epoch, run.val, curves


def test_interrupted_comparison_resumes_to_the_same_result(session: AdviceSession, tmp_path: Path) -> None:
    options = RunOptions(output_dir=tmp_path / "straight", strategies=["feature_extraction", "finetune_last_layers"],
                         head_epochs=1, finetune_epochs=2, max_train_images_per_class=6,
                         **SMALL)
    straight = run_advice(session, options)

    resumed_options = options.model_copy(update={"output_dir": tmp_path / "resumed"})
    # Interrupt at the phase boundary (after the head epoch), then in the middle of fine-tuning.
    with pytest.raises(KeyboardInterrupt):
        run_advice(session, resumed_options, epoch_callback=_StopAt(1))
    again = resumed_options.model_copy(update={"resume": True})
    with pytest.raises(KeyboardInterrupt):
        run_advice(session, again, epoch_callback=_StopAt(2))
    fe_result = tmp_path / "resumed" / "feature_extraction" / "run.json"
    fe_written = fe_result.stat().st_mtime_ns
    resumed = run_advice(session, again)

    assert fe_result.stat().st_mtime_ns == fe_written  # read back, not retrained
    assert [_comparable(r) for r in resumed.runs] == [_comparable(r) for r in straight.runs]
    assert resumed.verdict == straight.verdict


# --------------------------------------------------------------------------- safety


def test_output_inside_the_dataset_is_refused(session: AdviceSession) -> None:
    with pytest.raises(ConfigError, match="inside the dataset"):
        run_advice(session, RunOptions(output_dir=session.scan.root / "runs", **SMALL))
