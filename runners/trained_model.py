"""Saving a trained model with what it needs to predict, and loading it back to predict new images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import transforms as T

from tl_advise.advisor.backbones import load_backbone
from tl_advise.advisor.errors import ConfigError
from tl_advise.advisor.imaging import open_rgb
from tl_advise.advisor.models import Preprocessing
from tl_advise.runners import checkpoint
from tl_advise.runners.data import eval_transform
from tl_advise.runners.heads import ClassifierHead, TransferModel

MODEL_KIND = "tl-advise-model"
MODEL_FORMAT = 1


def save_model(path: Path, *, body: nn.Module, head: ClassifierHead, class_names: Sequence[str],
               backbone_name: str, weights: str, preprocessing: Preprocessing, strategy: str) -> None:
    """One self-contained file: both state dicts, the classes and the exact preprocessing."""
    checkpoint.atomic_save({
        "kind": MODEL_KIND,
        "format": MODEL_FORMAT,
        "strategy": strategy,
        "backbone": backbone_name,
        "weights": weights,
        "preprocessing": preprocessing.model_dump(),
        "image_size": preprocessing.input_size,
        "class_names": list(class_names),
        "head_config": head.config(),
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "body": {k: v.detach().cpu().contiguous() for k, v in body.state_dict().items()},
    }, path)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    saved = checkpoint.load(path)
    if saved.get("kind") != MODEL_KIND:
        raise ConfigError(f"{path} is not a model saved by tl-advise --run")
    return saved


def load_trained_model(path: str | Path) -> tuple[TransferModel, list[str], T.Compose]:
    """(model in eval mode on the CPU, class names, the eval transform it was trained with)."""
    saved = _read(Path(path))
    # The architecture only: every weight comes from the file.
    backbone = load_backbone(saved["backbone"].partition(":")[0], pretrained=False)
    config = saved["head_config"]
    head = ClassifierHead(int(config["in_features"]), int(config["n_classes"]), dropout=float(config["dropout"]),
                          hidden=int(config["hidden"]))
    model = TransferModel(backbone.body, head)
    backbone.body.load_state_dict(saved["body"])
    head.load_state_dict(saved["head"])
    model.eval()
    preprocessing = Preprocessing.model_validate(saved["preprocessing"])
    return model, list(saved["class_names"]), eval_transform(preprocessing)


def predict(path_to_model: str | Path, image_paths: Sequence[str | Path], *, batch_size: int = 32) -> list[str]:
    """The predicted class name of every image, in order."""
    model, class_names, transform = load_trained_model(path_to_model)
    draft = transform.transforms[0].size if isinstance(transform.transforms[0], T.Resize) else None
    labels: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(image_paths), batch_size):
            chunk = image_paths[start:start + batch_size]
            x = torch.stack([transform(open_rgb(str(p), draft_size=draft if isinstance(draft, int) else None))
                             for p in chunk])
            labels.extend(class_names[i] for i in model(x).argmax(1).tolist())
    return labels
