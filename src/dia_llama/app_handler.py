"""The request handler of `dia-llama app`, as plain Python (no Gradio): read an uploaded scan (a volume file or a
zip of a DICOM series), diagnose it, generate its report, and keep what the viewer draws.

    service = ReportService(model, processor, "runs/demo/model")
    analysis = service.analyze("scan.nii.gz")      # raises ScanError with one clear message
    analysis.record                                # the `dia-llama generate --json` record (inference.RECORD_SCHEMA)

The bundled example cases are synthetic phantoms written deterministically (`write_example_cases`), so the app works
with no upload and offline.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .app_views import DisplayVolume

UPLOAD_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".zip")
MAX_ZIP_MEMBERS = 5000  # a CT series has a few hundred to a couple of thousand slices
MAX_ZIP_BYTES = 2 * 1024**3  # uncompressed bytes extracted from one zip, counted as they are written


class ScanError(ValueError):
    """A scan the app cannot report on; the message names the file and the problem (shown as is in the page)."""


# ---------------------------------------------------------------------------------------------------------------------
# Example cases


@dataclass(frozen=True)
class ExampleCase:
    name: str  # file stem
    label: str  # shown in the page
    findings: tuple[str, ...]
    seed: int


EXAMPLE_CASES = (
    ExampleCase("example_pleural_effusion_cardiomegaly", "Synthetic: pleural effusion + cardiomegaly",
                ("pleural effusion", "cardiomegaly"), 11),
    ExampleCase("example_lung_lesion", "Synthetic: lung lesion", ("lung lesion",), 12),
    ExampleCase("example_support_devices_atelectasis", "Synthetic: support devices + atelectasis",
                ("support devices", "atelectasis"), 13),
    ExampleCase("example_no_finding", "Synthetic: no finding", (), 14),
)
EXAMPLE_VOLUME_SIZE = (128, 128, 64)


def write_example_cases(folder, volume_size=EXAMPLE_VOLUME_SIZE) -> list[tuple[ExampleCase, Path]]:
    """Write the bundled synthetic cases as NIfTI files into `folder` (deterministic: fixed seeds, so the same bytes
    on every machine) and return (case, path) pairs. Each case also gets its phantom's reference report beside it
    (`<name>.txt`)."""
    from .data.synthetic import make_case
    from .volume_io import write_nifti

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case in EXAMPLE_CASES:
        path = folder / f"{case.name}.nii.gz"
        if not path.exists():
            hu, spacing, report, _ = make_case(np.random.default_rng(case.seed), {d: 1 for d in case.findings},
                                               volume_size=volume_size)
            write_nifti(path, hu, spacing)
            (folder / f"{case.name}.txt").write_text(report + "\n", encoding="utf-8")
        out.append((case, path))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Reading an upload


def upload_suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in UPLOAD_SUFFIXES if lower.endswith(s)), Path(lower).suffix)


def extract_zip_safely(archive, dest, max_members: int = MAX_ZIP_MEMBERS, max_bytes: int = MAX_ZIP_BYTES,
                       name: str | None = None) -> int:
    """Extract the regular files of a zip into the flat folder `dest` under numbered names (no name from the archive
    is ever used as a path, so no entry can escape `dest`). Skipped: folders, symbolic links, macOS resource forks and
    hidden files. Refused (ScanError): encrypted entries, more than `max_members` files, more than `max_bytes`
    uncompressed bytes (counted while writing, whatever the headers declare). Returns the number of files."""
    label = name or Path(archive).name
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise ScanError(f"{label}: not a readable zip archive ({err})") from None
    written = 0
    total = 0
    with zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            junk = any(p == "__MACOSX" or p.startswith(".") and p not in (".", "..") for p in parts)
            if info.is_dir() or is_link or not parts or junk:
                continue
            if info.flag_bits & 0x1:
                raise ScanError(f"{label}: {info.filename} is encrypted; upload an unencrypted zip")
            if written >= max_members:
                raise ScanError(f"{label}: more than {max_members} files; a zip should hold one DICOM series")
            target = dest / f"{written:05d}.dcm"
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise ScanError(f"{label}: more than {max_bytes / 1024**3:.1f} GiB once unpacked; "
                                            "refused (a zip bomb, or more than one CT)")
                        dst.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as err:
                raise ScanError(f"{label}: cannot unpack {info.filename} ({err})") from None
            written += 1
    if not written:
        raise ScanError(f"{label}: the zip holds no files")
    return written


def read_scan(path, name: str | None = None, read_options: dict | None = None):
    """An upload → (Volume, notes): a NIfTI / NRRD / MHA file, or a zip of one DICOM series (unpacked to a temporary
    folder that is removed once read). `name`: how messages name the scan (default: the file name). Warnings of the
    reader (another series left out, slices resampled, ...) come back as notes. Raises ScanError."""
    from .volume_io import read_volume

    path = Path(path)
    name = name or path.name
    suffix = upload_suffix(name)
    if suffix not in UPLOAD_SUFFIXES:
        raise ScanError(f"{name}: unsupported file type {suffix or '(none)'!r}; upload a NIfTI (.nii, .nii.gz), "
                        "NRRD (.nrrd), MetaImage (.mha) file or a .zip of a DICOM series")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if suffix == ".zip":
            folder = Path(tempfile.mkdtemp(prefix="dia-llama-dicom-"))
            try:
                extract_zip_safely(path, folder, name=name)
                volume = _read_renamed(read_volume, folder, name, read_options)
                volume.stored()  # the series is in memory before its folder goes
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:
            volume = _read_renamed(read_volume, path, name, read_options)
    notes = [_renamed(str(w.message), (str(path), str(path.parent)), name) for w in caught]
    return volume, notes


def _renamed(text: str, paths, name: str) -> str:
    for p in paths:  # the temporary path → the name the user knows
        text = text.replace(p + "/", "").replace(p, name)
    return text


def _read_renamed(read_volume, source: Path, name: str, read_options: dict | None):
    try:
        return read_volume(source, **(read_options or {}))
    except (ValueError, OSError) as err:  # VolumeReadError is a ValueError
        raise ScanError(_renamed(" ".join(str(err).split()), (str(source),), name)) from None
    except ImportError as err:
        raise ScanError(f"{name}: {err}") from None


# ---------------------------------------------------------------------------------------------------------------------
# One request


@dataclass
class ScanAnalysis:
    """One scan's result: the record of `generate --json`, and what the viewer draws."""

    record: dict  # {scan, report, diagnoses: [{disease, probability, present}], model}
    volume: DisplayVolume
    attention: np.ndarray | None  # (L, h, w, d) disease-aware attention, each map min-max scaled; None: no DAA
    thresholds: list[float | None]  # per disease; None where the decision is derived ("no finding")
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # read / model

    @property
    def disease_names(self) -> list[str]:
        return [d["disease"] for d in self.record["diagnoses"]]

    def table(self) -> list[list]:
        """Rows [disease, probability, threshold, decision] for the diagnosis table."""
        return [[d["disease"], round(d["probability"], 3), "derived" if t is None else round(t, 3),
                 "present" if d["present"] else "absent"] for d, t in zip(self.record["diagnoses"], self.thresholds)]

    def default_disease(self) -> str:
        """The most probable finding that is present (else the most probable one), "no finding" left out."""
        candidates = [d for d in self.record["diagnoses"] if d["disease"] != "no finding"] or self.record["diagnoses"]
        return max(candidates, key=lambda d: (d["present"], d["probability"]))["disease"]


