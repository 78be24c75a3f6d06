"""Report labelers: free-text report -> disease labels (the CE metric's "reader").

One interface for all of them::

    labeler = get_labeler("rule")               # offline default, CheXpert-14 on CT language
    out = labeler.label(["No pleural effusion. A 5 mm nodule in the right upper lobe."])
    out.present    # (n, L) int 0/1 -- only "present" counts as positive
    out.codes      # (n, L) int CheXbert codes 0 blank, 1 positive, 2 negative, 3 uncertain (or None)

Names: ``"rule"`` (``disease_set="chexpert14"`` or ``"ctrate18"``; ``label_source="chexbert"`` / ``"ctrate"`` --
the defaults of the two sets, decision layers fitted to CheXbert's and CT-RATE's labels -- or ``"generic"``, the
literal reading; docs/labelers.md), ``"chexbert"`` (needs a local ``chexbert.pth`` + BERT ``vocab.txt``) and
``"ctrate-radbert"`` (needs the local CT-RATE RadBERT classifier). Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

BLANK, POSITIVE, NEGATIVE, UNCERTAIN = 0, 1, 2, 3
CODE_NAMES = {BLANK: "blank", POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}


@dataclass
class LabelerOutput:
    """Labels of ``n`` reports over ``L`` diseases."""

    present: np.ndarray  # (n, L) int 0/1
    codes: np.ndarray | None = None  # (n, L) int 0 blank / 1 positive / 2 negative / 3 uncertain
    disease_names: list[str] = field(default_factory=list)
    labeler: str = ""

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def to_records(self, ids=None) -> list[dict]:
        """One dict per report: ``{"id": .., name: code-or-0/1, ...}`` (codes when available)."""
        values = self.codes if self.codes is not None else self.present
        ids = list(range(len(self))) if ids is None else list(ids)
        return [{"id": i, **{n: int(v) for n, v in zip(self.disease_names, row)}} for i, row in zip(ids, values)]


@runtime_checkable
class ReportLabeler(Protocol):
    """Anything with a name, disease names and ``label(texts) -> LabelerOutput``."""

    name: str
    disease_names: list[str]

    def label(self, texts: list[str]) -> LabelerOutput: ...


LABELERS = ("rule", "chexbert", "ctrate-radbert")


class _ColumnSubset:
    """A labeler restricted to some of its diseases (columns in the requested order)."""

    def __init__(self, labeler, names: list[str]):
        self.inner, self.disease_names, self.name = labeler, list(names), labeler.name
        self._cols = [labeler.disease_names.index(n) for n in names]

    def label(self, texts):
        out = self.inner.label(texts)
        codes = None if out.codes is None else out.codes[:, self._cols]
        return LabelerOutput(present=out.present[:, self._cols], codes=codes, disease_names=list(self.disease_names),
                             labeler=out.labeler)


def _restrict(labeler, disease_set):
    """Keep ``labeler`` as is for its own set (or None), else select the requested sub-list of its diseases."""
    if disease_set is None or isinstance(disease_set, str):
        return labeler
    names = [str(n).strip().lower() for n in disease_set]
    if names == labeler.disease_names:
        return labeler
    unknown = [n for n in names if n not in labeler.disease_names]
    if unknown:
        raise ValueError(f"the {labeler.name} labeler does not know {unknown}; it labels {labeler.disease_names}")
    return _ColumnSubset(labeler, names)


def get_labeler(name: str = "rule", disease_set=None, **kwargs) -> ReportLabeler:
    """Build a labeler by name.

    * ``"rule"``: :class:`~dia_llama.labelers.rule.RuleLabeler` (``disease_set``: ``"chexpert14"`` default,
      ``"ctrate18"``, or a list of names from either set; kwargs: ``label_source``, ``cardiomegaly_implies_ecm``).
    * ``"chexbert"``: :class:`~dia_llama.labelers.chexbert.CheXbertLabeler` (kwargs: ``checkpoint``,
      ``vocab`` or ``tokenizer``, ``device``, ``batch_size``...); CheXpert-14 (or a sub-list of it).
    * ``"ctrate-radbert"``: :class:`~dia_llama.labelers.radbert.RadBertLabeler` (kwargs: ``model_dir``...);
      CT-RATE-18 (or a sub-list of it).
    """
    key = name.lower().replace("_", "-")
    if key == "rule":
        from .rule import RuleLabeler

        return RuleLabeler(disease_set=disease_set or "chexpert14", **kwargs)
    if key == "chexbert":
        if isinstance(disease_set, str) and disease_set != "chexpert14":
            raise ValueError("the chexbert labeler only knows the CheXpert-14 set")
        from .chexbert import CheXbertLabeler

        return _restrict(CheXbertLabeler(**kwargs), disease_set)
    if key in ("ctrate-radbert", "radbert", "ct-rate-radbert"):
        if isinstance(disease_set, str) and disease_set != "ctrate18":
            raise ValueError("the ctrate-radbert labeler only knows the CT-RATE-18 set")
        from .radbert import RadBertLabeler

        return _restrict(RadBertLabeler(**kwargs), disease_set)
    raise ValueError(f"unknown labeler {name!r}; choose one of {LABELERS}")


def resolve_labeler(labeler, disease_set=None) -> ReportLabeler:
    """A labeler instance as is, or a name for :func:`get_labeler`."""
    if isinstance(labeler, str):
        return get_labeler(labeler, disease_set=disease_set)
    if not hasattr(labeler, "label"):
        raise TypeError(f"not a report labeler: {labeler!r}")
    return labeler


from .rule import RuleLabeler, agreement_table  # noqa: E402  (needs LabelerOutput above)

__all__ = [
    "BLANK",
    "CODE_NAMES",
    "LABELERS",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "LabelerOutput",
    "ReportLabeler",
    "RuleLabeler",
    "agreement_table",
    "get_labeler",
    "resolve_labeler",
]
