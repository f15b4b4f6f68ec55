"""The text advice as building blocks for your own training loop (plain PyTorch, Lightning, ...): the text twin of
``runners.blocks``.

``--run`` trains from these blocks too: the text runner (``runners.text.strategies``) builds its head, its copy of
the encoder, its phases, optimizers, schedules and token batches here. What you get is therefore what
``tl-advise TEXTS --run`` trains (tests/test_text_blocks.py checks it parameter by parameter for every strategy):

- ``model``: ``TextClassifier``, a private copy of the encoder pooled as the backbone pools, under the new head
  (the pooled embedding standardised by the training texts' mean and spread, dropout, one linear layer);
- ``phases``: ``head`` (the encoder frozen), then ``finetune`` of the tuned layer groups for text_finetune_top and
  text_full_finetune; ``head`` alone for text_feature_extraction;
- ``setup_phase(phase)``: freezes the model for that phase and gives its AdamW optimizer (one param group per layer
  group at its layer-wise decayed rate, split into weights with weight decay and biases and LayerNorm without),
  its scheduler and ``train_mode``;
- ``tokenizer``, ``tokenize(texts)`` and ``collate`` (a DataLoader ``collate_fn``: ``(text, label)`` pairs to one
  ``(batch, 2, length)`` tensor of token ids and attention mask, cut at the recipe's max_length, and the labels);
- ``loss`` (cross-entropy) and, from a session, ``splits``: the texts ``--run`` trains, validates and tests on.

Both phases take the same loop: ``scheduler.step()`` once per epoch. The head phase's schedule is cosine over its
epochs; the fine-tuning's (linear warm-up, then linear decay to 0) moves with every ``optimizer.step()`` by
itself, and its ``step()`` does nothing.

tfidf_linear trains no network, so it has no loop to hand over: ``tfidf_from_session`` / ``tfidf_from_advice``
give its scikit-learn pipeline (TF-IDF, then logistic regression) configured as ``--run`` fits it, and
``from_session`` refuses it with a pointer to them.

Example, a plain PyTorch loop (more in docs/building-blocks.md)::

    from torch.utils.data import DataLoader
    from tl_advise.advisor.text_api import advise_text_session
    from tl_advise.runners.text import blocks as text_blocks

    advised = text_blocks.from_session(advise_text_session("reviews.csv"))  # the recommended strategy
    train = advised.splits.train
    loader = DataLoader(list(zip(train.texts, train.labels)), batch_size=advised.recipe.batch_size,
                        shuffle=True, collate_fn=advised.collate)
    for phase in advised.phases:                        # head, then finetune
        setup = advised.setup_phase(phase)              # freezes; optimizer + scheduler of the phase
        for epoch in range(phase.epochs):
            setup.train_mode(advised.model)             # frozen layers without dropout
            for x, y in loader:
                loss = advised.loss(advised.model(x), y)
                setup.optimizer.zero_grad()
                loss.backward()
                setup.optimizer.step()
            setup.scheduler.step()
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from torch import nn

from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.text.backbone import TextBackbone
from tl_advise.rules.text_engine import HEAD_GROUP, text_recipe
from tl_advise.rules.text_schema import TextRuleSet, load_text_rules
from tl_advise.runners.freezing import set_train_mode
from tl_advise.runners.mixing import training_loss
from tl_advise.runners.optim import make_optimizer, make_scheduler
from tl_advise.runners.text.model import (
    PerStepWarmupDecay,
    TextClassifier,
    TextHead,
    batch_starts,
    freeze_for,
    module_param_groups,
    pack,
    param_groups,
    tokenize,
)
from tl_advise.runners.text.recipes import check_text_strategy, text_recipe_for
from tl_advise.runners.text.splits import TextSplits, make_text_splits
from tl_advise.runners.train import PhasePlan, PreparedPhase
from tl_advise.schema.errors import ConfigError
from tl_advise.schema.text import TextAdviceResult, TextRecipe, TextRunOptions, TextStrategyId

if TYPE_CHECKING:
    from tl_advise.advisor.text_api import TextAdviceSession

__all__ = [
    "TextCollate", "TextPhaseSetup", "TextTrainingBlocks", "embed_texts", "finetune_param_groups", "from_advice",
    "from_recipe", "from_session", "head_param_groups", "new_head", "phase_optimizer", "phase_plans",
    "phase_scheduler", "setup_phase", "steps_per_epoch", "tfidf_from_advice", "tfidf_from_session",
    "tfidf_pipeline", "training_encoder",
]

# Options that only say where --run writes; the blocks write nothing.
_NO_OUTPUT = Path()
TFIDF_MAX_ITER = 2000  # the logistic regression's iterations: enough for sparse TF-IDF features to converge
_NO_LOOP = ("tfidf_linear trains no network, so there is no training loop to hand over: its scikit-learn pipeline "
            "(TF-IDF, then logistic regression), configured as --run fits it, is text_blocks.tfidf_from_session("
            "session) (or tfidf_from_advice(result), tfidf_pipeline(recipe))")


# --------------------------------------------------------------------------- embeddings and the model


def embedding_backbone(backbone: TextBackbone, max_length: int) -> TextBackbone:
    """The backbone truncating at ``max_length`` (its own cache key: max_length is in it)."""
    if backbone.info.max_length == max_length:
        return backbone
    return dataclasses.replace(backbone, info=backbone.info.model_copy(update={"max_length": max_length}))


def embed_texts(backbone: TextBackbone, recipe: TextRecipe, texts: Sequence[str], *, cache: ArrayCache | None = None,
                namespace: str = "", progress: bool = False) -> torch.Tensor:
    """The frozen encoder's embeddings of ``texts`` at the recipe's max_length, ``(len(texts), hidden)`` float32 in
    order, through ``cache`` where one is given: what ``--run``'s head phase trains on."""
    array = embedding_backbone(backbone, recipe.max_length).embed(texts, cache=cache, namespace=namespace,
                                                                  progress=progress)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def training_encoder(backbone: TextBackbone) -> nn.Module:
    """A private copy of the encoder: training must never change the caller's (the session's stays pretrained for
    the next strategy)."""
    return copy.deepcopy(backbone.model)


