"""The paired randomization test behind the table's significance marks."""

import numpy as np
import pytest
from scipy import stats

from seqrerank.significance import holm, paired_randomization_test


def test_identical_systems_are_not_significant() -> None:
    a = np.array([0.0, 1.0, 0.5, 0.3])
    assert paired_randomization_test(a, a) == 1.0


def test_a_consistent_improvement_is_significant() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(500)
    assert paired_randomization_test(base + 0.05, base, permutations=2000) < 0.001


def test_noise_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300)
    assert paired_randomization_test(a, b, permutations=2000) > 0.05


def test_p_value_matches_exact_enumeration_on_a_small_sample() -> None:
    # Differences 1, 2, 3: of the 8 sign patterns, only +++ and --- reach |mean| 2, so p = 2/8.
    a, b = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    p = paired_randomization_test(a, b, permutations=20_000, seed=3)
    assert abs(p - 0.25) < 0.02


@pytest.mark.parametrize("seed", range(4))
def test_p_value_equals_scipys_paired_permutation_test(seed: int) -> None:
    """scipy enumerates all 2^12 sign patterns exactly; per-user NDCG-like values with ties
    and zeros, as in the table."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random(12) < 0.5, 0.0, rng.choice([1.0, 0.63, 0.5, 0.43], 12))
    b = np.where(rng.random(12) < 0.6, 0.0, rng.choice([1.0, 0.63, 0.5, 0.43], 12))
    exact = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=10_000,
    ).pvalue
    ours = paired_randomization_test(a, b, permutations=40_000, seed=seed)
    assert abs(ours - exact) < 0.01, (ours, exact)


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.02, 0.03, 0.2 times 4, 3, 2, 1 -> 0.04, 0.06, 0.06, 0.2; order restored.
    adjusted = holm(np.array([0.03, np.nan, 0.01, 0.2, 0.02]))
    assert np.allclose(adjusted, [0.06, np.nan, 0.04, 0.2, 0.06], equal_nan=True)


def test_holm_is_capped_at_one_and_never_below_the_raw_p_value() -> None:
    p = np.random.default_rng(0).random(50)
    adjusted = holm(p)
    assert (adjusted >= p).all() and (adjusted <= 1).all()
    assert holm(np.array([0.6, 0.7]))[0] == 1.0
