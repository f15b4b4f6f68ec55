"""The recipe each text strategy trains with: the rules' own, as ``rules.text_engine.text_recipe`` gives it (the
function the advice prints from), then the run options. ``--run`` and the building blocks (``runners.text.blocks``)
both take their recipe from here."""

from __future__ import annotations

from tl_advise.rules.text_engine import per_group_lr, text_recipe
from tl_advise.rules.text_schema import TextRuleSet
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.models import STRATEGY_IDS
from tl_advise.schema.text import TEXT_STRATEGY_IDS, TextAdviceResult, TextRecipe, TextRunOptions, TextStrategyId


def check_text_strategy(name: str) -> TextStrategyId:
    """``name`` as a text strategy id, or a ``ConfigError`` that lists the text strategies."""
    for strategy in TEXT_STRATEGY_IDS:
        if name == strategy:
            return strategy
    image = f" ({name} is an image strategy)" if name in STRATEGY_IDS else ""
    raise ConfigError(f"unknown text strategy {name!r}{image}: the text strategies are "
                      f"{', '.join(TEXT_STRATEGY_IDS)}")


def apply_options(recipe: TextRecipe, options: TextRunOptions) -> TextRecipe:
    """The recipe after the run options (overrides, then the ``max_epochs`` cap on each phase)."""
    update: dict[str, object] = {}
    if options.max_length is not None and recipe.kind != "tfidf":
        update["max_length"] = options.max_length
    if options.batch_size is not None:
        update["batch_size"] = options.batch_size
    if options.patience is not None:
        update["patience"] = options.patience
    update.update(_rate_overrides(recipe, options))
    head, finetune = recipe.head_epochs, recipe.finetune_epochs
    if options.head_epochs is not None and recipe.kind != "tfidf":
        head = options.head_epochs
    if options.finetune_epochs is not None and recipe.trains_encoder:
        finetune = options.finetune_epochs
    if options.max_epochs is not None:
        head, finetune = min(head, options.max_epochs), min(finetune, options.max_epochs)
    if options.max_finetune_epochs is not None:
        finetune = min(finetune, options.max_finetune_epochs)
    update.update(head_epochs=head, finetune_epochs=finetune)
    out = recipe.model_copy(update=update)
    if out.kind == "embedding_head" and out.head_epochs == 0:
        raise ConfigError(f"{out.strategy} trains only a head: give it at least one epoch (head_epochs)")
    if out.kind == "encoder" and out.finetune_epochs == 0:
        raise ConfigError(f"{out.strategy} fine-tunes encoder layers: give it at least one epoch (finetune_epochs)")
    return TextRecipe.model_validate(out.model_dump())


def _rate_overrides(recipe: TextRecipe, options: TextRunOptions) -> dict[str, object]:
    """The recipe fields the options' rates replace, where the recipe has them. A new encoder rate is spread over
    the tuned layers with the recipe's own layer-wise decay, as ``text_recipe`` spreads the rules' rate."""
    update: dict[str, object] = {}
    if options.head_lr is not None and recipe.head_lr is not None:
        update["head_lr"] = options.head_lr
    if options.encoder_lr is not None and recipe.trains_encoder and recipe.layer_decay is not None:
        update["encoder_lr"] = options.encoder_lr
        update["per_group_lr"] = per_group_lr(recipe.tuned_layers, options.encoder_lr, recipe.layer_decay)
    if options.tfidf_c is not None and recipe.kind == "tfidf":
        update["tfidf_c"] = options.tfidf_c
    return update


def text_recipe_for(rules: TextRuleSet, result: TextAdviceResult, strategy: TextStrategyId,
                    options: TextRunOptions) -> TextRecipe:
    """What ``--run`` trains for ``strategy`` of the advice ``result``: the rules' recipe on its dataset and
    backbone, the options applied."""
    return apply_options(text_recipe(rules, strategy, summary=result.dataset, lengths=result.lengths,
                                     backbone=result.backbone, similarity=result.similarity.label), options)
