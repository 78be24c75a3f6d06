"""Report -> per-class binary features: which concept was mentioned with which context status.

For class ``c`` with concepts ``k``, the features are ``"k:status"`` for every :data:`~.context.STATUSES` value
(1 when the report holds at least one such mention), plus ``"k:pos_out"`` for lung classes: an affirmed mention whose
nearest anatomy word (in its clause, else its sentence) names another organ (it then does not count as ``"k:pos"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .context import STATUSES, Document
from .vocabulary import ABNORMAL, LUNG_CLASSES, LUNG_WORDS, OTHER_ORGANS, Concept

NO_FINDING = "no finding"
PRIOR_STATUSES = ("pos", "neg_wide")  # the generic reading: a comma ends a negation's scope


def _outside_lung(doc: Document, start: int) -> bool:
    """Whether the anatomy word nearest to the mention in its clause (else its sentence) is not a lung word."""
    c = doc.clause_at(start)
    for a, b in ((c.start, c.end), (c.sent_start, c.sent_end)):
        words = [(abs(m.start() - start), True) for m in LUNG_WORDS.finditer(doc.text, a, b)]
        words += [(abs(m.start() - start), False) for m in OTHER_ORGANS.finditer(doc.text, a, b)]
        if words:
            return not min(words)[1]
    return False


def mention_status(doc: Document, concept: Concept, match, lung: bool) -> str | None:
    """Status of one regex match of ``concept`` (``pos_out``: affirmed, extra-pulmonary; None: not a mention)."""
    status = doc.status(match.start(), match.end())
    if status is None:
        return None
    if status == "pos" and lung and _outside_lung(doc, match.start()):
        return "pos_out"
    return status


def concept_statuses(doc: Document, concept: Concept, lung: bool) -> set[str]:
    """Statuses of every mention of ``concept`` in ``doc``."""
    found = {mention_status(doc, concept, m, lung) for m in concept.regex.finditer(doc.text)}
    found.discard(None)
    return found


class FeatureSpace:
    """Feature names and extraction for the classes ``names`` with vocabularies ``concepts[class]``.

    ``anywhere``: the generic reading (the prior) counts affirmed lung-class mentions in any organ, as the CheXpert
    labeler's anatomy-free mention lists do; otherwise only those in the lungs."""

    def __init__(self, names: Sequence[str], concepts: dict[str, list[Concept]], anywhere: bool = False):
        self.names, self.anywhere = list(names), anywhere
        self.concepts = {c: list(concepts[c]) for c in self.names if c != NO_FINDING}
        self.feature_names = {}
        for cls, cs in self.concepts.items():
            statuses = STATUSES + (("pos_out",) if cls in LUNG_CLASSES else ())
            self.feature_names[cls] = [f"{k.name}:{s}" for k in cs for s in statuses]

    def core_columns(self, cls: str, statuses) -> list[int]:
        """Columns of the prior (core) concepts of ``cls`` with one of ``statuses``."""
        core = {k.name for k in self.concepts[cls] if k.prior}
        return [i for i, f in enumerate(self.feature_names[cls])
                if f.rsplit(":", 1)[0] in core and f.rsplit(":", 1)[1] in statuses]

    def prior(self, cls: str, weight: float = 4.0, bias: float = -2.0) -> tuple[np.ndarray, float]:
        """Weights of the generic reading: an affirmed mention of a prior concept means the finding (a comma ends a
        negation's scope, so ``neg_wide`` counts as affirmed)."""
        w = np.zeros(len(self.feature_names[cls]))
        core = {k.name for k in self.concepts[cls] if k.prior}
        for i, f in enumerate(self.feature_names[cls]):
            concept, status = f.rsplit(":", 1)
            if concept in core and (status in PRIOR_STATUSES or self.anywhere and status == "pos_out"):
                w[i] = weight
        return w, bias

    def transform_one(self, text: str) -> tuple[dict[str, np.ndarray], tuple[bool, bool]]:
        """Features of one report per class, and whether it describes any abnormality (affirmed or uncertain;
        only past a comma after a negation)."""
        doc = Document(text)
        out = {}
        for cls, cs in self.concepts.items():
            names = self.feature_names[cls]
            index = {f: i for i, f in enumerate(names)}
            x = np.zeros(len(names))
            for k in cs:
                for s in concept_statuses(doc, k, cls in LUNG_CLASSES):
                    x[index[f"{k.name}:{s}"]] = 1.0
            out[cls] = x
        statuses = {doc.status(m.start(), m.end()) for m in ABNORMAL.finditer(doc.text)}
        return out, (bool(statuses & {"pos", "unc"}), "neg_wide" in statuses)

    def transform(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({class: (n, d_class) 0/1 matrix}, abnormal (n, 2) bool)`` of a list of reports."""
        rows = [self.transform_one(t) for t in texts]
        feats = {c: (np.stack([r[0][c] for r in rows]) if rows else np.zeros((0, len(f))))
                 for c, f in self.feature_names.items()}
        return feats, np.array([r[1] for r in rows], dtype=bool).reshape(len(rows), 2)
