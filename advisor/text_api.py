"""``advise_text()``: read → scan → embed a seeded sample → similarity signals → text rules → recommendation.

The text twin of ``advisor.api.advise``: one typed result (``schema.text.TextAdviceResult``), the rules as
data (``rules/text_rules.toml``), and a session that keeps the loaded backbone and the dataset for the text
runners (``runners.text.run_text_advice``). Embeddings of the sample are cached per text, and everything the
advice measures with the model (token counts, signals) per backbone, dataset content and sample: a second
advice of the same data loads no model and imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl_advise.advisor.data.text.reading import TextDataset, TextExample, TextReadOptions, read_text_dataset
from tl_advise.advisor.data.text.scan import capped_for_training, scan_texts, token_counts
from tl_advise.advisor.defaults import MAX_SEED, TEXT_MEASUREMENTS_KIND
from tl_advise.advisor.measure.cache import ArrayCache, default_cache_dir, digest
from tl_advise.advisor.measure.device import check_device, resolve_device
from tl_advise.advisor.measure.text.backbone import (
    DEFAULT_TEXT_BACKBONE,
    TextBackbone,
    backbone_identity,
    embedded_entry,
    load_text_backbone,
    text_hash,
)
from tl_advise.advisor.measure.text.similarity import REFERENCES, sample_examples, text_similarity_signals
from tl_advise.advisor.timing import StepTimer
from tl_advise.advisor.versions import tool_version
from tl_advise.advisor.writable import check_write_path
from tl_advise.rules.text_engine import recommend_text, score_text_similarity
from tl_advise.rules.text_schema import TextRuleSet, load_text_rules
from tl_advise.schema.errors import BackboneError, ConfigError, DatasetError
from tl_advise.schema.text import TextAdviceResult, TextBackboneInfo, TextSampleInfo, TextSimilaritySignals

logger = logging.getLogger(__name__)

# A few hundred texts: the signals were measured on 400 (benchmarks/results/text_similarity.md); 256 keeps a
# cold advice well under 30 s on 2 CPU cores (about 5 s of embedding for short texts).
DEFAULT_TEXT_SAMPLE = 256
# The advice's forward pass (hidden states of every layer kept for the moments) in batches of 16, not the
# runners' 64: less peak memory, no slower on a CPU.
ADVICE_TEXT_BATCH = 16
# Bump when what the cached measurements mean changes: the signals' code (similarity.py), the token counting
# (scan.token_counts) or what an entry holds. The shipped reference moments are in the key by their content.
TEXT_MEASUREMENTS_VERSION = 1

__all__ = ["DEFAULT_TEXT_SAMPLE", "TextAdviceSession", "advise_text", "advise_text_session"]


@dataclass
class TextAdviceSession:
    """What ``advise_text`` built on the way, for callers that go on to train. ``backbone`` is the one the
    advice loaded, or (an advice read from the cache loads none) loaded when first asked for."""

    result: TextAdviceResult
    dataset: TextDataset
    rules: TextRuleSet
    cache: ArrayCache
    namespace: str  # the embedding cache's shard for this dataset
    loader: Callable[[], TextBackbone] = field(repr=False)
    _backbone: TextBackbone | None = field(default=None, repr=False)
    token_counts: list[int] = field(default_factory=list, repr=False)  # per text of ``dataset``, as the scan counted

    @property
    def backbone(self) -> TextBackbone:
        if self._backbone is None:
            self._backbone = self.loader()
        return self._backbone

    @property
    def backbone_loaded(self) -> bool:
        return self._backbone is not None


def advise_text(data: str | Path | TextDataset, *, backbone: str | TextBackbone = DEFAULT_TEXT_BACKBONE,
                weights: str | Path | None = None, rules: str | Path | TextRuleSet | None = None,
                device: str = "cpu", seed: int = 0, sample_size: int = DEFAULT_TEXT_SAMPLE,
                cache_dir: str | Path | None = None, use_cache: bool = True,
                read_options: TextReadOptions | None = None) -> TextAdviceResult:
    """Recommend how to transfer-learn a text classifier for ``data`` (a manifest, a folder of split files or
    class folders of .txt; or a ``TextDataset`` already read).

    ``backbone``: a name (the embedded all-MiniLM-L6-v2 by default; works offline), a model folder, or a
    loaded ``TextBackbone``. ``sample_size`` texts (seeded, stratified) are embedded for the similarity
    signals and the TF-IDF bar. Raises a ``TLAdviseError`` subclass for bad input.
    """
    return advise_text_session(data, backbone=backbone, weights=weights, rules=rules, device=device, seed=seed,
                               sample_size=sample_size, cache_dir=cache_dir, use_cache=use_cache,
                               read_options=read_options, keep_backbone=False).result


def names_an_image_backbone(backbone: str, weights: str | Path | None = None) -> bool:
    """Whether ``backbone`` names an image backbone (resnet50, efficientnet_lite1) where a text encoder is
    expected: refused before the Hub is asked for it (offline, a minute of retries; online, a model that is no
    text encoder). A folder, a weights file or the embedded encoder is never one."""
    if weights is not None or Path(backbone).expanduser().exists() or embedded_entry(backbone) is not None:
        return False
    from tl_advise.advisor.measure.images.backbones import torchvision_models
    from tl_advise.advisor.measure.images.backbones.registry import built_in_backbones, parse_spec

    name = parse_spec(backbone)[0]
    return name in built_in_backbones() or name in torchvision_models.classification_models()


def advise_text_session(data: str | Path | TextDataset, *, backbone: str | TextBackbone = DEFAULT_TEXT_BACKBONE,
                        weights: str | Path | None = None, rules: str | Path | TextRuleSet | None = None,
                        device: str = "cpu", seed: int = 0, sample_size: int = DEFAULT_TEXT_SAMPLE,
                        cache_dir: str | Path | None = None, use_cache: bool = True,
                        read_options: TextReadOptions | None = None, keep_backbone: bool = True,
                        max_train_per_class: int | None = None) -> TextAdviceSession:
    """``advise_text`` that also hands back the dataset, rules, backbone and cache it used.

    ``keep_backbone`` False: a model the advice loads is freed once its forward pass is done (a lower peak
    memory: scikit-learn's separability runs after it); the session's ``backbone`` loads it again if asked.
    ``max_train_per_class``: the runs will train at most this many texts per class (``--max-train-per-class``):
    the size axis counts that many, so that the advice is for what trains.

    What the advice measures (the token counts, the signals, the backbone's description) is cached under the
    backbone's identity, the dataset's content, the sample, the seed, the sample size and the device asked for
    (``TEXT_MEASUREMENTS_KIND``): a second advice of the same data reads them back and loads no model (neither
    torch nor transformers is imported); the session's ``backbone`` is then loaded when first asked for."""
    timer = StepTimer()
    start = time.perf_counter()
    ruleset = rules if isinstance(rules, TextRuleSet) else load_text_rules(rules)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed} is out of range: use 0 to {MAX_SEED}")
    if sample_size < 4:
        raise ConfigError(f"The 'sample_size' parameter must be an int of at least 4. Got {sample_size} instead.")
    check_device(device)  # refused before any work, cached or not
    if isinstance(backbone, str) and names_an_image_backbone(backbone, weights):
        raise BackboneError(f"{backbone} is an image backbone, and a text dataset needs a text encoder: leave "
                            f"backbone out for the embedded {DEFAULT_TEXT_BACKBONE} (offline), or name a Hugging "
                            "Face text encoder (bert-base-uncased) or a model folder")
    root = data.source.root if isinstance(data, TextDataset) else str(data)
    cache_folder = check_write_path(cache_dir or default_cache_dir(), root, "The cache folder") if use_cache else None
    cache = ArrayCache(cache_folder)

    def load() -> TextBackbone:
        if isinstance(backbone, TextBackbone):
            return backbone
        return load_text_backbone(backbone, weights=weights, cache_dir=cache_folder,
                                  device=str(resolve_device(device)))

    with timer.step("read"):
        dataset = data if isinstance(data, TextDataset) else read_text_dataset(data, read_options)
    sample = sample_examples(dataset, total=sample_size, seed=seed)
    if len({e.label for e in sample}) < 2:
        raise DatasetError(f"{root}: the training split needs texts of at least 2 classes to advise on")
    namespace = str(Path(root).expanduser().resolve()) if not isinstance(data, TextDataset) else root
    loaded: TextBackbone | None = None
    identity: str | None
    with timer.step("load_backbone"):
        if isinstance(backbone, TextBackbone):
            loaded, identity = backbone, digest(backbone.cache_key, str(backbone.device))
        else:
            identity = backbone_identity(backbone, weights=weights) if cache.enabled else None
        key = measurement_key(identity, dataset, sample, seed=seed, sample_size=sample_size, device=device) \
            if identity is not None else None
        measured = cache.read(TEXT_MEASUREMENTS_KIND, key, _measurements_of) if key is not None else None
        if measured is None and loaded is None:
            loaded = load()
    if measured is None:
        assert loaded is not None
        with timer.step("scan"):
            counts = token_counts([e.text for e in dataset.examples], loaded.tokenizer)
            scan = scan_texts(dataset, counts=counts, tokenizer_name=loaded.name, max_length=loaded.max_length)
        info, device_used = loaded.info, str(loaded.device)
        owned = loaded is not backbone and not keep_backbone

        def free_model() -> None:  # the model, not the caller's: the session loads it again when asked
            nonlocal loaded
            if owned and loaded is not None:
                loaded.model = None
                loaded = None

        with timer.step("similarity"):
            signals = text_similarity_signals(loaded, sample, seed=seed, cache=cache, namespace=namespace,
                                              batch_size=ADVICE_TEXT_BATCH, after_forward=free_model)
        measured = TextMeasurements(info=info, device=device_used, counts=counts, signals=signals)
        if key is not None:
            cache.save(TEXT_MEASUREMENTS_KIND, key, measured.to_arrays())
    else:
        logger.info("text measurements read from the cache: no model loaded")
        with timer.step("scan"):
            scan = scan_texts(dataset, counts=measured.counts, tokenizer_name=measured.info.name,
                              max_length=measured.info.max_length)
        timer.timings["similarity"] = 0.0
    info = measured.info
    summary = capped_for_training(scan.summary, max_train_per_class)
    with timer.step("rules"):
        similarity = score_text_similarity(ruleset, measured.signals)
        recommendation = recommend_text(ruleset, summary=summary, lengths=scan.lengths, similarity=similarity,
                                        backbone=info)
    timer.timings["total"] = round(time.perf_counter() - start, 3)
    result = TextAdviceResult(
        tool_version=tool_version(), device=measured.device, dataset=summary, source=scan.source,
        lengths=scan.lengths, findings=scan.findings, backbone=info,
        sample=TextSampleInfo(n_texts=len(sample), seed=seed), similarity=similarity,
        recommendation=recommendation, timings=timer.timings)
    logger.info("text advice: %s (rule %s), %.1fs", recommendation.strategy, recommendation.rule_id,
                timer.timings["total"])
    return TextAdviceSession(result=result, dataset=dataset, rules=ruleset, cache=cache, namespace=namespace,
                             loader=load, _backbone=loaded, token_counts=list(measured.counts))


@dataclass
class TextMeasurements:
    """What a text advice measures with the model: the backbone's description, the device it ran on, every
    text's token count (the scan's lengths) and the similarity signals of the sample."""

    info: TextBackboneInfo
    device: str
    counts: list[int]
    signals: TextSimilaritySignals

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = {"backbone": self.info.model_dump(mode="json"), "device": self.device,
                "signals": self.signals.model_dump(mode="json")}
        return {"counts": np.asarray(self.counts, dtype=np.int64), "meta": np.array(json.dumps(meta))}


def _measurements_of(arrays: dict[str, np.ndarray]) -> TextMeasurements:
    meta = json.loads(str(arrays["meta"]))
    return TextMeasurements(info=TextBackboneInfo.model_validate(meta["backbone"]), device=str(meta["device"]),
                            counts=[int(n) for n in arrays["counts"]],
                            signals=TextSimilaritySignals.model_validate(meta["signals"]))


def dataset_digest(dataset: TextDataset) -> str:
    """The dataset's content: every example's split, label and text, in reading order."""
    h = hashlib.sha256()
    for e in dataset.examples:
        for part in (e.split, e.label, e.text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()[:32]


def _references_digest() -> list[tuple[str, str]]:
    """The shipped reference moments (the hidden-state shift is measured against them)."""
    return [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()[:16]) for p in sorted(REFERENCES.glob("*.npz"))]


def measurement_key(identity: str, dataset: TextDataset, sample: Sequence[TextExample], *, seed: int,
                    sample_size: int, device: str) -> str:
    """The text measurements' cache key: the backbone's identity (``backbone_identity``), the dataset's content,
    the sampled texts and labels, the seed, the sample size, the device asked for, the reference moments and
    the measuring code's version (``TEXT_MEASUREMENTS_VERSION``)."""
    return digest(TEXT_MEASUREMENTS_VERSION, identity, dataset_digest(dataset),
                  [(text_hash(e.text), e.label) for e in sample], seed, sample_size, device, _references_digest())
