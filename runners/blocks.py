"""The advice as building blocks for your own training loop (plain PyTorch, Lightning, fastai, ...).

``--run`` trains from these blocks too: the image runners (``runners.finetune``) build their model, phases,
optimizers, schedules, transforms and batch mixing here, and the training loop (``runners.train.fit``) takes
its loss from ``training_loss``. What you get is therefore exactly what ``tl-advise --run`` would train
(tests/test_blocks.py checks it parameter by parameter for every strategy):

- ``model``: the backbone (a private copy; random weights for ``from_scratch``) with the new head;
- ``phases``: the phase plan, ``head`` then ``finetune`` (or one ``from_scratch`` phase), with epochs and the
  stages each trains;
- ``setup_phase(phase)``: freezes the model for that phase and gives its optimizer (per-stage param groups at
  the advised learning rates and weight decay), its LR scheduler (warm-up + cosine, stepped once per epoch)
  and ``train_mode`` (``model.train()`` that keeps the advised batch-norm layers in inference mode);
- ``train_transform`` / ``eval_transform`` (torchvision), ``mixup`` (timm's ``Mixup``, or None) and ``loss``.

Example, a plain PyTorch loop (more, and Lightning, in docs/building-blocks.md)::

    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from tl_advise.advisor import advise_session
    from tl_advise.runners import blocks

    advised = blocks.from_session(advise_session("images"))  # the recommended strategy; strategy="..." for another
    data = ImageFolder("images", transform=advised.train_transform)
    loader = DataLoader(data, batch_size=advised.recipe.batch_size, shuffle=True)
    for phase in advised.phases:                              # head, then finetune
        setup = advised.setup_phase(phase)                    # freezes; optimizer + scheduler of the phase
        for epoch in range(phase.epochs):
            setup.train_mode(advised.model)                   # frozen batch norm stays in inference mode
            for images, labels in loader:
                if advised.mixup is not None:
                    images, labels = advised.mixup(images, labels)
                loss = advised.loss(advised.model(images), labels)
                setup.optimizer.zero_grad()
                loss.backward()
                setup.optimizer.step()
            setup.scheduler.step()                            # once per epoch

From a saved advice (``tl-advise DATA --format json -o advice.json``) instead of a session:
``blocks.from_advice(AdviceResult.model_validate_json(text), load_backbone("efficientnet_lite0"))``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision import transforms as T

from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.advisor.measure.images.backbones.registry import with_drop_path
from tl_advise.rules.schema import RuleSet, load_rules
from tl_advise.runners.data import eval_transform, resized, train_transform
from tl_advise.runners.freezing import check_stage_names, freeze_body, frozen_batchnorm, set_train_mode
from tl_advise.runners.heads import ClassifierHead, TransferModel
from tl_advise.runners.mixing import BatchMixer, batch_mixer, training_loss
from tl_advise.runners.optim import make_optimizer, make_scheduler
from tl_advise.runners.recipes import Recipe, build_recipe, rules_recipe
from tl_advise.runners.train import PhasePlan, PreparedPhase
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import AdviceResult, Preprocessing, StrategyId
from tl_advise.schema.run_options import RunOptions

if TYPE_CHECKING:
    from tl_advise.advisor.api import AdviceSession

__all__ = [
    "PhasePlan", "PhaseSetup", "TrainingBlocks", "from_advice", "from_recipe", "from_session", "head_param_groups",
    "new_head", "param_groups", "phase_optimizer", "phase_plans", "phase_scheduler", "setup_phase",
    "training_backbone", "training_loss",
]

# Options that only say where --run writes; the blocks write nothing.
_NO_OUTPUT = Path()


# --------------------------------------------------------------------------- the model


def training_backbone(pretrained: Backbone, recipe: Recipe) -> Backbone:
    """The backbone that trains: a private copy of ``pretrained`` (training must never change the caller's
    backbone), or the same architecture with random weights when the recipe is not pretrained; stochastic
    depth built in when the recipe has it (timm sets it at creation)."""
    backbone = copy.deepcopy(pretrained) if recipe.pretrained else load_backbone(pretrained.name, pretrained=False)
    return with_drop_path(backbone, recipe.regularization.drop_path_rate)


def new_head(recipe: Recipe, feature_dim: int, n_classes: int) -> ClassifierHead:
    """The new classifier head on pooled features, with the recipe's dropout."""
    return ClassifierHead(feature_dim, n_classes, dropout=recipe.regularization.dropout)


# --------------------------------------------------------------------------- phases


def phase_plans(recipe: Recipe, backbone: Backbone) -> list[PhasePlan]:
    """The phases in order with their epochs and the stages each trains: ``head`` (backbone frozen) then
    ``finetune`` (the advised stages), or one ``from_scratch`` phase; phases of 0 epochs are left out."""
    stage_names = [s.name for s in backbone.stages]
    if not recipe.pretrained:
        return [PhasePlan("from_scratch", recipe.finetune_epochs, stage_names)]
    plans = [PhasePlan("head", recipe.head_epochs, [])]
    if recipe.unfreeze:
        plans.append(PhasePlan("finetune", recipe.finetune_epochs, check_stage_names(backbone, recipe.unfreeze)))
    return [p for p in plans if p.epochs > 0]


