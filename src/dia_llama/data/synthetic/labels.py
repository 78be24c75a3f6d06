"""Disease labels of the synthetic cases: validation, prevalences and sampling."""

from __future__ import annotations

import numpy as np

from ...configuration_dia_llama import DISEASE_SETS
from .constants import DEFAULT_PREVALENCE, FINDING_KIND, NO_FINDING


def disease_names(disease_set: str) -> list[str]:
    """All diseases of the set (with "no finding" where the set has it); ValueError for an unknown set."""
    if disease_set not in DISEASE_SETS or disease_set not in FINDING_KIND:
        raise ValueError(f"unknown disease set {disease_set!r}; choose one of {sorted(FINDING_KIND)}")
    return list(DISEASE_SETS[disease_set])


def sampled_diseases(disease_set: str) -> list[str]:
    """The diseases that are sampled / painted (all but "no finding")."""
    return [d for d in disease_names(disease_set) if d != NO_FINDING]


def normalize_labels(labels: dict, disease_set: str) -> dict[str, int]:
    """{disease: 0|1} for every disease of the set, in the set's order; "no finding" derived."""
    names = disease_names(disease_set)
    unknown = set(labels) - set(names)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in disease set {disease_set!r}")
    out = {d: int(bool(labels.get(d, 0))) for d in names if d != NO_FINDING}
    if NO_FINDING in names:
        out[NO_FINDING] = int(not any(out.values()))
    return {d: out[d] for d in names}


def resolve_prevalence(disease_set: str, prevalence) -> dict[str, float]:
    """The default prevalences of the set overridden by `prevalence` ({disease: probability})."""
    names = sampled_diseases(disease_set)
    prev = dict(DEFAULT_PREVALENCE[disease_set])
    if prevalence is not None:
        if not isinstance(prevalence, dict):
            raise TypeError("prevalence must be a dict {disease: probability}")
        unknown = set(prevalence) - set(names)
        if unknown:
            raise ValueError(f"prevalence has diseases {sorted(unknown)} not sampled in {disease_set!r} "
                             f"(\"no finding\" is derived)")
        for d, p in prevalence.items():
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"prevalence of {d!r} must be in [0, 1], got {p}")
            prev[d] = float(p)
    return {d: prev[d] for d in names}


def sample_labels(rng: np.random.Generator, num_cases: int, disease_set: str = "chexpert14", prevalence=None,
                  min_positives: int = 0) -> list[dict[str, int]]:
    """Independent Bernoulli labels per disease; "no finding" = 1 exactly when nothing else is present.

    `prevalence` overrides the defaults per disease. `min_positives` forces at least that many positives
    (capped at num_cases) for every disease with prevalence > 0, so rare classes always occur.
    """
    names = disease_names(disease_set)
    prev = resolve_prevalence(disease_set, prevalence)
    sampled = list(prev)
    p = np.array([prev[d] for d in sampled])
    positive = rng.random((num_cases, len(sampled))) < p[None, :]  # (N, C)
    for j in range(len(sampled)):
        need = min(min_positives, num_cases) - int(positive[:, j].sum())
        if p[j] > 0 and need > 0:
            free = np.flatnonzero(~positive[:, j])
            positive[rng.choice(free, size=need, replace=False), j] = True
    rows = []
    for i in range(num_cases):
        row = {d: int(positive[i, j]) for j, d in enumerate(sampled)}
        rows.append(normalize_labels(row, disease_set) if NO_FINDING in names else row)
    return rows
