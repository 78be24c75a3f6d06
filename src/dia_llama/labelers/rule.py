"""Rule-based report labeler for chest CT language (CheXpert-14 or CT-RATE-18), offline, numpy only.

How a report is read (docs/labelers.md has the method, the protocol and the held-out scores):

1. generic machinery (:mod:`.context`): sentences, termination-bounded segments and comma clauses; every mention
   of a concept (:mod:`.vocabulary`: medical synonyms per class) gets a NegEx / ConText status -- affirmed,
   negated, negated with a hedge ("no obvious ..."), negated only at sentence scope, or uncertain; affirmed
   lung-class mentions in a clause about another organ are kept apart;
2. per class, the report's binary features "concept:status" (:mod:`.features`) go through a small decision layer
   (:mod:`.fitted`: a logistic regression pulled towards the generic rule "an affirmed mention means present")
   whose weights were *fitted* to a label source and ship as ``resources/labeler_params.json``:

   * ``label_source="chexbert"`` (default for CheXpert-14): CheXbert's labels of the 362 CTRG-Chest test reports, so
     that the labeler stands in for CheXbert offline;
   * ``label_source="ctrate"`` (default for CT-RATE-18): the 800 hand-labelled CT-RATE reports that trained CT-RATE's
     own report classifier;
   * ``label_source="generic"``: no fitted layer, the literal reading (any affirmed mention of a class's core
     concepts).

3. "no finding" (CheXpert-14) is present when no other class is present or uncertain and no clause describes an
   abnormality (weights fitted like the classes').

Codes follow CheXbert: 1 present; otherwise 3 if a core concept of the class was mentioned with uncertainty, 2 if
it was negated, else 0. Classes with too few positives in a label source (CheXbert never marks pneumonia or pneumothorax
on CTRG) keep the generic rule; so do concepts a label source never shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..configuration_dia_llama import CHEXPERT_14, CT_RATE_18
from . import BLANK, NEGATIVE, POSITIVE, UNCERTAIN, LabelerOutput
from .context import Document, split_clauses, split_sentences
from .features import NO_FINDING, mention_status
from .fitted import NO_FINDING_FEATURES, DecisionLayer, logit, no_finding_matrix
from .params import SOURCES, build_space, load_params
from .vocabulary import ABNORMAL, LUNG_CLASSES

RULE_SETS = {"chexpert14": CHEXPERT_14, "ctrate18": CT_RATE_18}
LABEL_SOURCES = ("chexbert", "ctrate", "generic")
_SOURCE_OF_SET = {v: k for k, v in SOURCES.items()}
_NEGATED = ("neg", "neg_hedged", "neg_conj")

__all__ = ["LABEL_SOURCES", "RULE_SETS", "RuleLabeler", "agreement_table", "split_clauses", "split_sentences"]


def _set_of(name: str, label_source: str | None) -> str | None:
    """The concept set a class is read with: the label source's, else CheXpert-14 first."""
    if label_source in SOURCES:
        key = SOURCES[label_source]
        return key if name in RULE_SETS[key] else None
    for key in ("chexpert14", "ctrate18"):
        if name in RULE_SETS[key] and name != NO_FINDING:
            return key
    return None


