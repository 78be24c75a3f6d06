"""Load CT report data sets (a manifest, CTRG-Chest-548K, CT-RATE) into a `datasets.DatasetDict` by split.

Every example has the same columns, whatever the source layout:

* ``id`` (str): case id, unique over the whole DatasetDict (the preprocessing cache is keyed by it),
* ``volume``: absolute path of a NIfTI/NRRD/... file or of a slice/DICOM folder — a ``Nifti(decode=False)`` feature
  (``{"path": ..., "bytes": None}``) when every volume is NIfTI, else a string (see :mod:`.features`; read a row's
  volume with :func:`load_example_volume`, its path with ``features.volume_path``),
* ``report`` (str): the reference report (non-empty),
* ``labels`` (list[int]): per disease of the set, 1 present / 0 absent / -1 unknown (all -1: unlabelled case),
* ``diseases``: ``List(ClassLabel(names=disease names))``, the diseases present (the 🤗 multi-label convention),
* ``split`` (str): "train" | "validation" | "test" (or a manifest's own split name),
* ``spacing`` (list of 3 floats (row, col, slice) mm, or None) and ``rescale`` ([slope, intercept] or None):
  metadata from the data set (CT-RATE's metadata CSVs, a manifest's optional fields), applied by
  :func:`load_example_volume` only where the file header lacks them.

The disease names (the order of ``labels``) travel with every split in the ``diseases`` ClassLabel feature and as
JSON in ``info.description`` (``{"dia_llama": {"disease_names": [...], "format": ..., "source": ...}}``); read them
with :func:`dataset_disease_names`. ``streaming=True`` gives an ``IterableDatasetDict`` of the same rows (manifest and
CT-RATE layouts, local or any fsspec URL; see :mod:`.streaming`).

Bad cases (missing/corrupt volume, empty report, invalid label) never vanish silently: ``on_error="raise"``
raises :class:`DatasetError` listing them with case id and path; ``on_error="skip"`` drops them, warns with the
counts, and ``return_report=True`` returns a :class:`LoadReport`. Problems with a whole file (an unknown label
column, a missing CSV) always raise.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import logging
import math
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..configuration_dia_llama import CHEXPERT_14, CT_RATE_18, DISEASE_SETS, resolve_disease_names
from ..volume_io import Volume, VolumeReadError, check_volume_file, read_nifti_header, read_volume

__all__ = [
    "DatasetError",
    "LoadReport",
    "load_ct_report_dataset",
    "dataset_disease_names",
    "detect_format",
    "load_ctrate_volume",
    "load_example_volume",
    "check_volume",
    "FORMATS",
]

logger = logging.getLogger(__name__)

FORMATS = ("auto", "manifest", "ctrg", "ctrate")
SPLIT_ORDER = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                  "validation": "validation", "dev": "validation", "test": "test", "testing": "test"}
_MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv", "manifest.json")
_MANIFEST_COLUMNS = {"id", "volume", "report", "split", "labels", "spacing", "rescale"}
_NIFTI = (".nii", ".nii.gz")
_MAX_LISTED = 10
_CTRATE_REPORT_FIELDS = {"findings": ("Findings_EN",), "impressions": ("Impressions_EN",),
                         "findings+impressions": ("Findings_EN", "Impressions_EN")}


class DatasetError(ValueError):
    """Data that cannot be loaded; the message names the file (and case id) and the problem."""


@dataclass
class LoadReport:
    """What :func:`load_ct_report_dataset` kept and dropped. ``problems``: (case id, path, reason) per bad case."""

    n_loaded: int = 0
    n_skipped: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    n_unlabelled: int = 0  # kept cases whose labels are unknown (all -1)
    split_counts: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"loaded {self.n_loaded} cases {self.split_counts}, skipped {self.n_skipped}"
                + (f", {self.n_unlabelled} without labels" if self.n_unlabelled else ""))


@dataclass
class _Case:
    id: str
    volume: str
    report: str
    labels: list[int]
    split: str
    spacing: list[float] | None = None
    rescale: list[float] | None = None


class _Problems:
    """Collects per-case problems; ``add`` returns False so parsers can ``return problems.add(...)``."""

    def __init__(self):
        self.items: list[tuple[str, str, str]] = []

    def add(self, case_id, path, reason) -> bool:
        self.items.append((str(case_id), str(path), reason))
        return False


# ------------------------------------------------------------------------------------------------------ public API
def load_ct_report_dataset(
    path,
    format: str = "auto",
    disease_set=None,
    on_error: str = "raise",
    check_volumes: bool = True,
    report_field: str = "findings",
    split_fractions=None,
    return_report: bool = False,
    streaming: bool = False,
    volume_feature: str = "auto",
    storage_options: dict | None = None,
):
    """Load a manifest, CTRG-Chest or CT-RATE data set as a ``datasets.DatasetDict`` keyed by split.

    ``format``: "auto" (detect from the folder), "manifest" (JSONL/CSV file or a folder with ``manifest.jsonl``/
    ``.csv``), "ctrg" (``annotation.json`` + ``CTRG_finding_labels.csv``) or "ctrate" (``radiology_text_reports/``,
    ``multi_abnormality_labels/``, ``metadata/``, ``dataset/``).
    ``disease_set``: "chexpert14", "ctrate18" or a list of names; default: CheXpert-14 for CTRG, CT-RATE-18 for
    CT-RATE, inferred from the label keys for manifests.
    ``check_volumes``: check each volume exists and has a readable header (cheap; no voxel data is read).
    ``report_field`` (CT-RATE): "findings", "impressions", "findings+impressions" or a reports-CSV column name.
    ``split_fractions`` (manifest): (train, validation, test) fractions for cases without a ``split``, assigned
    deterministically from a hash of the id; without it such cases go to "train".
    ``volume_feature``: "auto" (`Nifti` for all-NIfTI data sets), "nifti" or "string" (see :mod:`.features`).
    ``streaming``: an ``IterableDatasetDict`` that reads only the metadata up front (:mod:`.streaming`; ``path`` may
    then be an fsspec URL such as ``hf://datasets/ibrahimhamamci/CT-RATE``, ``storage_options`` its filesystem's).
    Returns the DatasetDict, or ``(DatasetDict, LoadReport)`` when ``return_report``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if streaming:
        from .streaming import load_streaming_dataset

        return load_streaming_dataset(path, format=format, disease_set=disease_set, on_error=on_error,
                                      report_field=report_field, split_fractions=split_fractions,
                                      return_report=return_report, volume_feature=volume_feature,
                                      storage_options=storage_options)
    root = Path(path).expanduser()
    fmt = detect_format(root) if format == "auto" else format
    if fmt not in FORMATS[1:]:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    if fmt in ("ctrg", "ctrate") and root.is_file():  # e.g. the path of annotation.json: use its folder
        root = root.parent
    names = resolve_disease_names(disease_set) if disease_set is not None else None
    problems = _Problems()
    if fmt == "manifest":
        cases, names, source = _load_manifest(root, names, split_fractions, problems)
    elif fmt == "ctrg":
        cases, names, source = _load_ctrg(root, names, problems)
    else:
        cases, names, source = _load_ctrate(root, names, report_field, problems)
    cases = _validate(cases, problems, check_volumes)
    report = _report_problems(problems, cases, source, on_error)
    dataset = _build_dataset_dict(cases, names, fmt, source, volume_feature)
    report.split_counts = {k: len(v) for k, v in dataset.items()}
    return (dataset, report) if return_report else dataset


def _report_problems(problems: _Problems, cases: list[_Case], source, on_error: str) -> LoadReport:
    """Raise (``on_error="raise"``) or warn about the bad cases; DatasetError when no case is left."""
    report = LoadReport(n_loaded=len(cases), n_skipped=len(problems.items), problems=list(problems.items))
    if problems.items:
        listed = "\n".join(f"  case {i} ({p}): {r}" for i, p, r in problems.items[:_MAX_LISTED])
        more = len(problems.items) - _MAX_LISTED
        listed += f"\n  ... and {more} more" if more > 0 else ""
        if on_error == "raise":
            raise DatasetError(
                f"{source}: {len(problems.items)} bad case(s):\n{listed}\n"
                "Fix them, or pass on_error='skip' (--on-error skip) to drop them (they are counted)."
            )
        msg = f"{source}: skipped {len(problems.items)} bad case(s), loaded {len(cases)}:\n{listed}"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=2)
    if not cases:
        raise DatasetError(f"{source}: no usable cases")
    report.n_unlabelled = sum(all(v < 0 for v in c.labels) for c in cases)
    if report.n_unlabelled:
        logger.info("%s: %d case(s) have no disease labels (-1)", source, report.n_unlabelled)
    return report


