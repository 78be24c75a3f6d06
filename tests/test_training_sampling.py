"""Repeat-factor sampling: LVIS factors per class and per case, deterministic repeated indices."""

from __future__ import annotations

import numpy as np
import pytest

from dia_llama.training.sampling import case_repeat_factors, class_repeat_factors, repeated_indices


def long_tailed_labels():
    labels = np.zeros((100, 3), dtype=int)  # (cases, classes)
    labels[:60, 0] = 1  # common: f = 0.60
    labels[:4, 1] = 1  # rare: f = 0.04, also in common cases
    labels[90:91, 2] = -1  # unknown is not present: class 2 never occurs
    return labels


def test_class_factors_follow_lvis():
    factors = class_repeat_factors(long_tailed_labels(), threshold=0.16)
    # common class f >= t: 1; rare class sqrt(0.16 / 0.04) = 2; a class no case has: 1
    np.testing.assert_allclose(factors, [1.0, 2.0, 1.0])


def test_case_factor_is_that_of_its_rarest_finding():
    factors = case_repeat_factors(long_tailed_labels(), threshold=0.16)
    assert factors.shape == (100,)
    np.testing.assert_allclose(factors[:4], 2.0)  # common + rare finding
    np.testing.assert_allclose(factors[4:], 1.0)  # common only, or nothing


def test_repeated_indices_round_stochastically_and_deterministically():
    factors = np.array([1.0, 2.0, 1.5, 3.25] * 250)
    indices = repeated_indices(factors, seed=3)
    assert indices == repeated_indices(factors, seed=3) and indices != repeated_indices(factors, seed=4)
    counts = np.bincount(indices, minlength=len(factors))
    assert (counts[0::4] == 1).all() and (counts[1::4] == 2).all()
    assert set(counts[2::4]) == {1, 2} and set(counts[3::4]) == {3, 4}
    assert counts[2::4].mean() == pytest.approx(1.5, abs=0.1) and counts[3::4].mean() == pytest.approx(3.25, abs=0.1)
    assert indices == sorted(indices)  # case order; the Trainer's sampler shuffles


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="threshold must be > 0"):
        class_repeat_factors(long_tailed_labels(), threshold=0)
    with pytest.raises(ValueError, match="cases, classes"):
        class_repeat_factors(np.zeros(5), threshold=0.1)
    with pytest.raises(ValueError, match=">= 1"):
        repeated_indices([1.0, 0.5])
