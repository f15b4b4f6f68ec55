"""The advice as building blocks (``runners.blocks``): for every strategy, what the blocks give a user's own loop is
what ``--run`` builds — the same trainable parameters, param groups, learning rates (and their schedule), weight
decay, frozen batch norm, transforms, batch mixing, loss, initial head weights and epochs per phase.

The runner's side is captured from ``run_advice`` itself: its training loop (``fit``) is replaced by a probe that
records every phase as ``fit`` would prepare it, then stops the run. No image is embedded but the handful the
feature-extraction runner embeds before it trains.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_class_folder
from test_recipe import EVERYTHING_ON
from test_rules import make_dataset, make_similarity
from torch import nn

from tl_advise.advisor.api import AdviceSession
from tl_advise.advisor.data.images.scan import scan_dataset
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.rules.engine import recommend
from tl_advise.rules.schema import RuleSet, load_rules
from tl_advise.runners import RunOptions, blocks, feature_extraction, finetune, run_advice
from tl_advise.runners.mixing import training_loss
from tl_advise.runners.optim import make_scheduler
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob
from tl_advise.schema.errors import ConfigError, TLAdviseError
from tl_advise.schema.models import STRATEGY_IDS, AdviceResult, SampleInfo

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "one_blas_thread")

BACKBONE = "efficientnet_lite0"
# Epochs per phase chosen so that the schedules differ epoch by epoch (a warm-up of 2 needs at least 3).
OPTIONS = {"image_size": 32, "head_epochs": 2, "finetune_epochs": 4, "progress": False, "num_workers": 0,
           "seed": 0, "tensorboard": False, "mlflow": False}


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return load_backbone(BACKBONE)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folder(tmp_path_factory.mktemp("blocks") / "data", {"a": 5, "b": 5}, size=(40, 32))


def advice_for(rules: RuleSet, backbone: Backbone, images_per_class: float = 2000) -> AdviceResult:
    """An advice made by the rules engine on a described dataset (classes a, b), without embedding anything."""
    dataset, similarity = make_dataset(images_per_class), make_similarity("similar")
    return AdviceResult(
        tool_version="test", device="cpu", dataset=dataset, backbone=backbone.info,
        sample=SampleInfo(n_images=0, per_class_cap=None, total_cap=None, seed=0, cache_hits=0, forward_passes=0),
        similarity=similarity, recommendation=recommend(rules, dataset, similarity, backbone.info), timings={})


# --------------------------------------------------------------------------- one phase, as numbers


@dataclass
class PhaseRecord:
    """A prepared phase, reduced to what decides the training: comparable between the runner and the blocks."""

    name: str
    epochs: int
    train_stages: list[str]
    trainable: list[str]  # parameter names (in the body + head model) that require grad
    groups: list[tuple[str, float, float, list[str]]]  # (group name, lr, weight decay, parameter names), in order
    optimizer: str  # class and its other settings (betas, momentum, nesterov)
    lr_by_epoch: list[list[float]]  # every group's rate at each epoch of the phase, as the scheduler steps it
    frozen_batchnorm: list[str]


def record_phase(model: nn.Module, prepared: PreparedPhase, phase: PhasePlan, *, prefix: str = "") -> PhaseRecord:
    names = {id(p): prefix + name for name, p in model.named_parameters()}
    module_names = {id(m): prefix + name for name, m in model.named_modules()}
    optimizer = prepared.optimizer
    other = {k: v for k, v in optimizer.defaults.items() if k not in ("lr", "weight_decay", "params")}
    groups = [(g["name"], g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]])
              for g in optimizer.param_groups]
    # What fit does when a runner gives no scheduler: cosine over the phase.
    scheduler = prepared.scheduler or make_scheduler(optimizer, epochs=phase.epochs)
    lr_by_epoch = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the scheduler without an optimizer step, on purpose
        for _ in range(phase.epochs):
            lr_by_epoch.append([g["lr"] for g in optimizer.param_groups])
            scheduler.step()
    return PhaseRecord(
        name=phase.name, epochs=phase.epochs, train_stages=list(phase.train_stages),
        trainable=sorted(prefix + n for n, p in model.named_parameters() if p.requires_grad), groups=groups,
        optimizer=f"{type(optimizer).__name__} {sorted(other.items())}", lr_by_epoch=lr_by_epoch,
        frozen_batchnorm=sorted(module_names[id(m)] for m in prepared.frozen_bn))


def mixed(mix: Any, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One seeded mixup / cutmix draw (timm draws from numpy), or None when nothing mixes."""
    if mix is None:
        return None
    np.random.seed(seed)
    torch.manual_seed(seed)
    out = mix(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1, 0]))
    return out[0], out[1]


