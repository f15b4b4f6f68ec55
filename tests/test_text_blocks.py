"""The text advice as building blocks (``runners.text.blocks``): for every text strategy, what the blocks give a
user's own loop is what ``--run`` builds — the same recipe and max_length, token batches, trainable parameters,
param groups with their rates and weight decay, scheduler values step by step, frozen layers, initial weights and
loss; for tfidf_linear, the same scikit-learn pipeline.

The runner's side is captured from ``run_text_advice`` itself: its training loop (``fit``) is replaced by a probe
that records each phase as ``fit`` would prepare it, then stops the run. On the offline all-MiniLM-L6-v2 with a
few dozen short synthetic texts: no training but the doc's loop, a few steps long."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from text_fixtures import tiny_backbone, tiny_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_tl_logging", "one_blas_thread")]

# 20 training texts in batches of 4: 5 steps per epoch, so the fine-tuning's warm-up (10 % of 15 steps: 2) and
# decay differ step by step; 2 head epochs so that the head's cosine moves. The texts are 7 to 10 tokens long:
# a max_length of 8 cuts some of them.
MAX_LENGTH = 8
OPTIONS = {"head_epochs": 2, "finetune_epochs": 3, "max_length": MAX_LENGTH, "batch_size": 4, "seed": 0,
           "tensorboard": False, "mlflow": False}
TORCH_STRATEGIES = ["text_feature_extraction", "text_finetune_top", "text_full_finetune"]


@pytest.fixture(scope="module")
def minilm_session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An advice on 2 x 10 training texts (4 + 4 val, 4 + 4 test) with the embedded MiniLM, which stays loaded."""
    from tl_advise.advisor.text_api import advise_text_session

    data = tiny_dataset(tmp_path_factory.mktemp("text-blocks") / "data", train=10, val=4, test=4)
    return advise_text_session(data, use_cache=False, sample_size=24)


def run_options(tmp_path: Path, **overrides: Any) -> Any:
    from tl_advise.schema.text import TextRunOptions

    return TextRunOptions(output_dir=tmp_path / "out", **{**OPTIONS, **overrides})


# --------------------------------------------------------------------------- one phase, as numbers


@dataclass
class PhaseRecord:
    """A prepared phase, reduced to what decides the training: comparable between the runner and the blocks."""

    name: str
    epochs: int
    train_stages: list[str]
    trainable: list[str]  # parameter names (in the encoder + head model) that require grad
    groups: list[tuple[str, float, float, list[str]]]  # (group name, lr, weight decay, parameter names), in order
    optimizer: str  # class and its other settings (betas, eps, amsgrad ...)
    lr_by_step: list[list[float]]  # every group's rate before each optimizer step of the phase
    frozen: list[str]  # modules kept in inference mode


def record_phase(model: Any, prepared: Any, phase: Any, *, steps_per_epoch: int, prefix: str = "") -> PhaseRecord:
    """``prepared`` as numbers; then its schedule run as a loop runs it (an optimizer step per batch, the
    scheduler's step per epoch), with no gradient, so nothing but the rates moves."""
    names = {id(p): prefix + name for name, p in model.named_parameters()}
    module_names = {id(m): prefix + name for name, m in model.named_modules()}
    optimizer = prepared.optimizer
    other = {k: v for k, v in optimizer.defaults.items() if k not in ("lr", "weight_decay", "params")}
    groups = [(g["name"], g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]])
              for g in optimizer.param_groups]
    trainable = sorted(prefix + n for n, p in model.named_parameters() if p.requires_grad)
    assert prepared.scheduler is not None  # both sides give the phase's schedule explicitly
    lr_by_step = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(phase.epochs):
            for _ in range(steps_per_epoch):
                lr_by_step.append([g["lr"] for g in optimizer.param_groups])
                optimizer.step()
            prepared.scheduler.step()
    return PhaseRecord(name=phase.name, epochs=phase.epochs, train_stages=list(phase.train_stages),
                       trainable=trainable, groups=groups,
                       optimizer=f"{type(optimizer).__name__} {sorted(other.items())}", lr_by_step=lr_by_step,
                       frozen=sorted(module_names[id(m)] for m in prepared.frozen_bn))


