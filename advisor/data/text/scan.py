"""Scan a text dataset: counts per class and split, lengths in the backbone's tokens, empty, duplicate and
too-long texts, and encoding and script problems — each a :class:`TextFinding`, never a crash.

Lengths are counted with the backbone's tokenizer when one is given (what the model will see, special tokens
included, against its maximum input length); without one, in whitespace-separated words. The script of a
text is read from the Unicode names of its letters (LATIN, CYRILLIC, CJK, DEVANAGARI, …): a cheap proxy for
its language, which is what an English backbone cares about.
"""

from __future__ import annotations

import functools
import random
import re
import statistics
import string
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from tl_advise.advisor.data.text.reading import REPLACEMENT, TextDataset, TextExample
from tl_advise.schema.formatting import counted
from tl_advise.schema.text import (
    DuplicateTexts,
    LengthSummary,
    LengthUnit,
    ScriptSummary,
    TextDatasetSummary,
    TextFinding,
    TextScan,
)

MAX_EXAMPLES = 5
MAX_DUPLICATE_GROUPS = 20
SHOWN_CHARS = 80
# Warn when more than this share of the letters is not Latin (an English backbone reads them as [UNK] or
# as many short pieces), or of the texts would be truncated.
NON_LATIN_WARN_SHARE = 0.05
TOO_LONG_WARN_SHARE = 0.01
IMBALANCE_WARN_RATIO = 10.0
FEW_TEXTS_PER_CLASS = 10
TOKENIZE_BATCH = 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


class Tokenizer(Protocol):
    """What the scan needs of a tokenizer (a Hugging Face fast tokenizer is one)."""

    def __call__(self, text: list[str], *, add_special_tokens: bool = ..., truncation: bool = ...) -> object: ...


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def class_examples(dataset: TextDataset, *, per_class: int = 3, seed: int = 0,
                   limit: int = 300) -> dict[str, list[str]]:
    """A few texts of every class (a seeded draw, in dataset order), shortened to ``limit`` characters: what the
    HTML report shows instead of thumbnails."""
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = {c: [] for c in dataset.classes}
    for example in dataset.examples:
        by_class.setdefault(example.label, []).append(example.text)
    out: dict[str, list[str]] = {}
    for name, texts in by_class.items():
        picked = sorted(rng.sample(range(len(texts)), min(per_class, len(texts))))
        out[name] = [shorten(texts[i], limit) for i in picked]
    return out


