"""The paired randomization test behind the table's significance marks."""

import numpy as np

from seqrerank.significance import paired_randomization_test


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
