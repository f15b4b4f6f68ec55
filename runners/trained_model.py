"""Saving a trained model with what it needs to predict, and loading it back to predict new images, batch-wise."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from tl_advise.advisor.measure.device import resolve_device
from tl_advise.advisor.measure.images.backbones import load_backbone
from tl_advise.advisor.measure.images.embed import default_workers
from tl_advise.advisor.measure.images.imaging import open_rgb
from tl_advise.advisor.report.predictions import ImagePrediction, PredictionReport
from tl_advise.runners import checkpoint
from tl_advise.runners.context import MODEL_FILE
from tl_advise.runners.data import eval_transform
from tl_advise.runners.heads import ClassifierHead, TransferModel
from tl_advise.schema.errors import ConfigError, DatasetError, TLAdviseError
from tl_advise.schema.models import Preprocessing

logger = logging.getLogger(__name__)

MODEL_KIND = "tl-advise-model"
METRICS_FILE = "metrics.json"  # runners/api.py's name; that module imports this one
MODEL_FORMAT = 1
# What save_model writes, by type: checked before anything is built, so that a damaged or foreign file is
# one clear message instead of an error deep in torch.
_SAVED_TYPES: dict[str, type] = {"strategy": str, "backbone": str, "head_config": dict, "head": dict, "body": dict,
                                 "class_names": list, "preprocessing": dict}
_REASON_CHARS = 160  # torch's messages list every key: the start says enough


class _HeadConfig(BaseModel):
    """``ClassifierHead.config()`` as saved."""

    in_features: int = Field(gt=0)
    n_classes: int = Field(gt=0)
    dropout: float = Field(ge=0, le=1)
    hidden: int = Field(gt=0)


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
        raise ConfigError(f"model file {path} does not exist; give a model.pt written by tl-advise --run")
    try:
        saved = checkpoint.load(path)
    except Exception as exc:  # torch.load raises many kinds (pickle, zip, EOF) for a file that is not ours
        # torch's own messages run to paragraphs; the exception's kind says enough here.
        raise ConfigError(f"{path} is not a model saved by tl-advise --run (torch.load: {type(exc).__name__}); "
                          "give the model.pt a --run wrote") from exc
    if saved.get("kind") != MODEL_KIND:
        raise ConfigError(f"{path} is not a model saved by tl-advise --run")
    problem = _structure_problem(saved)
    if problem is not None:
        raise _unloadable(path, problem)
    return saved


def _structure_problem(saved: dict[str, Any]) -> str | None:
    """Why ``saved`` is not what ``save_model`` writes, or None."""
    for name, kind in _SAVED_TYPES.items():
        if name not in saved:
            return f"it has no {name!r}"
        if not isinstance(saved[name], kind):
            return f"its {name!r} should be {kind.__name__}, not {type(saved[name]).__name__}"
    for name in ("head", "body"):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in saved[name].items()):
            return f"its {name!r} is not a state dict (names to tensors)"
    if not all(isinstance(c, str) for c in saved["class_names"]):
        return "its 'class_names' are not all strings"
    for name, model in (("head_config", _HeadConfig), ("preprocessing", Preprocessing)):
        try:
            model.model_validate(saved[name])
        except ValidationError as exc:
            error = exc.errors()[0]
            return f"its '{'.'.join(str(p) for p in (name, *error['loc']))}': {error['msg']}"
    n_classes = saved["head_config"]["n_classes"]
    if int(n_classes) != len(saved["class_names"]):
        return f"its head predicts {n_classes} classes but it names {len(saved['class_names'])}"
    return None


def _unloadable(path: Path, reason: str) -> ConfigError:
    return ConfigError(f"{path} is not a model tl-advise can load: {reason}; train one with tl-advise DATA --run")


def _short(exc: Exception) -> str:
    """One line of at most ``_REASON_CHARS``: the exception's kind (unless it is one of ours) and the start
    of its message."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, TLAdviseError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 1] + "…"