def scan_texts(dataset: TextDataset, *, tokenizer: object | None = None, tokenizer_name: str | None = None,
               max_length: int | None = None, counts: Sequence[int] | None = None) -> TextScan:
    """What ``dataset`` holds; with ``tokenizer`` (a Hugging Face tokenizer) lengths in its tokens, or with
    ``counts`` (its tokens per text, counted before: :func:`token_counts`) those."""
    start = time.perf_counter()
    examples = dataset.examples
    summary = summarise(dataset)
    if counts is not None and len(counts) != len(examples):
        raise ValueError(f"{len(counts)} token counts for {len(examples)} texts")
    lengths, counts = _lengths([e.text for e in examples], tokenizer, tokenizer_name, max_length, counts)
    empty = [e for e in examples if not e.text.strip()]
    undecodable = [e for e in examples if e.undecodable]
    control = [e for e in examples if _CONTROL.search(e.text)]
    groups, n_repeats = _duplicates(examples)
    scripts = script_summary(e.text for e in examples)

    findings: list[TextFinding] = []
    if empty:
        findings.append(TextFinding(
            code="empty", count=len(empty), examples=[e.where for e in empty[:MAX_EXAMPLES]],
            message=f"{counted(len(empty), 'empty or blank text')}: no signal to learn from; remove or fill in"))
    if n_repeats:
        findings.append(TextFinding(
            code="duplicates", count=n_repeats, examples=[g.text for g in groups[:MAX_EXAMPLES]],
            message=f"{counted(n_repeats, 'text')} {_agree(n_repeats, 'repeats', 'repeat')} an earlier one "
                    f"({counted(len(groups), 'distinct text')} with copies): the copies weigh more in training "
                    "and inflate validation scores"))
    conflicts = [g for g in groups if g.label_conflict]
    if conflicts:
        findings.append(TextFinding(
            code="duplicate_conflict", count=len(conflicts), examples=[g.text for g in conflicts[:MAX_EXAMPLES]],
            message=f"{counted(len(conflicts), 'text')} {_agree(len(conflicts), 'appears', 'appear')} under more "
                    "than one label: fix the labels or drop the copies"))
    leaked = [g for g in groups if g.cross_split]
    if leaked:
        findings.append(TextFinding(
            code="cross_split_duplicates", count=len(leaked), examples=[g.text for g in leaked[:MAX_EXAMPLES]],
            message=f"{counted(len(leaked), 'text')} {_agree(len(leaked), 'appears', 'appear')} in more than one "
                    "split: the held-out score overstates accuracy; keep each text in one split"))
    if lengths.max_length is not None and lengths.n_over_max and lengths.share_over_max > TOO_LONG_WARN_SHARE:
        findings.append(TextFinding(
            code="too_long", count=lengths.n_over_max,
            examples=[e.where for e, n in zip(examples, counts, strict=True) if n > lengths.max_length][:MAX_EXAMPLES],
            message=f"{counted(lengths.n_over_max, 'text')} ({lengths.share_over_max:.0%}) "
                    f"{_agree(lengths.n_over_max, 'is', 'are')} longer than the backbone's "
                    f"{lengths.max_length} tokens: the ends are cut off; split long documents into passages "
                    "if the label depends on the end"))
    if undecodable:
        findings.append(TextFinding(
            code="undecodable", count=len(undecodable), examples=[e.where for e in undecodable[:MAX_EXAMPLES]],
            message=f"{counted(len(undecodable), 'text')} {_agree(len(undecodable), 'holds', 'hold')} bytes that "
                    f"are not UTF-8 (read as {REPLACEMENT}): save the data as UTF-8"))
    if control:
        findings.append(TextFinding(
            code="control_characters", count=len(control), examples=[e.where for e in control[:MAX_EXAMPLES]],
            message=f"{counted(len(control), 'text')} {_agree(len(control), 'holds', 'hold')} control characters "
                    "(not tab or newline): leftovers of a binary format or a bad export; the tokenizer drops most of "
                    "them"))
    if scripts.non_latin_share > NON_LATIN_WARN_SHARE:
        top = ", ".join(f"{name} {share:.0%}" for name, share in scripts.shares.items() if name != "LATIN")
        findings.append(TextFinding(
            code="non_latin_script", count=round(scripts.non_latin_share * scripts.n_letters),
            message=f"{scripts.non_latin_share:.0%} of the letters are not Latin ({top}): an English backbone "
                    "splits them into many pieces or unknown tokens; consider a multilingual backbone"))
    if dataset.skipped:
        findings.append(TextFinding(
            code="skipped", count=len(dataset.skipped),
            examples=[f"{s.path}: {s.reason}" for s in dataset.skipped[:MAX_EXAMPLES]],
            message=f"{counted(len(dataset.skipped), 'row or file', 'rows or files')} "
                    f"{_agree(len(dataset.skipped), 'was', 'were')} left out (no text, no label or not text)"))
    if summary.imbalance_ratio > IMBALANCE_WARN_RATIO:
        findings.append(TextFinding(
            code="imbalance", count=len(summary.classes),
            message=f"the largest class is {summary.imbalance_ratio:.1f}× the smallest in {summary.train_split}: "
                    "accuracy hides the small classes; weigh the loss or report per-class recall"))
    train_counts = summary.split_counts.get(summary.train_split, {})
    untrained = [c for c, n in train_counts.items() if n == 0]
    if untrained:
        shown = ", ".join(repr(c) for c in untrained[:MAX_EXAMPLES])
        more = f" and {len(untrained) - MAX_EXAMPLES} more" if len(untrained) > MAX_EXAMPLES else ""
        findings.append(TextFinding(
            code="classes_without_training_texts", count=len(untrained), examples=untrained[:MAX_EXAMPLES],
            message=f"{counted(len(untrained), 'class', 'classes')} ({shown}{more}) "
                    f"{_agree(len(untrained), 'has', 'have')} no text in '{summary.train_split}' but "
                    f"{_agree(len(untrained), 'appears', 'appear')} in the other splits: no strategy can learn "
                    f"{_agree(len(untrained), 'it', 'them')}, and {_agree(len(untrained), 'its', 'their')} held-out "
                    "texts count as errors; add training texts or check that the splits use the same labels"))
    smallest = min((n for n in train_counts.values() if n > 0), default=0)
    if 0 < smallest < FEW_TEXTS_PER_CLASS:
        findings.append(TextFinding(
            code="few_texts", count=smallest,
            message=f"the smallest class has {counted(smallest, 'text')} in {summary.train_split}: "
                    f"fewer than {FEW_TEXTS_PER_CLASS} measures little"))

    return TextScan(
        source=dataset.source, summary=summary, lengths=lengths, n_empty=len(empty), n_undecodable=len(undecodable),
        n_control=len(control), duplicates=groups[:MAX_DUPLICATE_GROUPS], n_duplicate_texts=n_repeats,
        scripts=scripts, findings=findings, skipped=dataset.skipped,
        seconds=round(time.perf_counter() - start, 3))


