"""One typed recipe: what the advice prints is what ``--run`` trains, every field the rules can set is built by
the runners (or refused), and a typo in a rules file's recipe is an error naming the file and the key."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_rules import make_backbone, make_dataset, make_similarity
from threadpoolctl import threadpool_limits
from timm.layers import DropPath
from torchvision import transforms as T

from tl_advise.advisor.api import AdviceSession, advise_session
from tl_advise.advisor.report import text
from tl_advise.cli import main
from tl_advise.rules.engine import recommend
from tl_advise.rules.schema import load_rules
from tl_advise.runners import RunOptions, blocks, run_advice
from tl_advise.runners.context import StrategyContext
from tl_advise.runners.data import train_transform
from tl_advise.runners.mixing import batch_mixer
from tl_advise.runners.optim import make_scheduler
from tl_advise.runners.recipes import build_recipe, recommendation_for
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob, fit
from tl_advise.runners.trained_model import load_trained_model
from tl_advise.schema.errors import ConfigError, RulesError
from tl_advise.schema.models import (
    STRATEGY_IDS,
    Augmentation,
    LRSchedule,
    Preprocessing,
    RandAugment,
    Recommendation,
    Regularization,
    RunSettings,
    TrainingRecipe,
    recipe_lines,
)

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

PRE = Preprocessing(input_size=32, crop_pct=0.875, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                    std=(0.5, 0.5, 0.5))
TINY = {"image_size": 32, "progress": False, "num_workers": 0, "seed": 0}

# Every recipe field switched on for full_finetune, over the default rules.
EVERYTHING_ON = """
extends = "default"
[strategies.full_finetune]
lr_schedule = { kind = "cosine", warmup_epochs = 2 }
[strategies.full_finetune.augmentation]
vflip = true
rotation_degrees = 15.0
color_jitter = 0.4
mixup_alpha = 0.2
cutmix_alpha = 1.0
[strategies.full_finetune.regularization]
dropout = 0.2
label_smoothing = 0.1
drop_path_rate = 0.1
early_stopping = false
"""


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1, "blas"):
        yield


@pytest.fixture(scope="module")
def session(synthetic_dataset: Path, session_cache_dir: Path) -> AdviceSession:
    return advise_session(synthetic_dataset, cache_dir=session_cache_dir, device="cpu")


def _printed(session: AdviceSession, recommendation: Recommendation) -> dict[str, str]:
    """The text report's recipe rows, as a user reads them, for ``recommendation``."""
    result = session.result.model_copy(update={"recommendation": recommendation})
    rows: dict[str, str] = {}
    for line in text.render(result).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key in ("augmentation", "regularise", "schedule", "batch size", "unfreeze", "learning rate",
                           "per stage"):
            rows.setdefault(key, value.strip())
    return rows


def _expected_transforms(augmentation: Augmentation, size: int) -> list[str]:
    """The torchvision transforms each field must have produced, as the settings record them."""
    expected = []
    if augmentation.crop_scale is not None:
        expected.append(f"RandomResizedCrop(size=({size}, {size}), scale={augmentation.crop_scale}")
    else:
        expected.append("CenterCrop(")
    if augmentation.hflip:
        expected.append("RandomHorizontalFlip(")
    if augmentation.vflip:
        expected.append("RandomVerticalFlip(")
    if augmentation.rotation_degrees:
        d = augmentation.rotation_degrees
        expected.append(f"RandomRotation(degrees=[{-d}, {d}]")
    if augmentation.color_jitter:
        s = augmentation.color_jitter
        expected.append(f"ColorJitter(brightness=({1 - s}, {1 + s}), contrast=({1 - s}, {1 + s})")
    if augmentation.rand_augment is not None:
        ra = augmentation.rand_augment
        expected.append(f"RandAugment(num_ops={ra.ops}, magnitude={ra.magnitude}")
    return expected


def _printed_rates(printed: dict[str, str]) -> dict[str, float]:
    """The rates a user reads in the report, parsed back into numbers: 'head', 'backbone' and each stage."""
    rates = {name: float(value) for name, value in re.findall(r"\b(head|backbone) ([0-9.e+-]+)",
                                                                 printed["learning rate"])}
    for part in printed.get("per stage", "").split(", "):
        if part:
            stage, value = part.rsplit(" ", 1)
            rates[f"stage {stage}"] = float(value)
    return rates