def resolve_model_file(path: str | Path) -> Path:
    """A ``model.pt``, or a ``--run`` output folder: its recommended strategy's model (from metrics.json), or
    the one model inside a strategy folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    metrics_file = path / METRICS_FILE
    problem: str | None = None
    try:
        models, recommended = _recorded_models(metrics_file)
    except (OSError, ValueError) as exc:
        # The models on disk may still answer; an absent metrics.json (an interrupted run) is no problem.
        problem = None if isinstance(exc, FileNotFoundError) else _short(exc)
        models = {p.parent.name: p.relative_to(path).as_posix() for p in sorted(path.glob(f"*/{MODEL_FILE}"))}
        recommended = None
    if recommended in models:
        return path / models[recommended]
    if len(models) == 1:
        if problem is not None:
            logger.warning("%s is unusable (%s); using the one model in the folder", metrics_file, problem)
        return path / next(iter(models.values()))
    found = ", ".join(sorted(models.values())) or "none"
    unusable = f"; {metrics_file} is unusable: {problem}" if problem is not None else ""
    raise ConfigError(f"{path} is a folder; name one model file in it (models found: {found}){unusable}")


def _recorded_models(metrics_file: Path) -> tuple[dict[str, str], str | None]:
    """What a ``--run``'s metrics.json records: strategy → model file (relative to its folder), and the
    recommended strategy. Raises ValueError saying which entry has the wrong type."""
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError(f"it holds {_json_kind(metrics)}, not an object")
    run = _entry(metrics, "run", dict, "") or {}
    files = _entry(run, "files", dict, "run.") or {}
    verdict = _entry(run, "verdict", dict, "run.") or {}
    recommended = _entry(verdict, "recommended", str, "run.verdict.")
    models = {}
    for key, value in files.items():
        if key.startswith("model:"):
            if not isinstance(value, str):
                raise ValueError(f"run.files[{key!r}] should be a path, not {_json_kind(value)}")
            # A run writes its models inside its folder; anything else would load a file from elsewhere.
            if PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts:
                raise ValueError(f"run.files[{key!r}] should be a path inside the run folder, not {value!r}")
            models[key.removeprefix("model:")] = value
    return models, recommended


def _entry(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    """``obj[name]`` when absent, null or a ``kind``; anything else is a ValueError naming it."""
    value = obj.get(name)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{where}{name} should be {_json_kind(kind())}, not {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def load_trained_model(path: str | Path) -> tuple[TransferModel, list[str], T.Compose]:
    """(model in eval mode on the CPU, class names, the eval transform it was trained with)."""
    path = Path(path)
    return _build(_read(path), path)


def _build(saved: dict[str, Any], path: Path) -> tuple[TransferModel, list[str], T.Compose]:
    """``saved`` (checked by ``_read``) as a network; weights that do not fit it are a bad model file."""
    try:
        model = _network(saved)
    except Exception as exc:  # load_state_dict (missing, extra or misshapen weights), an unknown backbone …
        raise _unloadable(path, _short(exc)) from exc
    preprocessing = Preprocessing.model_validate(saved["preprocessing"])
    return model, list(saved["class_names"]), eval_transform(preprocessing)


def _network(saved: dict[str, Any]) -> TransferModel:
    # The architecture only: every weight comes from the file.
    backbone = load_backbone(saved["backbone"].partition(":")[0], pretrained=False)
    config = _HeadConfig.model_validate(saved["head_config"])
    if config.in_features != backbone.info.feature_dim:  # else a shape error at the first image
        raise ConfigError(f"its head takes {config.in_features} features but {backbone.info.name} gives "
                          f"{backbone.info.feature_dim}")
    head = ClassifierHead(config.in_features, config.n_classes, dropout=config.dropout, hidden=config.hidden)
    model = TransferModel(backbone.body, head)
    backbone.body.load_state_dict(saved["body"])
    head.load_state_dict(saved["head"])
    return model.eval()


def predict(path_to_model: str | Path, image_paths: Sequence[str | Path], *, batch_size: int = 32) -> list[str]:
    """The predicted class name of every image, in order; raises ``DatasetError`` for an unreadable image."""
    report = predict_images(path_to_model, image_paths, batch_size=batch_size, device="cpu", num_workers=0,
                            expand_folders=False)
    if report.failed:
        first = report.failed[0]
        raise DatasetError(f"cannot read {first.path}: {first.error}")
    return [p.prediction or "" for p in report.predictions]


def image_files(inputs: Sequence[str | Path]) -> list[tuple[str, str | None]]:
    """``(path, error)`` per image: a folder expands to the image files under it (hidden ones left out,
    sorted); a file is always tried (the decoder decides); a missing path is an error row."""
    found: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for folder, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [(str(Path(folder) / name), None) for name in sorted(filenames)
                          if not name.startswith(".") and Path(name).suffix.lower() in Image.registered_extensions()]
        elif path.exists():
            found.append((str(path), None))
        else:
            found.append((str(path), "no such file"))
    return found


class _ImageFiles(Dataset[tuple[torch.Tensor, str]]):
    """Decodes with the model's own preprocessing; an unreadable file yields an empty tensor and its reason."""

    def __init__(self, paths: Sequence[str], transform: T.Compose, draft_size: int | None, size: int) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.draft_size = draft_size
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(open_rgb(self.paths[index], draft_size=self.draft_size)), ""
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, … for damaged files
            return torch.zeros(3, self.size, self.size), f"cannot decode: {type(exc).__name__}: {exc}"


