"""Candidate signals of how far a text sample sits from a text backbone's source domain, raw and measured
(``benchmarks/text_similarity.py`` reports which of them separate close from far datasets).

- Tokenizer statistics: word-piece fertility (pieces per word), the share of words split into several
  pieces, the unknown-token rate, and the characters the tokenizer's normalisation deletes or changes
  (an uncased BERT strips combining marks: Devanagari loses its vowel signs). A vocabulary learnt on
  general English splits technical and foreign words into many pieces.
- Hidden-state moments: per layer, the token states' per-dimension mean and spread against reference moments
  computed from a general-English sample (normalised W2, as the image side does with batch-norm statistics),
  and the cosine between the sample's and the reference's mean sentence embedding.
- Separability: cross-validated logistic-regression and k-NN accuracy and LogME of the frozen embeddings,
  against the TF-IDF bar (word and bigram TF-IDF with a logistic regression: the text twin of the raw-pixel
  bar; any strategy must clear it).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import random
import time
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tl_advise.advisor.data.text.reading import TextDataset, TextExample
from tl_advise.advisor.defaults import TEXT_MOMENTS_KIND
from tl_advise.advisor.measure.cache import ArrayCache, digest
from tl_advise.advisor.measure.logme import logme
from tl_advise.advisor.measure.text.backbone import (
    DEFAULT_TEXT_BATCH,
    Moments,
    TextBackbone,
    embed_cached,
    store_embeddings,
    text_hash,
)
from tl_advise.schema.text import (
    HiddenStateShift,
    LayerShift,
    TextSeparability,
    TextSimilaritySignals,
    TokenizerStats,
)

if TYPE_CHECKING:
    from sklearn.model_selection import StratifiedKFold

REFERENCES = Path(__file__).resolve().parent / "references"
DEFAULT_SAMPLE = 400
MAX_FOLDS = 5
KNN_NEIGHBOURS = 5
# The TF-IDF bar: words and bigrams, sublinear counts, a logistic regression. C=10 rather than scikit-learn's
# default 1: on a few hundred texts the sparse, L2-normalised TF-IDF rows need a weaker penalty, or the bar
# sits near chance and clears nothing. Fixed, not tuned per dataset.
TFIDF_C = 10.0
EMBEDDING_C = 1.0


# --------------------------------------------------------------------------- sample


def sample_examples(dataset: TextDataset, *, total: int = DEFAULT_SAMPLE, split: str | None = None,
                    seed: int = 0) -> list[TextExample]:
    """A seeded sample of the training split's non-empty, distinct texts: the same share from every class (a
    small class gives all it has, the rest goes to the others), at most ``total``, in reading order."""
    pool: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    examples = dataset.subset(split or dataset.train_split)
    for i, e in enumerate(examples):
        key = " ".join(e.text.split())
        if key and key not in seen:
            seen.add(key)
            pool[e.label].append(i)
    rng = random.Random(seed)
    chosen: list[int] = []
    remaining = total
    classes = sorted(pool, key=lambda c: len(pool[c]))  # smallest first: they give all they have
    for k, label in enumerate(classes):
        share = remaining // (len(classes) - k)
        members = pool[label]
        picked = members if len(members) <= share else rng.sample(members, share)
        chosen.extend(picked)
        remaining -= len(picked)
    return [examples[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------- tokenizer statistics


def tokenizer_stats(texts: Sequence[str], tokenizer: Any) -> TokenizerStats:
    """Fertility, split share, unknown rate and normalisation losses of ``tokenizer`` (a fast tokenizer) on
    ``texts``. Words are the tokenizer's own pre-tokenised words that hold a letter or a digit."""
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False)
    unk = tokenizer.unk_token_id
    n_words = n_pieces = n_split = n_tokens = n_unk = 0
    for i, text in enumerate(texts):
        encoding = encoded.encodings[i]
        ids = encoding.ids
        n_tokens += len(ids)
        n_unk += sum(1 for t in ids if t == unk) if unk is not None else 0
        spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for word, offsets in zip(encoding.word_ids, encoding.offsets, strict=True):
            if word is not None:
                spans[word].append(offsets)
        for pieces in spans.values():
            word_text = text[min(s for s, _ in pieces):max(e for _, e in pieces)]
            if any(ch.isalnum() for ch in word_text):
                n_words += 1
                n_pieces += len(pieces)
                n_split += len(pieces) > 1
    lost, changed, total = _normalisation_losses(texts, tokenizer)
    return TokenizerStats(
        n_texts=len(texts), n_words=n_words, fertility=round(n_pieces / max(n_words, 1), 4),
        split_share=round(n_split / max(n_words, 1), 4), unk_rate=round(n_unk / max(n_tokens, 1), 5),
        chars_lost=round(lost / max(total, 1), 5), chars_changed=round(changed / max(total, 1), 5))


