"""``advise_text()``: read → scan → embed a seeded sample → similarity signals → text rules → recommendation.

The text twin of ``advisor.api.advise``: one typed result (``schema.text.TextAdviceResult``), the rules as
data (``rules/text_rules.toml``), and a session that keeps the loaded backbone and the dataset for the text
runners (``runners.text.run_text_advice``). Embeddings of the sample are cached per text, so a second advice
runs no forward pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tl_advise.advisor.cache import ArrayCache, default_cache_dir
from tl_advise.advisor.defaults import MAX_SEED
from tl_advise.advisor.device import resolve_device
from tl_advise.advisor.text.backbone import DEFAULT_TEXT_BACKBONE, TextBackbone, load_text_backbone
from tl_advise.advisor.text.reading import TextDataset, TextReadOptions, read_text_dataset
from tl_advise.advisor.text.scan import scan_texts
from tl_advise.advisor.text.similarity import sample_examples, text_similarity_signals
from tl_advise.advisor.timing import StepTimer
from tl_advise.advisor.versions import tool_version
from tl_advise.advisor.writable import check_write_path
from tl_advise.rules.text_engine import recommend_text, score_text_similarity
from tl_advise.rules.text_schema import TextRuleSet, load_text_rules
from tl_advise.schema.errors import ConfigError, DatasetError
from tl_advise.schema.text import TextAdviceResult, TextSampleInfo

logger = logging.getLogger(__name__)

# A few hundred texts: the signals were measured on 400 (benchmarks/results/text_similarity.md); 256 keeps a
# cold advice well under 30 s on 2 CPU cores (about 5 s of embedding for short texts).
DEFAULT_TEXT_SAMPLE = 256

__all__ = ["DEFAULT_TEXT_SAMPLE", "TextAdviceSession", "advise_text", "advise_text_session"]


@dataclass
class TextAdviceSession:
    """What ``advise_text`` built on the way, for callers that go on to train."""

    result: TextAdviceResult
    dataset: TextDataset
    rules: TextRuleSet
    backbone: TextBackbone
    cache: ArrayCache
    namespace: str  # the embedding cache's shard for this dataset


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
                               read_options=read_options).result


def advise_text_session(data: str | Path | TextDataset, *, backbone: str | TextBackbone = DEFAULT_TEXT_BACKBONE,
                        weights: str | Path | None = None, rules: str | Path | TextRuleSet | None = None,
                        device: str = "cpu", seed: int = 0, sample_size: int = DEFAULT_TEXT_SAMPLE,
                        cache_dir: str | Path | None = None, use_cache: bool = True,
                        read_options: TextReadOptions | None = None) -> TextAdviceSession:
    """``advise_text`` that also hands back the dataset, rules, backbone and cache it used."""
    timer = StepTimer()
    start = time.perf_counter()
    ruleset = rules if isinstance(rules, TextRuleSet) else load_text_rules(rules)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed} is out of range: use 0 to {MAX_SEED}")
    if sample_size < 4:
        raise ConfigError(f"The 'sample_size' parameter must be an int of at least 4. Got {sample_size} instead.")
    root = data.source.root if isinstance(data, TextDataset) else str(data)
    cache_folder = check_write_path(cache_dir or default_cache_dir(), root, "The cache folder") if use_cache else None
    cache = ArrayCache(cache_folder)

    with timer.step("read"):
        dataset = data if isinstance(data, TextDataset) else read_text_dataset(data, read_options)
    with timer.step("load_backbone"):
        loaded = backbone if isinstance(backbone, TextBackbone) else load_text_backbone(
            backbone, weights=weights, cache_dir=cache_folder, device=str(resolve_device(device)))
    with timer.step("scan"):
        scan = scan_texts(dataset, tokenizer=loaded.tokenizer, tokenizer_name=loaded.name,
                          max_length=loaded.max_length)
    sample = sample_examples(dataset, total=sample_size, seed=seed)
    if len({e.label for e in sample}) < 2:
        raise DatasetError(f"{root}: the training split needs texts of at least 2 classes to advise on")
    namespace = str(Path(root).expanduser().resolve()) if not isinstance(data, TextDataset) else root
    with timer.step("similarity"):
        signals = text_similarity_signals(loaded, sample, seed=seed, cache=cache, namespace=namespace)
    with timer.step("rules"):
        similarity = score_text_similarity(ruleset, signals)
        recommendation = recommend_text(ruleset, summary=scan.summary, lengths=scan.lengths, similarity=similarity,
                                        backbone=loaded.info)
    timer.timings["total"] = round(time.perf_counter() - start, 3)
    result = TextAdviceResult(
        tool_version=tool_version(), device=str(loaded.device), dataset=scan.summary, source=scan.source,
        lengths=scan.lengths, findings=scan.findings, backbone=loaded.info,
        sample=TextSampleInfo(n_texts=len(sample), seed=seed), similarity=similarity,
        recommendation=recommendation, timings=timer.timings)
    logger.info("text advice: %s (rule %s), %.1fs", recommendation.strategy, recommendation.rule_id,
                timer.timings["total"])
    return TextAdviceSession(result=result, dataset=dataset, rules=ruleset, backbone=loaded, cache=cache,
                             namespace=namespace)
