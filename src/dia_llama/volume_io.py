"""Read CT volumes from common formats into one canonical numpy layout.

Hub remote-code file: imports only the standard library and numpy at module level;
nibabel, pydicom, SimpleITK, Pillow (and torch) are imported lazily when needed.

Canonical layout: ``array[row, col, slice]``, shape (H, W, D), slices last, in the
DICOM-LPS radiological display convention:

* rows run anterior -> posterior,
* columns run patient right -> left (increasing column index = towards patient Left),
* slices run inferior -> superior.

``spacing`` = (row_spacing_mm, col_spacing_mm, slice_spacing_mm), matching the axes.
In NIfTI (RAS) terms the data is ``a.transpose(1, 0, 2)`` with affine
``diag(-col_spacing, -row_spacing, slice_spacing, 1)`` (axis codes L, P, S).

File readers keep the values as stored (e.g. int16, in the file's memory order, the canonical axes as views, plus
the NIfTI ``scl_slope``/``scl_inter``): ``Volume.array`` builds the float32 C-ordered array on first access, while
``Volume.stored()`` hands the stored values to code that shrinks the volume first (the processor resizes them and
converts only the small result). ``.nii.gz`` files are decompressed with python-isal when it is installed.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VolumeReadError", "Volume", "StoredArray", "read_volume", "write_nifti", "list_supported_formats"]

ARRAY_SOURCE = "<array>"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_NUMPY_SUFFIXES = (".npy", ".npz")
_NPZ_KEYS = ("volume", "image", "arr_0")
_AXIAL_IOP = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


class VolumeReadError(ValueError):
    """A volume could not be read; the message names the file/folder (or "<array>") and the problem."""


@dataclass(frozen=True, eq=False)
class StoredArray:
    """A volume's values as read, before the conversion that ``Volume.array`` applies.

    ``data``: (H, W, D) canonical view (any strides, native byte order, maybe read-only) of the stored values, an
    integer or float32 dtype; the real values are ``rescale(data)`` (NIfTI ``scl_slope``/``scl_inter``, applied the
    way nibabel does), cast to ``dtype`` (float32, or uint8 for 8-bit data).
    """

    data: np.ndarray
    slope: Any = 1.0
    inter: Any = 0.0
    dtype: np.dtype = np.dtype(np.float32)

    @property
    def is_scaled(self) -> bool:
        return not _is_identity_scaling(self.slope, self.inter)

    def rescale(self, values: np.ndarray) -> np.ndarray:
        """Stored values (the data or any part or nearest-neighbour resize of it) -> real values (not yet cast)."""
        return _apply_scaling(values, self.slope, self.inter) if self.is_scaled else values

    def materialize(self) -> np.ndarray:
        """The canonical C-contiguous array (what the readers returned before they kept the stored values)."""
        return c_contiguous(self.rescale(self.data), self.dtype)


def c_contiguous(values: np.ndarray, dtype) -> np.ndarray:
    """`values` as a C-contiguous array of `dtype` with non-negative strides (torch.from_numpy accepts it)."""
    out = np.ascontiguousarray(values, dtype=dtype)
    # numpy calls an array with a flipped length-1 axis contiguous; torch.from_numpy rejects its negative stride
    return out.copy() if any(st < 0 for st in out.strides) else out


@dataclass
class Volume:
    """A 3D volume in the canonical layout (see module docstring).

    File readers fill it lazily: ``array`` is computed on first access (float32 HU for CT, uint8 for 8-bit slice
    stacks, C-contiguous (H, W, D)); ``stored()`` gives the values as read without that conversion.
    """

    array: np.ndarray  # (H, W, D): float32 HU for CT, uint8 for 8-bit slice stacks
    spacing: tuple[float, float, float]  # mm (row, col, slice); (1.0, 1.0, 1.0) when unknown
    source: str  # path or "<array>"
    kind: str  # "hu" | "uint8" | "unknown"
    meta: dict = field(default_factory=dict)

    @classmethod
    def _from_stored(cls, stored: StoredArray, spacing, source: str, kind: str, meta: dict) -> Volume:
        vol = cls(None, spacing, source, kind, meta)  # type: ignore[arg-type]
        vol.__dict__["_stored"] = stored
        return vol

    def stored(self) -> StoredArray:
        """The values as read (before the float32 conversion and C-order copy), or ``array`` once that exists."""
        lazy = self.__dict__.get("_stored")
        return lazy if lazy is not None else StoredArray(self.array, dtype=np.asarray(self.array).dtype)

    def __repr__(self) -> str:
        lazy = self.__dict__.get("_stored")
        shape, dtype = (lazy.data.shape, lazy.dtype) if lazy is not None else (self.array.shape, self.array.dtype)
        return (
            f"Volume(shape={tuple(shape)}, dtype={dtype}, spacing={self.spacing}, "
            f"kind={self.kind!r}, source={self.source!r})"
        )


def _get_volume_array(vol: Volume) -> np.ndarray:
    state = vol.__dict__
    if "_array" not in state and "array" in state:  # unpickled from before the property
        state["_array"] = state.pop("array")
    lazy = state.get("_stored")
    if lazy is not None:
        state["_array"] = lazy.materialize()
        state["_stored"] = None  # keep one copy of the data
    return state["_array"]


def _set_volume_array(vol: Volume, value) -> None:
    vol.__dict__["_array"] = value
    vol.__dict__["_stored"] = None


# A property over the dataclass field: the generated __init__/__eq__/replace go through it.
Volume.array = property(  # type: ignore[assignment]
    _get_volume_array, _set_volume_array, doc="(H, W, D) float32 HU for CT, uint8 for 8-bit slice stacks"
)


def list_supported_formats() -> list[str]:
    """Inputs understood by :func:`read_volume` (extensions, folder kinds, in-memory types)."""
    return [
        *_NIFTI_SUFFIXES,
        *_SITK_SUFFIXES,
        *_DICOM_SUFFIXES,
        "dicom_folder",
        "image_folder(" + ",".join(_IMAGE_SUFFIXES) + ")",
        *_NUMPY_SUFFIXES,
        "numpy.ndarray",
        "torch.Tensor",
    ]


# --------------------------------------------------------------------------- helpers
def _require(module: str, what: str, pip_name: str | None = None):
    """Import an optional dependency or raise an ImportError telling what to pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = pip_name or module
        raise ImportError(f"{what} needs {pkg}: pip install {pkg}") from exc


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _check_spacing(spacing: Any, label: str) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(f"{label}: invalid spacing {spacing!r} ({exc})") from exc
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise VolumeReadError(f"{label}: spacing must be 3 positive finite numbers (mm), got {spacing!r}")
    return sp  # type: ignore[return-value]