def dataset_disease_names(dataset) -> list[str]:
    """The disease names (order of the ``labels`` column) of a DatasetDict or Dataset from this module.

    Read from the ``diseases`` ClassLabel feature or ``info.description``; for data sets built elsewhere, 14 labels →
    CheXpert-14, 18 → CT-RATE-18.
    """
    from .features import disease_names_from_features

    splits = list(dataset.values()) if isinstance(dataset, dict) else [dataset]  # DatasetDict is a dict
    for split in splits:
        names = disease_names_from_features(getattr(split, "features", None))
        if names:
            return names
    for split in splits:
        desc = getattr(getattr(split, "info", None), "description", None) or ""
        try:
            names = json.loads(desc)["dia_llama"]["disease_names"]
            return [str(n) for n in names]
        except (ValueError, KeyError, TypeError):
            continue
    for split in splits:
        if len(split) and "labels" in split.column_names:
            n = len(split[0]["labels"])
            matches = [s for s in DISEASE_SETS.values() if len(s) == n]
            if len(matches) == 1:
                return list(matches[0])
    raise DatasetError("the data set carries no disease names (not loaded with load_ct_report_dataset?) and its "
                       "label count matches no known disease set")


def detect_format(path) -> str:
    """"manifest", "ctrg" or "ctrate" from a path's layout; DatasetError if none fits."""
    p = Path(path).expanduser()
    if p.is_file():
        return "ctrg" if p.name == "annotation.json" else "manifest"
    if not p.is_dir():
        raise DatasetError(f"{p}: no such file or folder")
    if any((p / n).is_file() for n in _MANIFEST_NAMES):
        return "manifest"
    if (p / "annotation.json").is_file():
        return "ctrg"
    if (p / "radiology_text_reports").is_dir() or (p / "multi_abnormality_labels").is_dir():
        return "ctrate"
    raise DatasetError(
        f"{p}: unknown data layout. Expected a manifest (manifest.jsonl / manifest.csv), CTRG-Chest "
        "(annotation.json + CTRG_finding_labels.csv) or CT-RATE (radiology_text_reports/, "
        "multi_abnormality_labels/, metadata/, dataset/); or pass format=..."
    )