# --------------------------------------------------------------------------- what the runner builds


class _Captured(TLAdviseError):
    """Stops ``run_advice`` once the probe has what it needs (a TLAdviseError is re-raised, not recorded)."""


@dataclass
class RunnerBuild:
    phases: list[PhaseRecord]
    head_state: dict[str, torch.Tensor]
    train_transform: str | None  # None: the head trains on embedded features
    loss: str
    mix: tuple[torch.Tensor, torch.Tensor] | None


def runner_build(monkeypatch: pytest.MonkeyPatch, session: AdviceSession, strategy: str, tmp_path: Path,
                 **options: Any) -> RunnerBuild:
    """What ``run_advice`` builds for ``strategy``, phase by phase, exactly as ``fit`` would prepare it."""
    seen: list[RunnerBuild] = []

    def probe(job: TrainingJob) -> Any:
        head_only = strategy == "feature_extraction"  # its model is the head alone
        head = job.model if head_only else job.model.head
        head_state = {k: v.clone() for k, v in head.state_dict().items()}
        phases = [record_phase(job.model, job.prepare_phase(phase), phase, prefix="head." if head_only else "")
                  for phase in job.phases]
        transform = None if head_only else repr(job.train_batches(1).dataset.transform)
        loss = training_loss(label_smoothing=job.label_smoothing, mixes_batches=job.mix_batch is not None)
        seen.append(RunnerBuild(phases, head_state, transform, repr(loss), mixed(job.mix_batch)))
        raise _Captured("captured")

    monkeypatch.setattr(finetune, "fit", probe)
    monkeypatch.setattr(feature_extraction, "fit", probe)
    with pytest.raises(_Captured):
        run_advice(session, RunOptions(output_dir=tmp_path / strategy, strategies=[strategy], **options))
    return seen[0]


def blocks_build(advised: blocks.TrainingBlocks) -> RunnerBuild:
    head_state = {k: v.clone() for k, v in advised.head.state_dict().items()}
    phases = [record_phase(advised.model, advised.setup_phase(phase).prepared(), phase) for phase in advised.phases]
    return RunnerBuild(phases, head_state, repr(advised.train_transform), repr(advised.loss), mixed(advised.mixup))


def assert_same(runner: RunnerBuild, ours: RunnerBuild, strategy: str) -> None:
    assert [(p.name, p.epochs, p.train_stages) for p in ours.phases] == \
        [(p.name, p.epochs, p.train_stages) for p in runner.phases], strategy
    for mine, theirs in zip(ours.phases, runner.phases, strict=True):
        assert mine.trainable == theirs.trainable, (strategy, mine.name)
        assert mine.groups == theirs.groups, (strategy, mine.name)  # names, LRs, weight decay, parameters
        assert mine.optimizer == theirs.optimizer, (strategy, mine.name)
        assert mine.lr_by_epoch == theirs.lr_by_epoch, (strategy, mine.name)
        if strategy == "feature_extraction":
            # The runner never runs the body while training (features embedded once, in eval mode): the blocks
            # keep every body batch-norm layer in inference mode, the same thing on images.
            assert theirs.frozen_batchnorm == [] and all(n.startswith("body.") for n in mine.frozen_batchnorm)
            assert mine.frozen_batchnorm
        else:
            assert mine.frozen_batchnorm == theirs.frozen_batchnorm, (strategy, mine.name)
    assert ours.head_state.keys() == runner.head_state.keys()
    assert all(torch.equal(ours.head_state[k], runner.head_state[k]) for k in ours.head_state), strategy
    assert ours.loss == runner.loss, strategy
    if runner.train_transform is not None:
        assert ours.train_transform == runner.train_transform, strategy
    assert (ours.mix is None) == (runner.mix is None), strategy
    if ours.mix is not None and runner.mix is not None:
        assert torch.equal(ours.mix[0], runner.mix[0]) and torch.equal(ours.mix[1], runner.mix[1]), strategy