class ReportService:
    """Reads an uploaded scan, diagnoses it and generates its report with one loaded model. Not thread-safe: the app
    runs one request at a time (one model, a CPU)."""

    def __init__(self, model, processor, model_name: str, allow_non_ct: bool = False, **generation_kwargs):
        self.model, self.processor, self.model_name = model, processor, str(model_name)
        self.allow_non_ct = allow_non_ct
        self.generation_kwargs = generation_kwargs
        config = model.config
        names = list(config.disease_names)
        thresholds = config.diagnosis_thresholds or [0.5] * len(names)
        derived = {"no finding"} if getattr(config, "derive_no_finding", False) else set()
        self.thresholds = [None if n in derived else float(t) for n, t in zip(names, thresholds)]
        self.grid_size = tuple(config.vision_config.grid_size)

    def analyze(self, path, name: str | None = None) -> ScanAnalysis:
        """One upload → ScanAnalysis. Raises ScanError (bad file, not CT, ...) with a message naming the scan."""
        name = name or Path(path).name
        start = time.perf_counter()
        volume, notes = read_scan(path, name, self.processor.image_processor.read_options)
        if volume.kind == "other":
            what = (f"{volume.meta['modality']} data" if volume.meta.get("modality")
                    else "no air-like values below -500")
            if not self.allow_non_ct:
                raise ScanError(f"{name}: not a CT scan ({what}, not Hounsfield units); this model reads chest CT. "
                                "Start the app with --allow-non-ct to report on it anyway")
            notes.append(f"{name}: not a CT scan ({what}); reported on anyway (--allow-non-ct)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                pixel_values = self.processor.image_processor.process_volume(volume)  # (C, H', W', D')
            except (ValueError, OSError) as err:
                raise ScanError(_renamed(" ".join(str(err).split()), (volume.source, str(path)), name)) from None
        notes += [_renamed(str(w.message), (volume.source, str(path)), name) for w in caught]
        stored = volume.stored()
        display = DisplayVolume.from_stored(stored.data, volume.spacing, volume.kind == "hu",
                                            stored.rescale if stored.is_scaled else None)
        read_s = time.perf_counter() - start

        start = time.perf_counter()
        inputs = dict(self.processor.pad([self.processor.prompt_ids()], side="left"))
        inputs["pixel_values"] = pixel_values[None]
        reports, diagnoses, attention = self._generate(inputs)
        record = {"scan": name, "report": reports[0], "diagnoses": diagnoses[0], "model": self.model_name}
        return ScanAnalysis(record, display, attention, list(self.thresholds), notes,
                            {"read": read_s, "model": time.perf_counter() - start})

    @torch.no_grad()
    def _generate(self, inputs: dict):
        """Diagnose and generate in one `generate` call (as `inference.generate_batch`), keeping the disease
        attention of its diagnosis: (reports, diagnosis records, attention grids)."""
        from .inference import diagnosis_records

        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        out = self.model.generate(**inputs, return_dict_in_generate=True, **self.generation_kwargs)
        diagnosis = out["diagnoses"]
        reports = self.processor.batch_decode(out.sequences)
        return reports, diagnosis_records(diagnosis, digits=6), self._attention_grids(diagnosis.attention)

    def _attention_grids(self, attention: torch.Tensor | None) -> np.ndarray | None:
        """(L, M) or (1, L, M) attention → (L, h, w, d), each disease's map min-max scaled to [0, 1] (where that
        disease looks most, relative to the rest of the volume; a flat map is all 0)."""
        if attention is None:
            return None
        attention = attention[0] if attention.ndim == 3 else attention
        grids = attention.float().reshape(attention.shape[0], *self.grid_size).cpu().numpy()  # (h w d) order
        flat = grids.reshape(len(grids), -1)
        low = flat.min(axis=1).reshape(-1, 1, 1, 1)
        span = (flat.max(axis=1) - flat.min(axis=1)).reshape(-1, 1, 1, 1)
        return np.where(span > 0, (grids - low) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


__all__ = [
    "EXAMPLE_CASES",
    "ExampleCase",
    "ReportService",
    "ScanAnalysis",
    "ScanError",
    "UPLOAD_SUFFIXES",
    "extract_zip_safely",
    "read_scan",
    "write_example_cases",
]
