"""The text runners: every strategy trains from the recipe the advice prints, and ``run_text_advice`` judges it.

Slow (torch and transformers imports, training): a tiny random 3-layer BERT with a word-level tokenizer on a few
dozen synthetic sentences, 1 epoch per phase, max_length 32; one test with the real all-MiniLM-L6-v2 on a
handful of short texts; shared ones on ../shared/text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from text_fixtures import tiny_backbone, tiny_dataset

from tests.conftest import shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backbone() -> Any:
    return tiny_backbone()


def session(tmp_path: Path, backbone: Any, **dataset: Any) -> Any:
    from tl_advise.advisor.text_api import advise_text_session

    return advise_text_session(tiny_dataset(tmp_path / "data", **dataset), backbone=backbone, use_cache=False,
                               sample_size=40)


def options(tmp_path: Path, **overrides: Any) -> Any:
    from tl_advise.schema.text import TextRunOptions

    values = {"output_dir": tmp_path / "out", "max_epochs": 1, "max_length": 32, **overrides}
    return TextRunOptions(**values)


# --------------------------------------------------------------------------- the recipe is what trains


# Written out by hand for the 3-layer encoder: the top third is ceil(0.33 x 3) = 1 layer; the head and the top
# group at 2e-5, each group below x0.95 [sun2019]; the head phase at 1e-3 [guide].
EXPECTED = {
    "text_finetune_top": {
        "tuned": ["layer.2"], "frozen": ["embeddings", "layer.0", "layer.1"],
        "lrs": {"head": 2e-5, "layer.2": 2e-5}},
    "text_full_finetune": {
        "tuned": ["embeddings", "layer.0", "layer.1", "layer.2"], "frozen": [],
        "lrs": {"head": 2e-5, "layer.2": 2e-5, "layer.1": 1.9e-5, "layer.0": 1.805e-5, "embeddings": 1.71475e-5}},
}
# The tiny far cell (40 texts the random tiny encoder finds far) tunes the whole encoder at its own 6e-5.
FAR_TINY_FULL_LRS = {"head": 6e-5, "layer.2": 6e-5, "layer.1": 5.7e-5, "layer.0": 5.415e-5, "embeddings": 5.14425e-5}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_the_printed_recipe_is_exactly_what_trains(tmp_path: Path, backbone: Any, strategy: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.rules.text_engine import text_recipe
    from tl_advise.runners.text import blocks as runner  # the runner tokenizes through its building blocks
    from tl_advise.runners.text import run_text_advice

    s = session(tmp_path, backbone)
    printed = text_recipe(s.rules, strategy, summary=s.result.dataset, lengths=s.result.lengths,  # type: ignore[arg-type]
                          backbone=s.result.backbone, similarity=s.result.similarity.label)
    expected = EXPECTED[strategy]
    assert printed.tuned_layers == expected["tuned"] and printed.frozen_layers == expected["frozen"]
    far_full = s.result.similarity.label == "far" and strategy == "text_full_finetune"
    rates = FAR_TINY_FULL_LRS if far_full else expected["lrs"]
    assert printed.per_group_lr == rates
    # 40 training texts: small data, 10 fine-tuning epochs in batches of 16 [mosbach2021]
    assert (printed.head_lr, printed.head_epochs, printed.finetune_epochs, printed.batch_size) == (1e-3, 20, 10, 16)

    lengths_used: list[int] = []
    real_tokenize = runner.tokenize

    def spy(tokenizer: Any, texts: Any, max_length: int) -> Any:
        lengths_used.append(max_length)
        return real_tokenize(tokenizer, texts, max_length)

    monkeypatch.setattr(runner, "tokenize", spy)
    report = run_text_advice(s, options(tmp_path, strategies=[strategy], max_epochs=None, head_epochs=2,
                                        finetune_epochs=1, max_length=None))
    run = report.runs[0]
    assert run.status == "completed", run.error
    settings = run.settings
    assert settings is not None
    # what the optimizer's param groups held, and which groups had requires_grad, read off the built objects
    assert settings.optimizer_groups == {"head": {"head": 1e-3}, "finetune": rates}
    assert settings.trainable_groups["finetune"] == [*expected["tuned"], "head"]
    assert settings.max_length == printed.max_length and set(lengths_used) == {printed.max_length}
    assert [c.phase for c in run.curves].count("finetune") == 1 and [c.phase for c in run.curves].count("head") <= 2
    assert settings.model_dump(include=set(type(printed).model_fields) - {"head_epochs", "finetune_epochs"}) == \
        printed.model_dump(exclude={"head_epochs", "finetune_epochs"})


def test_the_rate_overrides_replace_the_recipes_rates_where_it_has_them(tmp_path: Path, backbone: Any) -> None:
    """What the advice-quality benchmark's LR sweep trains: only the rate asked for moves, and a new encoder rate
    keeps the layer-wise decay below the top layer (the 3-layer encoder of EXPECTED, ×3)."""
    from tl_advise.advisor.data.text.scan import summarise
    from tl_advise.rules.text_engine import text_recipe
    from tl_advise.rules.text_schema import load_text_rules
    from tl_advise.runners.text.recipes import apply_options

    rules, summary = load_text_rules(), summarise(tiny_dataset(tmp_path))

    def applied(strategy: Any, **rates: float) -> Any:
        recipe = text_recipe(rules, strategy, summary=summary, lengths=None, backbone=backbone.info,
                             similarity="close")
        return recipe, apply_options(recipe, options(tmp_path, max_epochs=None, max_length=None, **rates))

    recipe, full = applied("text_full_finetune", encoder_lr=6e-5)
    assert full.encoder_lr == 6e-5 and full.head_lr == recipe.head_lr == 1e-3
    assert full.per_group_lr == pytest.approx({g: 3 * r for g, r in EXPECTED["text_full_finetune"]["lrs"].items()})
    recipe, head = applied("text_feature_extraction", head_lr=3e-3, encoder_lr=6e-5, tfidf_c=1.0)
    assert head == recipe.model_copy(update={"head_lr": 3e-3})  # the other two have no such number here
    recipe, tfidf = applied("tfidf_linear", tfidf_c=30.0, head_lr=3e-3)
    assert tfidf == recipe.model_copy(update={"tfidf_c": 30.0})


def test_the_warmup_and_decay_step_with_every_batch() -> None:
    import torch

    from tl_advise.runners.text.model import PerStepWarmupDecay

    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [p], "lr": 1.0, "name": "head"}])
    schedule = PerStepWarmupDecay(optimizer, total_steps=10, warmup_share=0.2)  # 2 warm-up steps
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(6):
        p.grad = torch.ones(1)
        optimizer.step()
        seen.append(optimizer.param_groups[0]["lr"])
    schedule.step()  # the loop's end-of-epoch step changes nothing
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4 / 8)


@pytest.mark.parametrize(("n_train", "batch_size"), [(32, 16), (33, 16), (34, 16), (47, 16), (5, 16), (1, 16),
                                                   (17, 8)])
def test_the_schedule_counts_every_batch_an_epoch_trains(n_train: int, batch_size: int) -> None:
    """A partial last batch is a step too: counting whole batches only left the last steps at a zero rate."""
    import torch

    from tl_advise.runners.text.blocks import steps_per_epoch
    from tl_advise.runners.text.model import train_batches

    ids = [[1, 2, 3]] * n_train
    trained = list(train_batches(ids, torch.zeros(n_train, dtype=torch.long), batch_size, seed=0, epoch=0, pad_id=0))
    assert steps_per_epoch(n_train, batch_size) == len(trained)


# --------------------------------------------------------------------------- the run


def test_every_strategy_trains_and_the_verdict_judges_on_test(tmp_path: Path, backbone: Any) -> None:
    from tl_advise.runners.text import run_text_advice
    from tl_advise.schema.text import TEXT_STRATEGY_IDS, TextAdviceResult

    s = session(tmp_path, backbone)
    report = run_text_advice(s, options(tmp_path, compare=True, strategies=list(TEXT_STRATEGY_IDS)))
    assert [r.strategy for r in report.runs] == list(TEXT_STRATEGY_IDS)
    for run in report.runs:
        assert run.status == "completed", run.error
        assert run.val is not None and run.test is not None
        assert run.test.n_images == 16 and run.test.correct is not None and len(run.test.correct) == 16
    verdict = report.verdict
    assert verdict.judged_on == "test" and verdict.status in ("confirmed", "refuted")
    assert verdict.recommended == s.result.recommendation.strategy
    assert "image" not in verdict.message and "feature_extraction " not in verdict.message.replace(
        "text_feature_extraction", "")
    assert verdict.tfidf_bar == next(r.test.accuracy for r in report.runs if r.strategy == "tfidf_linear")
    saved = TextAdviceResult.model_validate_json((tmp_path / "out" / "metrics.json").read_text())
    assert saved.run is not None and saved.run.verdict == verdict
    assert "| tfidf_linear |" in (tmp_path / "out" / "report.md").read_text()


def test_a_seeded_run_repeats_and_resume_reads_finished_strategies_back(tmp_path: Path, backbone: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.runners.text import api, run_text_advice

    s = session(tmp_path, backbone)
    first = run_text_advice(s, options(tmp_path, strategies=["text_finetune_top"]))
    again = run_text_advice(s, options(tmp_path, strategies=["text_finetune_top"]))
    assert first.runs[0].val == again.runs[0].val and first.runs[0].test == again.runs[0].test

    def refuse(job: Any) -> Any:
        raise AssertionError("a finished strategy was trained again")

    monkeypatch.setattr(api, "run_strategy", refuse)
    resumed = run_text_advice(s, options(tmp_path, strategies=["text_finetune_top"], resume=True))
    assert resumed.runs[0] == again.runs[0]  # the last run's record, read back


def test_an_interrupted_fine_tuning_resumes_to_the_same_metrics(tmp_path: Path, backbone: Any) -> None:
    """Ctrl-C during the first fine-tuning epoch's callback (its checkpoint is on disk), then resume: the same
    metrics as a run that was never interrupted (the loop's checkpoint holds the weights, AdamW's moments, the
    per-step schedule and the RNG states)."""
    from tl_advise.runners.text import run_text_advice

    s = session(tmp_path, backbone)
    budget = {"strategies": ["text_full_finetune"], "max_epochs": None, "head_epochs": 2, "finetune_epochs": 3,
              "max_length": 32}
    whole = run_text_advice(s, options(tmp_path / "whole", **budget)).runs[0]
    calls: list[int] = []

    def interrupt(strategy: str, epochs: int) -> None:
        calls.append(epochs)
        if len(calls) == 3:  # two head epochs, then the first fine-tuning epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_text_advice(s, options(tmp_path / "cut", **budget), epoch_callback=interrupt)
    resumed = run_text_advice(s, options(tmp_path / "cut", resume=True, **budget)).runs[0]
    assert resumed.status == whole.status == "completed"
    assert resumed.val == whole.val and resumed.test == whole.test
    assert [c.val_loss for c in resumed.curves] == [c.val_loss for c in whole.curves]


def test_without_a_val_split_one_is_held_out_of_train(tmp_path: Path) -> None:
    from tl_advise.runners.text import make_text_splits

    dataset = tiny_dataset(tmp_path / "data", train=20, val=None, test=None)
    splits = make_text_splits(dataset, val_fraction=0.25, seed=3, max_train_per_class=16)
    assert "held out" in splits.validation and splits.test is None
    assert len(splits.val) == 8 and len(splits.train) == 24  # 16 per class sampled, 4 of each held out
    assert not set(splits.train.texts) & set(splits.val.texts)
    assert make_text_splits(dataset, val_fraction=0.25, seed=3, max_train_per_class=16) == splits


def test_one_text_per_class_and_no_val_split_says_what_to_add(tmp_path: Path) -> None:
    from tl_advise.runners.text import make_text_splits
    from tl_advise.schema.errors import DatasetError

    dataset = tiny_dataset(tmp_path / "data", train=1, val=None, test=None)
    with pytest.raises(DatasetError, match=r"too few texts to train and validate \(train 2, val 0, over 2 classes\): "
                                           r".*at least 2 training texts .* or add a validation split"):
        make_text_splits(dataset)


def test_a_crashing_strategy_is_a_failure_record(tmp_path: Path, backbone: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.runners.text import api, run_text_advice
    from tl_advise.runners.text.strategies import run_strategy

    def crash_top(job: Any) -> Any:
        if job.recipe.strategy == "text_finetune_top":
            raise RuntimeError("boom")
        return run_strategy(job)

    monkeypatch.setattr(api, "run_strategy", crash_top)
    report = run_text_advice(session(tmp_path, backbone),
                             options(tmp_path, strategies=["text_finetune_top", "tfidf_linear"]))
    assert [r.status for r in report.runs] == ["failed", "completed"]
    assert report.runs[0].error == "RuntimeError: boom"


def test_bad_options_are_refused_before_training(tmp_path: Path, backbone: Any) -> None:
    from tl_advise.runners.text import run_text_advice
    from tl_advise.schema.errors import ConfigError

    s = session(tmp_path, backbone)
    with pytest.raises(ConfigError, match="finetune_epochs"):
        run_text_advice(s, options(tmp_path, strategies=["text_full_finetune"], finetune_epochs=0))
    with pytest.raises(ConfigError, match="inside"):
        run_text_advice(s, options(tmp_path, output_dir=tmp_path / "data" / "out"))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the real backbone


def test_minilm_advises_and_fine_tunes_its_top_layers(tmp_path: Path) -> None:
    from tl_advise.advisor.text_api import advise_text_session
    from tl_advise.runners.text import run_text_advice

    s = advise_text_session(tiny_dataset(tmp_path / "data", train=12, val=4, test=4), use_cache=False,
                            cache_dir=tmp_path / "cache", sample_size=24)
    assert s.result.backbone.name == "all-minilm-l6-v2" and s.result.similarity.signals.hidden is not None
    report = run_text_advice(s, options(tmp_path, strategies=["text_finetune_top"]))
    run = report.runs[0]
    assert run.status == "completed", run.error
    assert run.settings is not None
    assert run.settings.optimizer_groups["finetune"] == {"head": 2e-5, "layer.5": 2e-5, "layer.4": 1.9e-5}
    assert run.settings.trainable_groups["finetune"] == ["layer.4", "layer.5", "head"]
    json.loads((tmp_path / "out" / "metrics.json").read_text())


# --------------------------------------------------------------------------- shared data


def shared_text(name: str) -> Path:
    path = shared_dir() / "text" / name
    if not path.is_dir():
        pytest.skip(f"shared text dataset {path} is absent (set TL_ADVISE_SHARED to the folder holding text/)")
    return path


@pytest.mark.shared
def test_cold_advice_on_sst2(tmp_path: Path) -> None:
    from tl_advise.advisor.text_api import advise_text

    result = advise_text(shared_text("sst2"), cache_dir=tmp_path / "cache")  # its time: bench_text_advise.py
    rec = result.recommendation
    assert result.similarity.label == "close" and result.dataset.texts_per_class == 3460
    assert (rec.strategy, rec.rule_id) == ("text_full_finetune", "text-medium-close")
    # The whole encoder: the top layer at 2e-5, each layer below x0.95, the embeddings last (Sun et al. 2019);
    # the recipe keeps six significant digits.
    decayed = {name: 2e-5 * 0.95 ** depth for depth, name in enumerate(
        ["layer.5", "layer.4", "layer.3", "layer.2", "layer.1", "layer.0", "embeddings"])}
    assert rec.recipe.per_group_lr == pytest.approx({"head": 2e-5, **decayed}, rel=1e-5)
    assert rec.tfidf_bar is not None and rec.tfidf_bar.embeddings_clear_it