def state_of(module: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- what the runner builds


@dataclass
class Build:
    phases: list[PhaseRecord] = field(default_factory=list)
    head_state: dict[str, Any] = field(default_factory=dict)  # the new head, before any training
    model_state: dict[str, Any] | None = None  # encoder + head at the start of the fine-tuning
    val_features: Any = None  # what the head phase reads for the validation texts
    train_batches: list[tuple[Any, Any]] = field(default_factory=list)  # the fine-tuning's first epoch
    steps_per_epoch: int | None = None
    loss: str = ""


def runner_build(monkeypatch: pytest.MonkeyPatch, session: Any, strategy: str, tmp_path: Path,
                 steps_per_epoch: int) -> Build:
    """What ``run_text_advice`` builds for ``strategy``, phase by phase, exactly as ``fit`` would prepare it."""
    import torch

    from tl_advise.runners.mixing import training_loss
    from tl_advise.runners.text import run_text_advice, strategies
    from tl_advise.runners.train import FitResult
    from tl_advise.schema.errors import TLAdviseError

    class Captured(TLAdviseError):
        """Stops the run once the probe has what it needs (a TLAdviseError is re-raised, not recorded)."""

    build = Build()

    def probe(job: Any) -> Any:
        build.loss = repr(training_loss(label_smoothing=job.label_smoothing, mixes_batches=job.mix_batch is not None))
        plan = job.phases[0]
        if plan.name == "head":  # the head alone, on the embeddings
            build.head_state = state_of(job.model)
            build.phases.append(record_phase(job.model, job.prepare_phase(plan), plan,
                                             steps_per_epoch=steps_per_epoch, prefix="head."))
            build.val_features = torch.cat([x for x, _ in job.val_batches()])
            if strategy == "text_feature_extraction":
                raise Captured("captured")
            return FitResult(best_state=state_of(job.model), best_epoch=1, epochs_run=0, curves=[],
                             stopped_by_budget=False, train_time_s=0.0, images_seen=0)
        build.model_state = state_of(job.model)
        build.steps_per_epoch = job.n_train_batches
        build.train_batches = list(job.train_batches(1))
        build.phases.append(record_phase(job.model, job.prepare_phase(plan), plan, steps_per_epoch=steps_per_epoch))
        raise Captured("captured")

    monkeypatch.setattr(strategies, "fit", probe)
    with pytest.raises(TLAdviseError, match="captured"):
        run_text_advice(session, run_options(tmp_path / strategy, strategies=[strategy]))
    return build


def blocks_build(advised: Any) -> Build:
    build = Build(head_state=state_of(advised.head), model_state=state_of(advised.model),
                  steps_per_epoch=advised.steps_per_epoch, loss=repr(advised.loss))
    for phase in advised.phases:
        build.phases.append(record_phase(advised.model, advised.setup_phase(phase).prepared(), phase,
                                         steps_per_epoch=advised.steps_per_epoch))
    return build


def assert_same_phases(runner: Build, ours: Build, strategy: str) -> None:
    assert [(p.name, p.epochs, p.train_stages) for p in ours.phases] == \
        [(p.name, p.epochs, p.train_stages) for p in runner.phases], strategy
    for mine, theirs in zip(ours.phases, runner.phases, strict=True):
        assert mine.trainable == theirs.trainable, (strategy, mine.name)
        assert mine.groups == theirs.groups, (strategy, mine.name)  # names, LRs, weight decay, parameters
        assert mine.optimizer == theirs.optimizer, (strategy, mine.name)
        assert mine.lr_by_step == theirs.lr_by_step, (strategy, mine.name)
        if mine.name == "head":
            # The runner's head phase never runs the encoder (the texts were embedded once, in inference mode):
            # the blocks keep every frozen encoder layer in inference mode, the same thing on texts.
            assert theirs.frozen == [] and mine.frozen and all(n.startswith("encoder.") for n in mine.frozen)
        else:
            assert mine.frozen == theirs.frozen, (strategy, mine.name)


# --------------------------------------------------------------------------- the done-when


@pytest.mark.parametrize("strategy", TORCH_STRATEGIES)
def test_the_text_blocks_reproduce_the_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm_session: Any,
                                              strategy: str) -> None:
    import torch

    from tl_advise.runners.text import blocks as text_blocks
    from tl_advise.runners.text.api import recipes_for

    session = minilm_session
    pretrained = state_of(session.backbone.model)
    options = run_options(tmp_path)
    advised = text_blocks.from_session(session, strategy=strategy, options=options)
    assert advised.strategy == strategy
    # The recipe --run trains (max_length included), and the split it trains on.
    assert advised.recipe == recipes_for(session, [strategy], options)[strategy]
    assert advised.recipe.max_length == advised.collate.max_length == MAX_LENGTH
    assert advised.splits is not None and len(advised.splits.train) == 20 and advised.steps_per_epoch == 5
    ours = blocks_build(advised)
    runner = runner_build(monkeypatch, session, strategy, tmp_path, advised.steps_per_epoch)

    assert_same_phases(runner, ours, strategy)
    assert [p.name for p in advised.phases] == (["head"] if strategy == "text_feature_extraction"
                                                else ["head", "finetune"])
    assert same_state(ours.head_state, runner.head_state), strategy  # seeded alike, standardised alike
    assert ours.loss == runner.loss == "CrossEntropyLoss()"

    # The head phase: the runner's stored embeddings are the blocks' frozen model, pooled, in inference mode.
    advised.setup_phase("head").train_mode(advised.model)
    with torch.no_grad():
        pooled = advised.model.pooled(advised.collate.pack(advised.splits.val.texts))
    torch.testing.assert_close(pooled, runner.val_features, atol=1e-5, rtol=1e-4)

    if strategy != "text_feature_extraction":
        # The fine-tuning: the same encoder copy and head, and the same token batches (ids cut at max_length,
        # padded with the pad id, the attention mask), step count included.
        assert runner.model_state is not None and ours.model_state is not None
        assert same_state(ours.model_state, runner.model_state), strategy
        assert runner.steps_per_epoch == advised.steps_per_epoch
        text_of = {tuple(ids): text for ids, text in zip(advised.tokenize(advised.splits.train.texts),
                                                         advised.splits.train.texts, strict=True)}
        seen = []
        for x, y in runner.train_batches:
            rows = [tuple(x[i, 0, :int(x[i, 1].sum())].tolist()) for i in range(len(y))]
            unknown = [r for r in rows if r not in text_of]
            assert not unknown, f"the runner's token ids are not the blocks' tokenization: {unknown[0]}"
            texts = [text_of[r] for r in rows]
            packed, labels = advised.collate(list(zip(texts, y.tolist(), strict=True)))
            assert torch.equal(packed, x) and torch.equal(labels, y)
            seen += texts
        assert sorted(seen) == sorted(advised.splits.train.texts)
        assert max(len(ids) for ids in text_of) == MAX_LENGTH  # some texts were cut, at the recipe's length
        assert max(len(ids) for ids in advised.tokenizer(advised.splits.train.texts)["input_ids"]) > MAX_LENGTH
    # Neither changed the session's encoder: both train copies.
    assert same_state(state_of(session.backbone.model), pretrained)


