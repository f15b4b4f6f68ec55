"""The training recipe of each strategy: the rules' own, as ``rules.engine.strategy_recipe`` gives it (the same
function the advice prints from), then the run options.

The recommended strategy and an alternative alike get what the rules engine gives that strategy on this
dataset and backbone, so that a comparison pits recipe against recipe. Run options override both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from tl_advise.advisor.measure.images.backbones.registry import drop_path_support
from tl_advise.rules import engine
from tl_advise.rules.schema import RuleSet
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import (
    BackboneInfo,
    DatasetSummary,
    Recommendation,
    SimilarityReport,
    StrategyId,
    TrainingRecipe,
)
from tl_advise.schema.run_options import RunOptions

if TYPE_CHECKING:
    from tl_advise.advisor.api import AdviceSession

Recipe: TypeAlias = TrainingRecipe  # the runners' name for it


def rules_recipe(rules: RuleSet, strategy_id: StrategyId, *, dataset: DatasetSummary,
                 similarity: SimilarityReport, backbone: BackboneInfo) -> Recipe:
    """The rules' recipe for ``strategy_id``, exactly as the advice states it, at the backbone's input size."""
    plan = engine.strategy_recipe(rules, strategy_id, dataset, similarity, backbone)
    rule, rates = plan.rule, plan.learning_rate
    head_lr, backbone_lr = rates.head, rates.backbone
    if not rule.pretrained:  # one phase in which everything, head included, trains at the one LR
        head_lr = backbone_lr if backbone_lr is not None else head_lr
    return Recipe(
        strategy=strategy_id, pretrained=rule.pretrained, unfreeze=list(plan.unfreeze), head_lr=head_lr,
        backbone_lr=backbone_lr, per_stage_lr=dict(rates.per_stage), optimizer=rule.optimizer,
        weight_decay=rule.weight_decay, batchnorm=rule.batchnorm,
        head_epochs=sum(p.epochs for p in plan.schedule if p.name == "head"),
        finetune_epochs=sum(p.epochs for p in plan.schedule if p.name in ("finetune", "from_scratch")),
        batch_size=plan.batch_size, image_size=backbone.preprocessing.input_size,
        augmentation=rule.augmentation, regularization=rule.regularization, lr_schedule=rule.lr_schedule,
    )


def build_recipe(rules: RuleSet, strategy_id: StrategyId, *, dataset: DatasetSummary,
                 similarity: SimilarityReport, backbone: BackboneInfo, options: RunOptions) -> Recipe:
    """What ``--run`` trains for ``strategy_id``: the rules' recipe, the options applied, checked against the
    backbone before anything trains."""
    recipe = apply_options(rules_recipe(rules, strategy_id, dataset=dataset, similarity=similarity,
                                        backbone=backbone), options)
    rate = recipe.regularization.drop_path_rate
    if rate > 0 and (why_not := drop_path_support(backbone.name)) is not None:
        raise ConfigError(f"{strategy_id}: the rules ask for stochastic depth (regularization.drop_path_rate = "
                          f"{rate:g}) but {why_not}. Set drop_path_rate = 0 for [strategies.{strategy_id}] in "
                          "your rules file, or train with a backbone that supports it.")
    return recipe


def recommendation_for(session: AdviceSession, strategy_id: StrategyId) -> Recommendation:
    """The recommendation as the rules would give it for ``strategy_id`` on this dataset and backbone."""
    advised = session.result.recommendation
    if strategy_id == advised.strategy:
        return advised
    result = session.result
    plan = engine.strategy_recipe(session.rules, strategy_id, result.dataset, result.similarity, result.backbone)
    return advised.model_copy(update={"strategy": strategy_id, "title": plan.rule.title,
                                      **engine.recommended_recipe(plan), "alternatives": []})


def apply_options(recipe: Recipe, options: RunOptions) -> Recipe:
    """The user's overrides, then the epoch cap of the budget."""
    head_epochs = options.head_epochs if options.head_epochs is not None else recipe.head_epochs
    finetune_epochs = options.finetune_epochs if options.finetune_epochs is not None else recipe.finetune_epochs
    if not recipe.pretrained:
        head_epochs = 0  # a random backbone has nothing to protect with a head-only phase
    elif not recipe.unfreeze:
        finetune_epochs = 0  # nothing to fine-tune
    if options.max_epochs is not None:
        head_epochs = min(head_epochs, options.max_epochs)
        finetune_epochs = min(finetune_epochs, options.max_epochs)
    backbone_lr, per_stage = recipe.backbone_lr, dict(recipe.per_stage_lr)
    if options.backbone_lr is not None:
        # Keep the discriminative shape: every stage rate scales with the backbone rate.
        scale = options.backbone_lr / recipe.backbone_lr if recipe.backbone_lr else 1.0
        per_stage = {stage: rate * scale for stage, rate in per_stage.items()}
        backbone_lr = options.backbone_lr
    head_lr = options.head_lr if options.head_lr is not None else recipe.head_lr
    if not recipe.pretrained and options.backbone_lr is not None and options.head_lr is None:
        head_lr = options.backbone_lr
    return recipe.model_copy(update={
        "head_epochs": head_epochs, "finetune_epochs": finetune_epochs, "head_lr": head_lr,
        "backbone_lr": backbone_lr, "per_stage_lr": per_stage,
        "batch_size": options.batch_size or recipe.batch_size,
        "image_size": options.image_size or recipe.image_size,
    })
