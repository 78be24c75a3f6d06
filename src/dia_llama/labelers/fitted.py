"""The fitted decision layer: per class, a logistic regression on the binary features, pulled towards the prior.

Fitting minimises the log-loss plus ``l2 / 2 * (|w - w0|^2 + (b - b0)^2)``, where
``(w0, b0)`` is the generic reading (:meth:`~.features.FeatureSpace.prior`): with few examples the class keeps the
generic rule, with many it follows the label source. A feature the training data never shows says nothing about the
label source, so it keeps the generic reading's *decision*: a prior feature (``w0 > 0``) gets ``w0 + b0 - b``, so
that a report whose only mention it is scores ``w0 + b0`` as in the generic rule, whatever the fitted bias (without
this, a label source that never writes "opacity" but often denies findings with other words would, through its bias,
stop an affirmed "opacity" from counting). Classes with fewer than ``min_positives`` positives in the
training data are not fitted: they keep the prior (reported as such). Inference is a dot product (numpy only).
"""

from __future__ import annotations

import numpy as np


def fit_logistic(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: float, l2: float = 1.0,
                 l2_bias: float | None = None, iterations: int = 50) -> tuple[np.ndarray, float]:
    """MAP logistic regression by Newton's method: weights near ``w0`` (precision ``l2``), bias near ``b0``
    (precision ``l2_bias``, default ``l2``: a report without any mention stays absent, as in the generic rule).

    Features that are 0 in every row are not fitted: those with a zero prior weight keep it, the others get
    ``w0 + b0 - b`` (the generic decision of a report whose only mention they are). Identical rows are fitted once,
    with their count."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.array(w0, dtype=float)
    used = np.flatnonzero(x.any(0))
    rows, counts = np.unique(np.column_stack([x[:, used], y]), axis=0, return_counts=True)
    a = np.column_stack([rows[:, :-1], np.ones(len(rows))])
    target, counts = rows[:, -1], counts.astype(float)
    theta = np.append(w[used], b0)
    centre = theta.copy()
    penalty = np.append(np.full(len(used), float(l2)), float(l2 if l2_bias is None else l2_bias))

    def objective(t):
        z = a @ t
        return float(counts @ (np.logaddexp(0.0, z) - target * z) + 0.5 * np.sum(penalty * (t - centre) ** 2))

    value = objective(theta)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ theta, -30, 30)))
        grad = a.T @ (counts * (p - target)) + penalty * (theta - centre)
        hess = (a * (counts * p * (1 - p))[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:  # backtracking: Newton steps overshoot on (nearly) separable data
            candidate = theta - scale * step
            new = objective(candidate)
            if new <= value:
                break
            scale /= 2
        theta, done = candidate, value - new < 1e-10
        value = new
        if done:
            break
    w[used] = theta[:-1]
    unseen = np.setdiff1d(np.flatnonzero(np.asarray(w0) > 0), used)
    w[unseen] += b0 - theta[-1]
    return w, float(theta[-1])


def logit(x: np.ndarray, w, b: float) -> np.ndarray:
    """Decision values of the rows of ``x``: present when > 0."""
    return np.asarray(x, dtype=float) @ np.asarray(w, dtype=float) + float(b)


NO_FINDING_FEATURES = ("other class present", "other class uncertain", "abnormality described",
                       "abnormality past a negation")


def no_finding_matrix(present: list, uncertain: list, abnormal: np.ndarray) -> np.ndarray:
    """The :data:`NO_FINDING_FEATURES` of ``n`` reports from per-class present / uncertain columns."""
    n = len(abnormal)
    any_present = np.any(np.stack(present, 1), 1) if present else np.zeros(n, dtype=bool)
    any_uncertain = np.any(np.stack(uncertain, 1), 1) if uncertain else np.zeros(n, dtype=bool)
    abnormal = np.asarray(abnormal, dtype=bool).reshape(n, 2)
    return np.column_stack([any_present, any_uncertain, abnormal]).astype(float)


class DecisionLayer:
    """Per-class weights over a :class:`~.features.FeatureSpace`; ``params[class]`` = ``{"weights": {feature: w},
    "bias": b, "fitted": bool, "positives": int}`` ("no finding": over :data:`NO_FINDING_FEATURES`)."""

    def __init__(self, space, params: dict[str, dict]):
        self.space, self.params = space, params
        self._w = {}
        for cls in space.names:
            names = NO_FINDING_FEATURES if cls not in space.feature_names else space.feature_names[cls]
            p = params[cls]
            self._w[cls] = (np.array([float(p["weights"].get(f, 0.0)) for f in names]), float(p["bias"]))

    @staticmethod
    def no_finding_prior() -> tuple[np.ndarray, float]:
        """Generic "no finding": nothing present, uncertain or abnormal anywhere."""
        return np.array([-4.0, -4.0, -4.0, -4.0]), 2.0

    @classmethod
    def prior(cls, space) -> DecisionLayer:
        """The generic reading, unfitted."""
        params = {}
        for name in space.names:
            w, b = space.prior(name) if name in space.feature_names else cls.no_finding_prior()
            names = space.feature_names.get(name, NO_FINDING_FEATURES)
            params[name] = {"weights": dict(zip(names, w.tolist())), "bias": b, "fitted": False, "positives": 0}
        return cls(space, params)

    @classmethod
    def fit(cls, space, feats: dict, abnormal: np.ndarray, labels: np.ndarray, l2: float = 1.0,
            threshold: float = 0.5, min_positives: int = 5) -> DecisionLayer:
        """Fit every class with at least ``min_positives`` positives in ``labels`` (n, L) 0/1; others keep the prior.

        A fitted class is present when its probability exceeds ``threshold`` (folded into the stored bias)."""
        shift = float(np.log(threshold / (1 - threshold)))
        layer = cls.prior(space)
        params = layer.params
        for j, name in enumerate(space.names):
            if name not in space.feature_names:
                continue
            y = labels[:, j]
            params[name]["positives"] = int(y.sum())
            if y.sum() >= min_positives:
                w0, b0 = space.prior(name)
                w, b = fit_logistic(feats[name], y, w0, b0, l2=l2)
                params[name].update(weights=dict(zip(space.feature_names[name], w.tolist())), bias=b - shift,
                                    fitted=True)
        layer = cls(space, params)
        if "no finding" in space.names:
            j = space.names.index("no finding")
            y = labels[:, j]
            params["no finding"]["positives"] = int(y.sum())
            if y.sum() >= min_positives:
                w0, b0 = cls.no_finding_prior()
                w, b = fit_logistic(layer.no_finding_features(feats, abnormal), y, w0, b0, l2=l2)
                params["no finding"].update(weights=dict(zip(NO_FINDING_FEATURES, w.tolist())), bias=b - shift,
                                            fitted=True)
            layer = cls(space, params)
        return layer

    def class_present(self, feats: dict) -> dict[str, np.ndarray]:
        """Per class (but "no finding"): present (n,) bool."""
        return {c: logit(feats[c], *self._w[c]) > 0 for c in self.space.feature_names}

    def uncertain(self, feats: dict) -> dict[str, np.ndarray]:
        """Per class: whether a core concept of it was mentioned with an uncertainty cue."""
        return {c: feats[c][:, self.space.core_columns(c, ("unc",))].any(1) for c in self.space.feature_names}

    def no_finding_features(self, feats: dict, abnormal: np.ndarray) -> np.ndarray:
        present, unc = self.class_present(feats), self.uncertain(feats)
        return no_finding_matrix(list(present.values()), list(unc.values()), abnormal)

    def decide(self, feats: dict, abnormal: np.ndarray) -> np.ndarray:
        """Present (n, L) 0/1 in ``space.names`` order."""
        present = self.class_present(feats)
        cols = []
        for c in self.space.names:
            if c in present:
                cols.append(present[c])
            else:
                cols.append(logit(self.no_finding_features(feats, abnormal), *self._w[c]) > 0)
        return np.stack(cols, 1).astype(np.int64) if cols else np.zeros((len(abnormal), 0), dtype=np.int64)
