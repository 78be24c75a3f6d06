"""Repeat-factor sampling for long-tailed multi-label data (LVIS, Gupta et al. 2019).

CT report data sets are long-tailed: in CTRG-Chest lung lesion is positive in 57 % of the cases and edema in 0.6 %.
Repeat-factor sampling shows a case more often when it holds a rare finding, without touching the loss:

    f_c = fraction of cases with finding c          (present = label 1; 0 and -1 are not)
    r_c = max(1, sqrt(t / f_c))                      (classes with f_c >= t are not repeated)
    r_i = max over the findings c present in case i of r_c   (1 for a case with none)

Each case then appears floor(r_i) times plus once more with probability frac(r_i), drawn once from a seed, so the
repeated index list (and with it the Trainer's shuffling and `--resume_from_checkpoint`) is deterministic.
Decision thresholds calibrated on an unrepeated validation split absorb the shift in class priors.
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_repeat_factors", "case_repeat_factors", "repeated_indices"]


def _present(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"labels must be (cases, classes) with at least one case, got shape {labels.shape}")
    return labels == 1  # (N, L)


def class_repeat_factors(labels, threshold: float) -> np.ndarray:
    """(N, L) labels → (L,) r_c = max(1, sqrt(threshold / f_c)); 1 for a class no case has."""
    if not threshold > 0:
        raise ValueError(f"the repeat-factor threshold must be > 0, got {threshold}")
    frequency = _present(labels).mean(axis=0)  # (L,)
    with np.errstate(divide="ignore"):
        factors = np.sqrt(threshold / frequency)
    return np.where(frequency > 0, np.maximum(factors, 1.0), 1.0)


def case_repeat_factors(labels, threshold: float) -> np.ndarray:
    """(N, L) labels → (N,) r_i, the largest r_c over the classes present in each case (1 if none)."""
    present = _present(labels)
    factors = class_repeat_factors(labels, threshold)  # (L,)
    return np.where(present, factors[None, :], 1.0).max(axis=1)


def repeated_indices(case_factors, seed: int = 0) -> list[int]:
    """Case indices, case i repeated floor(r_i) times plus once with probability frac(r_i) (stochastic rounding
    drawn once from `seed`), in case order."""
    case_factors = np.asarray(case_factors, dtype=np.float64)
    if case_factors.ndim != 1 or (case_factors < 1).any():
        raise ValueError("repeat factors must be a 1-D array of values >= 1")
    whole = np.floor(case_factors)
    extra = np.random.default_rng(seed).random(len(case_factors)) < case_factors - whole
    counts = (whole + extra).astype(np.int64)
    return np.repeat(np.arange(len(case_factors)), counts).tolist()