class RuleLabeler:
    """Rule-based labeler with a fitted decision layer (see the module doc).

    ``disease_set``: ``"chexpert14"`` (default), ``"ctrate18"``, or a list of class names from either set (e.g. a
    synthetic benchmark's findings; "no finding" is then computed over the listed classes).
    ``label_source``: ``"chexbert"``, ``"ctrate"``, ``"generic"`` or None (the set's own source: ``"chexbert"`` for
    CheXpert-14 classes, ``"ctrate"`` for CT-RATE-18 classes).
    ``cardiomegaly_implies_ecm``: apply the CheXpert hierarchy cardiomegaly -> enlarged cardiomediastinum.
    """

    def __init__(self, disease_set="chexpert14", label_source: str | None = None,
                 cardiomegaly_implies_ecm: bool = False):
        if isinstance(disease_set, str):
            if disease_set not in RULE_SETS:
                raise ValueError(f"unknown disease_set {disease_set!r}; choose one of {sorted(RULE_SETS)} or a list")
            names = list(RULE_SETS[disease_set])
        else:
            names = [str(n).strip().lower() for n in disease_set]
            named = [k for k, ns in RULE_SETS.items() if ns == names]
            disease_set = named[0] if named else "custom"
        if label_source is not None and label_source not in LABEL_SOURCES:
            raise ValueError(f"unknown label_source {label_source!r}; choose one of {LABEL_SOURCES} or None")
        if label_source is None and disease_set in _SOURCE_OF_SET:
            label_source = _SOURCE_OF_SET[disease_set]
        sets = {n: _set_of(n, label_source) for n in names if n != NO_FINDING}
        unknown = [n for n, s in sets.items() if s is None]
        if unknown or not names:
            known = sorted(set(CHEXPERT_14) | set(CT_RATE_18))
            raise ValueError(f"the rule labeler has no rules for {unknown or names} (label source {label_source}); "
                             f"known: {known}")
        self.disease_set, self.label_source = disease_set, label_source or "default"
        self.name = "rule-ctrate18" if disease_set == "ctrate18" else "rule"
        self.disease_names = names
        self.cardiomegaly_implies_ecm = cardiomegaly_implies_ecm
        self._parts = []
        for key in ("chexpert14", "ctrate18"):
            members = [n for n in names if sets.get(n) == key]
            if members:
                source = "generic" if label_source == "generic" else _SOURCE_OF_SET[key]
                self._parts.append(self._layer(key, members, source))
        nf_source = "generic" if label_source == "generic" else "chexbert"
        self._no_finding = self._no_finding_weights(nf_source) if NO_FINDING in names else None

    @staticmethod
    def _layer(key: str, members: list[str], source: str) -> DecisionLayer:
        space = build_space(key, members)
        if source == "generic":
            return DecisionLayer.prior(space)
        shipped = load_params()[source]["classes"]
        return DecisionLayer(space, {c: shipped[c] for c in members})

    @staticmethod
    def _no_finding_weights(source: str):
        if source == "generic":
            return DecisionLayer.no_finding_prior()
        p = load_params()["chexbert"]["classes"][NO_FINDING]
        return np.array([p["weights"][f] for f in NO_FINDING_FEATURES]), float(p["bias"])

    # --------------------------------------------------------------------------------------- core
    def mentions(self, text: str, context: str = "clause") -> list[tuple[str, str, str, str]]:
        """Every concept mention as ``(class, status, matched text, clause)`` -- to see why a label was given
        (``context="sentence"``: the whole sentence instead of the clause)."""
        doc = Document(text)
        found = []
        for layer in self._parts:
            for cls, concepts in layer.space.concepts.items():
                for k in concepts:
                    for m in k.regex.finditer(doc.text):
                        status = mention_status(doc, k, m, cls in LUNG_CLASSES)
                        if status is not None:
                            c = doc.clause_at(m.start())
                            a, b = (c.start, c.end) if context == "clause" else (c.sent_start, c.sent_end)
                            found.append((cls, status, m.group(0), doc.text[a:b]))
        return found

    @staticmethod
    def abnormality(text: str) -> tuple[bool, bool]:
        """Whether some clause describes something abnormal, whatever the class: affirmed or uncertain; only past a
        comma after a negation ("no pleural effusion, pleural thickening")."""
        doc = Document(text)
        statuses = {doc.status(m.start(), m.end()) for m in ABNORMAL.finditer(doc.text)}
        return bool(statuses & {"pos", "unc"}), "neg_wide" in statuses

    def label(self, texts: Sequence[str]) -> LabelerOutput:
        """Label reports -> :class:`LabelerOutput` with ``present`` (code 1) and the 4-state ``codes``."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        n = len(texts)
        index = {c: i for i, c in enumerate(self.disease_names)}
        codes = np.zeros((n, len(self.disease_names)), dtype=np.int64)
        present_cols, uncertain_cols = [], []
        abnormal = np.zeros((n, 2), dtype=bool)
        for layer in self._parts:
            feats, abnormal = layer.space.transform(texts)
            present, unc = layer.class_present(feats), layer.uncertain(feats)
            for cls in layer.space.feature_names:
                negated = feats[cls][:, layer.space.core_columns(cls, _NEGATED)].any(1)
                codes[:, index[cls]] = np.where(present[cls], POSITIVE,
                                                np.where(unc[cls], UNCERTAIN, np.where(negated, NEGATIVE, BLANK)))
                present_cols.append(present[cls])
                uncertain_cols.append(unc[cls])
        if not self._parts and n:
            abnormal = np.array([self.abnormality(t) for t in texts], dtype=bool).reshape(n, 2)
        ec, cm = index.get("enlarged cardiomediastinum"), index.get("cardiomegaly")
        if self.cardiomegaly_implies_ecm and ec is not None and cm is not None:
            lift = np.isin(codes[:, cm], (POSITIVE, UNCERTAIN)) & (codes[:, ec] != POSITIVE)
            lift &= (codes[:, cm] == POSITIVE) | (codes[:, ec] != UNCERTAIN)
            codes[lift, ec] = codes[lift, cm]
        if self._no_finding is not None and n:
            x = no_finding_matrix(present_cols, uncertain_cols, abnormal)
            codes[:, index[NO_FINDING]] = np.where(logit(x, *self._no_finding) > 0, POSITIVE, BLANK)
        return LabelerOutput(present=(codes == POSITIVE).astype(np.int64), codes=codes,
                             disease_names=list(self.disease_names), labeler=self.name)

    __call__ = label


# -------------------------------------------------------------------------------------- agreement
def agreement_table(reference_codes, predicted_codes, names: Sequence[str], reference_name: str = "CheXbert",
                    digits: int = 2) -> str:
    """Markdown table of per-class P/R/F1/support of ``predicted`` vs ``reference`` present (code 1) labels,
    with micro and macro rows (support = reference positives; a class nobody marks present shows 0s)."""
    from ..evaluation.metrics import clinical_efficacy

    ce = clinical_efficacy(np.asarray(reference_codes) == 1, np.asarray(predicted_codes) == 1, names)
    f = f"{{:.{digits}f}}"
    lines = [f"| class | precision | recall | F1 | support ({reference_name}) | predicted |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in ce["per_class"].items():
        lines.append(f"| {name} | {f.format(row['precision'])} | {f.format(row['recall'])} | {f.format(row['f1'])} "
                     f"| {row['support']} | {row['predicted']} |")
    total_support = sum(r["support"] for r in ce["per_class"].values())
    total_pred = sum(r["predicted"] for r in ce["per_class"].values())
    for key in ("micro", "macro"):
        row = ce[key]
        lines.append(f"| **{key}** | {f.format(row['precision'])} | {f.format(row['recall'])} | "
                     f"{f.format(row['f1'])} | {total_support} | {total_pred} |")
    return "\n".join(lines)