def _assert_built_as_printed(settings: RunSettings, recommendation: Recommendation, printed: dict[str, str]) -> None:
    # The rates as printed, read back as numbers, are the rates the runner trained with (independent of the
    # formatter: a rounded 2.5e-6 printed as 3e-6 fails here).
    expected = {"head": settings.head_lr, **({"backbone": settings.backbone_lr} if settings.backbone_lr else {}),
                **{f"stage {stage}": rate for stage, rate in settings.per_stage_lr.items()}}
    assert _printed_rates(printed) == expected, settings.strategy
    lines = recipe_lines(settings)
    assert printed["augmentation"] == (", ".join(lines.augmentation) or "none")
    assert printed["regularise"] == ", ".join(lines.regularization)
    assert printed["schedule"].endswith(lines.lr_schedule)
    assert (settings.augmentation, settings.regularization, settings.lr_schedule) == \
        (recommendation.augmentation, recommendation.regularization, recommendation.lr_schedule)
    assert settings.unfreeze == recommendation.unfreeze and settings.weight_decay == recommendation.weight_decay
    assert settings.batchnorm == recommendation.batchnorm and settings.optimizer == recommendation.optimizer
    # What the runner built, not what it was told: every per-image field is a transform in the pipeline.
    if settings.strategy == "feature_extraction":
        assert settings.train_transform == [] and settings.augmentation == Augmentation()
        return
    built = settings.train_transform
    for wanted in _expected_transforms(settings.augmentation, settings.image_size):
        assert any(step.startswith(wanted) for step in built), f"{settings.strategy}: {wanted} not in {built}"
    assert len(built) == len(_expected_transforms(settings.augmentation, settings.image_size)) + 2 + (
        settings.augmentation.crop_scale is None)  # + ToTensor, Normalize (+ Resize before a centre crop)


# --------------------------------------------------------------------------- printed == trained


@pytest.mark.slow
def test_every_strategy_trains_the_recipe_the_report_prints(session: AdviceSession, tmp_path: Path) -> None:
    report = run_advice(session, RunOptions(output_dir=tmp_path, strategies=list(STRATEGY_IDS), max_epochs=1,
                                            **TINY))
    assert [run.strategy for run in report.runs] == list(STRATEGY_IDS)
    for run in report.runs:
        assert run.status == "completed", run.error
        assert run.settings is not None
        recommendation = recommendation_for(session, run.strategy)
        _assert_built_as_printed(run.settings, recommendation, _printed(session, recommendation))
        saved = torch.load(tmp_path / run.strategy / "model.pt", weights_only=True)
        assert saved["head_config"]["dropout"] == recommendation.regularization.dropout


@pytest.mark.parametrize(("ipc", "label", "shift_level"), [
    (100, "similar", "none"), (2000, "similar", "input"), (2000, "different", "semantic"), (20000, "similar", "none")])
def test_the_recipe_builder_gives_what_the_advice_prints(ipc: float, label: str, shift_level: str) -> None:
    """Without training, from plain inputs: the runners' recipe is the advice's, field for field, for the
    advised strategy; and every strategy's recipe is what the rules set for it."""
    rules = load_rules()
    dataset, similarity, backbone = make_dataset(ipc), make_similarity(label, shift_level=shift_level), make_backbone()
    advice = recommend(rules, dataset, similarity, backbone)
    options = RunOptions(output_dir=Path("/tmp/unused"))
    recipe = build_recipe(rules, advice.strategy, dataset=dataset, similarity=similarity, backbone=backbone,
                          options=options)
    assert (recipe.augmentation, recipe.regularization, recipe.lr_schedule) == \
        (advice.augmentation, advice.regularization, advice.lr_schedule)
    assert (recipe.unfreeze, recipe.batch_size, recipe.optimizer, recipe.weight_decay, recipe.batchnorm) == \
        (advice.unfreeze, advice.batch_size, advice.optimizer, advice.weight_decay, advice.batchnorm)
    assert recipe.head_epochs + recipe.finetune_epochs == sum(p.epochs for p in advice.schedule)
    assert recipe.backbone_lr == advice.learning_rate.backbone and recipe.per_stage_lr == advice.learning_rate.per_stage
    assert recipe_lines(recipe) == recipe_lines(advice)
    for strategy in STRATEGY_IDS:
        rule = rules.strategies[strategy]
        other = build_recipe(rules, strategy, dataset=dataset, similarity=similarity, backbone=backbone,
                             options=options)
        assert (other.augmentation, other.regularization, other.lr_schedule) == \
            (rule.augmentation, rule.regularization, rule.lr_schedule)