def head_param_groups(recipe: Recipe, head: nn.Module) -> list[dict[str, Any]]:
    """The head phase: the head alone, at the head rate."""
    return [{"params": list(head.parameters()), "lr": recipe.head_lr, "name": "head"}]


def param_groups(recipe: Recipe, backbone: Backbone, head: nn.Module, phase: PhasePlan) -> list[dict[str, Any]]:
    """Head at its rate; each unfrozen stage at its discriminative rate (else the backbone rate).

    Phase 2 trains the head at the fine-tuning rate too, as the recommendation's schedule says (the
    guide's recipe: the whole second phase about 100x below the head phase); from scratch uses one rate.
    Each group is ``{"params": [...], "lr": float, "name": "head" | stage name | "other"}``.
    """
    if phase.name == "head":
        return head_param_groups(recipe, head)
    phase_lr = recipe.head_lr if not recipe.pretrained else (recipe.backbone_lr or recipe.head_lr)
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": phase_lr, "name": "head"}]
    seen: set[int] = set()
    for stage in backbone.stages:
        if stage.name in phase.train_stages:
            params = [p for p in stage.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            lr = recipe.head_lr if not recipe.pretrained else recipe.stage_lr(stage.name)
            groups.append({"params": params, "lr": lr, "name": stage.name})
    # Layers outside every stage train only when the whole body does (full fine-tune, from scratch).
    rest = [p for p in backbone.body.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": phase_lr, "name": "other"})
    return groups


def phase_optimizer(recipe: Recipe, groups: Sequence[dict[str, Any]]) -> torch.optim.Optimizer:
    """The advised optimizer (adam, adamw or sgd) over ``groups``, at the advised weight decay."""
    return make_optimizer(recipe.optimizer, groups, weight_decay=recipe.weight_decay)


def phase_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, phase: PhasePlan
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay over the phase, stepped once per epoch, after the recipe's linear warm-up. The warm-up
    belongs to the phase that trains the backbone, not to a new head's phase."""
    warmup = 0 if phase.name == "head" else recipe.lr_schedule.warmup_epochs
    return make_scheduler(optimizer, epochs=phase.epochs, warmup_epochs=warmup)


@dataclass
class PhaseSetup:
    """One phase, ready to train: the model is frozen for it; step ``scheduler`` once per epoch."""

    phase: PhasePlan
    optimizer: torch.optim.Optimizer  # its param_groups carry "name", "lr", "weight_decay"
    scheduler: torch.optim.lr_scheduler.LRScheduler
    frozen_batchnorm: list[nn.Module] = field(repr=False)  # kept in inference mode while the model trains

    def train_mode(self, model: nn.Module) -> None:
        """``model.train()``, except the frozen batch-norm layers, which keep their running statistics. Call it
        at the start of every training epoch (after validation put the model in eval mode)."""
        set_train_mode(model, self.frozen_batchnorm)

    def learning_rates(self) -> dict[str, float]:
        """The current rate of each param group, by name (``head``, a stage name, ``other``)."""
        return {str(g["name"]): float(g["lr"]) for g in self.optimizer.param_groups}

    def prepared(self) -> PreparedPhase:
        """The runners' view of the same phase (``runners.train.fit``)."""
        return PreparedPhase(self.optimizer, self.frozen_batchnorm, self.scheduler)


def setup_phase(recipe: Recipe, backbone: Backbone, head: nn.Module, phase: PhasePlan) -> PhaseSetup:
    """Freeze ``backbone`` for ``phase`` (every stage but the phase's), then build its optimizer and schedule.
    Idempotent: freezing is a function of the phase alone, so it is re-applied on every call."""
    training_modules = freeze_body(backbone, phase.train_stages)
    optimizer = phase_optimizer(recipe, param_groups(recipe, backbone, head, phase))
    return PhaseSetup(phase, optimizer, phase_scheduler(recipe, optimizer, phase),
                      frozen_batchnorm(backbone, training_modules, mode=recipe.batchnorm))


# --------------------------------------------------------------------------- everything for one strategy


@dataclass
class TrainingBlocks:
    """Everything ``--run`` would train one strategy with, as parts for your own loop (module docstring)."""

    recipe: Recipe  # the typed recipe: LRs, epochs, batch size, image size, augmentation, regularisation
    class_names: list[str]  # label i is class_names[i] (the advice's order: sorted folder names)
    backbone: Backbone  # the training copy; its stages are what the phases freeze and unfreeze
    head: ClassifierHead
    model: TransferModel  # head(backbone.body(x))
    preprocessing: Preprocessing  # the backbone's, at the recipe's image size
    train_transform: T.Compose
    eval_transform: T.Compose
    mixup: BatchMixer | None  # (images, labels) -> (mixed images, soft targets); None: the recipe mixes nothing
    loss: nn.Module  # soft-target cross-entropy with mixup, else cross-entropy with the label smoothing
    phases: list[PhasePlan]

    @property
    def strategy(self) -> StrategyId:
        return self.recipe.strategy

    def phase(self, name: str) -> PhasePlan:
        """The phase called ``name`` (``head``, ``finetune`` or ``from_scratch``)."""
        for plan in self.phases:
            if plan.name == name:
                return plan
        raise ConfigError(f"{self.strategy} has no {name!r} phase; its phases are: "
                          f"{', '.join(p.name for p in self.phases) or 'none'}")

    def setup_phase(self, phase: PhasePlan | str) -> PhaseSetup:
        """Freeze the model for ``phase`` and build its optimizer and LR scheduler (``setup_phase``)."""
        plan = self.phase(phase) if isinstance(phase, str) else phase
        return setup_phase(self.recipe, self.backbone, self.head, plan)


def from_recipe(recipe: Recipe, backbone: Backbone, class_names: Sequence[str], *, seed: int | None = 0
                ) -> TrainingBlocks:
    """The blocks for ``recipe`` (as ``runners.recipes.build_recipe`` gives it) on the pretrained ``backbone``.

    ``seed`` seeds torch's global RNG before the backbone copy and the head are built, as ``--run`` does with
    its ``--seed``, so the head starts from the same weights (None leaves the RNG alone). ``backbone`` itself
    is never changed.
    """
    if seed is not None:
        torch.manual_seed(seed)  # the random backbone of from_scratch and the head's initial weights
    trained = training_backbone(backbone, recipe)
    head = new_head(recipe, trained.info.feature_dim, len(class_names))
    pre = resized(backbone.preprocessing, recipe.image_size)
    smoothing = recipe.regularization.label_smoothing
    return TrainingBlocks(
        recipe=recipe, class_names=list(class_names), backbone=trained, head=head,
        model=TransferModel(trained.body, head), preprocessing=pre,
        train_transform=train_transform(pre, recipe.augmentation), eval_transform=eval_transform(pre),
        mixup=batch_mixer(recipe.augmentation, label_smoothing=smoothing, n_classes=len(class_names)),
        loss=training_loss(label_smoothing=smoothing, mixes_batches=recipe.augmentation.mixes_batches),
        phases=phase_plans(recipe, trained),
    )


def from_advice(result: AdviceResult, backbone: Backbone, *, strategy: StrategyId | None = None,
                rules: RuleSet | None = None, options: RunOptions | None = None, seed: int | None = None
                ) -> TrainingBlocks:
    """The blocks for ``strategy`` (default: the recommended one) of an advice, as ``--run`` would train it.

    ``backbone``: the advice's backbone, loaded (``load_backbone(result.backbone.name)``). ``rules``: the rules
    the advice was made with (default: the built-in ones; an advice made with others is refused). ``options``:
    the ``--run`` overrides (epochs, LRs, batch and image size; ``RunOptions`` fields), none by default.
    ``seed``: default ``options.seed`` (0).
    """
    if backbone.name != result.backbone.name:
        raise ConfigError(f"The advice was made with {result.backbone.name} but the backbone given is "
                          f"{backbone.name}: load the advice's backbone (load_backbone({result.backbone.name!r})).")
    rules = rules if rules is not None else load_rules()
    _check_same_rules(result, rules)
    options = options if options is not None else RunOptions(output_dir=_NO_OUTPUT)
    recipe = build_recipe(rules, strategy or result.recommendation.strategy, dataset=result.dataset,
                          similarity=result.similarity, backbone=result.backbone, options=options)
    return from_recipe(recipe, backbone, result.dataset.classes, seed=options.seed if seed is None else seed)


def from_session(session: AdviceSession, *, strategy: StrategyId | None = None, options: RunOptions | None = None,
                 seed: int | None = None) -> TrainingBlocks:
    """``from_advice`` for what ``advise_session`` returns: its result, backbone and rules."""
    return from_advice(session.result, session.backbone, strategy=strategy, rules=session.rules, options=options,
                       seed=seed)


def _check_same_rules(result: AdviceResult, rules: RuleSet) -> None:
    """Refuse rules that give the advised strategy another recipe than the advice states: the blocks would
    otherwise train something the advice never said."""
    advised = result.recommendation
    recipe = rules_recipe(rules, advised.strategy, dataset=result.dataset, similarity=result.similarity,
                          backbone=result.backbone)
    stated = (advised.unfreeze, advised.learning_rate.backbone, dict(advised.learning_rate.per_stage),
              advised.optimizer, advised.weight_decay, advised.batchnorm, advised.augmentation,
              advised.regularization, advised.lr_schedule, advised.batch_size)
    rebuilt = (recipe.unfreeze, recipe.backbone_lr, recipe.per_stage_lr, recipe.optimizer, recipe.weight_decay,
               recipe.batchnorm, recipe.augmentation, recipe.regularization, recipe.lr_schedule, recipe.batch_size)
    if stated != rebuilt:
        raise ConfigError(f"The advice for {advised.strategy} (rule {advised.rule_id}) was not made with these "
                          "rules: pass the rules file it was made with (rules=load_rules(PATH)).")