def predict_images(path_to_model: str | Path, inputs: Sequence[str | Path], *, batch_size: int = 32,
                   device: str | torch.device = "auto", num_workers: int | None = None, progress: bool = False,
                   expand_folders: bool = True, top_k: int = 3) -> PredictionReport:
    """Class, probabilities and the ``top_k`` most probable classes of every image (folders expand to their
    images), batch-wise, with the model's own preprocessing. An unreadable image is a row with an error, never a
    failed run."""
    model_file = resolve_model_file(path_to_model)
    saved = _read(model_file)
    model, class_names, transform = _build(saved, model_file)
    input_size = Preprocessing.model_validate(saved["preprocessing"]).input_size
    files = image_files(inputs) if expand_folders else [(str(p), None) for p in inputs]
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(torch_device)
    readable = [path for path, error in files if error is None]
    resize = transform.transforms[0]
    draft = resize.size if isinstance(resize, T.Resize) and isinstance(resize.size, int) else None
    dataset = _ImageFiles(readable, transform, draft, input_size)
    workers = (num_workers if num_workers is not None else default_workers()) if len(readable) > batch_size else 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    results: dict[str, ImagePrediction] = {}
    with torch.inference_mode(), tqdm(total=len(readable), desc="Predicting", unit="img", disable=not progress,
                                      leave=False) as bar:
        start = 0
        for x, errors in loader:
            paths = readable[start:start + len(errors)]
            start += len(errors)
            ok = [i for i, e in enumerate(errors) if not e]
            probs = torch.softmax(model(x[ok].to(torch_device)).float(), dim=1).cpu() if ok else None
            for row, i in enumerate(ok):
                assert probs is not None
                p = probs[row].tolist()
                order = sorted(range(len(p)), key=lambda j: -p[j])  # stable: ties in the model's class order
                results[paths[i]] = ImagePrediction(
                    path=paths[i], prediction=class_names[order[0]], confidence=p[order[0]],
                    top_k=[class_names[j] for j in order[:top_k]], probabilities=dict(zip(class_names, p, strict=True)))
            for i, error in enumerate(errors):
                if error:
                    logger.warning("%s: %s", paths[i], error)
                    results[paths[i]] = _failed(paths[i], error)
            bar.update(len(errors))
    predictions = []
    for path, error in files:
        if error is not None:
            logger.warning("%s: %s", path, error)
        predictions.append(_failed(path, error) if error is not None else results[path])
    return PredictionReport(model=str(model_file), strategy=str(saved["strategy"]), backbone=str(saved["backbone"]),
                            image_size=input_size,
                            classes=class_names, predictions=predictions)


def _failed(path: str, error: str) -> ImagePrediction:
    return ImagePrediction(path=path, prediction=None, confidence=None, probabilities={}, error=error)