def test_default_rules_keep_the_measured_recipes() -> None:
    """The benchmark evidence measured these recipes: mixup, cutmix, stochastic depth and warm-up stay off."""
    rules = load_rules()
    for strategy_id, rule in rules.strategies.items():
        assert not rule.augmentation.mixes_batches, strategy_id
        assert rule.regularization.drop_path_rate == 0 and rule.lr_schedule.warmup_epochs == 0, strategy_id
        assert rule.regularization.early_stopping, strategy_id
    assert rules.strategies["feature_extraction"].augmentation == Augmentation()
    assert recipe_lines(rules.strategies["finetune_more_layers"]).augmentation == [
        "random resized crop (scale 0.4-1.0)", "horizontal flip", "colour jitter 0.3",
        "RandAugment (2 ops, magnitude 9)"]


# --------------------------------------------------------------------------- the transforms


def test_train_transform_builds_each_field_in_a_fixed_order() -> None:
    aug = Augmentation(crop_scale=(0.5, 1.0), hflip=True, vflip=True, rotation_degrees=10, color_jitter=0.2,
                       rand_augment=RandAugment(ops=2, magnitude=9))
    kinds = [type(t) for t in train_transform(PRE, aug).transforms]
    assert kinds == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomVerticalFlip, T.RandomRotation,
                     T.ColorJitter, T.RandAugment, T.ToTensor, T.Normalize]
    crop = train_transform(PRE, aug).transforms[0]
    assert crop.scale == (0.5, 1.0) and crop.size == (32, 32)
    plain = [type(t) for t in train_transform(PRE, Augmentation()).transforms]
    assert plain == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]  # no flip unless asked


# --------------------------------------------------------------------------- mixup, warm-up, drop path


def test_mixup_gives_soft_targets_with_the_label_smoothing_folded_in() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # timm draws the mixing weight with numpy
    mix = batch_mixer(Augmentation(mixup_alpha=0.4), label_smoothing=0.1, n_classes=3)
    assert mix is not None and batch_mixer(Augmentation(), label_smoothing=0.1, n_classes=3) is None
    images, labels = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    last = images[-1].clone()
    mixed, targets = mix(images.clone(), labels)
    assert mixed.shape == (5, 3, 8, 8) and targets.shape == (5, 3)  # an odd batch keeps every image
    assert torch.allclose(targets.sum(1), torch.ones(5))
    assert targets.min() > 0  # smoothed, never one-hot
    assert not torch.allclose(mixed[:4], images[:4])  # the even part is mixed …
    assert torch.equal(mixed[4], last)  # … the odd image out is not, and keeps its own smoothed label
    assert torch.allclose(targets[4], torch.tensor([0.1 / 3, 1 - 0.2 / 3, 0.1 / 3]))
    one, target = mix(images[:1].clone(), labels[:1])
    assert one.shape == (1, 3, 8, 8) and torch.allclose(target, torch.tensor([[1 - 0.2 / 3, 0.1 / 3, 0.1 / 3]]))


def test_warmup_then_cosine_per_epoch() -> None:
    def rates(warmup: int, epochs: int) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make_scheduler(optimizer, epochs=epochs, warmup_epochs=warmup)
        out = []
        for _ in range(epochs):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    assert rates(2, 6) == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                         0.5 * (1 + math.cos(3 * math.pi / 4))])
    cosine = [0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(5)]
    assert rates(0, 5) == pytest.approx(cosine)