def _agree(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


# --------------------------------------------------------------------------- counts


def summarise(dataset: TextDataset) -> TextDatasetSummary:
    classes = dataset.classes
    split_counts: dict[str, dict[str, int]] = {}
    for split in dataset.splits:
        counts = Counter(dataset.labels(split))
        split_counts[split] = {c: counts.get(c, 0) for c in classes}
    train = dataset.train_split
    totals = Counter(e.label for e in dataset.examples)
    return TextDatasetSummary(
        n_texts=len(dataset), classes=classes, class_counts={c: totals[c] for c in classes},
        split_counts=split_counts, train_split=train, **_size_axis(list(split_counts[train].values())))


def _size_axis(train_counts: list[int]) -> dict[str, float | int]:
    """The summary's fields that the text table's size axis reads, from the training counts per class: the
    median over the classes that have training texts (one without any is the classes_without_training_texts
    finding, not a class of 0 texts on the size axis)."""
    present = [n for n in train_counts if n > 0] or [0]
    return dict(texts_per_class=float(statistics.median(present)), min_texts_per_class=min(train_counts),
                imbalance_ratio=round(max(present) / max(min(present), 1), 3))


def capped_for_training(summary: TextDatasetSummary, cap: int | None) -> TextDatasetSummary:
    """The summary as runs under --max-train-per-class see it: at most ``cap`` training texts per class on the
    size axis, so that the advice is for the texts that train."""
    if cap is None:
        return summary
    counts = [min(n, cap) for n in summary.split_counts[summary.train_split].values()]
    return summary.model_copy(update={"train_cap": cap, **_size_axis(counts)})


# --------------------------------------------------------------------------- lengths


def token_counts(texts: Sequence[str], tokenizer: object) -> list[int]:
    """Tokens per text as the model sees it (special tokens included), untruncated; batched through a fast
    tokenizer's Rust core."""
    counts: list[int] = []
    for i in range(0, len(texts), TOKENIZE_BATCH):
        batch = list(texts[i:i + TOKENIZE_BATCH])
        encoded = tokenizer(batch, add_special_tokens=True, truncation=False)  # type: ignore[operator]
        counts.extend(len(ids) for ids in encoded["input_ids"])
    return counts


def _lengths(texts: list[str], tokenizer: object | None, tokenizer_name: str | None,
             max_length: int | None, known: Sequence[int] | None = None) -> tuple[LengthSummary, list[int]]:
    """The summary and each text's length."""
    unit: LengthUnit
    if known is not None:
        counts, unit = [int(n) for n in known], "tokens"
    elif tokenizer is not None:
        counts, unit = token_counts(texts, tokenizer), "tokens"
    else:
        counts, unit, max_length, tokenizer_name = [len(t.split()) for t in texts], "words", None, None
    arr = np.asarray(counts or [0])
    over = int((arr > max_length).sum()) if max_length else 0
    return LengthSummary(
        unit=unit, tokenizer=tokenizer_name, mean=round(float(arr.mean()), 2), median=float(np.median(arr)),
        p95=float(np.percentile(arr, 95)), max=int(arr.max()), max_length=max_length, n_over_max=over,
        share_over_max=round(over / max(len(texts), 1), 4)), counts


# --------------------------------------------------------------------------- duplicates


def _key(text: str) -> str:
    return " ".join(text.split())


def _duplicates(examples: list[TextExample]) -> tuple[list[DuplicateTexts], int]:
    """Groups of texts that are equal after trimming and collapsing whitespace (empty ones are findings of
    their own); the largest groups first, and how many texts repeat an earlier one."""
    by_text: dict[str, list[TextExample]] = defaultdict(list)
    for e in examples:
        key = _key(e.text)
        if key:
            by_text[key].append(e)
    groups = []
    repeats = 0
    for key, members in by_text.items():
        if len(members) < 2:
            continue
        repeats += len(members) - 1
        splits = sorted({m.split for m in members})
        groups.append(DuplicateTexts(text=shorten(key), count=len(members), splits=splits,
                                     classes=sorted({m.label for m in members}), cross_split=len(splits) > 1))
    groups.sort(key=lambda g: (-g.count, g.text))
    return groups, repeats


# --------------------------------------------------------------------------- scripts


_ASCII_LETTERS = string.ascii_letters.encode()
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@functools.lru_cache(maxsize=8192)
def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0] if name else "UNKNOWN"
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL") else first


def script_summary(texts: Iterable[str]) -> ScriptSummary:
    """Letters per Unicode script over ``texts``. Counted over all texts at once, in C: the ASCII letters by
    deleting them, the other characters once per distinct character (a Python loop per letter took a second on
    sst2, most of a warm advice)."""
    joined = "\n".join(texts)
    counts: Counter[str] = Counter()
    encoded = joined.encode("utf-8", "surrogatepass")  # the bytes of other characters are all >= 0x80
    if ascii_letters := len(encoded) - len(encoded.translate(None, _ASCII_LETTERS)):
        counts["LATIN"] = ascii_letters
    for char, n in Counter(_NON_ASCII.findall(joined)).items():
        if char.isalpha():
            counts[_script(char)] += n
    total = sum(counts.values())
    shares = {name: round(n / total, 4) for name, n in counts.most_common(5)} if total else {}
    non_latin = (total - counts["LATIN"]) / total if total else 0.0
    return ScriptSummary(n_letters=total, shares=shares, non_latin_share=round(non_latin, 4))
