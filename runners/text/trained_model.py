"""A trained text model saved with everything it needs to predict offline, and loaded back to classify new texts.

One ``model.pt`` per strategy, readable with ``torch.load(weights_only=True)`` (no pickle of a stranger's code):

- encoder strategies (text_feature_extraction, text_finetune_top, text_full_finetune): the tokenizer's files (as
  bytes), the encoder's config (JSON) and weights (the pretrained ones under a frozen head, the tuned ones
  after fine-tuning), the pooling, the head, the class names and the max length the texts were cut to;
- tfidf_linear: the fitted vocabulary and IDF weights, and the logistic regression's coefficients.

So ``tl-advise predict`` needs neither the network nor the backbone the run was advised with.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tl_advise.advisor.report.predictions import TextPrediction, TextPredictionReport
from tl_advise.runners import checkpoint
from tl_advise.runners.text.model import TextClassifier, TextHead, eval_batches, restore_order, tokenize
from tl_advise.runners.train import predict_batches
from tl_advise.schema.errors import ConfigError

logger = logging.getLogger(__name__)

TEXT_MODEL_KIND = "tl-advise-text-model"
TEXT_MODEL_FORMAT = 1
PREDICT_BATCH = 64
SHOWN_TEXT_CHARS = 200  # a prediction row repeats at most this much of its text

# What each kind of file holds, by type: checked before anything is built (one clear message for a damaged file).
_COMMON: dict[str, type] = {"strategy": str, "class_names": list, "model": str}
_ENCODER: dict[str, type] = {"backbone": str, "max_length": int, "tokenizer_files": dict, "encoder_config": str,
                             "encoder": dict, "head_config": dict, "head": dict, "pooling": str, "normalize": bool}
_TFIDF: dict[str, type] = {"vocabulary": dict, "idf": torch.Tensor, "ngram_max": int, "coef": torch.Tensor,
                           "intercept": torch.Tensor, "label_index": torch.Tensor}


def _cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _tokenizer_files(tokenizer: Any) -> dict[str, torch.Tensor]:
    with tempfile.TemporaryDirectory(prefix="tl-advise-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        return {p.name: torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8).clone()
                for p in sorted(Path(folder).iterdir()) if p.is_file()}


def save_encoder_model(path: Path, *, strategy: str, class_names: Sequence[str], max_length: int, backbone: Any,
                       encoder: nn.Module, head: TextHead) -> None:
    """An encoder strategy's model: ``backbone`` (a ``TextBackbone``) gives the tokenizer, the config and the
    pooling; ``encoder`` the weights as they predict (``backbone.model`` itself under a frozen head)."""
    info = backbone.info
    checkpoint.atomic_save({
        "kind": TEXT_MODEL_KIND, "format": TEXT_MODEL_FORMAT, "model": "encoder", "strategy": strategy,
        "class_names": list(class_names), "backbone": info.name, "weights": info.weights, "max_length": max_length,
        "tokenizer_files": _tokenizer_files(backbone.tokenizer),
        "encoder_config": backbone.model.config.to_json_string(), "encoder": _cpu(encoder),
        "pooling": info.pooling, "normalize": info.normalize,
        "head_config": {"width": head.linear.in_features, "n_classes": head.linear.out_features,
                        "dropout": float(head.dropout.p)},
        "head": _cpu(head),
    }, path)


def save_tfidf_model(path: Path, *, strategy: str, class_names: Sequence[str], vectorizer: Any, model: Any) -> None:
    """The fitted TF-IDF vectorizer and logistic regression as plain numbers (rebuilt exactly by ``_tfidf``)."""
    checkpoint.atomic_save({
        "kind": TEXT_MODEL_KIND, "format": TEXT_MODEL_FORMAT, "model": "tfidf", "strategy": strategy,
        "class_names": list(class_names), "backbone": "tfidf", "max_length": 0,
        "vocabulary": {str(k): int(v) for k, v in vectorizer.vocabulary_.items()},
        "idf": torch.from_numpy(np.asarray(vectorizer.idf_, dtype=np.float64)),
        "ngram_max": int(vectorizer.ngram_range[1]), "sublinear_tf": bool(vectorizer.sublinear_tf),
        "coef": torch.from_numpy(np.asarray(model.coef_, dtype=np.float64)),
        "intercept": torch.from_numpy(np.asarray(model.intercept_, dtype=np.float64)),
        "label_index": torch.from_numpy(np.asarray(model.classes_, dtype=np.int64)),
    }, path)


# --------------------------------------------------------------------------- loading


def is_text_model(saved: dict[str, Any]) -> bool:
    return saved.get("kind") == TEXT_MODEL_KIND


def check_text_model(saved: dict[str, Any], path: Path) -> None:
    """Raise ``ConfigError`` naming what is wrong when ``saved`` is not what the savers above write."""
    expected = {**_COMMON, **(_TFIDF if saved.get("model") == "tfidf" else _ENCODER)}
    for name, kind in expected.items():
        if not isinstance(saved.get(name), kind):
            found = "nothing" if name not in saved else type(saved[name]).__name__
            raise ConfigError(f"{path} is not a text model tl-advise can load: its {name!r} should be "
                              f"{kind.__name__}, not {found}; train one with tl-advise DATA --run")
    if not saved["class_names"] or not all(isinstance(c, str) for c in saved["class_names"]):
        raise ConfigError(f"{path} is not a text model tl-advise can load: its class names are not strings")


class _EncoderPredictor:
    def __init__(self, saved: dict[str, Any], path: Path) -> None:
        import transformers

        try:
            with tempfile.TemporaryDirectory(prefix="tl-advise-tokenizer-") as folder:
                for name, data in saved["tokenizer_files"].items():
                    (Path(folder) / Path(name).name).write_bytes(bytes(data.numpy().tobytes()))
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
            values = json.loads(saved["encoder_config"])
            config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
            encoder = transformers.AutoModel.from_config(config)
            encoder.load_state_dict(saved["encoder"])
            head_config = saved["head_config"]
            head = TextHead(int(head_config["width"]), int(head_config["n_classes"]),
                            dropout=float(head_config["dropout"]))
            head.load_state_dict(saved["head"])
        except Exception as exc:  # transformers and load_state_dict raise many kinds for a damaged file
            reason = " ".join(str(exc).split())[:160]
            raise ConfigError(f"{path} is not a text model tl-advise can load: {type(exc).__name__}: {reason}; "
                              "train one with tl-advise DATA --run") from exc
        self.model = TextClassifier(encoder, head, pooling=saved["pooling"], normalize=saved["normalize"]).eval()
        self.max_length = int(saved["max_length"])

    def probabilities(self, texts: Sequence[str], *, device: torch.device, batch_size: int) -> np.ndarray:
        ids = tokenize(self.tokenizer, texts, self.max_length)
        pad = int(self.tokenizer.pad_token_id or 0)
        self.model.to(device)
        logits, _ = predict_batches(self.model, eval_batches(ids, torch.zeros(len(ids), dtype=torch.long),
                                                             batch_size, pad_id=pad), device)
        return torch.softmax(restore_order(logits, ids).float(), dim=1).numpy()


class _TfidfPredictor:
    def __init__(self, saved: dict[str, Any]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = TfidfVectorizer(ngram_range=(1, saved["ngram_max"]), sublinear_tf=bool(
            saved.get("sublinear_tf", True)), vocabulary=saved["vocabulary"])
        self.vectorizer.idf_ = saved["idf"].numpy()
        self.model = LogisticRegression()
        self.model.coef_, self.model.intercept_ = saved["coef"].numpy(), saved["intercept"].numpy()
        self.model.classes_ = saved["label_index"].numpy()
        self.n_classes = len(saved["class_names"])

    def probabilities(self, texts: Sequence[str], *, device: torch.device, batch_size: int) -> np.ndarray:
        proba = np.zeros((len(texts), self.n_classes))
        proba[:, self.model.classes_] = self.model.predict_proba(self.vectorizer.transform(list(texts)))
        return proba


def predict_texts(saved: dict[str, Any], path: Path, texts: Sequence[str], *, device: torch.device,
                  batch_size: int = PREDICT_BATCH, top_k: int = 3) -> TextPredictionReport:
    """The class, its probability and the ``top_k`` most probable classes of every text, in order."""
    check_text_model(saved, path)
    predictor = _TfidfPredictor(saved) if saved["model"] == "tfidf" else _EncoderPredictor(saved, path)
    classes = list(saved["class_names"])
    with torch.inference_mode():
        proba = predictor.probabilities(texts, device=device, batch_size=batch_size)
    rows = []
    for i, (text, p) in enumerate(zip(texts, proba, strict=True)):
        order = np.argsort(-p, kind="stable")
        rows.append(TextPrediction(
            index=i, text=text if len(text) <= SHOWN_TEXT_CHARS else text[:SHOWN_TEXT_CHARS - 1] + "…",
            prediction=classes[order[0]], confidence=float(p[order[0]]),
            top_k=[classes[j] for j in order[:top_k]],
            probabilities={c: float(v) for c, v in zip(classes, p, strict=True)}))
    return TextPredictionReport(model=str(path), strategy=str(saved["strategy"]), backbone=str(saved["backbone"]),
                                max_length=int(saved["max_length"]) or None, classes=classes, predictions=rows)
