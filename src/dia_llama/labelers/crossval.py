"""Evaluation protocol of the fitted labelers: a locked-away fold, seeded k-fold splits of the rest.

The locked fold is fixed by a rule chosen before any labeler work: a report is locked when the SHA-256 of its id
(the CTRG ``id`` or the CT-RATE ``AccessionNo`` as text) is 0 modulo 5 -- 79 of the 362 CheXbert-labelled CTRG
test reports (43 of the 180 odd ids of the first round, 36 of the 182 even ones) and 157 of the 800 CT-RATE
reports. Locked reports are never used to fit, to choose a setting or to look at errors; they are scored once, by
a model fitted on all other reports.

CheXbert labels: ``../shared/data/ctrg_chest/chexbert_labels_dev.csv`` holds the 180 odd ids (the first round's
data); the labels of all 362 test reports were copied from the research code's repository into
``tests/fixtures/ctrg_chexbert/`` (a source checkout only; its README gives the provenance).
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np

LOCK_MODULUS = 5
CHEXBERT_FILES = ("ctrg_chest/test_reports.csv", "ctrg_chest/chexbert_labels_dev.csv")
CHEXBERT_TEST_LABELS = (Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "ctrg_chexbert"
                        / "chexbert_labels_test.csv")
CTRATE_FILE = "ct_rate/manual_labels_train.csv"


def is_locked(report_id) -> bool:
    """Whether a report belongs to the locked-away fold (SHA-256 of its id as text, 0 modulo 5)."""
    return int(hashlib.sha256(str(report_id).encode("utf-8")).hexdigest(), 16) % LOCK_MODULUS == 0


def kfold_indices(n: int, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint test folds covering ``range(n)`` after a seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


def _chexbert_reports(data_dir, labels_csv) -> tuple[list[str], list[str], np.ndarray]:
    from ..configuration_dia_llama import CHEXPERT_14

    with open(Path(data_dir) / CHEXBERT_FILES[0], encoding="utf-8") as f:
        text = {r["id"]: r["ground_truth"] for r in csv.DictReader(f)}
    with open(labels_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    codes = np.array([[int(r[c.replace(" ", "_")]) for c in CHEXPERT_14] for r in rows], dtype=np.int64)
    return [r["id"] for r in rows], [text[r["id"]] for r in rows], codes


def load_chexbert_dev(data_dir) -> tuple[list[str], list[str], np.ndarray]:
    """The 180 CheXbert-labelled CTRG reports of the shared data (the odd ids; the first round's data): ids, texts,
    4-state codes (n, 14) in ``CHEXPERT_14`` order."""
    return _chexbert_reports(data_dir, Path(data_dir) / CHEXBERT_FILES[1])


def load_chexbert_test(data_dir, labels_csv=CHEXBERT_TEST_LABELS) -> tuple[list[str], list[str], np.ndarray]:
    """All 362 CheXbert-labelled CTRG test reports (labels from the research code's repository, texts from the
    shared data): ids, texts, 4-state codes (n, 14) in ``CHEXPERT_14`` order."""
    return _chexbert_reports(data_dir, labels_csv)


def unseen_chexbert_predictions(data_dir, classes: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A CheXbert-compatible decision layer (`classes`: its per-class parameters) on the test reports that are not in
    the 180 of `load_chexbert_dev`: truth (n, 14) 0/1 ("present" only), predictions (n, 14), class names."""
    from .fitted import DecisionLayer
    from .params import build_space

    seen = set(load_chexbert_dev(data_dir)[0])
    ids, texts, codes = load_chexbert_test(data_dir)
    keep = [i for i, x in enumerate(ids) if x not in seen]
    space = build_space("chexbert")
    feats, abnormal = space.transform([texts[i] for i in keep])
    predicted = DecisionLayer(space, classes).decide(feats, abnormal)
    return (codes[keep] == 1).astype(np.int64), predicted, list(space.names)


def load_ctrate_manual(data_dir) -> tuple[list[str], list[str], np.ndarray]:
    """The 800 hand-labelled CT-RATE reports: ids, texts, 0/1 labels (n, 18) in ``CT_RATE_18`` order."""
    from ..configuration_dia_llama import CT_RATE_18

    with open(Path(data_dir) / CTRATE_FILE, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = {k.strip().lower(): k for k in rows[0]}
    labels = np.array([[int(float(r[columns[c]])) for c in CT_RATE_18] for r in rows], dtype=np.int64)
    return [r["AccessionNo"] for r in rows], [r["report_text"] for r in rows], labels


L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
THRESHOLD_GRID = (0.5,)


def _rows(feats: dict, idx) -> dict:
    return {c: v[idx] for c, v in feats.items()}


def _micro_f1(y: np.ndarray, p: np.ndarray) -> float:
    tp = int((y & p).sum())
    denom = int(y.sum() + p.sum())
    return 2 * tp / denom if denom else 0.0


def choose_setting(space, feats, abnormal, labels, k: int = 5, seed: int = 1000) -> dict:
    """The ``l2`` / ``threshold`` with the best pooled micro-F1 in a k-fold CV of the given (training) reports."""
    from .fitted import DecisionLayer

    n = len(abnormal)
    folds = kfold_indices(n, k, seed)
    best, best_f1 = None, -1.0
    for l2 in L2_GRID:
        for threshold in THRESHOLD_GRID:
            pred = np.zeros_like(labels)
            for fold in folds:
                train = np.setdiff1d(np.arange(n), fold)
                layer = DecisionLayer.fit(space, _rows(feats, train), abnormal[train], labels[train], l2=l2,
                                          threshold=threshold)
                pred[fold] = layer.decide(_rows(feats, fold), abnormal[fold])
            f1 = _micro_f1(labels.astype(bool), pred.astype(bool))
            if f1 > best_f1 + 1e-12:
                best, best_f1 = {"l2": l2, "threshold": threshold}, f1
    return best


def fit_with_inner_cv(space, feats, abnormal, labels):
    """A :class:`~.fitted.DecisionLayer` fitted on all given reports, its setting chosen by CV on them only."""
    from .fitted import DecisionLayer

    setting = choose_setting(space, feats, abnormal, labels)
    return DecisionLayer.fit(space, feats, abnormal, labels, **setting), setting


def cross_validated_predictions(space, feats, abnormal, labels, k: int = 5, seed: int = 0):
    """Held-out predictions (n, L) of a seeded k-fold CV (setting chosen inside each training part) and the folds."""
    n = len(abnormal)
    folds = kfold_indices(n, k, seed)
    pred = np.zeros_like(labels)
    chosen = []
    for fold in folds:
        train = np.setdiff1d(np.arange(n), fold)
        layer, setting = fit_with_inner_cv(space, _rows(feats, train), abnormal[train], labels[train])
        pred[fold] = layer.decide(_rows(feats, fold), abnormal[fold])
        chosen.append(setting)
    return pred, folds, chosen


# ------------------------------------------------------------------------------ label consistency
def _ceiling(keys: list, y: np.ndarray) -> tuple[int, int, int]:
    """TP, FP, FN of the best labeler that gives one answer per key (the majority label of its reports)."""
    groups: dict = {}
    for key, label in zip(keys, y):
        groups.setdefault(key, []).append(int(label))
    tp = fp = fn = 0
    for labels in groups.values():
        pos = sum(labels)
        if pos > len(labels) - pos:
            tp, fp = tp + pos, fp + len(labels) - pos
        else:
            fn += pos
    return tp, fp, fn


def _loo_ceiling(keys: list, y: np.ndarray) -> tuple[int, int, int]:
    """TP, FP, FN when each report gets the majority label of the *other* reports with its key (ties: absent), and
    a report whose key no other report has is counted as right (an oracle there: the bound stays an upper bound on
    what reading only the key can do held-out, short of that oracle)."""
    groups: dict = {}
    for key, label in zip(keys, y):
        groups.setdefault(key, []).append(int(label))
    tp = fp = fn = 0
    for labels in groups.values():
        pos, n = sum(labels), len(labels)
        for label in labels:
            if n == 1:
                tp += label
                continue
            others = pos - label
            present = others > (n - 1) - others
            tp += label and present
            fp += (not label) and present
            fn += label and not present
    return tp, fp, fn


def _f1(c) -> float:
    return float(2 * c[0] / max(1, 2 * c[0] + c[1] + c[2]))


def label_consistency(space, texts, labels, feats, abnormal, min_reports: int = 4) -> dict:
    """How consistently the label source labels identical wording (unlocked reports only).

    Per class, reports are grouped by the set of their sentences that mention a concept of the class (digits as
    ``#``): ``mixed`` lists the groups of at least ``min_reports`` reports labelled both ways; ``text_ceiling`` is the
    micro-F1 of the best labeler that reads only those sentences (majority label per group, in-sample: an upper
    bound); ``feature_ceiling`` the same per distinct feature vector of this labeler. The ``_loo`` variants give each
    report the majority label of the other reports of its group (:func:`_loo_ceiling`): held-out versions of the
    same bounds. ``per_class`` holds the four F1 values per class."""
    from .context import Document
    from .fitted import DecisionLayer

    docs = [Document(t) for t in texts]
    nf = DecisionLayer.prior(space).no_finding_features(feats, abnormal) if "no finding" in space.names else None
    kinds = ("text_ceiling", "feature_ceiling", "text_ceiling_loo", "feature_ceiling_loo")
    totals, mixed, per_class = {k: np.zeros(3, int) for k in kinds}, [], {}
    for j, cls in enumerate(space.names):
        if cls in space.concepts:
            keys = []
            for doc in docs:
                sentences = set()
                for k in space.concepts[cls]:
                    for m in k.regex.finditer(doc.text):
                        c = doc.clause_at(m.start())
                        if c is not None:
                            sentences.add(re.sub(r"\d+(?:\.\d+)?", "#", " ".join(doc.sentence(c).split())))
                keys.append(tuple(sorted(sentences)))
            rows = feats[cls]
        else:
            keys, rows = [" ".join(d.text.split()) for d in docs], nf
        fkeys = [r.tobytes() for r in rows]
        counts = {"text_ceiling": _ceiling(keys, labels[:, j]), "feature_ceiling": _ceiling(fkeys, labels[:, j]),
                  "text_ceiling_loo": _loo_ceiling(keys, labels[:, j]),
                  "feature_ceiling_loo": _loo_ceiling(fkeys, labels[:, j])}
        for k, c in counts.items():
            totals[k] += c
        per_class[cls] = {k: _f1(c) for k, c in counts.items()}
        groups: dict = {}
        for key, label in zip(keys, labels[:, j]):
            groups.setdefault(key, []).append(int(label))
        for key, ls in groups.items():
            if len(ls) >= min_reports and 0 < sum(ls) < len(ls):
                mixed.append({"class": cls, "sentences": list(key) if isinstance(key, tuple) else [key],
                              "reports": len(ls), "positive": sum(ls)})
    mixed.sort(key=lambda m: -m["reports"])
    return {**{f"{k}_micro_f1": _f1(c) for k, c in totals.items()}, "per_class": per_class, "mixed": mixed}