# --------------------------------------------------------------------------- the done-when


@pytest.mark.slow
@pytest.mark.parametrize("rules_text", [None, EVERYTHING_ON], ids=["default-rules", "mixup-warmup-drop-path"])
def test_the_blocks_reproduce_the_runner_for_every_strategy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            backbone: Backbone, images: Path,
                                                            rules_text: str | None) -> None:
    rules = load_rules()
    if rules_text is not None:
        path = tmp_path / "rules.toml"
        path.write_text(rules_text, encoding="utf-8")
        rules = load_rules(path)
    result = advice_for(rules, backbone)
    session = AdviceSession(result=result, scan=scan_dataset(images), rules=rules, cache=ArrayCache(None),
                            backbone_spec=BACKBONE, weights=None, _backbone=backbone)
    options = RunOptions(output_dir=tmp_path / "unused", **OPTIONS)
    flags = [p.requires_grad for p in backbone.body.parameters()]
    for strategy in STRATEGY_IDS:
        runner = runner_build(monkeypatch, session, strategy, tmp_path, **OPTIONS)
        advised = blocks.from_session(session, strategy=strategy, options=options)
        assert advised.strategy == strategy
        assert_same(runner, blocks_build(advised), strategy)
        expected_phases = {"feature_extraction": ["head"], "from_scratch": ["from_scratch"]}.get(
            strategy, ["head", "finetune"])
        assert [p.name for p in advised.phases] == expected_phases
    # Neither froze the caller's backbone: they train copies.
    assert [p.requires_grad for p in backbone.body.parameters()] == flags


def test_a_perturbed_rate_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backbone: Backbone,
                                    images: Path) -> None:
    """The comparison can fail: one stage's rate changed on the blocks' side only is reported."""
    rules = load_rules()
    result = advice_for(rules, backbone)
    session = AdviceSession(result=result, scan=scan_dataset(images), rules=rules, cache=ArrayCache(None),
                            backbone_spec=BACKBONE, weights=None, _backbone=backbone)
    runner = runner_build(monkeypatch, session, "finetune_last_layers", tmp_path, **OPTIONS)
    advised = blocks.from_session(session, strategy="finetune_last_layers",
                                  options=RunOptions(output_dir=tmp_path, **OPTIONS))
    top = advised.recipe.unfreeze[-1]
    advised.recipe = advised.recipe.model_copy(
        update={"per_stage_lr": {**advised.recipe.per_stage_lr, top: advised.recipe.stage_lr(top) * 1.01}})
    with pytest.raises(AssertionError):
        assert_same(runner, blocks_build(advised), "finetune_last_layers")


# --------------------------------------------------------------------------- fast checks of the API


@pytest.fixture(scope="module")
def result_and_rules(backbone: Backbone) -> tuple[AdviceResult, RuleSet]:
    rules = load_rules()
    return advice_for(rules, backbone), rules


def test_from_advice_gives_the_recommended_strategy_with_its_phases(backbone: Backbone,
                                                                     result_and_rules: tuple[AdviceResult, RuleSet]
                                                                     ) -> None:
    result, rules = result_and_rules
    advised = blocks.from_advice(result, backbone, rules=rules)
    rec = result.recommendation
    assert advised.strategy == rec.strategy and advised.class_names == ["a", "b"]
    assert [p.epochs for p in advised.phases] == [p.epochs for p in rec.schedule]
    assert advised.phase("finetune").train_stages == rec.unfreeze
    setup = advised.setup_phase("finetune")
    lrs = setup.learning_rates()
    assert lrs["head"] == rec.learning_rate.backbone
    assert {stage: lrs[stage] for stage in rec.learning_rate.per_stage} == rec.learning_rate.per_stage
    # Frozen where the advice says: only the head and the advised stages train.
    stage_params = {id(p) for s in advised.backbone.stages if s.name in rec.unfreeze for p in s.parameters()}
    assert all(p.requires_grad == (id(p) in stage_params) for p in advised.backbone.body.parameters())
    # Batch norm in inference mode everywhere (the rules' "inference" mode), even in train mode.
    setup.train_mode(advised.model)
    bns = [m for m in advised.model.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns) and advised.model.head.training
    with pytest.raises(ConfigError, match="no 'from_scratch' phase; its phases are: head, finetune"):
        advised.phase("from_scratch")


