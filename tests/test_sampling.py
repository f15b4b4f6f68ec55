"""The seeded, stratified sample that the advisor embeds, and the removal of duplicate files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tl_advise.advisor.data.images.sampling import stratified_sample, without_duplicates
from tl_advise.advisor.data.images.scan import ImageRecord
from tl_advise.advisor.defaults import DEFAULT_PER_CLASS, DEFAULT_TOTAL
from tl_advise.schema.models import DuplicateGroup

ROOT = Path("/data/set")


def records(counts: dict[str, int], split: str = "all") -> list[ImageRecord]:
    out = []
    for label, (name, n) in enumerate(sorted(counts.items())):
        out += [ImageRecord(path=ROOT / name / f"{i:04d}.png", class_name=name, label=label, split=split,
                            width=40, height=32, mode="RGB", size_bytes=1000 + i, mtime_ns=i) for i in range(n)]
    return out


def per_class(sample: list[ImageRecord]) -> dict[str, int]:
    return dict(Counter(r.class_name for r in sample))


def paths(sample: list[ImageRecord]) -> list[Path]:
    return [r.path for r in sample]


POOL = records({"a": 100, "b": 80, "c": 5})


def test_deterministic_for_a_seed() -> None:
    first = stratified_sample(POOL, per_class=10, total=None, seed=7)
    assert paths(first) == paths(stratified_sample(POOL, per_class=10, total=None, seed=7))
    assert paths(first) == paths(stratified_sample(list(POOL), per_class=10, total=None, seed=7))


def test_differs_between_seeds() -> None:
    samples = {tuple(paths(stratified_sample(POOL, per_class=10, total=None, seed=s))) for s in range(5)}
    assert len(samples) == 5


def test_per_class_cap_and_small_classes_kept_whole() -> None:
    sample = stratified_sample(POOL, per_class=10, total=None, seed=0)
    assert per_class(sample) == {"a": 10, "b": 10, "c": 5}
    assert {r.path for r in sample if r.class_name == "c"} == {r.path for r in POOL if r.class_name == "c"}


def test_total_cap_gives_every_class_the_same_share() -> None:
    sample = stratified_sample(POOL, per_class=50, total=60, seed=0)
    assert per_class(sample) == {"a": 20, "b": 20, "c": 5}  # 60 // 3 each; the small class whole
    assert len(sample) <= 60
    sample = stratified_sample(POOL, per_class=None, total=30, seed=0)
    assert per_class(sample) == {"a": 10, "b": 10, "c": 5}


def test_per_class_cap_binds_before_the_total() -> None:
    assert per_class(stratified_sample(POOL, per_class=4, total=1000, seed=0)) == {"a": 4, "b": 4, "c": 4}


def test_more_classes_than_the_total_keeps_one_per_class() -> None:
    many = records({f"k{i:02d}": 3 for i in range(12)})
    sample = stratified_sample(many, per_class=64, total=5, seed=0)
    assert per_class(sample) == {f"k{i:02d}": 1 for i in range(12)}


def test_no_caps_keeps_everything() -> None:
    assert paths(stratified_sample(POOL, per_class=None, total=None, seed=3)) == paths(POOL)


@pytest.mark.slow
def test_defaults() -> None:
    big = records({"a": 2000, "b": 30})
    sample = stratified_sample(big)
    assert per_class(sample) == {"a": DEFAULT_PER_CLASS, "b": 30}
    many = records({f"k{i:02d}": 100 for i in range(20)})
    sample = stratified_sample(many)
    assert len(sample) <= DEFAULT_TOTAL
    assert set(per_class(sample).values()) == {min(DEFAULT_PER_CLASS, DEFAULT_TOTAL // 20)}


def test_keeps_the_input_order_and_only_input_records() -> None:
    shuffled = POOL[::-1]
    sample = stratified_sample(shuffled, per_class=10, total=None, seed=1)
    order = {p: i for i, p in enumerate(paths(shuffled))}
    assert [order[p] for p in paths(sample)] == sorted(order[p] for p in paths(sample))
    assert set(paths(sample)) <= set(paths(POOL))
    assert len(set(paths(sample))) == len(sample)


def test_a_class_within_the_cap_does_not_change_the_others_draw() -> None:
    """A class kept whole consumes no randomness: class 'a' is drawn the same with or without it."""
    alone = stratified_sample(records({"a": 100}), per_class=10, total=None, seed=4)
    assert len(alone) == 10
    together = stratified_sample(records({"a": 100, "b": 3}), per_class=10, total=None, seed=4)
    assert paths(alone) == [r.path for r in together if r.class_name == "a"]


def test_empty_input() -> None:
    assert stratified_sample([], per_class=10, total=100, seed=0) == []


def group(*names: str, cross_split: bool = False) -> DuplicateGroup:
    return DuplicateGroup(paths=list(names), splits=["all"], classes=sorted({n.split("/")[0] for n in names}),
                          cross_split=cross_split)


def test_without_duplicates_keeps_exactly_one_per_group() -> None:
    pool = records({"a": 6, "b": 6})
    groups = [group("a/0001.png", "a/0003.png", "b/0002.png"), group("b/0005.png", "b/0004.png")]
    kept = without_duplicates(pool, ROOT, groups)
    rel = [r.path.relative_to(ROOT).as_posix() for r in kept]
    assert len(kept) == 12 - 3
    for g in groups:
        assert sum(p in rel for p in g.paths) == 1
    assert "a/0001.png" in rel and "b/0004.png" in rel  # the first name in sorted order survives
    assert [r.path for r in kept] == [r.path for r in pool if r.path.relative_to(ROOT).as_posix() in rel]


def test_without_duplicates_with_no_groups_is_the_identity() -> None:
    pool = records({"a": 3, "b": 3})
    assert without_duplicates(pool, ROOT, []) == pool


def test_without_duplicates_across_splits() -> None:
    train = [ImageRecord(path=ROOT / "train" / "x" / "1.png", class_name="x", label=0, split="train", width=1,
                         height=1, mode="L", size_bytes=1, mtime_ns=1)]
    test = [ImageRecord(path=ROOT / "test" / "x" / "1.png", class_name="x", label=0, split="test", width=1,
                        height=1, mode="L", size_bytes=1, mtime_ns=1)]
    kept = without_duplicates(train + test, ROOT, [group("train/x/1.png", "test/x/1.png", cross_split=True)])
    assert [r.split for r in kept] == ["test"]  # "test/…" sorts before "train/…"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampling_after_deduplication_never_holds_two_copies(seed: int) -> None:
    pool = records({"a": 30, "b": 30})
    groups = [group(f"a/{i:04d}.png", f"b/{i:04d}.png") for i in range(0, 30, 2)]
    sample = stratified_sample(without_duplicates(pool, ROOT, groups), per_class=20, total=None, seed=seed)
    rel = {r.path.relative_to(ROOT).as_posix() for r in sample}
    for g in groups:
        assert sum(p in rel for p in g.paths) <= 1
    assert per_class(sample) == {"a": 20, "b": 15}