def new_head(recipe: TextRecipe, train_embeddings: torch.Tensor, n_classes: int, *, seed: int | None = 0
             ) -> TextHead:
    """The new head, standardising by the training texts' embeddings (their mean and spread), with the recipe's
    dropout. ``seed`` seeds torch's global RNG first, as ``--run`` does with its ``--seed``, so that the linear
    layer starts from the same weights (None leaves the RNG alone)."""
    if seed is not None:
        torch.manual_seed(seed)
    return TextHead(train_embeddings.shape[1], n_classes, dropout=recipe.dropout, mean=train_embeddings.mean(0),
                    std=train_embeddings.std(0) if len(train_embeddings) > 1 else None)


# --------------------------------------------------------------------------- phases


def _check_trains_a_network(recipe: TextRecipe) -> None:
    if recipe.kind == "tfidf":
        raise ConfigError(_NO_LOOP)


def phase_plans(recipe: TextRecipe) -> list[PhasePlan]:
    """The advice's schedule (``rules.text_engine.schedule``) as phases: ``head`` (the encoder frozen), then
    ``finetune`` of the tuned layer groups when the recipe tunes any."""
    _check_trains_a_network(recipe)
    plans = [PhasePlan("head", recipe.head_epochs, [])]
    if recipe.tuned_layers:
        plans.append(PhasePlan("finetune", recipe.finetune_epochs, list(recipe.tuned_layers)))
    return plans


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in an epoch: the batches ``model.train_batches`` yields (a last batch of one text is folded
    into the one before), so the per-step schedule's decay ends on the epoch's last step, not before it."""
    return max(1, len(batch_starts(n_train, batch_size)))


def head_param_groups(recipe: TextRecipe, head: nn.Module) -> list[dict[str, Any]]:
    """The head phase: the head alone at the head rate (``head``), its bias without weight decay
    (``head:no_decay``)."""
    if recipe.head_lr is None:
        raise ConfigError(f"{recipe.strategy}: the recipe has no head rate (head_lr)")
    return module_param_groups({HEAD_GROUP: head}, {HEAD_GROUP: recipe.head_lr}, weight_decay=recipe.weight_decay)


def finetune_param_groups(recipe: TextRecipe, model: TextClassifier) -> list[dict[str, Any]]:
    """The fine-tuning phase: the head and each tuned layer group at its rate (``recipe.per_group_lr``: layer-wise
    LR decay), each split into ``name`` (weight decay) and ``name:no_decay`` (biases, LayerNorm)."""
    return param_groups(model, recipe.per_group_lr, weight_decay=recipe.weight_decay)


def phase_optimizer(recipe: TextRecipe, groups: Sequence[dict[str, Any]]) -> torch.optim.Optimizer:
    """The recipe's optimizer (AdamW) over ``groups``; each group carries its own weight decay."""
    return make_optimizer(recipe.optimizer, groups, weight_decay=recipe.weight_decay)