def _spacing_or_default(values, label: str, meta: dict) -> tuple[float, float, float]:
    """File spacing -> 3 positive floats; unusable values become 1.0 (recorded in meta)."""
    out = []
    for v in values:
        v = float("nan") if v is None else float(v)
        ok = bool(np.isfinite(v) and v > 0)
        meta["spacing_defaulted"] = meta.get("spacing_defaulted", False) or not ok
        out.append(v if ok else 1.0)
    return tuple(out)  # type: ignore[return-value]


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _tensor_to_numpy(t) -> np.ndarray:
    t = t.detach().cpu()
    try:
        return t.numpy()
    except TypeError:  # bfloat16 and other dtypes numpy lacks
        return t.float().numpy()


def _is_identity_scaling(slope, inter) -> bool:
    slope = 1.0 if slope is None else slope
    inter = 0.0 if inter is None else inter
    return bool(slope == 1 and inter == 0)


def _apply_scaling(values: np.ndarray, slope, inter) -> np.ndarray:
    """``values * slope + inter`` exactly as nibabel's ArrayProxy scales on read (same upcasting), so that scaling
    any part of the stored data gives the values ``np.asanyarray(img.dataobj)`` would hold there."""
    from nibabel.volumeutils import apply_read_scaling  # scaling comes only from NIfTI headers

    scl_slope = np.asanyarray(1.0 if slope is None else slope)
    scl_inter = np.asanyarray(0.0 if inter is None else inter)
    if np.can_cast(scl_inter, scl_slope.dtype):
        scl_inter = scl_inter.astype(scl_slope.dtype)
    return apply_read_scaling(values, scl_slope, scl_inter)


