"""The training recipe of each strategy: the recommendation's own, or the rules' for an alternative.

The recommended strategy uses exactly what the advice says (stages, rates, epochs, batch size,
augmentation). An alternative gets what the same rules engine would have recommended had its row
picked that strategy, so that a comparison pits recipe against recipe. Run options override both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from tl_advise.advisor.api import AdviceSession
from tl_advise.rules import engine
from tl_advise.schema.models import BatchNormMode, Recommendation, StrategyId
from tl_advise.schema.run_options import RunOptions

DEFAULT_DROPOUT = 0.5  # the guide's head


@dataclass(frozen=True)
class Recipe:
    strategy: StrategyId
    pretrained: bool
    unfreeze: list[str]
    head_lr: float
    backbone_lr: float | None
    per_stage_lr: dict[str, float]
    optimizer: str
    weight_decay: float
    batchnorm: BatchNormMode
    head_epochs: int
    finetune_epochs: int
    batch_size: int
    augmentation: list[str]
    label_smoothing: float = 0.0
    dropout: float = DEFAULT_DROPOUT
    image_size: int = 224
    notes: list[str] = field(default_factory=list)

    @property
    def trains_backbone(self) -> bool:
        return bool(self.unfreeze) or not self.pretrained

    def stage_lr(self, stage: str) -> float:
        return self.per_stage_lr.get(stage, self.backbone_lr if self.backbone_lr is not None else self.head_lr)


def _epochs_of(rec: Recommendation, phase_names: tuple[str, ...]) -> int:
    return sum(p.epochs for p in rec.schedule if p.name in phase_names)


def _number_after(pattern: str, texts: list[str], default: float) -> float:
    for text in texts:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return float(match.group(1))
    return default


def recipe_from_recommendation(rec: Recommendation, *, pretrained: bool, image_size: int) -> Recipe:
    # From scratch has one phase in which everything (head included) trains at the one LR.
    finetune_epochs = _epochs_of(rec, ("finetune", "from_scratch"))
    backbone_lr = rec.learning_rate.backbone
    head_lr = rec.learning_rate.head
    if not pretrained:
        head_lr = backbone_lr if backbone_lr is not None else head_lr
    return Recipe(
        strategy=rec.strategy, pretrained=pretrained, unfreeze=list(rec.unfreeze),
        head_lr=head_lr, backbone_lr=backbone_lr, per_stage_lr=dict(rec.learning_rate.per_stage),
        optimizer=rec.optimizer, weight_decay=rec.weight_decay, batchnorm=rec.batchnorm,
        head_epochs=_epochs_of(rec, ("head",)), finetune_epochs=finetune_epochs,
        batch_size=rec.batch_size, augmentation=list(rec.augmentation),
        label_smoothing=_number_after(r"label smoothing\s*([0-9.]+)", rec.regularization, 0.0),
        dropout=_number_after(r"dropout\s*([0-9.]+)", rec.regularization, DEFAULT_DROPOUT),
        image_size=image_size,
    )


def recommendation_for(session: AdviceSession, strategy_id: StrategyId) -> Recommendation:
    """The recommendation as the rules would give it for ``strategy_id`` on this dataset and backbone."""
    advised = session.result.recommendation
    if strategy_id == advised.strategy:
        return advised
    rules = session.rules
    strategy = rules.strategies[strategy_id]
    similarity = session.result.similarity
    stages = list(session.backbone.info.stages)
    top = engine.top_stages_to_unfreeze(strategy, stages)
    first = (engine.surgical_stages(rules.layers, similarity.shift_level, stages, top)
             if strategy.pretrained else [])
    unfreeze = [s for s in stages if s in top or s in first]
    rates = engine.learning_rates(rules, strategy, similarity.label, top, first)
    batch_size = engine.batch_size_for(rules.batch, strategy, engine.training_images(session.result.dataset))
    return advised.model_copy(update={
        "strategy": strategy_id, "unfreeze": unfreeze, "learning_rate": rates,
        "optimizer": strategy.optimizer, "weight_decay": strategy.weight_decay, "batchnorm": strategy.batchnorm,
        "schedule": engine.build_schedule(strategy, rates, unfreeze), "batch_size": batch_size,
        "augmentation": list(strategy.augmentation), "regularization": list(strategy.regularization),
        "alternatives": [],
    })


def build_recipe(session: AdviceSession, strategy_id: StrategyId, options: RunOptions) -> Recipe:
    rec = recommendation_for(session, strategy_id)
    pretrained = session.rules.strategies[strategy_id].pretrained if strategy_id in session.rules.strategies \
        else strategy_id != "from_scratch"
    base = recipe_from_recommendation(rec, pretrained=pretrained,
                                      image_size=session.backbone.preprocessing.input_size)
    return apply_options(base, options)


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
    return replace(
        recipe, head_epochs=head_epochs, finetune_epochs=finetune_epochs, head_lr=head_lr,
        backbone_lr=backbone_lr, per_stage_lr=per_stage,
        batch_size=options.batch_size or recipe.batch_size,
        image_size=options.image_size or recipe.image_size,
    )