# ------------------------------------------------------------------------------------------------- volume loading
def load_ctrate_volume(path, spacing=None, rescale=None) -> Volume:
    """Read a NIfTI (canonical (H, W, D) layout via ``read_volume``), filling in what a blank header lacks.

    ``spacing`` (row, col, slice) mm replaces the header's when its zooms are all 1 (blank header);
    ``rescale`` (slope, intercept) gives HU = raw * slope + intercept when the header has no ``scl_slope``
    and the data is float or the header is blank (CT-RATE's early volumes). Real headers (the ``_fixed``
    int16 volumes) are left alone. ``meta`` records ``spacing_from_metadata`` / ``rescale_from_metadata``.
    """
    vol = read_volume(path)
    meta_in = _nifti_scaling_info(Path(path)) if _is_nifti(Path(path)) else None
    if meta_in is None:
        return vol
    blank_spacing, has_scaling, is_float = meta_in
    if spacing is not None and blank_spacing:
        sp = _parse_floats(spacing, 3)
        if sp is not None and all(s > 0 for s in sp):
            vol.meta["spacing_from_file"] = vol.spacing
            vol.spacing = tuple(sp)
            vol.meta["spacing_from_metadata"] = True
    if rescale is not None and not has_scaling and (is_float or blank_spacing):
        sl = _parse_floats(rescale, 2)
        if sl is not None and (sl[0], sl[1]) != (1.0, 0.0):
            arr = vol.array.astype(np.float32) * np.float32(sl[0]) + np.float32(sl[1])  # (H, W, D) HU
            vol.array = arr
            vol.kind = "hu"
            vol.meta["rescale_from_metadata"] = [sl[0], sl[1]]
    return vol


