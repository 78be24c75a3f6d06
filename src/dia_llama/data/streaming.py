"""`load_ct_report_dataset(..., streaming=True)`: an `IterableDatasetDict` that reads the metadata only.

CT-RATE holds 50,188 volumes (terabytes). Streaming reads its small CSVs (reports, labels, metadata) and one listing
of ``dataset/``, never the volume tree: each row's ``volume`` is the path (or fsspec URL) its name implies, and the
volume itself is fetched only when a row is read (``load_example_volume``, which copies a remote file to a temporary
file first). The root may be a local folder or any fsspec URL: ``hf://datasets/ibrahimhamamci/CT-RATE`` (the Hub,
through huggingface_hub's filesystem), ``s3://…``, ``memory://…``. Manifests stream the same way (a local manifest,
or one at a URL with its relative volume paths resolved against the URL's folder).

Streaming and non-streaming give the same rows, features and disease names. What streaming does not do: check each
volume up front (a missing or corrupt volume raises a clear error naming it when its row is read) and walk the tree
for CT-RATE volumes stored outside the standard ``dataset/{split}[_fixed]/…`` layout. Where a split exists both as
``<split>_fixed`` and ``<split>`` (an old download next to the fixed one), the folder is chosen per row, lazily, as the
non-streaming loader does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from .datasets import (
    _MANIFEST_NAMES,
    DatasetError,
    _build_dataset_dict,
    _load_ctrate,
    _load_ctrg,
    _load_manifest,
    _Problems,
    _report_problems,
    _stem,
    _validate,
    detect_format,
    resolve_disease_names,
)

_CTRATE_META_FOLDERS = ("radiology_text_reports", "multi_abnormality_labels", "metadata")
_SHARDS = 64  # shards of each streamed split (DataLoader workers and `split_dataset_by_node` divide them)


def _filesystem(path, storage_options: dict | None):
    """(fsspec filesystem, root path inside it, is_local)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    local = "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))
    return fs, root.rstrip("/") or "/", local


def _detect_remote_format(fs, root: str) -> str:
    if fs.isfile(root):
        return "ctrg" if PurePosixPath(root).name == "annotation.json" else "manifest"
    names = {PurePosixPath(p).name for p in fs.ls(root, detail=False)}
    if names & set(_MANIFEST_NAMES):
        return "manifest"
    if "annotation.json" in names:
        return "ctrg"
    if names & {"radiology_text_reports", "multi_abnormality_labels"}:
        return "ctrate"
    raise DatasetError(f"{fs.unstrip_protocol(root)}: unknown data layout (no manifest, annotation.json or CT-RATE "
                       "folders); pass format=...")


class _StreamingCtrateVolumes:
    """CT-RATE volume paths from their names and ONE listing of ``dataset/`` (or the root): no per-file requests."""

    def __init__(self, fs, root: str, local: bool):
        self.fs, self.local = fs, local
        self.base = f"{root}/dataset" if fs.isdir(f"{root}/dataset") else root
        self.folders = {PurePosixPath(p).name for p in fs.ls(self.base, detail=False)}
        self.alternatives: dict[str, str] = {}  # the `_fixed` path → the plain one, where both folders exist

    def _name(self, path: str) -> str:
        return str(Path(path).resolve()) if self.local else self.fs.unstrip_protocol(path)

    def find(self, vol_name: str) -> str:
        parts = _stem(vol_name).split("_")
        sub = f"{'_'.join(parts[:2])}/{'_'.join(parts[:3])}/{vol_name}" if len(parts) >= 3 else vol_name
        folders = [f for f in (f"{parts[0]}_fixed", parts[0]) if f in self.folders] or [f"{parts[0]}_fixed"]
        paths = [self._name(f"{self.base}/{folder}/{sub}") for folder in folders]
        if len(paths) == 2:
            self.alternatives[paths[0]] = paths[1]
        return paths[0]

    def resolve(self, path: str) -> str:
        """Where both split folders exist: the `_fixed` file if it exists, else the plain one (checked lazily)."""
        alternative = self.alternatives.get(path)
        if alternative is None or self._exists(path) or not self._exists(alternative):
            return path
        return alternative

    def _exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else self.fs.exists(path)