def _validate(arr: np.ndarray, label: str) -> None:
    if arr.ndim != 3:
        raise VolumeReadError(f"{label}: expected a 3D volume, got {arr.ndim}D data with shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise VolumeReadError(f"{label}: volume is empty (zero-size, shape {tuple(arr.shape)})")
    if arr.dtype.kind not in "biuf":
        raise VolumeReadError(f"{label}: unsupported data type {arr.dtype}")


def _check_finite(arr: np.ndarray, label: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        problem = "NaN" if np.isnan(arr).any() else "inf"
        raise VolumeReadError(f"{label}: volume contains {problem} values")


def _scaling_fits_float32(dtype: np.dtype, slope, inter) -> bool:
    """Whether every stored integer value scales to a finite float32 (then no full pass is needed to check)."""
    info = np.iinfo(dtype)
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    bound = max(abs(info.min * slope + inter), abs(info.max * slope + inter))
    return bool(np.isfinite(bound) and bound < float(np.finfo(np.float32).max))


def _stored(arr: np.ndarray, label: str, *, keep_uint8: bool, slope=1.0, inter=0.0) -> StoredArray:
    """Validate (3D, non-empty, real, finite once converted) without converting or copying integer data.

    Integer data stays as it is (any strides), with its scaling; float data becomes float32 (in its memory order);
    byte-swapped data is swapped. Float data with a scaling, and integer data whose scaling could overflow float32,
    are scaled here (as the eager readers did), so that ``Volume.array`` can never turn out non-finite."""
    _validate(arr, label)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    scaled = not _is_identity_scaling(slope, inter)
    if scaled and (arr.dtype.kind not in "iu" or not _scaling_fits_float32(arr.dtype, slope, inter)):
        arr = np.asarray(_apply_scaling(arr, slope, inter))
        slope, inter, scaled = 1.0, 0.0, False
    if arr.dtype.kind not in "iu" and arr.dtype != np.float32:  # bool, float16, float64, ...
        arr = arr.astype(np.float32)  # keeps the memory order
    _check_finite(arr, label)
    dtype = np.dtype(np.uint8 if keep_uint8 and arr.dtype == np.uint8 and not scaled else np.float32)
    return StoredArray(arr, slope, inter, dtype)


def _finalize(arr: np.ndarray, label: str, *, keep_uint8: bool) -> np.ndarray:
    """Validate (3D, non-empty, finite) and cast: uint8 stays uint8 if ``keep_uint8``, else float32 (C order)."""
    return _stored(arr, label, keep_uint8=keep_uint8).materialize()


def _axes_to_hwd(arr: np.ndarray, axis_order: str, label: str) -> np.ndarray:
    """Reorder an array with declared axes (letters H, W, D and optional unit C) to (H, W, D)."""
    order = axis_order.upper()
    if sorted(order.replace("C", "")) != ["D", "H", "W"] or order.count("C") > 1:
        raise VolumeReadError(
            f"{label}: invalid axis_order {axis_order!r}; use e.g. 'HWD', 'DHW', 'WHD', 'CHWD', 'HWDC', 'CDHW'"
        )
    if arr.ndim != len(order):
        raise VolumeReadError(
            f"{label}: array of shape {tuple(arr.shape)} ({arr.ndim}D) does not match axis_order {order!r}; "
            "expected a 3D volume (or 4D with a unit channel axis, e.g. axis_order='CHWD')"
        )
    if "C" in order:
        c = order.index("C")
        if arr.shape[c] != 1:
            raise VolumeReadError(
                f"{label}: {arr.ndim}D array of shape {tuple(arr.shape)} has a channel axis of size {arr.shape[c]} "
                f"(axis_order {axis_order!r}), expected 1"
            )
        arr = np.squeeze(arr, axis=c)
        order = order.replace("C", "")
    return arr.transpose([order.index(a) for a in "HWD"])


# --------------------------------------------------------------------------- NIfTI
def write_nifti(path, array_hwd, spacing=(1.0, 1.0, 1.0), *, dtype=np.int16) -> None:
    """Write a canonical (H, W, D) array as NIfTI so that ``read_volume`` returns it exactly.

    Stores ``array_hwd.transpose(1, 0, 2)`` with affine ``diag(-col_sp, -row_sp, slice_sp, 1)``
    (qform/sform code 1, zooms set, mm units). Integer ``dtype`` rounds the values and raises
    ValueError if they do not fit (no silent clipping). Parent folders are created.
    """
    nib = _require("nibabel", "writing NIfTI")
    path = Path(path)
    if _suffix(path) not in _NIFTI_SUFFIXES:
        raise ValueError(f"{path}: NIfTI file name must end with .nii or .nii.gz")
    a = _tensor_to_numpy(array_hwd) if _is_torch_tensor(array_hwd) else np.asarray(array_hwd)
    if a.ndim != 3 or a.size == 0:
        raise ValueError(f"{path}: expected a non-empty (H, W, D) array, got shape {a.shape}")
    row_sp, col_sp, slice_sp = _check_spacing(spacing, str(path))
    dt = np.dtype(dtype)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{path}: array contains NaN or inf values")
    if dt.kind in "iu":
        if a.dtype.kind == "f":
            a = np.rint(a)
        info = np.iinfo(dt)
        if a.min() < info.min or a.max() > info.max:
            raise ValueError(f"{path}: values [{a.min()}, {a.max()}] do not fit {dt} [{info.min}, {info.max}]")
    data = np.ascontiguousarray(a.astype(dt).transpose(1, 0, 2))  # (W, H, D) = (x->L, y->P, z->S)
    affine = np.diag([-col_sp, -row_sp, slice_sp, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(dt)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _isal_igzip():
    """python-isal's ``igzip`` (ISA-L gzip, about 2x faster than zlib) or None when it is not installed."""
    try:
        from isal import igzip
    except ImportError:
        return None
    return igzip


def _open_nifti(nib, path: Path):
    """(image, stream to close or None). ``.gz`` goes through python-isal when installed: the image is parsed from
    the decompressing stream, which must stay open until the data is read. Otherwise (or when the start of the
    file is not a single-file NIfTI-1/2 header) ``nib.load``, which uses indexed_gzip or the stdlib gzip module."""
    igzip = _isal_igzip() if path.name.lower().endswith(".gz") else None
    if igzip is not None:
        stream = igzip.open(str(path), "rb")
        try:
            head = stream.read(540)
            for klass in (nib.Nifti1Image, nib.Nifti2Image):
                if klass.header_class.may_contain_header(head):
                    stream.seek(0)
                    return klass.from_stream(stream), stream
        except BaseException:
            stream.close()
            raise
        stream.close()
    return nib.load(str(path), mmap=False), None  # in memory: the Volume must not depend on the file later


def _read_nifti(path: Path) -> Volume:
    nib = _require("nibabel", "reading NIfTI")
    from nibabel import orientations as nio

    label = str(path)
    meta: dict[str, Any] = {"format": "nifti"}
    stream = None
    try:
        img, stream = _open_nifti(nib, path)
        shape = img.shape
        slope, inter = 1.0, 0.0
        if len(shape) == 4 and shape[3] == 1:
            img = img.slicer[..., 0]
            raw = np.asanyarray(img.dataobj)  # slicing has applied scl_slope/inter already
        elif len(shape) != 3:
            raise VolumeReadError(f"{label}: expected a 3D NIfTI volume, got {len(shape)}D data with shape {shape}")
        elif hasattr(img.dataobj, "get_unscaled"):
            raw = np.asanyarray(img.dataobj.get_unscaled())  # stored dtype; scl_slope/inter applied later
            slope, inter = img.dataobj.slope, img.dataobj.inter
        else:
            raw = np.asanyarray(img.dataobj)
        hdr = img.header
        if int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 0:
            warnings.warn(f"{label}: NIfTI has no qform/sform; orientation taken from nibabel's default affine")
        ornt = nio.io_orientation(img.affine)
        if np.isnan(ornt).any():
            raise VolumeReadError(f"{label}: NIfTI affine is degenerate, cannot determine orientation")
        xform = nio.ornt_transform(ornt, nio.axcodes2ornt(("L", "P", "S")))
        data = nio.apply_orientation(raw, xform)  # (x->L, y->P, z->S), a view
        zooms = [0.0, 0.0, 0.0]
        for j, z in enumerate(hdr.get_zooms()[:3]):
            zooms[int(xform[j, 0])] = float(str(np.float32(z)))  # shortest decimal: 0.7f -> 0.7, not 0.69999
        meta["orientation"] = "".join(nio.aff2axcodes(img.affine))
        meta["affine"] = img.affine.tolist()
    except (VolumeReadError, ImportError):
        raise
    except Exception as exc:
        raise VolumeReadError(f"{label}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    finally:
        if stream is not None:
            stream.close()
    stored = _stored(data.transpose(1, 0, 2), label, keep_uint8=True, slope=slope, inter=inter)  # (P, L, S)
    kind = "uint8" if stored.dtype == np.uint8 else "hu"
    spacing = _spacing_or_default((zooms[1], zooms[0], zooms[2]), label, meta)
    return Volume._from_stored(stored, spacing, label, kind, meta)


# --------------------------------------------------------------------------- NRRD / MetaImage
def _read_sitk(path: Path) -> Volume:
    sitk = _require("SimpleITK", f"reading {_suffix(path)}")
    label = str(path)
    meta: dict[str, Any] = {"format": _suffix(path).lstrip(".")}
    try:
        img = sitk.ReadImage(label)
        if img.GetDimension() == 4 and img.GetSize()[3] == 1:
            img = img[:, :, :, 0]
        if img.GetDimension() != 3:
            raise VolumeReadError(f"{label}: expected a 3D volume, got {img.GetDimension()}D image {img.GetSize()}")
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise VolumeReadError(
                f"{label}: expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components per voxel"
            )
        meta["orientation"] = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())
        img = sitk.DICOMOrient(img, "LPS")  # index axes (x, y, z) -> (L, P, S)
        data = sitk.GetArrayFromImage(img)  # (z, y, x)
        sx, sy, sz = img.GetSpacing()
        meta["origin"] = img.GetOrigin()
    except (VolumeReadError, ImportError):
        raise
    except Exception as exc:
        raise VolumeReadError(f"{label}: cannot read {meta['format']} ({type(exc).__name__}: {exc})") from exc
    stored = _stored(data.transpose(1, 2, 0), label, keep_uint8=True)  # (y, x, z) = (H, W, D)
    kind = "uint8" if stored.dtype == np.uint8 else "hu"
    return Volume._from_stored(stored, _spacing_or_default((sy, sx, sz), label, meta), label, kind, meta)


# --------------------------------------------------------------------------- DICOM
def _reorient_lps(arr: np.ndarray, dirs: np.ndarray, spacing, label: str):
    """Permute/flip (A0, A1, A2) so axes run (P, L, S); ``dirs[:, i]`` = LPS direction of axis i."""
    world = np.argmax(np.abs(dirs), axis=0)  # world axis (0=L, 1=P, 2=S) of each array axis
    if sorted(world.tolist()) != [0, 1, 2]:
        raise VolumeReadError(f"{label}: cannot map DICOM orientation {dirs.T.round(3).tolist()} to LPS axes")
    for i in range(3):
        if dirs[world[i], i] < 0:
            arr = np.flip(arr, axis=i)
    out_of_world = {1: 0, 0: 1, 2: 2}  # canonical output axis for world P, L, S
    perm = [0, 0, 0]
    for i in range(3):
        perm[out_of_world[int(world[i])]] = i
    return arr.transpose(perm), tuple(spacing[p] for p in perm)


def _dcm_float_list(ds, keyword: str, n: int):
    val = ds.get(keyword)
    if val is None:
        return None
    try:
        out = [float(v) for v in val]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _modality_lut():
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom >= 3
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut


def _read_dicom_headers(files: list[Path], pydicom):
    """Headers of the readable image DICOMs among ``files``; returns (datasets, n_skipped)."""
    headers, skipped = [], 0
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # not DICOM (README, thumbnails, garbage) -> skipped
            skipped += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, SR, presentation states, ...
            skipped += 1
            continue
        ds.filename = str(f)
        headers.append(ds)
    return headers, skipped


def _read_dicom(source: Path, files: list[Path]) -> Volume:
    pydicom = _require("pydicom", "reading DICOM")
    label = str(source)
    headers, skipped = _read_dicom_headers(files, pydicom)
    if not headers:
        if source.is_file():
            raise VolumeReadError(f"{label}: not a valid DICOM image file (unreadable or no pixel data)")
        n_sub = sum(1 for p in source.iterdir() if p.is_dir())
        hint = f"; it has {n_sub} subfolder(s), pass a series folder" if n_sub else ""
        raise VolumeReadError(f"{label}: no DICOM files in {label} ({skipped} non-DICOM file(s) skipped{hint})")

    series: dict[str, list] = {}
    for ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>")), []).append(ds)

    def is_axial(items) -> bool:
        iop = _dcm_float_list(items[0], "ImageOrientationPatient", 6)
        return iop is None or bool(np.allclose(np.abs(iop), _AXIAL_IOP, atol=0.1))

    uid = max(series, key=lambda u: (is_axial(series[u]), len(series[u])))
    chosen = series[uid]
    if len(series) > 1:
        sizes = ", ".join(f"{u} ({len(v)} files)" for u, v in series.items())
        warnings.warn(
            f"{label}: found {len(series)} series [{sizes}]; using the largest axial one {uid} ({len(chosen)} slices)"
        )
    meta: dict[str, Any] = {
        "format": "dicom",
        "series_uid": uid,
        "n_series_found": len(series),
        "n_files_skipped": skipped,
        "modality": str(chosen[0].get("Modality", "")),
    }

    # Geometry: all slices must share size and orientation.
    first = chosen[0]
    rows, cols = int(first.Rows), int(first.Columns)
    for ds in chosen[1:]:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise VolumeReadError(
                f"{label}: slices differ in size within series {uid}: {ds.filename} is "
                f"{int(ds.Rows)}x{int(ds.Columns)} (Rows x Columns), {first.filename} is {rows}x{cols}"
            )
    iop = _dcm_float_list(first, "ImageOrientationPatient", 6)
    if iop is None:
        iop = _AXIAL_IOP.tolist()
        meta["orientation_assumed"] = True
    for ds in chosen[1:]:
        other = _dcm_float_list(ds, "ImageOrientationPatient", 6)
        if other is not None and not np.allclose(other, iop, atol=1e-2):
            raise VolumeReadError(f"{label}: slices have different ImageOrientationPatient ({ds.filename})")
    row_cos, col_cos = np.array(iop[:3]), np.array(iop[3:])  # along a row (col index), along a column (row index)
    normal = np.cross(row_cos, col_cos)
    meta["image_orientation_patient"] = [float(v) for v in iop]

    # Slice order: position along the normal, falling back to InstanceNumber.
    positions = [_dcm_float_list(ds, "ImagePositionPatient", 3) for ds in chosen]
    thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    slice_sp = float(thickness) if thickness else None
    if all(p is not None for p in positions):
        z = np.array([float(np.dot(p, normal)) for p in positions])
        order = np.argsort(z, kind="stable")
        chosen, z = [chosen[i] for i in order], z[order]
        if len(z) > 1:
            gaps = np.diff(z)
            if (gaps < 1e-3).any():
                i = int(np.argmax(gaps < 1e-3))
                raise VolumeReadError(
                    f"{label}: duplicate slice positions ({z[i]:.3f} mm) in "
                    f"{chosen[i].filename} and {chosen[i + 1].filename}"
                )
            slice_sp = float(np.median(gaps))
            if gaps.max() - gaps.min() > 0.01 * slice_sp + 1e-3:
                meta["slice_spacing_range"] = (float(gaps.min()), float(gaps.max()))
                warnings.warn(
                    f"{label}: non-uniform slice spacing ({gaps.min():.3f}-{gaps.max():.3f} mm); "
                    f"using median {slice_sp:.3f}"
                )
    else:
        if len(chosen) > 1:
            warnings.warn(f"{label}: ImagePositionPatient missing; ordering slices by InstanceNumber")
        meta["sorted_by"] = "InstanceNumber"
        chosen = sorted(chosen, key=lambda ds: int(ds.get("InstanceNumber") or 0))

    apply_modality_lut = _modality_lut()
    slices = []
    has_rescale = False
    for ds_h in chosen:
        f = ds_h.filename
        try:
            ds = pydicom.dcmread(f)
            if int(ds.get("NumberOfFrames") or 1) > 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
                raise VolumeReadError(
                    f"{label}: {f} is multi-frame or colour DICOM, which is not supported "
                    "(convert to a series or NIfTI)"
                )
            px = ds.pixel_array  # (Rows, Cols)
            has_rescale |= "RescaleSlope" in ds or "RescaleIntercept" in ds
            slices.append(np.asarray(apply_modality_lut(px, ds), dtype=np.float32))
        except (VolumeReadError, ImportError):
            raise
        except Exception as exc:
            raise VolumeReadError(
                f"{label}: cannot decode DICOM pixel data of {f} ({type(exc).__name__}: {exc}); compressed transfer "
                "syntaxes may need: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
            ) from exc
    arr = np.stack(slices, axis=-1)  # (Rows, Cols, S): rows along col_cos, cols along row_cos, slices along normal
    ps = _dcm_float_list(first, "PixelSpacing", 2) or [None, None]
    spacing = _spacing_or_default((ps[0], ps[1], slice_sp), label, meta)
    arr, spacing = _reorient_lps(arr, np.stack([col_cos, row_cos, normal], axis=1), spacing, label)
    meta["n_slices"] = len(slices)
    kind = "hu" if meta["modality"].upper() == "CT" or has_rescale else "unknown"
    return Volume._from_stored(_stored(arr, label, keep_uint8=False), spacing, label, kind, meta)


# --------------------------------------------------------------------------- image slice folders
def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_image_folder(folder: Path, files: list[Path]) -> Volume:
    Image = _require("PIL.Image", "reading image slices", pip_name="pillow")
    label = str(folder)
    images = sorted((f for f in files if f.suffix.lower() in _IMAGE_SUFFIXES), key=lambda p: _natural_key(p.name))
    slices, size0 = [], None
    for f in images:
        try:
            with Image.open(f) as im:
                im.load()
                if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                    raise VolumeReadError(
                        f"{label}: {f.name} is a 16-bit/float image (mode {im.mode}); only 8-bit slices are "
                        "supported, use DICOM/NIfTI for HU data"
                    )
                sl = np.asarray(im.convert("L"), dtype=np.uint8)  # (H, W)
        except VolumeReadError:
            raise
        except Exception as exc:
            raise VolumeReadError(f"{label}: cannot read image slice {f.name} ({type(exc).__name__}: {exc})") from exc
        if size0 is None:
            size0 = sl.shape
        elif sl.shape != size0:
            raise VolumeReadError(
                f"{label}: slice {f.name} has size {sl.shape[0]}x{sl.shape[1]}, "
                f"expected {size0[0]}x{size0[1]} like {images[0].name}"
            )
        slices.append(sl)
    meta = {"format": "image_folder", "files": [f.name for f in images], "n_files_skipped": len(files) - len(images)}
    arr = _finalize(np.stack(slices, axis=-1), label, keep_uint8=True)  # (H, W, D)
    return Volume(arr, (1.0, 1.0, 1.0), label, "uint8", meta)


# --------------------------------------------------------------------------- numpy / in-memory
def _read_numpy_file(path: Path, axis_order: str) -> Volume:
    label = str(path)
    try:
        if _suffix(path) == ".npy":
            arr = np.load(label, allow_pickle=False)
        else:
            with np.load(label, allow_pickle=False) as z:
                keys = list(z.keys())
                key = keys[0] if len(keys) == 1 else next((k for k in _NPZ_KEYS if k in keys), None)
                if key is None:
                    raise VolumeReadError(
                        f"{label}: .npz has arrays {keys}; expected a single array or one named {list(_NPZ_KEYS)}"
                    )
                arr = z[key]
    except VolumeReadError:
        raise
    except Exception as exc:
        raise VolumeReadError(f"{label}: cannot read {_suffix(path)} ({type(exc).__name__}: {exc})") from exc
    vol = _from_array(arr, axis_order, label, lazy=True)  # the array was loaded here: no one else holds it
    vol.meta["format"] = _suffix(path).lstrip(".")
    return vol


def _from_array(arr: np.ndarray, axis_order: str, label: str, *, lazy: bool = False) -> Volume:
    arr = np.asarray(arr)
    if arr.ndim not in (3, 4):
        raise VolumeReadError(
            f"{label}: expected a 3D volume (or 4D with a unit channel axis), "
            f"got {arr.ndim}D array of shape {arr.shape}"
        )
    hwd = _axes_to_hwd(arr, axis_order, label)
    stored = _stored(hwd, label, keep_uint8=True)
    kind = "uint8" if stored.dtype == np.uint8 else "unknown"
    meta = {"format": "array", "axis_order": axis_order.upper()}
    if lazy:
        return Volume._from_stored(stored, (1.0, 1.0, 1.0), label, kind, meta)
    # a caller's array: converted now, as before (kept lazily, the caller's later changes to it would show)
    return Volume(stored.materialize(), (1.0, 1.0, 1.0), label, kind, meta)


# --------------------------------------------------------------------------- dispatch
def read_volume(source, *, axis_order: str | None = None, spacing=None) -> Volume:
    """Read a CT volume into the canonical (H, W, D) LPS layout (see module docstring).

    ``source``: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``/``.mha``/``.mhd``, ``.npy``/``.npz`` or DICOM
    file, a DICOM series folder, a folder of PNG/JPG/BMP/TIF slices, a numpy array or a torch tensor.
    A single 2D DICOM file gives a volume of depth 1.
    ``axis_order``: axes of an array / ``.npy`` / ``.npz`` input (default "HWD"; also "DHW", "WHD",
    "CHWD", "HWDC", "CDHW", ... with a unit channel axis C); not allowed for other formats.
    ``spacing``: (row, col, slice) mm in the canonical order; overrides the file's spacing
    (which is kept in ``meta["spacing_from_file"]``).
    Raises VolumeReadError (a ValueError) naming the source and the problem; ImportError naming
    the package to install when an optional reader is missing.
    """
    if isinstance(source, np.ndarray) or _is_torch_tensor(source):
        arr = _tensor_to_numpy(source) if _is_torch_tensor(source) else source
        vol = _from_array(arr, axis_order or "HWD", ARRAY_SOURCE)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        vol = _read_path(path, axis_order)
    else:
        raise VolumeReadError(f"{source!r}: unsupported source type {type(source).__name__}")
    if spacing is not None:
        vol.meta["spacing_from_file"] = vol.spacing
        vol.spacing = _check_spacing(spacing, vol.source)
    return vol


def _read_path(path: Path, axis_order: str | None) -> Volume:
    label = str(path)
    if not path.exists():
        raise VolumeReadError(f"{label}: no such file or folder (path does not exist)")
    suffix = _suffix(path)
    if axis_order is not None and not (path.is_file() and suffix in _NUMPY_SUFFIXES):
        raise VolumeReadError(f"{label}: axis_order is only for arrays and .npy/.npz files (this source has its own)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        n_img = sum(p.suffix.lower() in _IMAGE_SUFFIXES for p in files)
        if n_img and 2 * n_img >= len(files):
            return _read_image_folder(path, files)
        return _read_dicom(path, files)
    if suffix in _NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in _SITK_SUFFIXES:
        return _read_sitk(path)
    if suffix in _NUMPY_SUFFIXES:
        return _read_numpy_file(path, axis_order or "HWD")
    if suffix in _DICOM_SUFFIXES or suffix == "":
        return _read_dicom(path, [path])
    if suffix in _IMAGE_SUFFIXES:
        raise VolumeReadError(f"{label}: a single 2D image is not a volume; pass the folder of slices")
    raise VolumeReadError(
        f"{label}: unknown file extension {suffix!r}; supported: {', '.join(list_supported_formats())}"
    )
