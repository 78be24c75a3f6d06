"""Per-disease decision thresholds of the disease branch, chosen on a held-out split.

The disease prototype memory decides "present" when a disease feature is closer to the abnormal prototype
(probability > 0.5). On a small, imbalanced training set a finding the branch has only partly learnt sits on the
wrong side of 0.5 for every case and is never reported. Choosing the thresholds on the validation split (standard
practice for multi-label medical classifiers) fixes that; they are stored in ``config.diagnosis_thresholds`` and used
by ``diagnose`` and ``generate``. Diseases with too few positives in the split keep 0.5 (a threshold tuned on a
handful of cases would be noise).

Two objectives. ``micro`` (the default) maximises the micro-F1 over all diseases by coordinate ascent, one disease at a
time, with a derived "no finding" recomputed from the others: a finding the branch has not learnt keeps a threshold
that predicts it rarely. ``per_class`` maximises each disease's own F1; for an unlearnt finding that is often "predict
it everywhere" (F1 = 2p/(1+p) at prevalence p), which floods every report with false findings.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import _prf

DEFAULT_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
OBJECTIVES = ("micro", "per_class")


def f1_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of `probabilities > threshold` against binary `labels` (1-D); 0 when there is nothing to find or predict."""
    return micro_f1(probabilities > threshold, labels)


def micro_f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Micro-F1 of boolean predictions against binary labels of the same shape ((N,) or (N, L))."""
    positive = labels == 1
    return float(_prf((predicted & positive).sum(), (predicted & ~positive).sum(), (~predicted & positive).sum())[2])


def f1_optimal_thresholds(probabilities, labels, min_positives: int = 5, default: float = 0.5,
                          grid=DEFAULT_GRID) -> list[float]:
    """Per-column threshold from `grid` maximising F1; ties go to the threshold nearest `default`.

    probabilities, labels: (N, L). Columns with fewer than `min_positives` positives keep `default`.
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if probabilities.shape != labels.shape or probabilities.ndim != 2:
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be (N, L)")
    candidates = sorted(grid, key=lambda t: abs(t - default))  # stable max → the nearest to `default` wins ties
    thresholds = []
    for j in range(labels.shape[1]):
        if (labels[:, j] == 1).sum() < min_positives:
            thresholds.append(float(default))
            continue
        scores = [f1_at(probabilities[:, j], labels[:, j], t) for t in candidates]
        thresholds.append(float(candidates[int(np.argmax(scores))]))
    return thresholds


def decisions(probabilities: np.ndarray, thresholds, derived_column: int | None = None) -> np.ndarray:
    """(N, L) booleans `probabilities > thresholds`; `derived_column` (e.g. "no finding") = none of the others."""
    predicted = probabilities > np.asarray(thresholds, dtype=np.float64)[None, :]
    if derived_column is not None:
        others = np.delete(predicted, derived_column, axis=1)
        predicted[:, derived_column] = ~others.any(axis=1)
    return predicted


def micro_f1_optimal_thresholds(probabilities, labels, min_positives: int = 5, default: float = 0.5, grid=DEFAULT_GRID,
                                derived_column: int | None = None, max_rounds: int = 5) -> list[float]:
    """Thresholds maximising the micro-F1 over all columns, by coordinate ascent from `default` (a column's threshold
    moves only when that raises the micro-F1; ties go to the threshold nearest `default`).

    probabilities, labels: (N, L). Columns with fewer than `min_positives` positives keep `default`; `derived_column`
    is not thresholded but recomputed as "none of the others" (see `decisions`).
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if probabilities.shape != labels.shape or probabilities.ndim != 2:
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be (N, L)")
    candidates = sorted(grid, key=lambda t: abs(t - default))
    thresholds = [float(default)] * labels.shape[1]
    tunable = [j for j in range(labels.shape[1]) if j != derived_column and (labels[:, j] == 1).sum() >= min_positives]
    best = micro_f1(decisions(probabilities, thresholds, derived_column), labels)
    for _ in range(max_rounds):
        changed = False
        for j in tunable:
            for t in candidates:
                trial = [*thresholds[:j], float(t), *thresholds[j + 1:]]
                score = micro_f1(decisions(probabilities, trial, derived_column), labels)
                if score > best + 1e-12:
                    best, thresholds, changed = score, trial, True
        if not changed:
            break
    return thresholds


@torch.no_grad()
def diagnose_dataset(model, dataset, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The disease branch's probabilities (N, L) on a dataset of {pixel_values, disease_labels} items, and the
    labels."""
    was_training = model.training
    model.eval()
    probabilities, labels = [], []
    device = next(model.parameters()).device
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        pixel_values = torch.stack([torch.as_tensor(item["pixel_values"]) for item in items]).to(device)
        probabilities.append(model.diagnose(pixel_values, threshold=0.5).probabilities.float().cpu().numpy())
        labels += [item["disease_labels"] for item in items]
    model.train(was_training)
    return np.concatenate(probabilities), np.asarray(labels)


def calibrate_thresholds(model, dataset, min_positives: int = 5, batch_size: int = 16,
                         objective: str = "micro") -> dict:
    """Set ``model.config.diagnosis_thresholds`` from `dataset` (the validation split) for `objective` (``micro`` |
    ``per_class``, see the module docstring); returns a report with the thresholds, the split's micro-F1 and each
    disease's F1 at 0.5 and at the chosen thresholds."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    probabilities, labels = diagnose_dataset(model, dataset, batch_size)
    names = list(model.config.disease_names)
    derives = getattr(model.config, "derive_no_finding", False) and "no finding" in names
    derived = names.index("no finding") if derives else None
    if objective == "micro":
        thresholds = micro_f1_optimal_thresholds(probabilities, labels, min_positives=min_positives,
                                                 derived_column=derived)
    else:
        thresholds = f1_optimal_thresholds(probabilities, labels, min_positives=min_positives)
    if derived is not None:
        thresholds[derived] = 0.5  # unused: derived from the other decisions
    model.config.diagnosis_thresholds = thresholds
    at_default = decisions(probabilities, [0.5] * len(names), derived)  # (N, L)
    at_chosen = decisions(probabilities, thresholds, derived)
    per_disease = {
        name: {"threshold": t, "positives": int((labels[:, j] == 1).sum()),
               "f1_at_0.5": round(micro_f1(at_default[:, j : j + 1], labels[:, j : j + 1]), 4),
               "f1_at_threshold": round(micro_f1(at_chosen[:, j : j + 1], labels[:, j : j + 1]), 4)}
        for j, (name, t) in enumerate(zip(names, thresholds))
    }
    return {"cases": int(len(labels)), "min_positives": min_positives, "objective": objective,
            "micro_f1_at_0.5": round(micro_f1(at_default, labels), 4),
            "micro_f1_at_thresholds": round(micro_f1(at_chosen, labels), 4), "per_disease": per_disease}


__all__ = ["OBJECTIVES", "f1_at", "f1_optimal_thresholds", "micro_f1", "decisions", "micro_f1_optimal_thresholds",
           "diagnose_dataset", "calibrate_thresholds"]
