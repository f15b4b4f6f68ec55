"""The one notion of noise (tl_advise.rules.statistics), on constructed cases worked out by hand."""

from __future__ import annotations

import math

import pytest

from tl_advise.rules import statistics as st


def _bits(a_only: int, b_only: int, both: int, neither: int) -> tuple[str, str]:
    """Per-image results of two strategies with the given counts of each agreement pattern."""
    a = "1" * a_only + "0" * b_only + "1" * both + "0" * neither
    b = "0" * a_only + "1" * b_only + "1" * both + "0" * neither
    return a, b


def test_paired_difference_reads_only_the_images_the_two_disagree_on() -> None:
    a, b = _bits(a_only=10, b_only=2, both=80, neither=8)
    d = st.paired(a, b)
    assert (d.a_only, d.b_only, d.n_images, d.paired) == (10, 2, 100, True)
    assert d.mean == pytest.approx(0.08)
    # d_i: ten +1, two -1, 88 zeros: variance 0.12 - 0.08^2 = 0.1136, sample variance x 100/99
    assert d.se == pytest.approx(math.sqrt(0.1136 * 100 / 99 / 100))  # 0.03387
    assert d.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # exact McNemar: P(X <= 2 | 12 coin flips) x 2
    assert d.outcome == "ahead"
    # The agreeing images change nothing: the same discordant pairs among 1,000 images give the same p-value.
    assert st.paired(*_bits(10, 2, 980, 8)).p_value == pytest.approx(d.p_value)


def test_a_gap_of_exactly_one_standard_error_is_a_tie_and_the_reverse_is_behind() -> None:
    a, b = _bits(a_only=3, b_only=1, both=90, neither=6)
    d = st.paired(a, b)
    assert d.mean == pytest.approx(0.02) and d.se == pytest.approx(0.02)  # (0.04 - 0.0004) x 100/99 / 100
    assert d.outcome == "tie"
    assert st.paired(b, a).outcome == "tie"
    assert st.paired(*_bits(1, 10, 80, 9)).outcome == "behind"


def test_one_image_apart_is_never_beyond_noise() -> None:
    d = st.paired(*_bits(a_only=1, b_only=0, both=99, neither=0))
    assert d.se == pytest.approx(0.01) and d.outcome == "tie"
    assert st.unpaired(1.0, 0.99, 100).se == pytest.approx(max(math.sqrt(0.99 * 0.01 / 100), 0.01))


def test_unpaired_difference_is_the_binomial_one_of_independent_proportions() -> None:
    d = st.unpaired(0.9, 0.8, 100)
    assert d.se == pytest.approx(math.sqrt((0.09 + 0.16) / 100))  # 0.05
    assert (d.mean, d.paired, d.outcome) == (pytest.approx(0.1), False, "ahead")
    with pytest.raises(ValueError, match="same images"):
        st.paired("101", "10")


def test_recorded_runs_pair_when_both_have_per_image_results() -> None:
    a, b = _bits(10, 2, 80, 8)
    with_bits = st.between({"accuracy": 0.9, "n_judged": 100, "correct": a}, {"accuracy": 0.82, "n_judged": 100,
                                                                              "correct": b})
    assert with_bits.paired and with_bits.se == pytest.approx(0.03387, abs=1e-5)
    without = st.between({"accuracy": 0.9, "n_judged": 100}, {"accuracy": 0.82, "n_judged": 100, "correct": b})
    assert not without.paired and without.se == pytest.approx(math.sqrt((0.9 * 0.1 + 0.82 * 0.18) / 100))


def test_seeds_on_the_same_images_do_not_average_the_image_noise_away() -> None:
    seeds = [st.Difference(0.04, 0.02, 500), st.Difference(0.06, 0.02, 500)]
    same = st.over_seeds(seeds, same_images=True)
    assert same.mean == pytest.approx(0.05)
    # image part 0.02 (shared), spread sd(0.04, 0.06) / sqrt(2) = 0.01
    assert same.se == pytest.approx(math.sqrt(0.02**2 + 0.01**2))
    independent = st.over_seeds(seeds, same_images=False)
    assert independent.se == pytest.approx(math.sqrt(2 * 0.02**2) / 2)  # 0.0141 > the spread 0.01
    noisy = st.over_seeds([st.Difference(-0.05, 0.01, 500), st.Difference(0.15, 0.01, 500)], same_images=False)
    assert noisy.se == pytest.approx(0.1) and noisy.outcome == "tie"  # the seeds disagree: the spread decides


def test_levels_of_one_dataset_count_once_across_datasets() -> None:
    by_dataset = {"a": [st.Difference(0.10, 0.03, 200), st.Difference(0.06, 0.05, 200)],
                  "b": [st.Difference(0.02, 0.02, 300)]}
    d = st.clustered(by_dataset)
    assert (d.mean, d.datasets, d.n_images) == (pytest.approx(0.05), 2, 200)
    # dataset means 0.08 (s.e. 0.04) and 0.02 (0.02): propagated sqrt(0.04^2 + 0.02^2) / 2 = 0.0224,
    # spread sd(0.08, 0.02) / sqrt(2) = 0.03: the larger
    assert d.se == pytest.approx(0.03)
    assert d.outcome == "ahead"
    # Three levels of one dataset are one dataset: no narrower than its own cases.
    one = st.clustered({"a": [st.Difference(0.05, 0.02, 100)] * 3})
    assert one.datasets == 1 and one.se == pytest.approx(0.02)