def load_example_volume(example) -> Volume:
    """Read the volume of one data set row, applying its ``spacing``/``rescale`` metadata where the header lacks it.

    ``example["volume"]``: a path, a `Nifti` value (path or embedded bytes) or a remote fsspec URL (fetched to a
    temporary file first); see :mod:`.features`."""
    from .features import local_volume, volume_path

    spacing, rescale = example.get("spacing"), example.get("rescale")
    given = volume_path(example["volume"])
    with local_volume(example["volume"]) as path:
        if (spacing is not None or rescale is not None) and _is_nifti(Path(path)):
            vol = load_ctrate_volume(path, spacing, rescale)
        else:
            vol = read_volume(path)
        if path != given:
            vol.array  # noqa: B018  (a temporary copy: read the voxels before it goes)
        return vol


def _nifti_scaling_info(path: Path):
    """(blank_spacing, has_scl_slope, float_data) from the header (`volume_io.read_nifti_header`), or None when the
    header cannot be read (the reader then names the problem)."""
    try:
        header = read_nifti_header(path)
    except (VolumeReadError, ImportError):
        return None
    blank = all(abs(z - 1.0) < 1e-6 for z in header.zooms[:3])
    # an identity scaling (slope 1, intercept 0) is no scaling: the metadata's rescale may still apply
    scaled = header.slope is not None and (header.slope, header.inter or 0.0) != (1.0, 0.0)
    return blank, scaled, header.dtype.kind == "f"


# ------------------------------------------------------------------------------------------------------- manifest
def _load_manifest(root: Path, names, split_fractions, problems: _Problems):
    if root.is_dir():
        found = [root / n for n in _MANIFEST_NAMES if (root / n).is_file()]
        if not found:
            raise DatasetError(f"{root}: no {' / '.join(_MANIFEST_NAMES)} in this folder")
        manifest = found[0]
    else:
        manifest = root
    base = manifest.parent.resolve()
    suffix = manifest.suffix.lower()
    label_cols = []
    if suffix == ".csv":
        rows, label_cols = _read_manifest_csv(manifest)
    elif suffix in (".jsonl", ".json"):
        rows = _read_manifest_json(manifest)
    else:
        raise DatasetError(f"{manifest}: manifest must be .jsonl, .json or .csv")
    if names is None:
        names = _infer_disease_names(rows, manifest)
    for col in label_cols:  # per-disease CSV columns: an unknown one is an error for the whole file
        if _norm(col) not in names:
            raise DatasetError(f"{manifest}: unknown label column {col!r} (disease set: {names}; the other known "
                               f"columns are {sorted(_MANIFEST_COLUMNS)})")
    fractions = _check_fractions(split_fractions) if split_fractions is not None else None

    cases = []
    for line_no, row in rows:
        vol_field = row.get("volume")
        case_id = str(row.get("id") or "").strip() or (_stem(str(vol_field)) if vol_field else f"<line {line_no}>")
        if not vol_field or not str(vol_field).strip():
            problems.add(case_id, manifest, f"line {line_no}: no 'volume' path")
            continue
        vol_path = Path(str(vol_field).strip()).expanduser()
        vol_path = vol_path if vol_path.is_absolute() else base / vol_path
        labels = _manifest_labels(row.get("labels"), names)
        if isinstance(labels, str):
            problems.add(case_id, vol_path, labels)
            continue
        spacing = _optional_floats(row.get("spacing"), 3)
        rescale = _optional_floats(row.get("rescale"), 2)
        if spacing is False or rescale is False:
            bad = "spacing" if spacing is False else "rescale"
            problems.add(case_id, vol_path, f"invalid {bad} {row.get(bad)!r}")
            continue
        split = row.get("split")
        if split is None or str(split).strip() == "":
            split = _hash_split(case_id, fractions) if fractions else "train"
        split = _SPLIT_ALIASES.get(str(split).strip().lower(), str(split).strip())
        report = row.get("report")
        cases.append(_Case(case_id, str(vol_path), "" if report is None else str(report).strip(), labels, split,
                           spacing or None, rescale or None))
    return cases, names, manifest