def phase_scheduler(recipe: TextRecipe, optimizer: torch.optim.Optimizer, phase: PhasePlan, *,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The head phase: cosine over its epochs, stepped once per epoch. Fine-tuning: linear warm-up over the
    recipe's share of its steps, then linear decay to 0, advanced by every optimizer step (BERT's schedule)."""
    if phase.name == "head":
        return make_scheduler(optimizer, epochs=phase.epochs)
    return PerStepWarmupDecay(optimizer, total_steps=steps_per_epoch * phase.epochs,
                              warmup_share=recipe.warmup_share)


@dataclass
class TextPhaseSetup:
    """One phase, ready to train: the model is frozen for it; call ``scheduler.step()`` once per epoch."""

    phase: PhasePlan
    optimizer: torch.optim.Optimizer  # its param_groups carry "name", "lr", "weight_decay"
    scheduler: torch.optim.lr_scheduler.LRScheduler
    frozen_modules: list[nn.Module] = field(repr=False)  # the frozen encoder layers: kept in inference mode

    def train_mode(self, model: nn.Module) -> None:
        """``model.train()``, except the frozen encoder layers, which stay in inference mode (no dropout where
        nothing learns; the head phase then sees the embeddings ``--run`` trains its head on). Call it at the
        start of every training epoch."""
        set_train_mode(model, self.frozen_modules)

    def learning_rates(self) -> dict[str, float]:
        """The current rate of each param group, by name (``head``, ``layer.5``, ``layer.5:no_decay`` ...)."""
        return {str(g["name"]): float(g["lr"]) for g in self.optimizer.param_groups}

    def prepared(self) -> PreparedPhase:
        """The runners' view of the same phase (``runners.train.fit``)."""
        return PreparedPhase(self.optimizer, self.frozen_modules, self.scheduler)


def setup_phase(recipe: TextRecipe, model: TextClassifier, phase: PhasePlan, *, steps_per_epoch: int
                ) -> TextPhaseSetup:
    """Freeze ``model`` for ``phase`` (the whole encoder but the phase's layer groups), then build its optimizer and
    schedule. Idempotent: freezing is a function of the phase alone, so it is re-applied on every call."""
    frozen = freeze_for(model, phase.train_stages)
    groups = head_param_groups(recipe, model.head) if phase.name == "head" else finetune_param_groups(recipe, model)
    optimizer = phase_optimizer(recipe, groups)
    return TextPhaseSetup(phase, optimizer, phase_scheduler(recipe, optimizer, phase, steps_per_epoch=steps_per_epoch),
                          frozen)


# --------------------------------------------------------------------------- token batches


