"""Per-disease decision thresholds of the disease branch, chosen on a held-out split.

The disease prototype memory decides "present" when a disease feature is closer to the abnormal prototype
(probability > 0.5). On a small, imbalanced training set a finding the branch has only partly learnt sits on the
wrong side of 0.5 for every case and is never reported. Choosing each disease's threshold to maximise F1 on the
validation split (standard practice for multi-label medical classifiers) fixes that; the thresholds are stored in
``config.diagnosis_thresholds`` and used by ``diagnose`` and ``generate``. Diseases with too few positives in the
split keep 0.5 (a threshold tuned on a handful of cases would be noise).
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import _prf

DEFAULT_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


def f1_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of `probabilities > threshold` against binary `labels` (1-D); 0 when there is nothing to find or predict."""
    predicted, positive = probabilities > threshold, labels == 1
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


@torch.no_grad()
def diagnose_dataset(model, dataset, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The disease branch's probabilities (N, L) on a dataset of {pixel_values, disease_labels} items, and the labels."""
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


def calibrate_thresholds(model, dataset, min_positives: int = 5, batch_size: int = 16) -> dict:
    """Set ``model.config.diagnosis_thresholds`` from `dataset` (the validation split); returns a report with the
    thresholds and the split's F1 per disease at 0.5 and at the chosen threshold."""
    probabilities, labels = diagnose_dataset(model, dataset, batch_size)
    names = list(model.config.disease_names)
    thresholds = f1_optimal_thresholds(probabilities, labels, min_positives=min_positives)
    if getattr(model.config, "derive_no_finding", False) and "no finding" in names:
        thresholds[names.index("no finding")] = 0.5  # unused: derived from the other decisions
    model.config.diagnosis_thresholds = thresholds
    per_disease = {
        name: {"threshold": t, "positives": int((labels[:, j] == 1).sum()),
               "f1_at_0.5": round(f1_at(probabilities[:, j], labels[:, j], 0.5), 4),
               "f1_at_threshold": round(f1_at(probabilities[:, j], labels[:, j], t), 4)}
        for j, (name, t) in enumerate(zip(names, thresholds))
    }
    return {"cases": int(len(labels)), "min_positives": min_positives, "per_disease": per_disease}


__all__ = ["f1_at", "f1_optimal_thresholds", "diagnose_dataset", "calibrate_thresholds"]