def _fetch_metadata(fs, root: str, folders, into: Path) -> Path:
    """Copy the small CSV files of `folders` under `root` into `into` (never the volumes)."""
    for folder in folders:
        remote = f"{root}/{folder}"
        if not fs.isdir(remote):
            continue
        (into / folder).mkdir(parents=True, exist_ok=True)
        for path in fs.ls(remote, detail=False):
            if path.lower().endswith(".csv"):
                fs.get(path, str(into / folder / PurePosixPath(path).name))
    return into


def load_streaming_dataset(path, format: str = "auto", disease_set=None, on_error: str = "raise",
                           report_field: str = "findings", split_fractions=None, return_report: bool = False,
                           volume_feature: str = "auto", storage_options: dict | None = None):
    """`load_ct_report_dataset(path, streaming=True, ...)`: an `IterableDatasetDict` by split (see the module)."""
    import datasets

    fs, root, local = _filesystem(path, storage_options)
    fmt = format if format != "auto" else (detect_format(root) if local else _detect_remote_format(fs, root))
    names = resolve_disease_names(disease_set) if disease_set is not None else None
    problems, resolve, scratch = _Problems(), None, None
    try:
        if fmt == "ctrate":
            volumes = _StreamingCtrateVolumes(fs, root, local)
            meta_root = Path(root) if local else _fetch_metadata(
                fs, root, _CTRATE_META_FOLDERS, Path(scratch := tempfile.mkdtemp(prefix="dia-llama-ctrate-")))
            cases, names, _ = _load_ctrate(meta_root, names, report_field, problems, volume_index=volumes)
            resolve = volumes.resolve if volumes.alternatives else None
            source = root if local else fs.unstrip_protocol(root)
        elif fmt == "manifest":
            cases, names, source = _streaming_manifest(fs, root, local, names, split_fractions, problems)
        elif fmt == "ctrg" and local:
            cases, names, source = _load_ctrg(Path(root).parent if Path(root).is_file() else Path(root), names,
                                              problems)
        else:
            raise DatasetError(f"{path}: streaming reads manifest and CT-RATE layouts (and CTRG-Chest from a local "
                               f"folder), not {fmt!r} at a URL")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    cases = _validate(cases, problems, check_volumes=False)
    report = _report_problems(problems, cases, source, on_error)
    eager = _build_dataset_dict(cases, names, fmt, source, volume_feature)  # the metadata rows, in memory
    out = datasets.IterableDatasetDict()
    for split, rows in eager.items():
        lazy = rows.to_iterable_dataset(num_shards=max(1, min(_SHARDS, len(rows))))
        if resolve is not None:  # CT-RATE splits in both `<split>` and `<split>_fixed`: pick the folder per row
            lazy = lazy.map(_Resolver(resolve), features=rows.features)
        lazy.info.description = rows.info.description  # the disease names travel as for the eager data set
        out[split] = lazy
    report.split_counts = {split: len(rows) for split, rows in eager.items()}
    return (out, report) if return_report else out


class _Resolver:
    """Row → the row with its CT-RATE volume path resolved (a picklable callable for DataLoader workers)."""

    def __init__(self, resolve):
        self.resolve = resolve

    def __call__(self, row: dict) -> dict:
        value = row["volume"]
        if isinstance(value, dict):
            return {"volume": {**value, "path": self.resolve(value["path"])}}
        return {"volume": self.resolve(value)}


def _streaming_manifest(fs, root: str, local: bool, names, split_fractions, problems):
    """Manifest cases; a remote manifest is read through a local copy and its relative paths re-rooted at its URL."""
    if local:
        return _load_manifest(Path(root), names, split_fractions, problems)
    manifest = root if fs.isfile(root) else next(
        (f"{root}/{n}" for n in _MANIFEST_NAMES if fs.isfile(f"{root}/{n}")), None)
    if manifest is None:
        raise DatasetError(f"{fs.unstrip_protocol(root)}: no {' / '.join(_MANIFEST_NAMES)} in this folder")
    with tempfile.TemporaryDirectory(prefix="dia-llama-manifest-") as tmp:
        copy = Path(tmp) / PurePosixPath(manifest).name
        fs.get(manifest, str(copy))
        cases, names, _ = _load_manifest(copy, names, split_fractions, problems)
        local_base = str(copy.parent.resolve())
    remote_base = fs.unstrip_protocol(str(PurePosixPath(manifest).parent))
    for case in cases:
        if case.volume.startswith(local_base + os.sep):
            case.volume = remote_base + "/" + case.volume[len(local_base) + 1:].replace(os.sep, "/")
    return cases, names, fs.unstrip_protocol(manifest)


__all__ = ["load_streaming_dataset"]
