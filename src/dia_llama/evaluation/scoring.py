"""Score report files (this model's or any other system's): NLG + clinical efficacy, and label report files.

Input: CSV / TSV (header row) or JSONL (one object per line) / JSON (a list of objects) with an id, a reference
and a prediction column. Used by ``dia-llama score`` and ``dia-llama label``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from ..labelers import resolve_labeler
from .metrics import NLG_MODES, clinical_efficacy, nlg_metrics

__all__ = ["LABELER_CHOICES", "build_labeler", "label_file", "read_table", "score_file"]

LABELER_CHOICES = ("rule", "chexbert", "ctrate-radbert")


# ---------------------------------------------------------------------------------------------- input
def read_table(path) -> list[dict]:
    """Rows of a CSV/TSV (by extension; header required) or JSONL/JSON file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    if suffix in (".jsonl", ".ndjson") or (suffix == ".json" and not text.lstrip().startswith("[")):
        from ..data.datasets import parse_json_lines

        rows = [row for _, row in parse_json_lines(text, path)]
    elif suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected a JSON list of objects")
    else:
        delimiter = "\t" if suffix in (".tsv", ".tab") else ","
        rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path}: no rows (only a header?)")
    return rows


def _column(rows: list[dict], name: str, path, role: str) -> list:
    if name not in rows[0] and not any(name in r for r in rows):
        available = sorted({k for r in rows[:50] for k in r})
        raise KeyError(f"{path}: no {role} column {name!r}; columns are {available}")
    return [r.get(name) for r in rows]


def _ids(rows: list[dict], id_column: str | None, path) -> list[str]:
    if id_column is None:
        return [str(i) for i in range(len(rows))]
    ids = [str(v) if v is not None else "" for v in _column(rows, id_column, path, "id")]
    if any(i == "" for i in ids):
        raise ValueError(f"{path}: empty value in id column {id_column!r}")
    seen, dups = set(), []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    if dups:
        raise ValueError(f"{path}: duplicate ids in column {id_column!r}: {sorted(set(dups))[:10]}")
    return ids


def _text(value) -> str:
    return "" if value is None else str(value)


def build_labeler(name: str | None, disease_set: str | None = None, weights: str | None = None):
    """A report labeler by name (None or "none": no labeler); `weights`: chexbert's `chexbert.pth` (its vocab.txt
    beside it) or the CT-RATE RadBERT model folder."""
    if name in (None, "none"):
        return None
    from ..labelers import get_labeler

    kwargs = ({"chexbert": {"checkpoint": weights}, "ctrate-radbert": {"model_dir": weights}}.get(name, {})
              if weights else {})
    return get_labeler(name, disease_set=disease_set, **kwargs)


# -------------------------------------------------------------------------------------------- scoring
def score_file(path, id_column: str = "id", reference_column: str = "reference",
               prediction_column: str = "prediction", labeler="rule", mode: str = "coco_raw",
               modes: Sequence[str] | None = None, nlg_metric_names: Sequence[str] | None = None) -> dict:
    """NLG metrics (per mode) and clinical efficacy of a file of predictions vs references.

    ``labeler``: a name (``"rule"``, ``"chexbert"``, ``"ctrate-radbert"``), a labeler instance, or None to skip CE;
    its name is recorded in the CE block. ``modes`` (a list) overrides ``mode``. Returns
    ``{"file", "n", "nlg": {mode: {...}}, "clinical_efficacy": {"labeler": .., "micro": .., ...}}``.
    """
    rows = read_table(path)
    ids = _ids(rows, id_column, path)
    refs = [_text(v) for v in _column(rows, reference_column, path, "reference")]
    preds = [_text(v) for v in _column(rows, prediction_column, path, "prediction")]
    modes = list(modes) if modes else [mode]
    for m in modes:
        if m not in NLG_MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {NLG_MODES}")
    result: dict = {"file": str(path), "n": len(rows), "columns": {
        "id": id_column, "reference": reference_column, "prediction": prediction_column}}
    references = dict(zip(ids, refs))
    predictions = dict(zip(ids, preds))
    result["nlg"] = {m: nlg_metrics(references, predictions, mode=m, metrics=nlg_metric_names) for m in modes}
    if labeler is not None:
        lab = resolve_labeler(labeler)
        ref_out, pred_out = lab.label(refs), lab.label(preds)
        ce = clinical_efficacy(ref_out.present, pred_out.present, lab.disease_names)
        result["clinical_efficacy"] = {"labeler": lab.name, "disease_names": list(lab.disease_names), **ce}
    return result


def label_file(path, column: str, labeler="rule", output=None, id_column: str | None = "id",
               disease_set: str | None = None, present_only: bool = False) -> Path:
    """Label the reports in ``column`` and write ``id`` + one column per disease (``snake_case``) as CSV.

    Values are the labeler's 4-state codes (0 blank, 1 positive, 2 negative, 3 uncertain) when it has them,
    else 0/1 (or always 0/1 with ``present_only``). ``id_column`` None or absent -> row numbers.
    ``output`` defaults to ``<input stem>.<labeler>_labels.csv`` beside the input. Returns the output path.
    """
    rows = read_table(path)
    texts = [_text(v) for v in _column(rows, column, path, "report")]
    if id_column is not None and not any(id_column in r for r in rows):
        id_column = None
    ids = _ids(rows, id_column, path)
    lab = resolve_labeler(labeler, disease_set=disease_set)
    out = lab.label(texts)
    values = out.present if present_only or out.codes is None else out.codes
    path = Path(path)
    output = Path(output) if output else path.with_name(f"{path.stem}.{lab.name}_labels.csv")
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([id_column or "id", *[n.replace(" ", "_") for n in lab.disease_names]])
        for i, row in zip(ids, values):
            writer.writerow([i, *[int(v) for v in row]])
    return output