def test_an_advice_is_refused_with_other_rules_or_another_backbone(
        backbone: Backbone, result_and_rules: tuple[AdviceResult, RuleSet], tmp_path: Path) -> None:
    result, _ = result_and_rules
    path = tmp_path / "other.toml"
    path.write_text(f'extends = "default"\n[strategies.{result.recommendation.strategy}.regularization]\n'
                    "label_smoothing = 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not made with these rules: pass the rules file"):
        blocks.from_advice(result, backbone, rules=load_rules(path))
    renamed = result.model_copy(update={"backbone": result.backbone.model_copy(update={"name": "resnet18"})})
    with pytest.raises(ConfigError, match=r"made with resnet18 but the backbone given is efficientnet_lite0"):
        blocks.from_advice(renamed, backbone)


@pytest.mark.slow
def test_the_plain_pytorch_loop_in_the_doc_trains(tmp_path: Path, backbone: Backbone) -> None:
    """docs/building-blocks.md's plain loop, run as written on a tiny folder: both phases train."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "building-blocks.md").read_text(encoding="utf-8")
    found = re.search(r"## A plain PyTorch loop\n\n```python\n(.*?)```", doc, re.DOTALL)
    assert found is not None
    data = make_class_folder(tmp_path / "images" / "train", {"a": 6, "b": 6}, size=(40, 32))
    rules = load_rules()
    advised = blocks.from_advice(advice_for(rules, backbone), backbone, strategy="finetune_last_layers",
                                 options=RunOptions(output_dir=tmp_path, max_epochs=1, image_size=32, batch_size=4))
    head_before = [p.detach().clone() for p in advised.head.parameters()]
    top = advised.backbone.stages[-1]
    top_before = [p.detach().clone() for p in top.parameters()]
    exec(found.group(1).replace("path/to/images/train", str(data)), {"advised": advised})
    assert all(not torch.equal(a, b) for a, b in zip(head_before, advised.head.parameters(), strict=True))
    assert top.name in advised.recipe.unfreeze
    assert any(not torch.equal(a, b) for a, b in zip(top_before, top.parameters(), strict=True))


# --------------------------------------------------------------------------- held to numbers written out by hand

HAND_RULES = """
extends = "default"
[learning_rate.backbone_factor]
similar = 0.01
[strategies.finetune_last_layers]
head_lr = 1e-3
unfreeze_top_fraction = 0.25
unfreeze_min_stages = 2
discriminative = true
discriminative_decay = 0.5
discriminative_floor = 0.1
optimizer = "adamw"
weight_decay = 0.01
batchnorm = "inference"
lr_schedule = { kind = "cosine", warmup_epochs = 0 }
[strategies.finetune_last_layers.augmentation]
crop_scale = [0.5, 1.0]
hflip = true
vflip = false
rotation_degrees = 0.0
color_jitter = 0.2
"""


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


def tiny_backbone() -> Backbone:
    """Four stages of conv + batch norm, 8 features: small enough to know every parameter by name."""
    from collections import OrderedDict

    from test_rules import make_backbone

    from tl_advise.advisor.measure.images.backbones.base import Stage

    body = nn.Sequential(OrderedDict(stem=_conv_bn(3, 4), s1=_conv_bn(4, 4), s2=_conv_bn(4, 4), s3=_conv_bn(4, 8),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))
    info = make_backbone(["stem", "s1", "s2", "s3"], name="tiny", input_size=32).model_copy(
        update={"feature_dim": 8})
    stages = [Stage(name, [getattr(body, name)]) for name in ("stem", "s1", "s2", "s3")]
    return Backbone(info=info, body=body, head=nn.Linear(8, 10), stages=stages)


def _cosine(base: float, epochs: int) -> list[float]:
    return [base * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]


def test_the_blocks_train_what_the_rules_say_written_out_by_hand(tmp_path: Path) -> None:
    """finetune_last_layers on a four-stage model, every number derived by hand from HAND_RULES, not from the
    code under test: 4 stages x 0.25 = 1, at least 2 -> s2, s3; backbone rate 1e-3 x 0.01 = 1e-5 for the top
    stage, x0.5 per stage below (5e-6 for s2); the head trains at 1e-3 in phase 1 and at 1e-5 in phase 2;
    cosine per phase, stepped per epoch; AdamW with weight decay 0.01 on every group; every body batch norm
    in inference mode; crop 0.5-1.0 at 32 px, horizontal flip, colour jitter 0.2."""
    path = tmp_path / "rules.toml"
    path.write_text(HAND_RULES, encoding="utf-8")
    rules = load_rules(path)
    backbone = tiny_backbone()
    dataset, similarity = make_dataset(2000), make_similarity("similar")
    result = AdviceResult(
        tool_version="test", device="cpu", dataset=dataset, backbone=backbone.info,
        sample=SampleInfo(n_images=0, per_class_cap=None, total_cap=None, seed=0, cache_hits=0, forward_passes=0),
        similarity=similarity, recommendation=recommend(rules, dataset, similarity, backbone.info), timings={})
    advised = blocks.from_advice(result, backbone, strategy="finetune_last_layers", rules=rules,
                                 options=RunOptions(output_dir=tmp_path, head_epochs=2, finetune_epochs=4,
                                                    image_size=32))
    head_params = sorted(f"head.{n}" for n, _ in advised.head.named_parameters())
    stage_params = {s: [f"body.{s}.0.weight", f"body.{s}.1.weight", f"body.{s}.1.bias"] for s in ("s2", "s3")}

    records = {p.name: record_phase(advised.model, advised.setup_phase(p).prepared(), p) for p in advised.phases}
    assert [(p.name, p.epochs, p.train_stages) for p in advised.phases] == [("head", 2, []),
                                                                          ("finetune", 4, ["s2", "s3"])]
    head, finetune = records["head"], records["finetune"]
    assert head.trainable == head_params
    assert finetune.trainable == sorted([*head_params, *stage_params["s2"], *stage_params["s3"]])
    assert [(name, lr, wd) for name, lr, wd, _ in head.groups] == [("head", 1e-3, 0.01)]
    assert [(name, lr, wd) for name, lr, wd, _ in finetune.groups] == [
        ("head", 1e-5, 0.01), ("s2", 5e-6, 0.01), ("s3", 1e-5, 0.01)]
    assert sorted(finetune.groups[1][3]) == sorted(stage_params["s2"])
    assert head.optimizer.startswith("AdamW ")
    assert [e[0] for e in head.lr_by_epoch] == pytest.approx([1e-3, 5e-4])
    for group, base in enumerate([1e-5, 5e-6, 1e-5]):  # head, s2, s3
        assert [e[group] for e in finetune.lr_by_epoch] == pytest.approx(_cosine(base, 4)), group
    assert finetune.lr_by_epoch[1][1] == pytest.approx(5e-6 * 0.8535534)  # one number by hand: (1 + cos 45°) / 2
    every_bn = sorted(f"body.{s}.1" for s in ("stem", "s1", "s2", "s3"))
    assert head.frozen_batchnorm == every_bn and finetune.frozen_batchnorm == every_bn

    steps = advised.train_transform.transforms
    assert [type(t).__name__ for t in steps] == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter",
                                                  "ToTensor", "Normalize"]
    assert steps[0].size == (32, 32) and steps[0].scale == (0.5, 1.0)
    assert steps[2].brightness == (0.8, 1.2) and steps[2].contrast == (0.8, 1.2) and steps[2].hue is None
    assert tuple(steps[4].mean) == (0.485, 0.456, 0.406) and tuple(steps[4].std) == (0.229, 0.224, 0.225)
