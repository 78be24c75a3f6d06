"""Per-disease decision thresholds: the F1-optimal choice, the config field and its use by `diagnose`."""

import numpy as np
import pytest
import torch

from dia_llama.evaluation.calibration import (
    decisions,
    f1_at,
    f1_optimal_thresholds,
    micro_f1,
    micro_f1_optimal_thresholds,
)
from dia_llama.presets import build_model_and_processor


def test_f1_at_hand_computed():
    probs = np.array([0.9, 0.6, 0.4, 0.2])
    labels = np.array([1, 0, 1, 0])
    assert f1_at(probs, labels, 0.5) == pytest.approx(2 * 1 / (2 + 2))  # tp 1, predicted 2, positives 2
    assert f1_at(probs, labels, 0.3) == pytest.approx(2 * 2 / (3 + 2))
    assert f1_at(np.zeros(3), np.zeros(3), 0.5) == 0.0  # nothing to find, nothing predicted


def test_thresholds_maximise_f1_and_keep_default_for_rare_columns():
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 3), dtype=int)
    labels[:10, 0] = 1  # column 0: positives score 0.30-0.40, negatives 0.05-0.15 → best threshold in [0.15, 0.30],
    #                     the nearest to 0.5 on ties
    labels[:3, 1] = 1  # column 1: 3 positives < min_positives → stays 0.5
    labels[:20, 2] = 1  # column 2: already separated at 0.5 → ties resolved towards 0.5
    probs = np.empty((40, 3))
    probs[:, 0] = np.where(labels[:, 0] == 1, rng.uniform(0.30, 0.40, 40), rng.uniform(0.05, 0.15, 40))
    probs[:, 1] = rng.uniform(0, 1, 40)
    probs[:, 2] = np.where(labels[:, 2] == 1, 0.9, 0.1)
    t = f1_optimal_thresholds(probs, labels, min_positives=5)
    assert 0.15 <= t[0] <= 0.30 and f1_at(probs[:, 0], labels[:, 0], t[0]) == 1.0
    assert t[1] == 0.5
    assert t[2] == 0.5
    with pytest.raises(ValueError, match="must both be"):
        f1_optimal_thresholds(probs[:, 0], labels[:, 0])


def unlearnt_finding_case():
    """Column 0 learnt but shifted low (positives 0.30-0.40), column 1 not learnt (10 % positives, every case at
    0.06-0.09), column 2 a derived "no finding" (no other column present)."""
    rng = np.random.default_rng(1)
    n = 100
    labels = np.zeros((n, 3), dtype=int)
    labels[:40, 0] = 1
    labels[35:45, 1] = 1
    labels[:, 2] = (labels[:, :2] == 0).all(1)
    probs = np.empty((n, 3))
    probs[:, 0] = np.where(labels[:, 0] == 1, rng.uniform(0.30, 0.40, n), rng.uniform(0.0, 0.1, n))
    probs[:, 1] = rng.uniform(0.06, 0.09, n)
    probs[:, 2] = 0.5
    return probs, labels


def test_per_class_objective_predicts_an_unlearnt_finding_everywhere():
    probs, labels = unlearnt_finding_case()
    t = f1_optimal_thresholds(probs, labels)
    assert t[1] == 0.05  # every case "present": F1 2·0.1/1.1 = 0.18 beats 0 for the column alone
    assert decisions(probs, t, derived_column=2)[:, 1].all()


def test_micro_objective_keeps_an_unlearnt_finding_off_and_beats_per_class():
    probs, labels = unlearnt_finding_case()
    t = micro_f1_optimal_thresholds(probs, labels, derived_column=2)
    assert 0.1 <= t[0] <= 0.30 and t[1] == 0.5 and t[2] == 0.5
    micro = micro_f1(decisions(probs, t, derived_column=2), labels)
    per_class = micro_f1(decisions(probs, f1_optimal_thresholds(probs, labels), derived_column=2), labels)
    # micro: column 0 right (40 TP), column 1 missed (10 FN), "no finding" on cases 40-99 (55 TP, 5 FP)
    assert micro == pytest.approx(2 * 95 / (2 * 95 + 5 + 10))
    # per class: column 1 everywhere (10 TP, 90 FP), so "no finding" is never derived (55 FN)
    assert per_class == pytest.approx(2 * 50 / (2 * 50 + 90 + 55))
    assert micro_f1(decisions(probs, [0.5] * 3, derived_column=2), labels) < micro
    with pytest.raises(ValueError, match="must both be"):
        micro_f1_optimal_thresholds(probs[:, 0], labels[:, 0])


def test_diagnose_uses_config_thresholds():
    # attention over all patches, so that diagnose runs from patch features alone (no volume for the body mask)
    model, _ = build_model_and_processor("tiny", disease_attention_min_intensity=None)
    names = model.config.disease_names
    logits = torch.zeros(1, len(names))
    logits[0, names.index("lung lesion")] = -1.0  # p = 0.27
    model.model.disease_branch.forward = lambda feats, legacy=False, patch_mask=None: (None, logits)
    feats = torch.zeros(1, 1, 96)
    lesion = names.index("lung lesion")
    assert not model.model.diagnose(patch_features=feats).present[0, lesion]
    thresholds = [0.5] * len(names)
    thresholds[lesion] = 0.2
    model.config.diagnosis_thresholds = thresholds
    assert model.model.diagnose(patch_features=feats).present[0, lesion]
    assert not model.model.diagnose(patch_features=feats, threshold=0.5).present[0, lesion]  # explicit wins


@pytest.mark.parametrize("bad", [[0.5] * 3, [0.0] * 14, [1.2] + [0.5] * 13])
def test_invalid_thresholds_raise(bad):
    from dia_llama import DiaLlamaConfig

    with pytest.raises(ValueError, match="diagnosis_thresholds"):
        DiaLlamaConfig(diagnosis_thresholds=bad)
