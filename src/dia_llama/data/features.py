"""🤗 `datasets` features of the CT report data sets, and reading a row's volume whatever its column holds.

Columns (`dataset_features`):

* ``volume``: ``Nifti(decode=False)`` when the installed `datasets` has the `Nifti` feature and every volume of the
  data set is a ``.nii``/``.nii.gz`` file, else ``Value("string")`` (DICOM series, slice folders, NRRD/MHA, or an
  older `datasets`); `volume_feature="string"` asks for the string column. The feature keeps the path (no bytes are
  copied into Arrow) and decoding stays lazy and ours: :func:`volume_path` / :func:`local_volume` give the file, and
  ``load_example_volume`` reads it with this package's readers (canonical orientation, HU scaling, CT-RATE metadata,
  size guards, errors that name the file). ``decode=False`` because `datasets`' own decoding (a nibabel image)
  would bypass those readers and raise bare nibabel errors from ``ds[i]`` for a missing or corrupt file. For nibabel
  images, ``ds.cast_column("volume", Nifti())``; for a string column, :func:`cast_volume_column` casts to `Nifti`.
  Rows whose ``volume`` holds bytes (a data set pushed with ``embed_external_files``) are read through a temporary
  file, remote paths (``hf://``, ``s3://``, … any fsspec URL) likewise.
* ``labels``: ``List(Value("int64"))``, one value per disease (1 present, 0 absent, -1 unknown), in the order of
* ``diseases``: ``List(ClassLabel(names=disease_names))``, the diseases present as class indices — the 🤗 multi-label
  convention, which carries the disease names in the features (``ds.features["diseases"].feature.names``,
  ``.int2str``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
VOLUME_FEATURES = ("auto", "nifti", "string")


def has_nifti_feature() -> bool:
    """Whether the installed `datasets` has the `Nifti` feature (datasets >= 4.1)."""
    import datasets

    return hasattr(datasets, "Nifti")


def _is_nifti_name(path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def volume_feature(volumes, requested: str = "auto"):
    """The ``volume`` feature for these paths: ``Nifti(decode=False)`` or ``Value("string")`` (see the module)."""
    import datasets

    if requested not in VOLUME_FEATURES:
        raise ValueError(f"volume_feature must be one of {VOLUME_FEATURES}, got {requested!r}")
    volumes = list(volumes)
    if requested == "string" or not has_nifti_feature():
        if requested == "nifti":
            raise ValueError(f"datasets {datasets.__version__} has no Nifti feature (datasets >= 4.1 has it); "
                             "use volume_feature='string'")
        return datasets.Value("string")
    all_nifti = bool(volumes) and all(_is_nifti_name(v) for v in volumes)
    if requested == "nifti" and not all_nifti:
        bad = next(str(v) for v in volumes if not _is_nifti_name(v)) if volumes else "(no volumes)"
        raise ValueError(f"volume_feature='nifti' needs NIfTI files only; {bad} is not one")
    return datasets.Nifti(decode=False) if all_nifti else datasets.Value("string")


def dataset_features(disease_names, volume):
    """The `Features` of every split (``volume``: the feature from :func:`volume_feature`)."""
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"), "volume": volume, "report": datasets.Value("string"),
        "labels": datasets.List(datasets.Value("int64")),
        "diseases": datasets.List(datasets.ClassLabel(names=list(disease_names))),
        "split": datasets.Value("string"),
        "spacing": datasets.List(datasets.Value("float64")), "rescale": datasets.List(datasets.Value("float64")),
    })


def example_row(case) -> dict:
    """A row of the data set from a parsed case (anything with id, volume, report, labels, split, spacing, rescale)."""
    return {"id": case.id, "volume": case.volume, "report": case.report, "labels": list(case.labels),
            "diseases": [i for i, v in enumerate(case.labels) if v == 1], "split": case.split,
            "spacing": case.spacing, "rescale": case.rescale}


def disease_names_from_features(features) -> list[str] | None:
    """The disease names of a data set's features (the ``diseases`` ClassLabel), or None."""
    feature = (features or {}).get("diseases") if hasattr(features, "get") else None
    names = getattr(getattr(feature, "feature", None), "names", None)
    return [str(n) for n in names] if names else None


def volume_path(value) -> str | None:
    """The path (or URL) of a row's ``volume``: a string, a `Nifti` value ``{"path", "bytes"}`` or a nibabel image
    decoded by `datasets`. None when the value holds bytes only."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return None if value is None else os.fspath(value)
    if isinstance(value, dict):
        return value.get("path")
    file_map = getattr(value, "file_map", None)  # a nibabel image (Nifti(decode=True))
    if file_map is not None and "image" in file_map and file_map["image"].filename:
        return str(file_map["image"].filename)
    raise TypeError(f"a volume must be a path, a Nifti value or a nibabel image, not {type(value).__name__}")


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


@contextlib.contextmanager
def local_volume(value) -> Iterator[str]:
    """A local path for a row's ``volume``: the path itself, or a temporary copy (removed on exit) of a remote file
    (any fsspec URL) or of the bytes a `Nifti` value embeds."""
    path = volume_path(value)
    if path is not None and not _is_remote(path):
        yield path.removeprefix("file://")
        return
    if path is None:
        data = value.get("bytes") if isinstance(value, dict) else value.to_bytes()
        if not data:
            raise ValueError("the volume holds neither a path nor bytes")
        name = "volume.nii.gz" if data[:2] == b"\x1f\x8b" else "volume.nii"
    else:
        data, name = None, Path(path.split("::")[-1]).name
    with tempfile.TemporaryDirectory(prefix="dia-llama-volume-") as tmp:
        local = os.path.join(tmp, name)
        if data is not None:
            Path(local).write_bytes(data)
        else:
            import fsspec

            try:
                with fsspec.open(path, "rb") as src, open(local, "wb") as dst:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
            except (OSError, ValueError) as exc:
                raise OSError(f"{path}: cannot fetch the volume ({type(exc).__name__}: {exc})") from exc
        yield local


def cast_volume_column(dataset, decode: bool = False):
    """A data set (or DatasetDict) whose string ``volume`` column of NIfTI paths is cast to ``Nifti(decode=...)``
    (``decode=True``: rows give nibabel images). Raises ValueError where `datasets` has no `Nifti` feature."""
    import datasets

    if not has_nifti_feature():
        raise ValueError(f"datasets {datasets.__version__} has no Nifti feature (datasets >= 4.1 has it)")
    return dataset.cast_column("volume", datasets.Nifti(decode=decode))


__all__ = [
    "VOLUME_FEATURES",
    "cast_volume_column",
    "dataset_features",
    "disease_names_from_features",
    "example_row",
    "has_nifti_feature",
    "local_volume",
    "volume_feature",
    "volume_path",
]
