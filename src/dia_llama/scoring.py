"""Score report files (this model's or any other system's): NLG + clinical efficacy, and label report files.

Input: CSV / TSV (header row) or JSONL (one object per line) / JSON (a list of objects) with an id, a reference
and a prediction column. Used by ``dia-llama score`` and ``dia-llama label`` (see :func:`add_score_arguments`,
:func:`add_label_arguments`).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .labelers import resolve_labeler
from .metrics import NLG_METRICS, NLG_MODES, clinical_efficacy, nlg_metrics

__all__ = [
    "add_label_arguments",
    "add_score_arguments",
    "format_metrics_markdown",
    "label_file",
    "read_table",
    "run_label",
    "run_score",
    "score_file",
]


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
        from .data.datasets import parse_json_lines

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


def _labeler_kwargs(name: str, weights: str | None) -> dict:
    if not weights:
        return {}
    return {"chexbert": {"checkpoint": weights}, "ctrate-radbert": {"model_dir": weights}}.get(name, {})


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


# ------------------------------------------------------------------------------------------- markdown
def format_metrics_markdown(metrics: dict, digits: int = 2) -> str:
    """Markdown tables for :func:`score_file`'s result (also accepts a bare ``nlg_metrics`` dict)."""
    lines: list[str] = []
    nlg = metrics.get("nlg")
    if nlg is None and any(k in metrics for k in NLG_METRICS):
        nlg = {metrics.get("mode", "nlg"): metrics}
    if "file" in metrics:
        lines += [f"**{metrics['file']}** — {metrics.get('n', '?')} cases", ""]
    if nlg:
        names = [m for m in NLG_METRICS if any(m in v for v in nlg.values())]
        lines += ["| mode | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for mode, values in nlg.items():
            cells = [f"{values[m]:.{digits}f}" if m in values else "–" for m in names]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    ce = metrics.get("clinical_efficacy")
    if ce:
        lines += [f"Clinical efficacy (labeler: `{ce.get('labeler', '?')}`, present = positive)", "",
                  "| average | precision | recall | F1 |", "| --- | ---: | ---: | ---: |"]
        for key in ("micro", "macro", "macro_supported", "example"):
            if key in ce:
                v = ce[key]
                label = key if key != "macro_supported" else f"macro (supported, {v.get('n_classes', '?')} classes)"
                lines.append(f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |")
        lines += ["", "| class | precision | recall | F1 | support | predicted |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, v in ce.get("per_class", {}).items():
            note = " (no positives)" if v.get("zero_support") else ""
            lines.append(f"| {name}{note} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
                         f"{v['support']} | {v.get('predicted', '')} |")
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------ CLI
def _add_labeler_arguments(parser: argparse.ArgumentParser, allow_none: bool) -> None:
    choices = ["rule", "chexbert", "ctrate-radbert"] + (["none"] if allow_none else [])
    parser.add_argument("--labeler", default="rule", choices=choices,
                        help="report labeler for the clinical-efficacy labels (default: rule, offline)")
    parser.add_argument("--disease-set", default=None, choices=["chexpert14", "ctrate18"],
                        help="label set of the rule labeler (default chexpert14)")
    parser.add_argument("--labeler-weights", default=None,
                        help="chexbert: path to chexbert.pth (vocab.txt beside it); ctrate-radbert: model folder")


def _build_labeler(args):
    if args.labeler == "none":
        return None
    from .labelers import get_labeler

    kwargs = _labeler_kwargs(args.labeler, args.labeler_weights)
    return get_labeler(args.labeler, disease_set=args.disease_set, **kwargs)


def add_score_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``dia-llama score FILE``."""
    parser.add_argument("file", metavar="FILE", help="CSV/TSV/JSONL/JSON with ids, references and predictions")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--reference-column", default="reference")
    parser.add_argument("--prediction-column", default="prediction")
    _add_labeler_arguments(parser, allow_none=True)
    parser.add_argument("--mode", action="append", choices=list(NLG_MODES), default=None,
                        help="NLG protocol; repeat for several (default coco_raw)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write all metrics as JSON here")
    return parser


def run_score(args: argparse.Namespace) -> int:
    """Score ``args.file``, print markdown, optionally write JSON."""
    metrics = score_file(args.file, id_column=args.id_column, reference_column=args.reference_column,
                         prediction_column=args.prediction_column, labeler=_build_labeler(args),
                         modes=args.mode or ["coco_raw"])
    print(format_metrics_markdown(metrics))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        print(f"metrics written to {out}")
    return 0


def add_label_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``dia-llama label FILE``."""
    parser.add_argument("file", metavar="FILE", help="CSV/TSV/JSONL/JSON with a report column")
    parser.add_argument("--column", default="report", help="column holding the report text (default: report)")
    parser.add_argument("--id-column", default="id", help="id column (row numbers if absent)")
    _add_labeler_arguments(parser, allow_none=False)
    parser.add_argument("--output", metavar="OUT.csv", default=None,
                        help="output CSV (default: <FILE stem>.<labeler>_labels.csv beside FILE)")
    parser.add_argument("--present-only", action="store_true", help="write 0/1 instead of the 4-state codes")
    return parser


def run_label(args: argparse.Namespace) -> int:
    """Label ``args.file`` and write the CSV."""
    out = label_file(args.file, args.column, labeler=_build_labeler(args), output=args.output,
                     id_column=args.id_column, present_only=args.present_only)
    print(f"labels written to {out}")
    return 0