@pytest.mark.slow
def test_mixup_drop_path_warmup_and_no_early_stop_take_effect(synthetic_dataset: Path, session_cache_dir: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    rules = tmp_path / "everything.toml"
    rules.write_text(EVERYTHING_ON, encoding="utf-8")
    session = advise_session(synthetic_dataset, cache_dir=session_cache_dir, device="cpu", rules=rules)
    seen: dict[str, Any] = {"targets": [], "schedulers": [], "bodies": []}

    def spy_mixer(*args: Any, **kwargs: Any) -> Any:
        mix = batch_mixer(*args, **kwargs)
        assert mix is not None

        def recorded(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = mix(x, y)
            seen["targets"].append(out[1])
            return out
        return recorded

    def spy_scheduler(optimizer: torch.optim.Optimizer, **kwargs: int) -> Any:
        scheduler = make_scheduler(optimizer, **kwargs)
        seen["schedulers"].append((kwargs, {g["name"]: g["lr"] for g in optimizer.param_groups}))
        return scheduler

    def spy_backbone(*args: Any) -> Any:
        backbone = training_backbone(*args)
        seen["bodies"].append(backbone.body)
        return backbone

    # The runner builds these through the public building blocks (runners/blocks.py).
    training_backbone = blocks.training_backbone
    monkeypatch.setattr(blocks, "batch_mixer", spy_mixer)
    monkeypatch.setattr(blocks, "make_scheduler", spy_scheduler)
    monkeypatch.setattr(blocks, "training_backbone", spy_backbone)
    options = RunOptions(output_dir=tmp_path / "run", strategies=["full_finetune"], head_epochs=1, finetune_epochs=3,
                         **TINY)
    run = run_advice(session, options).runs[0]
    assert run.status == "completed", run.error
    assert run.settings is not None and run.epochs_run == 4  # no early stop, whatever the val loss did
    recommendation = recommendation_for(session, "full_finetune")
    _assert_built_as_printed(run.settings, recommendation, _printed(session, recommendation))
    assert "mixup / cutmix (alpha 0.2 / 1), one per batch" in recipe_lines(run.settings).augmentation

    # mixup / cutmix: every training batch had soft, smoothed targets
    assert seen["targets"] and all(t.dim() == 2 and t.min() > 0 for t in seen["targets"])
    # warm-up: the head phase starts at its full rate, fine-tuning at 1/3 of it (epoch 0 of a 2-epoch warm-up)
    (head_kwargs, head_lrs), (tune_kwargs, tune_lrs) = seen["schedulers"]
    assert head_kwargs == {"epochs": 1, "warmup_epochs": 0} and head_lrs["head"] == run.settings.head_lr
    assert tune_kwargs == {"epochs": 3, "warmup_epochs": 2}
    top = run.settings.unfreeze[-1]
    assert tune_lrs[top] == pytest.approx(run.settings.stage_lr(top) / 3)
    # stochastic depth: the body that trained has timm's DropPath, rising to 0.1 in the last block
    rates = [m.drop_prob for m in seen["bodies"][0].modules() if isinstance(m, DropPath)]
    assert rates and 0 < max(rates) <= 0.1
    # the saved model loads as the plain backbone (drop path has no weights)
    assert load_trained_model(tmp_path / "run" / "full_finetune" / "model.pt") is not None


def test_early_stopping_off_trains_every_epoch(tmp_path: Path) -> None:
    """A head whose val loss never improves (learning rate 0): patience 1 stops the phase after two epochs,
    ``early_stopping = false`` (the runners pass patience None) trains all four."""

    def epochs_run(patience: int | None, folder: str) -> int:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        x, y = torch.randn(16, 4), torch.arange(16) % 2

        def prepare(phase: PhasePlan) -> PreparedPhase:
            return PreparedPhase(torch.optim.SGD(model.parameters(), lr=0.0), [])

        job = TrainingJob(strategy="head", model=model, phases=[PhasePlan("head", 4, [])], prepare_phase=prepare,
                          train_batches=lambda epoch: [(x, y)], n_train_batches=1, val_batches=lambda: [(x, y)],
                          device=torch.device("cpu"), state_path=tmp_path / folder / "state.pt", fingerprint="f",
                          patience=patience, progress=False)
        return fit(job).epochs_run

    assert epochs_run(1, "early") == 2
    assert epochs_run(None, "off") == 4
    options = RunOptions(output_dir=tmp_path, patience=1)
    recipe = load_rules().strategies["full_finetune"]
    assert recipe.regularization.early_stopping  # the default: the runners pass options.patience
    context = StrategyContext(session=None, recipe=None, splits=None, options=options,
                              device=torch.device("cpu"), folder=tmp_path, output_dir=tmp_path)
    for early_stopping, patience in ((True, 1), (False, None)):
        context.recipe = _any_recipe(early_stopping)
        assert context.patience == patience


def _any_recipe(early_stopping: bool) -> TrainingRecipe:
    return TrainingRecipe(
        strategy="full_finetune", pretrained=True, unfreeze=["s"], head_lr=1e-3, backbone_lr=1e-4, per_stage_lr={},
        optimizer="adamw", weight_decay=0.05, batchnorm="inference", head_epochs=1, finetune_epochs=1, batch_size=8,
        image_size=32, augmentation=Augmentation(), regularization=Regularization(early_stopping=early_stopping),
        lr_schedule=LRSchedule())


def test_drop_path_on_a_backbone_without_it_is_refused_before_training() -> None:
    rules = load_rules().model_copy(deep=True)
    rule = rules.strategies["full_finetune"]
    rules.strategies["full_finetune"] = rule.model_copy(
        update={"regularization": rule.regularization.model_copy(update={"drop_path_rate": 0.1})})
    inputs = {"dataset": make_dataset(20000), "similarity": make_similarity("similar"),
              "options": RunOptions(output_dir=Path("/tmp/unused"))}
    with pytest.raises(ConfigError, match=r"drop_path_rate = 0.1.*resnet18.*\[strategies.full_finetune\]"):
        build_recipe(rules, "full_finetune", backbone=make_backbone(name="resnet18"), **inputs)
    assert build_recipe(rules, "full_finetune", backbone=make_backbone(), **inputs).regularization.drop_path_rate == 0.1


# --------------------------------------------------------------------------- rules-file errors


@pytest.mark.parametrize(("toml", "where"), [
    ("[strategies.full_finetune.augmentation]\nhflp = true\n", "strategies.full_finetune.augmentation.hflp"),
    ("[strategies.finetune_last_layers.regularization]\nlabel_smoothin = 0.1\n",
     "strategies.finetune_last_layers.regularization.label_smoothin"),
    ("[strategies.full_finetune.augmentation]\nrand_augment = { ops = 2, magnitud = 9 }\n",
     "strategies.full_finetune.augmentation.rand_augment.magnitud"),
    ("[strategies.full_finetune.augmentation]\ncrop_scale = [0.9, 0.2]\n",
     "strategies.full_finetune.augmentation.crop_scale"),
    ("[strategies.feature_extraction.augmentation]\nhflip = true\n", "strategies.feature_extraction"),
    ("[strategies.full_finetune]\nlr_schedule = { kind = \"step\" }\n", "strategies.full_finetune.lr_schedule.kind"),
    ("[strategies.full_finetune]\nlr_schedule = { warmup_epochs = 30 }\n", "finetune_epochs (30)"),
    ("[strategies.feature_extraction]\nunfreeze_top_fraction = 0.2\nfinetune_epochs = 5\n",
     "strategies.feature_extraction: its runner trains a head on features embedded once"),
])
def test_a_bad_recipe_key_is_exit_2_naming_the_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              toml: str, where: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('extends = "default"\n' + toml, encoding="utf-8")
    with pytest.raises(RulesError, match=str(path)):
        load_rules(path)
    code = main(["rules", "validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert str(path) in err and where in err


def test_advising_with_a_typo_in_the_recipe_is_exit_2(tmp_path: Path, synthetic_dataset: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('extends = "default"\n[strategies.full_finetune.regularization]\ndrop_path = 0.1\n',
                    encoding="utf-8")
    code = main([str(synthetic_dataset), "--rules", str(path), "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{path}: strategies.full_finetune.regularization.drop_path: Extra inputs are not permitted" in err