def _read_manifest_json(path: Path) -> list[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON ({exc})") from exc
        if not all(isinstance(r, dict) for r in data):
            raise DatasetError(f"{path}: expected a list of objects")
        return [(i + 1, r) for i, r in enumerate(data)]
    return parse_json_lines(text, path)


def parse_json_lines(text: str, path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of JSON Lines `text`; DatasetError (a ValueError) naming `path`
    and the line for a line that is not a JSON object."""
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {i} is not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: line {i} is not a JSON object")
        rows.append((i, row))
    return rows


def _read_manifest_csv(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """CSV manifest rows; per-disease columns are folded into a ``labels`` dict (unknown names checked later)."""
    header, records = _read_csv(path)
    if "volume" not in header:
        raise DatasetError(f"{path}: CSV manifest needs a 'volume' column (has {header})")
    label_cols = [] if "labels" in header else [c for c in header if c not in _MANIFEST_COLUMNS]
    rows = []
    for i, rec in enumerate(records, start=2):
        row = {k: v for k, v in rec.items() if k in _MANIFEST_COLUMNS}
        if "labels" in header:
            raw = (rec.get("labels") or "").strip()
            try:
                row["labels"] = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                row["labels"] = f"invalid JSON labels {raw[:60]!r}"
        elif label_cols:
            row["labels"] = {c: rec.get(c, "") for c in label_cols}
        for key in ("spacing", "rescale"):
            if row.get(key):
                try:
                    row[key] = json.loads(row[key])
                except json.JSONDecodeError:
                    pass  # reported as invalid
        rows.append((i, row))
    return rows, label_cols


def _infer_disease_names(rows, manifest: Path) -> list[str]:
    keys: dict[str, None] = {}
    for _, row in rows:
        labels = row.get("labels")
        if isinstance(labels, dict):
            for k in labels:
                keys.setdefault(_norm(k), None)
    if not keys:
        return list(CHEXPERT_14)  # no labels anywhere: all -1 over the default set
    found = set(keys)
    for known in (CHEXPERT_14, CT_RATE_18):
        if found <= set(known):
            return list(known)
    return list(keys)  # custom set, in order of first appearance


def _manifest_labels(value, names) -> list[int] | str:
    """A manifest ``labels`` field → list over ``names``; a str is a problem description."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, dict) and not value):
        return [-1] * len(names)
    if isinstance(value, dict):
        by_name = {}
        for k, v in value.items():
            name = _norm(k)
            if name not in names:
                return f"unknown label name {k!r} (disease set: {names})"
            code = _label_value(v)
            if code is None:
                return f"invalid value {v!r} for label {k!r} (expected 0, 1 or -1)"
            by_name[name] = code
        return [by_name.get(n, 0) for n in names]  # diseases not given: absent (as the processor treats them)
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            return f"labels list has {len(value)} values, the disease set has {len(names)}"
        out = [_label_value(v) for v in value]
        if any(v is None for v in out):
            return f"invalid labels {list(value)!r} (expected 0, 1 or -1)"
        return out
    return f"invalid labels {value!r} (expected a {{disease: 0|1}} object)"


def _label_value(v) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("", "0", "0.0", "false", "no"):
            return 0
        if s in ("1", "1.0", "true", "yes"):
            return 1
        if s in ("-1", "-1.0"):
            return -1
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v in (0, 1, -1):
        return int(v)
    return None


def _check_fractions(fractions) -> tuple[float, float, float]:
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError("split_fractions must be 3 non-negative numbers (train, validation, test) summing to 1, "
                         f"got {fractions}")
    return f  # type: ignore[return-value]


def _hash_split(case_id: str, fractions) -> str:
    u = int(hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


# ----------------------------------------------------------------------------------------------------------- CTRG
_CTRG_CODES = {"": 0, "0": 0, "1": 1, "2": 0, "3": 0}  # CheXbert: blank / positive / negative / uncertain


def _load_ctrg(root: Path, names, problems: _Problems):
    ann_path = root / "annotation.json"
    try:
        ann = json.loads(ann_path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{ann_path}: cannot read the CTRG annotation file ({exc})") from exc
    if not isinstance(ann, dict):
        raise DatasetError(f"{ann_path}: expected {{'train': [...], 'val': [...], 'test': [...]}}")
    names = names or list(CHEXPERT_14)
    labels_by_id = _read_ctrg_labels(root, names)

    cases = []
    for split_key, entries in ann.items():
        split = _SPLIT_ALIASES.get(str(split_key).strip().lower(), str(split_key))
        if not isinstance(entries, list):
            raise DatasetError(f"{ann_path}: split {split_key!r} is not a list of cases")
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("id") in (None, ""):
                problems.add(f"<{split_key}[{k}]>", ann_path, "entry has no 'id'")
                continue
            case_id = str(entry["id"]).strip()
            report = next((entry[key] for key in ("finding", "findings", "report") if key in entry), "")
            volume = _ctrg_volume(root, case_id)
            labels = labels_by_id.get(case_id, [-1] * len(names))
            if isinstance(labels, str):
                problems.add(case_id, volume, labels)
                continue
            cases.append(_Case(case_id, str(volume), str(report or "").strip(), labels, split))
    return cases, names, ann_path


def _label_columns(path: Path, header, id_col: str, names, what: str) -> dict[str, int]:
    """Every column but the id column → its disease index; an unknown column is an error naming the file."""
    columns = {}
    for col in header:
        if col == id_col:
            continue
        name = _norm(col)
        if name not in names:
            raise DatasetError(f"{path}: unknown label column {col!r} (expected {what} {names})")
        columns[col] = names.index(name)
    return columns


def _read_ctrg_labels(root: Path, names) -> dict[str, Any]:
    path = root / "CTRG_finding_labels.csv"
    if not path.is_file():
        cands = sorted(p for p in root.glob("*.csv") if "label" in p.name.lower())
        if len(cands) != 1:
            logger.warning("%s: no CTRG_finding_labels.csv; cases have unknown labels (-1)", root)
            return {}
        path = cands[0]
    header, records = _read_csv(path)
    id_col = next((c for c in header if c.strip().lower() in ("id", "case_id", "study_id")), None)
    if id_col is None:
        raise DatasetError(f"{path}: no 'id' column (columns: {header})")
    columns = _label_columns(path, header, id_col, names, "the CheXbert observations")
    out: dict[str, Any] = {}
    for rec in records:
        case_id = str(rec[id_col]).strip()
        labels = [0 if i in columns.values() else -1 for i in range(len(names))]
        for col, idx in columns.items():
            raw = (rec.get(col) or "").strip()
            raw = raw[:-2] if raw.endswith(".0") else raw
            if raw not in _CTRG_CODES:
                labels = f"{path.name}: invalid label code {rec.get(col)!r} in column {col!r} (expected 0-3)"
                break
            labels[idx] = _CTRG_CODES[raw]
        out[case_id] = labels
    return out


def _ctrg_volume(root: Path, case_id: str) -> Path:
    """The first existing candidate among NIfTI files and slice folders; the first candidate if none exists."""
    cands = [root / "volumes" / f"{case_id}.nii.gz", root / "volumes" / f"{case_id}.nii", root / f"{case_id}.nii.gz",
             root / f"{case_id}.nii", root / "images" / case_id, root / "volumes" / case_id, root / case_id]
    for c in cands:
        if c.exists():
            return c.resolve()
    return cands[0].resolve()


# --------------------------------------------------------------------------------------------------------- CT-RATE
def _load_ctrate(root: Path, names, report_field: str, problems: _Problems, volume_index=None):
    """CT-RATE cases; ``volume_index.find(VolumeName)`` gives each volume's path (default: look in ``root``)."""
    columns = _CTRATE_REPORT_FIELDS.get(report_field, (report_field,))
    names = names or list(CT_RATE_18)
    reports = _split_csvs(root / "radiology_text_reports", required=True)
    label_files = _split_csvs(root / "multi_abnormality_labels", required=False)
    meta_files = _split_csvs(root / "metadata", required=False)
    volume_index = volume_index or _CtrateVolumes(root)

    cases = []
    for split, rep_path in reports.items():
        header, records = _read_csv(rep_path)
        missing = [c for c in ("VolumeName", *columns) if c not in header]
        if missing:
            raise DatasetError(f"{rep_path}: missing column(s) {missing} (columns: {header}); report_field="
                               f"{report_field!r} uses {list(columns)}")
        labels = _read_ctrate_labels(label_files[split], names) if split in label_files else {}
        meta = _read_ctrate_metadata(meta_files[split]) if split in meta_files else {}
        for rec in records:
            vol_name = (rec.get("VolumeName") or "").strip()
            if not vol_name:
                problems.add("<no VolumeName>", rep_path, "row without VolumeName")
                continue
            case_id = _stem(vol_name)
            parts = [(rec.get(c) or "").strip() for c in columns]
            report = " ".join(p for p in parts if p)
            spacing, rescale = meta.get(vol_name, (None, None))
            lab = labels.get(vol_name, [-1] * len(names))
            path = volume_index.find(vol_name)
            if isinstance(lab, str):
                problems.add(case_id, path, lab)
                continue
            cases.append(_Case(case_id, str(path), report, lab, split, spacing, rescale))
    return cases, names, root


def _split_csvs(folder: Path, required: bool) -> dict[str, Path]:
    """CSV files of a CT-RATE folder matched to splits by keyword in the file name."""
    if not folder.is_dir():
        if required:
            raise DatasetError(f"{folder}: missing (CT-RATE layout needs radiology_text_reports/*.csv)")
        logger.warning("%s: missing; CT-RATE cases get %s", folder,
                       "unknown labels (-1)" if "label" in folder.name else "no metadata")
        return {}
    out: dict[str, Path] = {}
    for p in sorted(folder.glob("*.csv")):
        words = re.split(r"[^a-z]+", p.stem.lower())
        split = next((_SPLIT_ALIASES[w] for w in words if w in _SPLIT_ALIASES), None)
        if split is None:
            continue
        if split in out:
            raise DatasetError(f"{folder}: two CSV files for the {split} split: {out[split].name}, {p.name}")
        out[split] = p
    if required and not out:
        raise DatasetError(f"{folder}: no CSV whose name says train / valid(ation) / test")
    return out


def _read_ctrate_labels(path: Path, names) -> dict[str, Any]:
    header, records = _read_csv(path)
    if "VolumeName" not in header:
        raise DatasetError(f"{path}: no VolumeName column (columns: {header})")
    columns = _label_columns(path, header, "VolumeName", names, "the CT-RATE abnormalities")
    out: dict[str, Any] = {}
    for rec in records:
        labels = [0 if i in columns.values() else -1 for i in range(len(names))]
        for col, idx in columns.items():
            v = _label_value(rec.get(col) or "")
            if v is None:
                labels = f"{path.name}: invalid label {rec.get(col)!r} in column {col!r} (expected 0 or 1)"
                break
            labels[idx] = v
        out[(rec.get("VolumeName") or "").strip()] = labels
    return out


def _read_ctrate_metadata(path: Path) -> dict[str, tuple]:
    header, records = _read_csv(path)
    if "VolumeName" not in header:
        raise DatasetError(f"{path}: no VolumeName column (columns: {header})")
    out = {}
    for rec in records:
        xy = _parse_floats(rec.get("XYSpacing"), 2)
        z = _parse_floats(rec.get("ZSpacing"), 1)
        spacing = [xy[0], xy[1], z[0]] if xy and z and min(xy + z) > 0 else None
        slope, inter = _parse_floats(rec.get("RescaleSlope"), 1), _parse_floats(rec.get("RescaleIntercept"), 1)
        rescale = [slope[0], inter[0]] if slope and inter and slope[0] != 0 else None
        out[(rec.get("VolumeName") or "").strip()] = (spacing, rescale)
    return out


class _CtrateVolumes:
    """Finds ``dataset/{train,valid}[_fixed]/<s>_<pid>/<s>_<pid>_<scan>/<VolumeName>``; walks the tree if that fails."""

    def __init__(self, root: Path):
        self.root = root
        self.bases = [b for b in (root / "dataset", root) if b.is_dir()]
        self._index: dict[str, Path] | None = None

    def find(self, vol_name: str) -> Path:
        parts = _stem(vol_name).split("_")
        if len(parts) >= 3:
            sub = Path("_".join(parts[:2])) / "_".join(parts[:3]) / vol_name
            for base in self.bases:
                for folder in (f"{parts[0]}_fixed", parts[0]):
                    p = base / folder / sub
                    if p.exists():
                        return p.resolve()
        if self._index is None:
            self._index = {}
            for base in self.bases[:1]:
                for dirpath, _, files in os.walk(base):
                    for f in files:
                        self._index.setdefault(_stem(f), Path(dirpath) / f)
        hit = self._index.get(_stem(vol_name))
        if hit is not None:
            return hit.resolve()
        base = self.bases[0] if self.bases else self.root
        sub = Path("_".join(parts[:2])) / "_".join(parts[:3]) / vol_name if len(parts) >= 3 else Path(vol_name)
        return (base / f"{parts[0]}_fixed" / sub).resolve()


# ------------------------------------------------------------------------------------------------------ validation
def _validate(cases: list[_Case], problems: _Problems, check_volumes: bool) -> list[_Case]:
    """Drop (and record) cases with an empty report, a duplicate id or a bad volume."""
    kept, seen = [], {}
    for c in cases:
        if c.id in seen:
            problems.add(c.id, c.volume, f"duplicate id (also used by {seen[c.id]})")
        elif not c.report:
            problems.add(c.id, c.volume, "empty report")
        else:
            seen[c.id] = c.volume
            kept.append(c)
    if not check_volumes:
        return kept
    if len(kept) > 64:
        with ThreadPoolExecutor(max_workers=8) as ex:
            reasons = list(ex.map(lambda c: check_volume(c.volume), kept))
    else:
        reasons = [check_volume(c.volume) for c in kept]
    out = []
    for c, reason in zip(kept, reasons):
        if reason:
            problems.add(c.id, c.volume, reason)
        else:
            out.append(c)
    return out


def check_volume(path) -> str | None:
    """A cheap check (headers only, no voxel data: `volume_io.check_volume_file`): None if the volume looks readable,
    else the reason, without the path (the problem report records it beside the reason). URLs are not checked."""
    if "://" in str(path):
        return None
    problem = check_volume_file(path)
    prefix = f"{Path(path).expanduser()}: "
    return problem[len(prefix):] if problem and problem.startswith(prefix) else problem


# --------------------------------------------------------------------------------------------------------- helpers
def _cases_by_split(cases: list[_Case]) -> dict[str, list[_Case]]:
    by_split: dict[str, list[_Case]] = {}
    for c in cases:
        by_split.setdefault(c.split, []).append(c)
    order = [s for s in SPLIT_ORDER if s in by_split] + sorted(s for s in by_split if s not in SPLIT_ORDER)
    return {split: by_split[split] for split in order}


def _dataset_info(cases: list[_Case], names, fmt: str, source, volume_feature: str):
    """The `DatasetInfo` (features + description) shared by every split."""
    import datasets

    from .features import dataset_features
    from .features import volume_feature as choose_volume_feature

    features = dataset_features(names, choose_volume_feature((c.volume for c in cases), volume_feature))
    description = json.dumps({"dia_llama": {"disease_names": list(names), "format": fmt, "source": str(source)}})
    return datasets.DatasetInfo(description=description, features=features)


def _build_dataset_dict(cases: list[_Case], names, fmt: str, source, volume_feature: str = "auto"):
    import datasets

    from .features import example_row

    info = _dataset_info(cases, names, fmt, source, volume_feature)
    out = {}
    for split, rows in _cases_by_split(cases).items():
        records = [example_row(c) for c in rows]
        columns = {k: [r[k] for r in records] for k in info.features}
        out[split] = datasets.Dataset.from_dict(columns, info=info.copy(), split=split)
    return datasets.DatasetDict(out)


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            records = list(reader)
            header = [h for h in (reader.fieldnames or [])]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({type(exc).__name__}: {exc})") from exc
    if not header:
        raise DatasetError(f"{path}: empty CSV (no header)")
    return header, records


def _norm(name) -> str:
    return re.sub(r"\s+", " ", str(name).replace("_", " ")).strip().lower()


def _stem(name: str) -> str:
    base = Path(name).name
    for suf in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npy", ".npz"):
        if base.lower().endswith(suf):
            return base[: -len(suf)]
    return base


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(_NIFTI)


def _parse_floats(value, n: int) -> list[float] | None:
    """n floats from a number, a list or a string like "[0.75, 0.75]"; None if that fails."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            value = ast.literal_eval(s)
        except (ValueError, SyntaxError):
            value = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", s)
    if isinstance(value, (int, float)):
        value = [value]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        return None
    return out


def _optional_floats(value, n: int):
    """None for a missing value, the floats when valid, False when given but invalid."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    out = _parse_floats(value, n)
    return out if out is not None else False
