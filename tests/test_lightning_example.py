"""docs/examples/lightning_finetune.py runs: two phases in Lightning, at the advised learning rates, the advised
stages trained and the rest frozen. Skipped when Lightning (the ``lightning`` extra) is not installed."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import make_class_folder
from test_blocks import advice_for
from threadpoolctl import threadpool_limits

from tl_advise.advisor.measure.images.backbones import load_backbone
from tl_advise.rules.schema import load_rules
from tl_advise.runners import blocks

pytest.importorskip("lightning", exc_type=ImportError,
                    reason="the Lightning example needs the lightning extra: pip install -e '.[lightning]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "lightning_finetune.py"

pytestmark = pytest.mark.usefixtures("restore_tl_logging")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1, "blas"):
        yield


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lightning_finetune", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_lightning_example_trains_both_phases_at_the_advised_rates(tmp_path: Path) -> None:
    example = load_example()
    backbone = load_backbone("efficientnet_lite0")
    result = advice_for(load_rules(), backbone)
    data = make_class_folder(tmp_path / "data", {"a": 6, "b": 6}, size=(40, 32))
    advice_file = tmp_path / "advice.json"
    advice_file.write_text(result.model_dump_json(), encoding="utf-8")
    before = {k: v.clone() for k, v in backbone.body.state_dict().items()}

    outcome = example.main([str(data), "--advice", str(advice_file), "--strategy", "finetune_last_layers",
                            "--max-epochs", "1", "--image-size", "32", "--output-dir", str(tmp_path / "runs")])

    advised: blocks.TrainingBlocks = outcome.advised
    recipe = advised.recipe
    assert advised.strategy == "finetune_last_layers" and recipe.image_size == 32
    assert outcome.epochs_per_phase == {"head": 1, "finetune": 1}
    assert outcome.val_loss < float("inf")
    # The optimizer Lightning stepped ran at the advised rates: the head phase at the head rate, the fine-tuning
    # phase at each unfrozen stage's discriminative rate (the first epoch of a cosine is its base rate).
    (head_phase, head_lrs), (tune_phase, tune_lrs) = outcome.module.lrs_at_epoch_start
    assert (head_phase, head_lrs) == ("head", {"head": recipe.head_lr})
    assert tune_phase == "finetune"
    assert tune_lrs == {"head": recipe.backbone_lr, **{s: recipe.stage_lr(s) for s in recipe.unfreeze}}
    assert outcome.module.frozen_bn_training == [False, False]  # batch norm stayed in inference mode
    # It trained what the advice unfreezes and nothing else; the caller's backbone is untouched.
    trained = advised.backbone.body.state_dict()
    stage_names = {id(p) for s in advised.backbone.stages if s.name in recipe.unfreeze for p in s.parameters()}
    for name, param in advised.backbone.body.named_parameters():
        changed = not torch.equal(param.detach(), before[name])
        assert changed == (id(param) in stage_names), name
    assert all(torch.equal(v, backbone.body.state_dict()[k]) for k, v in before.items())
    assert trained.keys() == before.keys()