def _normalisation_losses(texts: Sequence[str], tokenizer: Any) -> tuple[int, int, int]:
    """(characters deleted, characters changed beyond lower-casing, non-space characters) under the tokenizer's
    normaliser, character by character (memoised): ASCII only changes case, so only the rest is looked at."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    verdicts: dict[str, int] = {}  # 0 kept, 1 changed, 2 deleted
    lost = changed = total = 0
    for text in texts:
        text = unicodedata.normalize("NFC", text)
        total += sum(1 for ch in text if not ch.isspace())
        if normalizer is None or (text.isascii() and text.isprintable()):
            continue
        for ch in text:
            if ch.isspace() or (ch.isascii() and ch.isprintable()):
                continue
            verdict = verdicts.get(ch)
            if verdict is None:
                out = normalizer.normalize_str(ch).strip()
                verdict = verdicts[ch] = 2 if not out else 0 if out in (ch, ch.lower()) else 1
            lost += verdict == 2
            changed += verdict == 1
    return lost, changed, total


# --------------------------------------------------------------------------- hidden-state moments


@dataclass
class ReferenceMoments:
    """A backbone's token hidden-state moments and mean sentence embedding on a general-English sample."""

    backbone: str
    description: str
    moments: Moments
    centroid: np.ndarray  # the mean (pooled) embedding
    n_texts: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"backbone": self.backbone, "description": self.description, "n_texts": self.n_texts})
        arrays = {**self.moments.to_arrays(), "centroid": self.centroid, "meta": np.array(meta)}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> ReferenceMoments:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(backbone=meta["backbone"], description=meta["description"], n_texts=int(meta["n_texts"]),
                       moments=Moments.from_arrays({k: data[k] for k in ("sums", "squares", "count")}),
                       centroid=data["centroid"])


def reference_path(backbone_name: str) -> Path:
    return REFERENCES / f"{backbone_name}.npz"


def load_reference(backbone_name: str) -> ReferenceMoments | None:
    """The reference moments shipped for ``backbone_name``; None when there are none."""
    path = reference_path(backbone_name)
    return ReferenceMoments.load(path) if path.is_file() else None


def hidden_shift(moments: Moments, embeddings: np.ndarray, reference: ReferenceMoments) -> HiddenStateShift:
    """Per layer, ``mean over dimensions of sqrt((mu_t - mu_r)^2 + (sd_t - sd_r)^2) / sd_r``; the layers in three
    bands (early, middle, late); and the cosine of the mean embeddings."""
    ref = reference.moments
    sd_r = np.sqrt(ref.var) + 1e-6
    w2 = np.sqrt((moments.mean - ref.mean) ** 2 + (np.sqrt(moments.var) - np.sqrt(ref.var)) ** 2) / sd_r
    per_layer = w2.mean(axis=1)
    early, middle, late = (float(band.mean()) for band in np.array_split(per_layer, 3))
    centroid = embeddings.mean(axis=0)
    cosine = float(centroid @ reference.centroid / max(np.linalg.norm(centroid) * np.linalg.norm(reference.centroid),
                                                       1e-12))
    return HiddenStateShift(
        reference=reference.description, early=round(early, 4), middle=round(middle, 4), late=round(late, 4),
        profile=[LayerShift(layer=i, w2=round(float(v), 4)) for i, v in enumerate(per_layer)],
        centroid_cosine=round(cosine, 4), n_tokens=moments.count)


# --------------------------------------------------------------------------- separability


def _cv(model: object, x: object, y: np.ndarray, folds: StratifiedKFold) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_val_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(cross_val_score(model, x, y, cv=folds, scoring="accuracy").mean())