def test_a_perturbed_rate_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm_session: Any) -> None:
    """The comparison can fail: one layer group's rate changed on the blocks' side only is reported."""
    from tl_advise.runners.text import blocks as text_blocks

    advised = text_blocks.from_session(minilm_session, strategy="text_finetune_top", options=run_options(tmp_path))
    runner = runner_build(monkeypatch, minilm_session, "text_finetune_top", tmp_path, advised.steps_per_epoch)
    top = advised.recipe.tuned_layers[-1]
    rates = {**advised.recipe.per_group_lr, top: advised.recipe.per_group_lr[top] * 1.01}
    advised.recipe = advised.recipe.model_copy(update={"per_group_lr": rates})
    with pytest.raises(AssertionError):
        assert_same_phases(runner, blocks_build(advised), "text_finetune_top")


def test_tfidf_blocks_are_the_runners_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              minilm_session: Any) -> None:
    """tfidf_linear trains no network: its block is the scikit-learn pipeline, configured and fitted as --run fits
    it (the same vectorizer and logistic-regression settings, vocabulary and probabilities)."""
    import numpy as np

    from tl_advise.runners.text import blocks as text_blocks
    from tl_advise.runners.text import run_text_advice, strategies
    from tl_advise.runners.text.splits import make_text_splits

    fitted: dict[str, Any] = {}

    def keep(path: Path, **parts: Any) -> None:
        fitted.update(parts)

    monkeypatch.setattr(strategies, "save_tfidf_model", keep)
    run_text_advice(minilm_session, run_options(tmp_path, strategies=["tfidf_linear"]))
    pipeline = text_blocks.tfidf_from_session(minilm_session, options=run_options(tmp_path))
    vectorizer, model = pipeline.named_steps["tfidf"], pipeline.named_steps["logreg"]
    assert vectorizer.get_params() == fitted["vectorizer"].get_params()
    assert model.get_params() == fitted["model"].get_params()
    assert (vectorizer.ngram_range, vectorizer.sublinear_tf, model.C, model.max_iter) == ((1, 2), True, 10.0, 2000)

    splits = make_text_splits(minilm_session.dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(splits.train.texts, splits.train.labels)
    assert vectorizer.vocabulary_ == fitted["vectorizer"].vocabulary_
    expected = fitted["model"].predict_proba(fitted["vectorizer"].transform(splits.val.texts))
    np.testing.assert_array_equal(pipeline.predict_proba(splits.val.texts), expected)


def test_bad_strategies_are_refused_clearly(minilm_session: Any) -> None:
    from tl_advise.runners.text import blocks as text_blocks
    from tl_advise.schema.errors import ConfigError

    listed = "text_feature_extraction, text_finetune_top, text_full_finetune, tfidf_linear"
    with pytest.raises(ConfigError, match=rf"unknown text strategy 'finetune_topp': the text strategies are {listed}"):
        text_blocks.from_session(minilm_session, strategy="finetune_topp")
    with pytest.raises(ConfigError, match=r"'full_finetune' \(full_finetune is an image strategy\)"):
        text_blocks.from_session(minilm_session, strategy="full_finetune")
    with pytest.raises(ConfigError, match=r"tfidf_linear trains no network.*tfidf_from_session\(session\)"):
        text_blocks.from_session(minilm_session, strategy="tfidf_linear")
    advised = text_blocks.from_session(minilm_session, strategy="text_feature_extraction")
    with pytest.raises(ConfigError, match="has no 'finetune' phase; its phases are: head"):
        advised.setup_phase("finetune")
    with pytest.raises(ConfigError, match="text_feature_extraction is not a TF-IDF recipe"):
        text_blocks.tfidf_pipeline(advised.recipe)


def test_from_advice_gives_the_sessions_blocks_and_refuses_other_rules_or_backbones(
        tmp_path: Path, minilm_session: Any) -> None:
    from tl_advise.rules.text_schema import load_text_rules
    from tl_advise.runners.text import blocks as text_blocks
    from tl_advise.runners.text.model import group_rates
    from tl_advise.schema.errors import ConfigError
    from tl_advise.schema.text import TextAdviceResult

    result = TextAdviceResult.model_validate_json(minilm_session.result.model_dump_json())  # a saved advice
    options = run_options(tmp_path)
    session_blocks = text_blocks.from_session(minilm_session, strategy="text_finetune_top", options=options)
    assert session_blocks.splits is not None
    advised = text_blocks.from_advice(result, minilm_session.backbone, session_blocks.splits.train.texts,
                                      strategy="text_finetune_top", options=options)
    assert advised.recipe == session_blocks.recipe and advised.splits is None
    assert advised.class_names == ["negative", "positive"] and advised.steps_per_epoch == 5
    assert same_state(state_of(advised.model), state_of(session_blocks.model))
    # Written out by hand for MiniLM's 6 layers: the top third is layers 4 and 5; the head and the top layer at
    # 2e-5, x0.95 below [sun2019]; biases and LayerNorm without weight decay.
    setup = advised.setup_phase("finetune")
    assert group_rates(setup.optimizer) == {"head": 2e-5, "layer.5": 2e-5, "layer.4": 1.9e-5}
    assert {g["name"]: g["weight_decay"] for g in setup.optimizer.param_groups} == {
        "head": 0.01, "head:no_decay": 0.0, "layer.5": 0.01, "layer.5:no_decay": 0.0, "layer.4": 0.01,
        "layer.4:no_decay": 0.0}
    tuned = ("encoder.layer.4.", "encoder.layer.5.")
    encoder = advised.model.encoder
    assert [n for n, p in encoder.named_parameters() if p.requires_grad] == [
        n for n, _ in encoder.named_parameters() if n.startswith(tuned)]

    advised_strategy = result.recommendation.strategy
    rules = load_text_rules()
    changed = rules.strategies[advised_strategy].model_copy(update={"dropout": 0.3})
    other = rules.model_copy(update={"strategies": {**rules.strategies, advised_strategy: changed}})
    with pytest.raises(ConfigError, match=r"not made with these rules: pass the rules file"):
        text_blocks.from_advice(result, minilm_session.backbone, ["a text"], rules=other)
    with pytest.raises(ConfigError, match=r"made with all-minilm-l6-v2 but the backbone given is tiny-bert"):
        text_blocks.from_advice(result, tiny_backbone(), ["a text"])


def test_the_plain_pytorch_loop_in_the_doc_trains(tmp_path: Path, minilm_session: Any) -> None:
    """docs/building-blocks.md's text loop, run as written: both phases train what they should, and the loss is
    finite."""
    import torch

    from tl_advise.runners.text import blocks as text_blocks

    doc = (Path(__file__).resolve().parents[1] / "docs" / "building-blocks.md").read_text(encoding="utf-8")
    found = re.search(r"### A plain PyTorch loop for text\n\n```python\n(.*?)```", doc, re.DOTALL)
    assert found is not None
    advised = text_blocks.from_session(minilm_session, strategy="text_finetune_top",
                                       options=run_options(tmp_path, head_epochs=1, finetune_epochs=1))
    head_before = state_of(advised.head)
    encoder_before = state_of(advised.model.encoder)
    namespace: dict[str, Any] = {"advised": advised}
    exec(found.group(1), namespace)
    assert torch.isfinite(namespace["loss"]) and 0 <= namespace["accuracy"] <= 1
    assert not torch.equal(head_before["linear.weight"], advised.head.linear.weight)
    encoder_after = state_of(advised.model.encoder)
    moved = {name.split(".")[2] for name in encoder_before if name.startswith("encoder.layer.")
             and not torch.equal(encoder_before[name], encoder_after[name])}
    assert moved == {"4", "5"}  # the tuned layers trained, the frozen ones did not
    assert all(torch.equal(encoder_before[n], encoder_after[n]) for n in encoder_before
               if not n.startswith(("encoder.layer.4.", "encoder.layer.5.")))