@dataclass(frozen=True)
class TextCollate:
    """Texts to one batch as ``--run`` packs them: token ids (special tokens included) cut at ``max_length``,
    padded with the tokenizer's pad id, stacked with the attention mask into ``(batch, 2, length)``."""

    tokenizer: Any = field(repr=False)  # a transformers PreTrainedTokenizerFast
    max_length: int

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return tokenize(self.tokenizer, texts, self.max_length)

    def pack(self, texts: Sequence[str]) -> torch.Tensor:
        """The model's input for ``texts``: ``(len(texts), 2, longest)``."""
        return pack(self.tokenize(texts), self.pad_id)

    def __call__(self, batch: Sequence[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """A DataLoader's ``collate_fn``: ``(text, label)`` pairs to ``(inputs, labels)``."""
        return self.pack([text for text, _ in batch]), torch.tensor([int(y) for _, y in batch], dtype=torch.long)


# --------------------------------------------------------------------------- everything for one strategy


@dataclass
class TextTrainingBlocks:
    """Everything ``--run`` would train one text strategy with, as parts for your own loop (module docstring)."""

    recipe: TextRecipe  # every number as it trains: rates, epochs, batch size, max_length, dropout
    class_names: list[str]  # label i is class_names[i] (the advice's order)
    tokenizer: Any
    collate: TextCollate
    head: TextHead
    model: TextClassifier  # head(pooled(encoder(ids, mask)))
    phases: list[PhasePlan]
    loss: nn.Module
    steps_per_epoch: int  # the batches of an epoch over the training texts: what the fine-tuning schedule counts
    splits: TextSplits | None = None  # from a session: the texts --run trains, validates and tests on

    @property
    def strategy(self) -> TextStrategyId:
        return self.recipe.strategy

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, cut at the recipe's max_length."""
        return self.collate.tokenize(texts)

    def phase(self, name: str) -> PhasePlan:
        """The phase called ``name`` (``head`` or ``finetune``)."""
        for plan in self.phases:
            if plan.name == name:
                return plan
        raise ConfigError(f"{self.strategy} has no {name!r} phase; its phases are: "
                          f"{', '.join(p.name for p in self.phases)}")

    def setup_phase(self, phase: PhasePlan | str, *, steps_per_epoch: int | None = None) -> TextPhaseSetup:
        """Freeze the model for ``phase`` and build its optimizer and scheduler (``setup_phase``).
        ``steps_per_epoch``: the optimizer steps of your epochs, when you train on other texts than the blocks
        were made for (default: ``self.steps_per_epoch``)."""
        plan = self.phase(phase) if isinstance(phase, str) else phase
        steps = self.steps_per_epoch if steps_per_epoch is None else steps_per_epoch
        return setup_phase(self.recipe, self.model, plan, steps_per_epoch=steps)


def from_recipe(recipe: TextRecipe, backbone: TextBackbone, class_names: Sequence[str],
                train_embeddings: torch.Tensor, *, seed: int | None = 0, splits: TextSplits | None = None
                ) -> TextTrainingBlocks:
    """The blocks for ``recipe`` (``runners.text.recipes.text_recipe_for``) on the pretrained ``backbone``.

    ``train_embeddings``: the frozen encoder's embeddings of the training texts (``embed_texts``): the head
    standardises by their mean and spread, and their number sets ``steps_per_epoch``. ``seed`` seeds torch
    before the head is built (``new_head``). ``backbone`` itself is never changed.
    """
    _check_trains_a_network(recipe)
    head = new_head(recipe, train_embeddings, len(class_names), seed=seed)
    info = backbone.info
    model = TextClassifier(training_encoder(backbone), head, pooling=info.pooling, normalize=info.normalize)
    return TextTrainingBlocks(
        recipe=recipe, class_names=list(class_names), tokenizer=backbone.tokenizer,
        collate=TextCollate(backbone.tokenizer, recipe.max_length), head=head, model=model.to(backbone.device),
        phases=phase_plans(recipe), loss=training_loss(label_smoothing=0.0, mixes_batches=False),
        steps_per_epoch=steps_per_epoch(len(train_embeddings), recipe.batch_size), splits=splits)


def _chosen(result: TextAdviceResult, strategy: str | None) -> TextStrategyId:
    return check_text_strategy(strategy) if strategy is not None else result.recommendation.strategy


def from_advice(result: TextAdviceResult, backbone: TextBackbone, train_texts: Sequence[str], *,
                strategy: str | None = None, rules: TextRuleSet | None = None, options: TextRunOptions | None = None,
                seed: int | None = None) -> TextTrainingBlocks:
    """The blocks for ``strategy`` (default: the recommended one) of a text advice, as ``--run`` would train it.

    ``backbone``: the advice's, loaded (``load_text_backbone(result.backbone.name)``). ``train_texts``: the texts
    you will train on (embedded once for the head's standardisation). ``rules``: the rules the advice was made
    with (default: the built-in ones; an advice made with others is refused). ``options``: the ``--run``
    overrides (``TextRunOptions``: epochs, max_length, batch size), none by default. ``seed``: default
    ``options.seed`` (0).
    """
    chosen = _chosen(result, strategy)
    if chosen == "tfidf_linear":
        raise ConfigError(_NO_LOOP)
    if backbone.name != result.backbone.name:
        raise ConfigError(f"The advice was made with {result.backbone.name} but the backbone given is "
                          f"{backbone.name}: load the advice's backbone (load_text_backbone("
                          f"{result.backbone.name!r})).")
    rules = rules if rules is not None else load_text_rules()
    _check_same_rules(result, rules)
    options = options if options is not None else TextRunOptions(output_dir=_NO_OUTPUT)
    recipe = text_recipe_for(rules, result, chosen, options)
    return from_recipe(recipe, backbone, result.dataset.classes, embed_texts(backbone, recipe, train_texts),
                       seed=options.seed if seed is None else seed)


def from_session(session: TextAdviceSession, *, strategy: str | None = None, options: TextRunOptions | None = None,
                 seed: int | None = None) -> TextTrainingBlocks:
    """``from_advice`` for what ``advise_text_session`` returns, with ``splits``: the dataset split as ``--run``
    splits it (``options.val_fraction``, ``seed``, ``max_train_per_class``); the head standardises by the
    training split, embedded through the session's cache."""
    chosen = _chosen(session.result, strategy)
    if chosen == "tfidf_linear":
        raise ConfigError(_NO_LOOP)
    options = options if options is not None else TextRunOptions(output_dir=_NO_OUTPUT)
    recipe = text_recipe_for(session.rules, session.result, chosen, options)
    splits = make_text_splits(session.dataset, val_fraction=options.val_fraction, seed=options.seed,
                              max_train_per_class=options.max_train_per_class)
    backbone = session.backbone
    train_embeddings = embed_texts(backbone, recipe, splits.train.texts, cache=session.cache,
                                   namespace=session.namespace)
    return from_recipe(recipe, backbone, splits.classes, train_embeddings,
                       seed=options.seed if seed is None else seed, splits=splits)


def _check_same_rules(result: TextAdviceResult, rules: TextRuleSet) -> None:
    """Refuse rules that give the advised strategy another recipe than the advice states: the blocks would
    otherwise train something the advice never said."""
    advised = result.recommendation
    rebuilt = text_recipe(rules, advised.strategy, summary=result.dataset, lengths=result.lengths,
                          backbone=result.backbone, similarity=result.similarity.label)
    if rebuilt != advised.recipe:
        raise ConfigError(f"The advice for {advised.strategy} (rule {advised.rule_id}) was not made with these "
                          "rules: pass the rules file it was made with (rules=load_text_rules(PATH)).")


# --------------------------------------------------------------------------- tfidf_linear


def tfidf_pipeline(recipe: TextRecipe, *, seed: int = 0) -> Pipeline:
    """tfidf_linear as ``--run`` fits it: TF-IDF of words and n-grams up to the recipe's (sublinear term
    frequency), then a logistic regression at the recipe's C. Unfitted: ``pipeline.fit(texts, labels)``."""
    if recipe.kind != "tfidf" or recipe.tfidf_ngram_max is None or recipe.tfidf_c is None:
        raise ConfigError(f"{recipe.strategy} is not a TF-IDF recipe: its blocks are text_blocks.from_session / "
                          "from_advice")
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, recipe.tfidf_ngram_max), sublinear_tf=True)),
        ("logreg", LogisticRegression(C=recipe.tfidf_c, max_iter=TFIDF_MAX_ITER, random_state=seed)),
    ])


def tfidf_from_advice(result: TextAdviceResult, *, rules: TextRuleSet | None = None,
                      options: TextRunOptions | None = None, seed: int | None = None) -> Pipeline:
    """tfidf_linear's pipeline for a text advice (``rules``, ``options``, ``seed`` as in ``from_advice``)."""
    rules = rules if rules is not None else load_text_rules()
    _check_same_rules(result, rules)
    options = options if options is not None else TextRunOptions(output_dir=_NO_OUTPUT)
    recipe = text_recipe_for(rules, result, "tfidf_linear", options)
    return tfidf_pipeline(recipe, seed=options.seed if seed is None else seed)


def tfidf_from_session(session: TextAdviceSession, *, options: TextRunOptions | None = None,
                       seed: int | None = None) -> Pipeline:
    """``tfidf_from_advice`` for what ``advise_text_session`` returns; the texts it fits on are
    ``make_text_splits(session.dataset).train``, as ``--run`` splits them."""
    return tfidf_from_advice(session.result, rules=session.rules, options=options, seed=seed)