def text_separability(embeddings: np.ndarray, texts: Sequence[str], labels: Sequence[str], *,
                      seed: int = 0) -> TextSeparability | None:
    """Cross-validated accuracy of a logistic regression and a k-NN on the frozen embeddings, LogME, and the
    TF-IDF bar on the same folds; None when a class has fewer than 2 texts."""
    # scikit-learn is imported here, not with the module: a warm advice reads the signals from the cache
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.bincount(y)
    n_folds = int(min(MAX_FOLDS, counts.min())) if len(classes) >= 2 else 0
    if n_folds < 2:
        return None
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    smallest_train = int(len(y) - np.ceil(len(y) / n_folds))
    k = max(1, min(KNN_NEIGHBOURS, smallest_train))
    x = embeddings.astype(np.float64)
    with threadpool_limits(limits=1):  # tiny matrices: a multi-threaded BLAS only spins on them
        logreg = _cv(make_pipeline(StandardScaler(), LogisticRegression(C=EMBEDDING_C, max_iter=2000)), x, y, folds)
        knn = _cv(KNeighborsClassifier(n_neighbors=k, metric="cosine"), x, y, folds)
        tfidf = _cv(make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                  LogisticRegression(C=TFIDF_C, max_iter=2000)), np.asarray(texts, dtype=object), y,
                    folds)
        evidence = logme(x, y)
    return TextSeparability(
        n_texts=len(y), n_folds=n_folds, chance=round(float(counts.max() / counts.sum()), 4),
        logreg_accuracy=round(logreg, 4), knn_accuracy=round(knn, 4), logme=round(float(evidence), 4),
        tfidf_accuracy=round(tfidf, 4), logreg_gain=round(logreg - tfidf, 4), knn_gain=round(knn - tfidf, 4))


# --------------------------------------------------------------------------- all signals


def release_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise): the peak memory of a cold advice is the
    forward pass's buffers plus scikit-learn's, unless the first are returned before the second arrive."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def text_similarity_signals(backbone: TextBackbone, examples: Sequence[TextExample], *, seed: int = 0,
                            reference: ReferenceMoments | None = None, cache: ArrayCache | None = None,
                            namespace: str = "", batch_size: int = DEFAULT_TEXT_BATCH,
                            after_forward: Callable[[], None] | None = None) -> TextSimilaritySignals:
    """Every candidate signal on ``examples`` (a sample: see :func:`sample_examples`). ``reference`` None: the
    moments shipped for the backbone, if any. One forward pass gives the embeddings and the moments; both are
    cached, so a second call runs none. ``after_forward`` is called once the model is no longer needed (the
    advice frees it there when nobody will train with it)."""
    cache = cache or ArrayCache(None)
    texts = [e.text for e in examples]
    labels = [e.label for e in examples]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tokens = tokenizer_stats(texts, backbone.tokenizer)
    seconds["tokenizer"] = time.perf_counter() - start

    start = time.perf_counter()
    key = digest(backbone.cache_key, sorted(text_hash(t) for t in texts))
    moments = cache.read(TEXT_MOMENTS_KIND, key, Moments.from_arrays)
    embeddings = None
    if moments is not None:
        embeddings = embed_cached(backbone, texts, batch_size=batch_size, cache=cache, namespace=namespace).embeddings
    else:
        encoded = backbone.encode(texts, batch_size=batch_size, moments=True)
        embeddings, moments = encoded.embeddings, encoded.moments
        assert moments is not None
        cache.save(TEXT_MOMENTS_KIND, key, moments.to_arrays())
        store_embeddings(backbone, texts, embeddings, cache=cache, namespace=namespace)
        del encoded
    if after_forward is not None:
        after_forward()
    release_memory()  # the forward pass's buffers (and the model, if freed), before scikit-learn adds its own
    seconds["embed"] = time.perf_counter() - start

    reference = reference or load_reference(backbone.name)
    hidden = hidden_shift(moments, embeddings, reference) if reference is not None else None
    start = time.perf_counter()
    separability = text_separability(embeddings, texts, labels, seed=seed)
    seconds["separability"] = time.perf_counter() - start
    return TextSimilaritySignals(backbone=backbone.name, n_texts=len(texts), seed=seed, tokenizer=tokens,
                                 hidden=hidden, separability=separability,
                                 seconds={k: round(v, 3) for k, v in seconds.items()})


def build_reference(backbone: TextBackbone, texts: Sequence[str], description: str, *,
                    batch_size: int = DEFAULT_TEXT_BATCH) -> ReferenceMoments:
    """Reference moments of ``backbone`` on ``texts`` (a general-English sample)."""
    encoded = backbone.encode(texts, batch_size=batch_size, moments=True)
    assert encoded.moments is not None
    return ReferenceMoments(backbone=backbone.name, description=description, moments=encoded.moments,
                            centroid=encoded.embeddings.mean(axis=0), n_texts=len(texts))
