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

What a volume holds (``Volume.kind``, and ``meta["kind_from"]`` says how it was decided):

* ``"hu"``: Hounsfield units. DICOM: Modality CT. NIfTI / NRRD / MHA (no modality tag): the lowest value of up to
  16 evenly spaced planes (a cheap sample, not a pass over the volume) is at most ``AIR_HU`` (-500): CT holds air
  (-1000 HU) around and inside the body, MR and PET hold no such values.
* ``"other"``: known not to be HU: DICOM MR, PT, SEG, ... (``meta["modality"]``), or a NIfTI / NRRD / MHA without
  air-like values (e.g. MR).
* ``"uint8"``: 8-bit slices (PNG/JPG folders, uint8 files and arrays). ``"unknown"``: other arrays and .npy/.npz.

DICOM series (folders): files are grouped into series by SeriesInstanceUID *and* geometry (orientation, pixel
spacing, rows x columns); the largest axial group is read (with a warning naming the others). Multi-frame
(enhanced) files give one slice per frame, with the per-frame position, orientation and rescale of their functional
groups. Slices are ordered by their position along the slice normal. Uneven slice spacing (a gap, a missing slice, a
change of spacing) is an error naming the gap unless ``allow_gaps=True``: then the slices are resampled onto an even
grid (the median spacing, adjusted so that the first and last slices are kept), each grid slice interpolated linearly
from the two acquired slices around it, and a warning says so. A gantry tilt (slice positions that move within the
image plane from slice to slice) is resampled onto an orthogonal grid by default (``tilt="resample"``: every slice
is shifted within its plane by linear interpolation, exactly as SimpleITK's ``Resample`` with a linear interpolator
would; the grid grows to hold every slice, new pixels get the volume's lowest value) or refused (``tilt="error"``).

Guards before allocation: the path is ``os.stat``-ed first (FIFOs, devices and sockets are refused, symlink loops
and permission problems are named); NIfTI, NRRD, MetaImage and .npy headers are read first and their declared size
is compared with the file (or, for gzip, with the gzip trailer and the largest size deflate can give), and more than
``max_voxels`` (default ``DEFAULT_MAX_VOXELS`` = 2**31) voxels are refused before anything is allocated.
"""

from __future__ import annotations

import errno
import importlib
import math
import os
import re
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "VolumeReadError",
    "Volume",
    "StoredArray",
    "read_volume",
    "write_nifti",
    "list_supported_formats",
    "DEFAULT_MAX_VOXELS",
    "TILT_MODES",
    "AIR_HU",
]

ARRAY_SOURCE = "<array>"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_NUMPY_SUFFIXES = (".npy", ".npz")
_NPZ_KEYS = ("volume", "image", "arr_0")
_AXIAL_IOP = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
_VOLUME_FILE_SUFFIXES = (*_NIFTI_SUFFIXES, *_SITK_SUFFIXES, *_NUMPY_SUFFIXES)

DEFAULT_MAX_VOXELS = 2**31  # 8 GiB as float32; read_volume(..., max_voxels=...) raises or lifts it
TILT_MODES = ("resample", "error")
AIR_HU = -500.0  # a NIfTI/NRRD/MHA whose sampled minimum is at most this holds air: CT in HU
_KIND_SAMPLE_PLANES = 16
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than ~1032x: a cheap bound on a gzip stream's content
_GAP_REL_TOL, _GAP_ABS_TOL = 0.02, 0.01  # a slice step further than max(2 %, 0.01 mm) from the median is uneven
_TILT_MIN_PIXELS = 0.25  # in-plane drift of the slice positions (pixels) from which the stack counts as tilted


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
    ``kind``: "hu" (CT, Hounsfield units), "other" (known not to be HU: MR, PET, ...), "uint8" (8-bit slices) or
    "unknown" (arrays); see the module docstring for how it is decided (``meta["kind_from"]``).
    """

    array: np.ndarray  # (H, W, D): float32 HU for CT, uint8 for 8-bit slice stacks
    spacing: tuple[float, float, float]  # mm (row, col, slice); (1.0, 1.0, 1.0) when unknown
    source: str  # path or "<array>"
    kind: str  # "hu" | "other" | "uint8" | "unknown"
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


def _exc_text(exc: BaseException) -> str:
    """``Type: message``, or just the type when the message is empty (no error message may end up empty)."""
    msg = str(exc).strip()
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000.0
    return f"{n} bytes"  # pragma: no cover


def _check_max_voxels(max_voxels) -> int | None:
    if max_voxels is None:
        return None
    if isinstance(max_voxels, bool) or not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1:
        raise VolumeReadError(f"max_voxels must be a positive int or None, got {max_voxels!r}")
    return int(max_voxels)


def _check_voxel_count(label: str, shape, itemsize: int, what: str, max_voxels: int | None) -> int:
    """Refuse a declared size over ``max_voxels`` before anything is allocated; returns the voxel count."""
    n = math.prod(int(s) for s in shape)
    if max_voxels is not None and n > max_voxels:
        dims = "x".join(str(int(s)) for s in shape)
        raise VolumeReadError(
            f"{label}: {what} declares {dims} = {n:,} voxels ({_human_bytes(n * itemsize)}), more than "
            f"max_voxels={max_voxels:,}; if the file is genuine, raise the limit: read_volume(..., max_voxels={n}) "
            "(or max_voxels=None for no limit; DiaLlamaVolumeProcessor(read_options={'max_voxels': ...}))"
        )
    return n


# --------------------------------------------------------------------------- paths: what is there, before opening it
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _stat_path(path: Path) -> os.stat_result:
    """``os.stat`` the path (following links) and turn every failure into a VolumeReadError that names it."""
    label = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        code = exc.errno
        if code == errno.ELOOP:
            raise VolumeReadError(
                f"{label}: symbolic link loop (too many levels of symbolic links: the links point back at each "
                "other); fix or remove the link"
            ) from None
        if code == errno.ENOENT:
            if os.path.islink(path):
                raise VolumeReadError(
                    f"{label}: broken symbolic link (its target {os.readlink(path)!r} does not exist)"
                ) from None
            raise VolumeReadError(f"{label}: no such file or folder (path does not exist)") from None
        if code in (errno.EACCES, errno.EPERM):
            raise VolumeReadError(f"{label}: permission denied (cannot access the path)") from None
        if code == errno.ENOTDIR:
            raise VolumeReadError(
                f"{label}: a part of the path is a file, not a folder (path does not exist)"
            ) from None
        if code == errno.ENAMETOOLONG:
            raise VolumeReadError(f"{label}: file name too long") from None
        raise VolumeReadError(f"{label}: cannot access the path ({_exc_text(exc)})") from None
    for test, what in _SPECIAL_FILES:
        if test(st.st_mode):
            raise VolumeReadError(
                f"{label}: is {what}, not a regular file; read_volume reads regular files and folders only "
                "(copy the data to a file first)"
            )
    return st


def _open_file(path: Path, label: str, what: str):
    """``open(path, "rb")`` with permission and other OS errors named."""
    try:
        return open(path, "rb")
    except PermissionError:
        raise VolumeReadError(f"{label}: permission denied (cannot open the file for reading)") from None
    except OSError as exc:
        raise VolumeReadError(f"{label}: cannot read {what} ({_exc_text(exc)})") from None


def _file_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


# --------------------------------------------------------------------------- gzip payload checks (no decompression)
def _gzip_length_at_least(path: Path, start: int, need: int) -> int:
    """Decompressed length of the gzip member(s) from byte ``start``, counted without keeping the data, stopping as
    soon as ``need`` bytes are reached. Used only when the cheap trailer check is inconclusive."""
    total = 0
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        f.seek(start)
        pending = b""
        while total < need:
            if not pending:
                pending = f.read(1 << 20)
                if not pending:
                    break
            try:
                total += len(d.decompress(pending, 1 << 22))
            except zlib.error:
                break
            if d.eof:  # next member (multi-member gzip), if any
                pending = d.unused_data.lstrip(b"\0")
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                pending = d.unconsumed_tail
    return total


def _check_gzip_payload(path: Path, label: str, start: int, need: int, what: str) -> None:
    """Refuse a gzip stream (from ``start`` to the end of ``path``) that cannot hold ``need`` uncompressed bytes.

    Cheap: deflate expands at most ~1032x; the gzip trailer's ISIZE is the uncompressed size mod 2**32. A trailer
    that disagrees (multi-member files, trailing data) is settled by counting the decompressed bytes."""
    size = _file_size(path)
    if size is None or size - start < 18 or need <= 0:
        return
    compressed = size - start
    if need > compressed * _DEFLATE_MAX_RATIO + 64:
        raise VolumeReadError(
            f"{label}: cannot read {what}: truncated or corrupt file: the header declares {need:,} bytes of data, "
            f"but its {compressed:,} gzip-compressed bytes can hold at most about {compressed * _DEFLATE_MAX_RATIO:,}"
        )
    with open(path, "rb") as f:
        f.seek(size - 4)
        isize = struct.unpack("<I", f.read(4))[0]
    suspicious = isize < need if need < 2**32 else isize != need % 2**32
    if suspicious:
        got = _gzip_length_at_least(path, start, need)
        if got < need:
            raise VolumeReadError(
                f"{label}: cannot read {what}: truncated or corrupt file: the header declares {need:,} bytes, "
                f"but the gzip data holds only {got:,} bytes"
            )


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


def _kind_from_values(stored: StoredArray, meta: dict) -> str:
    """Kind of a volume without a modality tag (NIfTI, NRRD, MHA, DICOM without Modality): "uint8" for 8-bit data,
    else "hu" when the lowest value of up to 16 evenly spaced planes (along the slowest memory axis: whole planes,
    a small fraction of the volume) is at most AIR_HU (air: CT in HU), else "other"."""
    if stored.dtype == np.uint8:
        meta["kind_from"] = "dtype"
        return "uint8"
    data = stored.data
    axis = max(range(3), key=lambda i: (data.shape[i] > 1, abs(data.strides[i])))
    n = data.shape[axis]
    idx = np.unique(np.linspace(0, n - 1, min(n, _KIND_SAMPLE_PLANES)).round().astype(np.intp))
    planes = [data[(slice(None),) * axis + (int(i),)] for i in idx]  # views: no copy
    lo, hi = min(p.min() for p in planes), max(p.max() for p in planes)
    ends = np.asarray(stored.rescale(np.array([lo, hi], dtype=data.dtype)), dtype=np.float64)
    low = float(ends.min())
    meta["kind_from"] = "values"
    meta["sampled_min"] = low
    return "hu" if low <= AIR_HU else "other"


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


def _nifti_guard(nib, path: Path, label: str, max_voxels: int | None) -> None:
    """Read only the header (the first 540 bytes, decompressed) and refuse a declared size that the file cannot
    hold or that is over ``max_voxels``, before nibabel allocates the data."""
    gz = path.name.lower().endswith(".gz")
    with _open_file(path, label, "NIfTI") as raw:
        try:
            if gz:
                import gzip

                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    head = f.read(540)
            else:
                head = raw.read(540)
        except (OSError, EOFError, zlib.error) as exc:
            raise VolumeReadError(f"{label}: cannot read NIfTI ({_exc_text(exc)})") from None
    klass = next((k for k in (nib.Nifti1Header, nib.Nifti2Header) if k.may_contain_header(head)), None)
    if klass is None:
        raise VolumeReadError(
            f"{label}: cannot read NIfTI (no NIfTI-1 or NIfTI-2 header: {len(head)} bytes starting {head[:12]!r})"
        )
    try:
        hdr = klass(head[: klass.sizeof_hdr], check=False)
        shape = tuple(int(s) for s in hdr.get_data_shape())
        dtype = hdr.get_data_dtype()
        offset = int(hdr.get_data_offset())
    except Exception as exc:
        raise VolumeReadError(f"{label}: cannot read NIfTI (invalid header: {_exc_text(exc)})") from None
    if any(s < 0 for s in shape):
        raise VolumeReadError(f"{label}: cannot read NIfTI (invalid header: negative dimensions {shape})")
    n = _check_voxel_count(label, shape, dtype.itemsize, f"the NIfTI header ({dtype})", max_voxels)
    need = offset + n * dtype.itemsize
    if not gz:
        size = _file_size(path)
        if size is not None and size < need:
            raise VolumeReadError(
                f"{label}: cannot read NIfTI: truncated or corrupt file: the header declares "
                f"{'x'.join(map(str, shape))} {dtype} voxels ({n * dtype.itemsize:,} bytes from byte {offset}), "
                f"but the file has only {size:,} bytes"
            )
    else:
        _check_gzip_payload(path, label, 0, need, "NIfTI")


def _read_nifti(path: Path, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Volume:
    nib = _require("nibabel", "reading NIfTI")
    from nibabel import orientations as nio

    label = str(path)
    _nifti_guard(nib, path, label, max_voxels)
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
        raise VolumeReadError(f"{label}: cannot read NIfTI ({_exc_text(exc)})") from exc
    finally:
        if stream is not None:
            stream.close()
    stored = _stored(data.transpose(1, 0, 2), label, keep_uint8=True, slope=slope, inter=inter)  # (P, L, S)
    kind = _kind_from_values(stored, meta)
    spacing = _spacing_or_default((zooms[1], zooms[0], zooms[2]), label, meta)
    return Volume._from_stored(stored, spacing, label, kind, meta)


# --------------------------------------------------------------------------- NRRD / MetaImage
_NRRD_TYPE_SIZES = (  # (words in the NRRD "type" field, bytes); checked in this order
    (("longlong", "long long", "int64", "uint64"), 8),
    (("double",), 8),
    (("float",), 4),
    (("short", "int16", "uint16"), 2),
    (("char", "int8", "uint8"), 1),
    (("int", "int32", "uint32"), 4),
)
_MET_TYPE_SIZES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


def _read_header_text(path: Path, label: str, what: str, limit: int = 1 << 16) -> bytes:
    with _open_file(path, label, what) as f:
        return f.read(limit)


def _nrrd_guard(path: Path, label: str, max_voxels: int | None) -> None:
    """NRRD header (text up to the first blank line): refuse more than ``max_voxels`` voxels, and data that the file
    (or its detached data file) cannot hold. Fields it does not understand skip the size check, not the read."""
    head = _read_header_text(path, label, "NRRD")
    if not head.startswith(b"NRRD"):
        raise VolumeReadError(f"{label}: cannot read NRRD (no NRRD magic: the file starts {head[:12]!r})")
    m = re.search(rb"\r?\n\r?\n", head)
    text = head[: m.start() if m else len(head)].decode("latin-1")
    fields = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        return  # SimpleITK reports it
    type_name = fields.get("type", "").lower()
    itemsize = next((n for words, n in _NRRD_TYPE_SIZES if any(w in type_name for w in words)), None)
    n = _check_voxel_count(label, sizes, itemsize or 1, f"the NRRD header ({type_name or 'no type'})", max_voxels)
    if itemsize is None:
        return
    need = n * itemsize
    encoding = fields.get("encoding", "raw").lower()
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is None:
        if m is None:
            return
        target, start = path, m.end()
    elif " " in data_file or data_file.upper().startswith("LIST"):
        return  # a list or pattern of data files
    else:
        target, start = path.parent / data_file, 0
        if not target.is_file():
            raise VolumeReadError(f"{label}: cannot read NRRD: its data file {str(target)!r} does not exist")
    try:
        skip = int(fields.get("byte skip", "0"))
    except ValueError:
        skip = 0
    size = _file_size(target)
    if encoding == "raw" and skip >= 0 and size is not None and size - start - skip < need:
        raise VolumeReadError(
            f"{label}: cannot read NRRD: truncated or corrupt file: the header declares {'x'.join(map(str, sizes))} "
            f"{type_name} voxels ({need:,} bytes), but {target.name} holds only {max(size - start - skip, 0):,}"
        )
    if encoding in ("gzip", "gz"):
        _check_gzip_payload(target, label, start, need + max(skip, 0), "NRRD")


def _metaimage_guard(path: Path, label: str, max_voxels: int | None) -> None:
    """MetaImage header (``Key = Value`` lines up to ElementDataFile): as ``_nrrd_guard``."""
    head = _read_header_text(path, label, "MetaImage")
    fields, data_start = {}, None
    pos = 0
    for raw_line in head.splitlines(keepends=True):
        pos += len(raw_line)
        line = raw_line.decode("latin-1").strip()
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key.lower()] = value
        if key.lower() == "elementdatafile":
            data_start = pos
            break
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
    except (KeyError, ValueError):
        raise VolumeReadError(f"{label}: cannot read MetaImage (no valid DimSize in the header)") from None
    channels = int(fields.get("elementnumberofchannels", "1") or 1)
    itemsize = _MET_TYPE_SIZES.get(fields.get("elementtype", "").upper())
    n = _check_voxel_count(label, [*dims, channels], itemsize or 1, "the MetaImage header", max_voxels)
    data_file = fields.get("elementdatafile", "")
    if itemsize is None or data_start is None or not data_file:
        return
    if data_file.upper() == "LOCAL":
        target, start = path, data_start
    elif " " in data_file or "%" in data_file or data_file.upper() == "LIST":
        return
    else:
        target, start = path.parent / data_file, 0
        if not target.is_file():
            raise VolumeReadError(f"{label}: cannot read MetaImage: its data file {str(target)!r} does not exist")
    size = _file_size(target)
    if size is None:
        return
    header_size = int(fields.get("headersize", "0") or 0)
    start += max(header_size, 0)
    available = size - start
    need = n * itemsize
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if compressed:
        declared = int(fields.get("compresseddatasize", "0") or 0)
        if declared > available or need > available * _DEFLATE_MAX_RATIO + 64:
            raise VolumeReadError(
                f"{label}: cannot read MetaImage: truncated or corrupt file: {need:,} bytes declared, "
                f"{available:,} compressed bytes in {target.name}"
            )
    elif header_size >= 0 and available < need:
        raise VolumeReadError(
            f"{label}: cannot read MetaImage: truncated or corrupt file: the header declares "
            f"{'x'.join(map(str, dims))} voxels ({need:,} bytes), but {target.name} holds only {max(available, 0):,}"
        )


def _read_sitk(path: Path, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Volume:
    sitk = _require("SimpleITK", f"reading {_suffix(path)}")
    label = str(path)
    meta: dict[str, Any] = {"format": _suffix(path).lstrip(".")}
    if _suffix(path) in (".nrrd", ".nhdr"):
        _nrrd_guard(path, label, max_voxels)
    else:
        _metaimage_guard(path, label, max_voxels)
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
        raise VolumeReadError(f"{label}: cannot read {meta['format']} ({_exc_text(exc)})") from exc
    stored = _stored(data.transpose(1, 2, 0), label, keep_uint8=True)  # (y, x, z) = (H, W, D)
    kind = _kind_from_values(stored, meta)
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
    val = ds.get(keyword) if ds is not None else None
    if val is None:
        return None
    try:
        out = [float(v) for v in val]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _dcm_float(ds, keyword: str):
    val = ds.get(keyword) if ds is not None else None
    if val is None or val == "":
        return None
    try:
        out = float(val)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _modality_lut():
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom >= 3
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut


def _decoder_hint(ds) -> str:
    """What to install for the transfer syntax of ``ds``."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    uid = str(ts or "")
    name = getattr(ts, "name", uid) or "unknown"
    if uid in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91") or uid.startswith("1.2.840.10008.1.2.4.20"):
        return f"{name} needs a JPEG 2000 decoder: pip install pylibjpeg pylibjpeg-openjpeg (part of dia-llama[io])"
    if uid.startswith("1.2.840.10008.1.2.4."):
        return f"{name} needs a JPEG decoder: pip install pylibjpeg pylibjpeg-libjpeg (or: pip install python-gdcm)"
    return (
        f"transfer syntax {name}; compressed transfer syntaxes need a decoder: pip install pylibjpeg "
        "pylibjpeg-openjpeg (JPEG 2000), pylibjpeg-libjpeg or python-gdcm (JPEG, JPEG-LS)"
    )


@dataclass
class _Frame:
    """One 2D image: a single-frame file (``index`` None) or one frame of a multi-frame file."""

    ds: Any  # the file's header (no pixel data)
    path: str
    index: int | None
    uid: str
    rows: int
    cols: int
    iop: list | None
    ipp: list | None
    ps: list | None
    slope: float | None = None  # from the functional groups (multi-frame); None: the file's Modality LUT module
    inter: float | None = None

    def describe(self) -> str:
        name = Path(self.path).name
        if self.index is not None:
            return f"{name} frame {self.index + 1}"
        inst = self.ds.get("InstanceNumber")
        return f"{name} (instance {inst})" if inst not in (None, "") else name


def _fg_value(per, shared, seq: str, keyword: str, n: int | None = None):
    """A value from a per-frame functional group item, else from the shared one (enhanced multi-frame DICOM)."""
    for item in (per, shared):
        sub = item.get(seq) if item is not None else None
        if sub:
            value = _dcm_float_list(sub[0], keyword, n) if n else _dcm_float(sub[0], keyword)
            if value is not None:
                return value
    return None


def _frames_of(ds, path: str) -> list[_Frame]:
    """The 2D images of one DICOM file, with their geometry (per frame for enhanced multi-frame files)."""
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = int(ds.get("NumberOfFrames") or 1)
    iop = _dcm_float_list(ds, "ImageOrientationPatient", 6)
    ipp = _dcm_float_list(ds, "ImagePositionPatient", 3)
    ps = _dcm_float_list(ds, "PixelSpacing", 2)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_seq = ds.get("PerFrameFunctionalGroupsSequence")
    if n == 1 and shared is None and not per_seq:
        return [_Frame(ds, path, None, uid, rows, cols, iop, ipp, ps)]
    frames = []
    for i in range(n):
        per = per_seq[i] if per_seq and i < len(per_seq) else None
        frames.append(
            _Frame(
                ds, path, i, uid, rows, cols,
                _fg_value(per, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6) or iop,
                _fg_value(per, shared, "PlanePositionSequence", "ImagePositionPatient", 3),
                _fg_value(per, shared, "PixelMeasuresSequence", "PixelSpacing", 2) or ps,
                _fg_value(per, shared, "PixelValueTransformationSequence", "RescaleSlope"),
                _fg_value(per, shared, "PixelValueTransformationSequence", "RescaleIntercept"),
            )
        )
    if n > 1 and ipp is not None and any(f.ipp is None for f in frames):
        # classic multi-frame: one position plus frame offsets along the normal (RT dose, NM, ...)
        normal = np.cross(*np.reshape(iop if iop is not None else _AXIAL_IOP, (2, 3)))
        offsets = _dcm_float_list(ds, "GridFrameOffsetVector", n)
        if offsets is not None and offsets[0] != 0:  # absolute positions along the normal
            offsets = [o - offsets[0] for o in offsets]
        if offsets is None:
            sbs = _dcm_float(ds, "SpacingBetweenSlices")
            offsets = None if sbs is None else [i * sbs for i in range(n)]
        if offsets is not None:
            for f, off in zip(frames, offsets):
                f.ipp = (np.asarray(ipp) + off * normal).tolist()
    return frames


def _slice_thickness(fr: _Frame) -> float | None:
    """Slice spacing from the tags, for a single slice or slices without positions."""
    ds = fr.ds
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_seq = ds.get("PerFrameFunctionalGroupsSequence")
    per = per_seq[fr.index] if per_seq and fr.index is not None and fr.index < len(per_seq) else None
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _fg_value(per, shared, "PixelMeasuresSequence", keyword) or _dcm_float(ds, keyword)
        if value:
            return value
    return None


def _read_dicom_headers(files: list[Path], pydicom, label: str):
    """Frames of the readable image DICOMs among ``files``; returns (frames, n_skipped, unreadable names)."""
    frames, skipped, denied = [], 0, []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except PermissionError:
            denied.append(f.name)
            continue
        except Exception:  # not DICOM (README, thumbnails, garbage) -> skipped
            skipped += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, SR, presentation states, ...
            skipped += 1
            continue
        ds.filename = str(f)
        try:
            frames.extend(_frames_of(ds, str(f)))
        except Exception as exc:
            raise VolumeReadError(f"{label}: cannot read the DICOM header of {f.name} ({_exc_text(exc)})") from exc
    return frames, skipped, denied


def _same(a, b, atol: float, rtol: float = 0.0) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, atol=atol, rtol=rtol))


def _group_frames(frames: list[_Frame]) -> list[list[_Frame]]:
    """Series = same SeriesInstanceUID (empty counts as one value) and geometry: size, orientation, pixel spacing."""
    groups: list[list[_Frame]] = []
    for fr in frames:
        for g in groups:
            h = g[0]
            if (
                h.uid == fr.uid
                and (h.rows, h.cols) == (fr.rows, fr.cols)
                and _same(h.iop, fr.iop, 1e-3)
                and _same(h.ps, fr.ps, 1e-4, 1e-3)
            ):
                g.append(fr)
                break
        else:
            groups.append([fr])
    return groups


def _describe_group(g: list[_Frame]) -> str:
    h = g[0]
    ps = "x".join(f"{v:g}" for v in h.ps) + " mm pixels" if h.ps else "no pixel spacing"
    iop = "[" + ", ".join(f"{v:.3g}" for v in h.iop) + "]" if h.iop else "none"
    return (
        f"{h.uid or '<empty SeriesInstanceUID>'}: {len(g)} slice(s) of {h.rows}x{h.cols}, {ps}, orientation {iop}"
    )


def _is_axial(g: list[_Frame]) -> bool:
    iop = g[0].iop
    return iop is None or bool(np.allclose(np.abs(iop), _AXIAL_IOP, atol=0.1))


def _uneven_steps(chosen: list[_Frame], z: np.ndarray, steps: np.ndarray, bad: np.ndarray, nominal: float):
    """(text naming the uneven steps, list of dicts for meta)."""
    parts, records = [], []
    for i in bad.tolist():
        d = float(steps[i])
        ratio = d / nominal
        missing = round(ratio) - 1
        note = f" (about {missing} missing slice{'s' if missing > 1 else ''})" if missing >= 1 and abs(
            ratio - round(ratio)) < 0.1 else ""
        parts.append(
            f"{d:.2f} mm between {chosen[i].describe()} at {z[i]:.2f} mm and "
            f"{chosen[i + 1].describe()} at {z[i + 1]:.2f} mm{note}"
        )
        records.append({"mm": round(d, 4), "between": [chosen[i].describe(), chosen[i + 1].describe()]})
    shown = "; ".join(parts[:3]) + (f"; and {len(parts) - 3} more" if len(parts) > 3 else "")
    return shown, records


def _axis_weights(n_in: int, n_out: int, shift: float):
    """Linear interpolation along one axis as ITK/SimpleITK does it: output index j samples the input at the
    continuous index j + shift; inside the image when -0.5 <= index < n_in - 0.5 (edge pixels extend half a pixel)."""
    idx = np.arange(n_out, dtype=np.float64) + shift
    inside = (idx >= -0.5) & (idx < n_in - 0.5)
    i0 = np.clip(np.floor(idx), 0, n_in - 1).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = np.clip(idx - i0, 0.0, 1.0)
    return i0, i1, w, inside


def _shift_slice(sl: np.ndarray, dr: float, dc: float, out_shape, fill: float) -> np.ndarray:
    """Output pixel (r, c) = ``sl`` at continuous (r + dr, c + dc), bilinear; ``fill`` outside the slice."""
    i0, i1, w, in_r = _axis_weights(sl.shape[0], out_shape[0], dr)
    x = sl.astype(np.float64)
    x = x[i0] * (1.0 - w)[:, None] + x[i1] * w[:, None]
    j0, j1, v, in_c = _axis_weights(sl.shape[1], out_shape[1], dc)
    x = x[:, j0] * (1.0 - v) + x[:, j1] * v
    x[~in_r, :] = fill
    x[:, ~in_c] = fill
    return x


def _untilt(stack: np.ndarray, a: np.ndarray, b: np.ndarray, rs: float, cs: float):
    """Shift slice k of ``stack`` (R, C, n) by its in-plane offset (``a[k]`` mm along the columns, ``b[k]`` mm along
    the rows) onto one orthogonal grid that holds every slice; new pixels get the volume's lowest value.
    Returns (array, (a0, b0): the grid's offset from the first slice's origin in mm)."""
    rows, cols, n = stack.shape
    a0, b0 = float(a.min()), float(b.min())
    out_r = rows + max(0, math.ceil((float(b.max()) - b0) / rs - 1e-3))
    out_c = cols + max(0, math.ceil((float(a.max()) - a0) / cs - 1e-3))
    fill = float(stack.min())
    out = np.empty((out_r, out_c, n), np.float32)

    def snap(shift: float) -> float:  # whole-pixel shifts up to rounding noise are copies
        return float(round(shift)) if abs(shift - round(shift)) < 1e-7 else float(shift)

    for k in range(n):
        dr, dc = snap((b0 - b[k]) / rs), snap((a0 - a[k]) / cs)
        out[:, :, k] = _shift_slice(stack[:, :, k], dr, dc, (out_r, out_c), fill)
    return out, (a0, b0)


def _even_slices(stack: np.ndarray, z: np.ndarray, n_out: int) -> np.ndarray:
    """Resample (R, C, n) slices at positions ``z`` (ascending) onto ``n_out`` even positions from z[0] to z[-1];
    each output slice is interpolated linearly between the two acquired slices around it (or copied where the grid
    meets an acquired slice)."""
    grid = z[0] + (z[-1] - z[0]) * np.arange(n_out) / (n_out - 1)
    k = np.clip(np.searchsorted(z, grid, side="right") - 1, 0, len(z) - 2)
    w = (grid - z[k]) / (z[k + 1] - z[k])
    out = np.empty(stack.shape[:2] + (n_out,), np.float32)
    for j in range(n_out):
        lo, wj = int(k[j]), float(w[j])
        if wj < 1e-6:
            out[:, :, j] = stack[:, :, lo]
        elif wj > 1 - 1e-6:
            out[:, :, j] = stack[:, :, lo + 1]
        else:
            out[:, :, j] = (1.0 - wj) * stack[:, :, lo].astype(np.float64) + wj * stack[:, :, lo + 1]
    return out


def _frame_pixels(fr: _Frame, pydicom, label: str, cache: dict, lut) -> np.ndarray:
    """One frame's real values (Modality LUT / rescale applied, per frame for enhanced files) as float32 (R, C)."""
    entry = cache.get(fr.path)
    if entry is None:
        ds_h = fr.ds
        n = int(ds_h.get("NumberOfFrames") or 1)
        ts = getattr(getattr(ds_h, "file_meta", None), "TransferSyntaxUID", None)
        if ts is not None and not getattr(ts, "is_compressed", True):
            bits = int(ds_h.get("BitsAllocated") or 16)
            n_px = fr.rows * fr.cols * n * int(ds_h.get("SamplesPerPixel") or 1)
            expected = (n_px + 7) // 8 if bits == 1 else n_px * bits // 8
            size = _file_size(Path(fr.path))
            if size is not None and size < expected:
                raise VolumeReadError(
                    f"{label}: {Path(fr.path).name} is truncated: its header declares {expected:,} bytes of pixel "
                    f"data ({fr.rows}x{fr.cols}x{n}, {bits} bits), but the file has only {size:,} bytes"
                )
        try:
            ds = pydicom.dcmread(fr.path)
            px = np.asarray(ds.pixel_array)
        except (VolumeReadError, ImportError):
            raise
        except PermissionError:
            raise VolumeReadError(f"{label}: permission denied reading {fr.path}") from None
        except Exception as exc:
            compressed = ts is None or getattr(ts, "is_compressed", True)
            hint = _decoder_hint(fr.ds) if compressed else "the file may be truncated or corrupt"
            raise VolumeReadError(
                f"{label}: cannot decode DICOM pixel data of {fr.path} ({_exc_text(exc)}); {hint}"
            ) from exc
        entry = (ds, px.reshape((-1, fr.rows, fr.cols)))
        if fr.index is not None:  # keep multi-frame files decoded for their other frames
            cache[fr.path] = entry
    ds, px = entry
    frame = px[fr.index or 0]
    if fr.slope is not None or fr.inter is not None:
        slope = 1.0 if fr.slope is None else fr.slope
        inter = 0.0 if fr.inter is None else fr.inter
        values = frame.astype(np.float64) * slope + inter if (slope, inter) != (1.0, 0.0) else frame
    else:
        values = lut(frame, ds)
    return np.asarray(values, dtype=np.float32)


def _read_dicom(
    source: Path,
    files: list[Path],
    *,
    allow_gaps: bool = False,
    tilt: str = "resample",
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> Volume:
    pydicom = _require("pydicom", "reading DICOM")
    label = str(source)
    frames, skipped, denied = _read_dicom_headers(files, pydicom, label)
    if not frames:
        if source.is_file():
            if denied:
                raise VolumeReadError(f"{label}: permission denied (cannot open the file for reading)")
            raise VolumeReadError(f"{label}: not a valid DICOM image file (unreadable or no pixel data)")
        if not files:
            raise VolumeReadError(f"{label}: no DICOM files in {label}: the folder is empty")
        n_sub = sum(1 for p in source.iterdir() if p.is_dir())
        hint = f"; it has {n_sub} subfolder(s), pass a series folder" if n_sub else ""
        denied_txt = (
            f"; {len(denied)} file(s) not readable (permission denied): {', '.join(denied[:3])}" if denied else ""
        )
        raise VolumeReadError(
            f"{label}: no DICOM files in {label} ({skipped} non-DICOM file(s) skipped{denied_txt}{hint})"
        )

    groups = _group_frames(frames)
    chosen = max(groups, key=lambda g: (_is_axial(g), len(g)))
    if len(groups) > 1:
        others = "; ".join(_describe_group(g) for g in groups)
        warnings.warn(
            f"{label}: found {len(groups)} series (by SeriesInstanceUID and geometry) [{others}]; using the largest "
            f"axial one ({_describe_group(chosen)})"
        )
    first = chosen[0]
    modality = str(first.ds.get("Modality", "") or "").strip()
    meta: dict[str, Any] = {
        "format": "dicom",
        "series_uid": first.uid,
        "n_series_found": len(groups),
        "n_files_skipped": skipped,
        "modality": modality,
    }
    if denied:
        meta["files_unreadable"] = denied
    if any(fr.index is not None for fr in chosen):
        meta["multi_frame"] = True
        meta["n_files"] = len({fr.path for fr in chosen})
    spp = int(first.ds.get("SamplesPerPixel") or 1)
    if spp != 1:
        raise VolumeReadError(
            f"{label}: {first.describe()} is colour DICOM ({spp} samples per pixel), not a greyscale volume"
        )

    iop = first.iop
    if iop is None:
        iop = _AXIAL_IOP.tolist()
        meta["orientation_assumed"] = True
    row_cos, col_cos = np.array(iop[:3]), np.array(iop[3:])  # along a row (col index), along a column (row index)
    if np.linalg.norm(row_cos) > 0 and np.linalg.norm(col_cos) > 0:  # unit length (DS strings are rounded)
        row_cos, col_cos = row_cos / np.linalg.norm(row_cos), col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    meta["image_orientation_patient"] = [float(v) for v in iop]
    ps = first.ps or [None, None]
    rs, cs = (ps[0] or 1.0), (ps[1] or 1.0)

    # Slice order and geometry (headers only: every refusal comes before any pixel data is decoded).
    slice_sp = _slice_thickness(first)
    z = a = b = None
    n_out, tilted, bad = len(chosen), False, np.zeros(0, np.intp)
    if len(chosen) > 1 and all(fr.ipp is not None for fr in chosen):
        pos = np.array([fr.ipp for fr in chosen], dtype=np.float64)
        zz = pos @ normal
        order = np.argsort(zz, kind="stable")
        chosen, pos, z = [chosen[i] for i in order], pos[order], zz[order]
        steps = np.diff(z)
        if (steps < 1e-3).any():
            i = int(np.argmax(steps < 1e-3))
            many = " (the series holds more than one volume: time points, echoes, segments or repeated slices?)"
            raise VolumeReadError(
                f"{label}: duplicate slice positions ({z[i]:.3f} mm along the slice normal) in "
                f"{chosen[i].describe()} and {chosen[i + 1].describe()}{many if meta.get('multi_frame') else ''}"
            )
        rel = pos - pos[0]
        a, b = rel @ row_cos, rel @ col_cos  # in-plane drift of each slice's origin (mm along columns, rows)
        drift = max(float(np.abs(a).max()) / cs, float(np.abs(b).max()) / rs)
        tilted = drift > _TILT_MIN_PIXELS
        tilt_txt = ""
        if tilted:
            angle = math.degrees(math.atan2(math.hypot(a[-1], b[-1]), z[-1] - z[0]))
            meta["gantry_tilt_deg"] = round(angle, 3)
            tag = _dcm_float(first.ds, "GantryDetectorTilt")
            if tag is not None:
                meta["gantry_detector_tilt_tag"] = tag
            tilt_txt = (
                f"gantry tilt of {angle:.1f} deg (the slice positions drift {drift:.1f} pixels within the image "
                f"plane over the series)"
            )
        nominal = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - nominal) > max(_GAP_REL_TOL * nominal, _GAP_ABS_TOL))
        if bad.size:
            shown, records = _uneven_steps(chosen, z, steps, bad, nominal)
            n_out = max(2, round(float(z[-1] - z[0]) / nominal) + 1)
            grid = float((z[-1] - z[0]) / (n_out - 1))
            meta["slice_spacing_range"] = (float(steps.min()), float(steps.max()))
            if not allow_gaps:
                also = f" The series also has a {tilt_txt}." if tilted else ""
                raise VolumeReadError(
                    f"{label}: slice gap / uneven slice spacing along the slice normal: the median step is "
                    f"{nominal:.2f} mm, but {shown} ({bad.size} uneven step(s) among {len(steps)}).{also} "
                    f"Pass allow_gaps=True to read it anyway: the slices are then resampled onto an even {grid:.2f} mm "
                    "grid, interpolated linearly between the acquired slices"
                )
            meta["slice_gaps"] = records
            meta["n_slices_acquired"] = len(chosen)
            meta["slice_grid_mm"] = grid
            warnings.warn(
                f"{label}: slice gap / uneven slice spacing ({shown}); allow_gaps=True: resampled onto an even "
                f"{grid:.3f} mm grid ({n_out} slices from {len(chosen)} acquired, interpolated linearly)"
            )
            slice_sp = grid
        else:
            slice_sp = float((z[-1] - z[0]) / (len(z) - 1))
        if tilted and tilt == "error":
            raise VolumeReadError(
                f"{label}: {tilt_txt}: stacking the slices as they are would shear the volume. Pass tilt='resample' "
                "to resample it onto an orthogonal grid (or correct the tilt with dcm2niix first)"
            )
    elif len(chosen) > 1:
        multi = any(fr.index is not None for fr in chosen)
        what = "frame order" if multi and len({fr.path for fr in chosen}) == 1 else "InstanceNumber"
        warnings.warn(f"{label}: ImagePositionPatient missing; ordering slices by {what}")
        meta["sorted_by"] = what
        chosen = sorted(chosen, key=lambda fr: (int(fr.ds.get("InstanceNumber") or 0), fr.index or 0))

    out_r, out_c = first.rows, first.cols
    if tilted:
        out_r += math.ceil((float(b.max()) - float(b.min())) / rs)
        out_c += math.ceil((float(a.max()) - float(a.min())) / cs)
    _check_voxel_count(label, (out_r, out_c, max(n_out, len(chosen))), 4, "the DICOM series", max_voxels)

    lut = _modality_lut()
    cache: dict = {}
    arr = np.empty((first.rows, first.cols, len(chosen)), np.float32)
    for k, fr in enumerate(chosen):  # (Rows, Cols, S): rows along col_cos, cols along row_cos, slices along normal
        arr[:, :, k] = _frame_pixels(fr, pydicom, label, cache, lut)
    cache.clear()
    if tilted:
        arr, (a0, b0) = _untilt(arr, a, b, rs, cs)
        origin = np.asarray(chosen[0].ipp, np.float64) + a0 * row_cos + b0 * col_cos
        meta["tilt"] = "resampled"
        meta["tilt_grid_origin"] = [float(v) for v in origin]
        warnings.warn(
            f"{label}: {meta['gantry_tilt_deg']:.1f} deg gantry tilt: slices resampled onto an orthogonal grid "
            f"({arr.shape[0]}x{arr.shape[1]} pixels per slice, was {first.rows}x{first.cols}); pass tilt='error' "
            "to refuse tilted series instead"
        )
    if bad.size:
        arr = _even_slices(arr, z, n_out)
    ps_known = [ps[0], ps[1], slice_sp]
    spacing = _spacing_or_default(ps_known, label, meta)
    arr, spacing = _reorient_lps(arr, np.stack([col_cos, row_cos, normal], axis=1), spacing, label)
    meta["n_slices"] = arr.shape[2] if arr.ndim == 3 else 0
    stored = _stored(arr, label, keep_uint8=False)
    if modality.upper() == "CT":
        kind = "hu"
        meta["kind_from"] = "modality"
    elif modality:
        kind = "other"
        meta["kind_from"] = "modality"
    else:
        kind = _kind_from_values(stored, meta)
    return Volume._from_stored(stored, spacing, label, kind, meta)


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
            raise VolumeReadError(f"{label}: cannot read image slice {f.name} ({_exc_text(exc)})") from exc
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
def _npy_guard(f, available: int | None, label: str, what: str, max_voxels: int | None) -> None:
    """Read a .npy header from ``f`` (at its start) and refuse a declared array over ``max_voxels`` or larger than
    the ``available`` bytes, before numpy allocates it."""
    from numpy.lib import format as npformat

    start = f.tell()
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npformat.read_array_header_2_0(f)
        else:
            return  # numpy reports what it does not support
    except Exception as exc:
        raise VolumeReadError(f"{label}: cannot read {what} (invalid .npy header: {_exc_text(exc)})") from None
    if dtype.hasobject:
        return  # np.load(allow_pickle=False) refuses it
    n = _check_voxel_count(label, shape, dtype.itemsize, f"the {what} header ({dtype})", max_voxels)
    need = f.tell() - start + n * dtype.itemsize
    if available is not None and available < need:
        raise VolumeReadError(
            f"{label}: cannot read {what}: truncated or corrupt file: the header declares an array of shape "
            f"{tuple(shape)} {dtype} ({need:,} bytes with the header), but it holds only {available:,} bytes"
        )


def _read_numpy_file(path: Path, axis_order: str, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Volume:
    label = str(path)
    what = _suffix(path)
    try:
        if what == ".npy":
            with _open_file(path, label, what) as f:
                _npy_guard(f, _file_size(path), label, what, max_voxels)
            arr = np.load(label, allow_pickle=False)
        else:
            with np.load(label, allow_pickle=False) as z:
                keys = list(z.keys())
                key = keys[0] if len(keys) == 1 else next((k for k in _NPZ_KEYS if k in keys), None)
                if key is None:
                    raise VolumeReadError(
                        f"{label}: .npz has arrays {keys}; expected a single array or one named {list(_NPZ_KEYS)}"
                    )
                member = key if key in z.zip.namelist() else f"{key}.npy"
                with z.zip.open(member) as f:
                    _npy_guard(f, z.zip.getinfo(member).file_size, f"{label} (array {key!r})", what, max_voxels)
                arr = z[key]
    except VolumeReadError:
        raise
    except Exception as exc:
        raise VolumeReadError(f"{label}: cannot read {what} ({_exc_text(exc)})") from exc
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
    meta = {"format": "array", "axis_order": axis_order.upper(), "kind_from": "dtype" if kind == "uint8" else "array"}
    if lazy:
        return Volume._from_stored(stored, (1.0, 1.0, 1.0), label, kind, meta)
    # a caller's array: converted now, as before (kept lazily, the caller's later changes to it would show)
    return Volume(stored.materialize(), (1.0, 1.0, 1.0), label, kind, meta)


# --------------------------------------------------------------------------- dispatch
def read_volume(
    source,
    *,
    axis_order: str | None = None,
    spacing=None,
    allow_gaps: bool = False,
    tilt: str = "resample",
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> Volume:
    """Read a CT volume into the canonical (H, W, D) LPS layout (see module docstring).

    ``source``: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``/``.mha``/``.mhd``, ``.npy``/``.npz`` or DICOM
    file (single- or multi-frame), a DICOM series folder, a folder of PNG/JPG/BMP/TIF slices, a numpy array or a
    torch tensor. A single 2D DICOM file gives a volume of depth 1.
    ``axis_order``: axes of an array / ``.npy`` / ``.npz`` input (default "HWD"; also "DHW", "WHD",
    "CHWD", "HWDC", "CDHW", ... with a unit channel axis C); not allowed for other formats.
    ``spacing``: (row, col, slice) mm in the canonical order; overrides the file's spacing
    (which is kept in ``meta["spacing_from_file"]``).
    ``allow_gaps`` (DICOM): read a series with a slice gap, a missing slice or uneven spacing (resampled onto an
    even grid, with a warning; ``meta["slice_gaps"]``) instead of refusing it.
    ``tilt`` (DICOM): "resample" (default: a gantry-tilted series is resampled onto an orthogonal grid, with a
    warning; ``meta["tilt"]``) or "error" (refuse it).
    ``max_voxels``: refuse files whose header declares more voxels (checked before anything is allocated);
    None for no limit.
    Raises VolumeReadError (a ValueError) naming the source and the problem; ImportError naming
    the package to install when an optional reader is missing.
    """
    if tilt not in TILT_MODES:
        raise VolumeReadError(f"tilt must be one of {TILT_MODES}, got {tilt!r}")
    max_voxels = _check_max_voxels(max_voxels)
    if isinstance(source, np.ndarray) or _is_torch_tensor(source):
        arr = _tensor_to_numpy(source) if _is_torch_tensor(source) else source
        vol = _from_array(arr, axis_order or "HWD", ARRAY_SOURCE)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        vol = _read_path(path, axis_order, allow_gaps=bool(allow_gaps), tilt=tilt, max_voxels=max_voxels)
    else:
        raise VolumeReadError(f"{source!r}: unsupported source type {type(source).__name__}")
    if spacing is not None:
        vol.meta["spacing_from_file"] = vol.spacing
        vol.spacing = _check_spacing(spacing, vol.source)
    return vol


def _list_folder(path: Path, label: str):
    """(regular files, subfolders, names of other entries) of a folder, hidden names left out."""
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except PermissionError:
        raise VolumeReadError(f"{label}: permission denied (cannot list the folder)") from None
    except OSError as exc:
        raise VolumeReadError(f"{label}: cannot list the folder ({_exc_text(exc)})") from None
    files, subdirs, odd = [], [], []
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            if e.is_file():  # follows links; False for FIFOs, devices, sockets, broken links and loops
                files.append(Path(e.path))
            elif e.is_dir():
                subdirs.append(Path(e.path))
            else:
                odd.append(e.name)
        except OSError:
            odd.append(e.name)
    return files, subdirs, odd


def _read_path(path: Path, axis_order: str | None, *, allow_gaps: bool = False, tilt: str = "resample",
               max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Volume:
    label = str(path)
    st = _stat_path(path)
    is_dir = stat.S_ISDIR(st.st_mode)
    suffix = _suffix(path)
    if axis_order is not None and not (not is_dir and suffix in _NUMPY_SUFFIXES):
        raise VolumeReadError(f"{label}: axis_order is only for arrays and .npy/.npz files (this source has its own)")
    if is_dir:
        files, _subdirs, odd = _list_folder(path, label)
        volumes = [p for p in files if _suffix(p) in _VOLUME_FILE_SUFFIXES]
        if volumes:
            names = ", ".join(p.name for p in volumes[:3]) + (", ..." if len(volumes) > 3 else "")
            rest = len(files) - len(volumes)
            mixed = f" and {rest} other file(s)" if rest else ""
            raise VolumeReadError(
                f"{label}: the folder holds {len(volumes)} volume file(s) ({names}){mixed}; a folder is read as one "
                "DICOM series or one stack of image slices: pass one volume file instead"
            )
        n_img = sum(p.suffix.lower() in _IMAGE_SUFFIXES for p in files)
        if n_img and 2 * n_img >= len(files):
            return _read_image_folder(path, files)
        if not files and odd:
            raise VolumeReadError(
                f"{label}: no regular files in the folder, only {len(odd)} other entr(ies) "
                f"(FIFOs, devices, sockets or broken links: {', '.join(odd[:3])})"
            )
        return _read_dicom(path, files, allow_gaps=allow_gaps, tilt=tilt, max_voxels=max_voxels)
    if suffix in _NIFTI_SUFFIXES:
        return _read_nifti(path, max_voxels)
    if suffix in _SITK_SUFFIXES:
        return _read_sitk(path, max_voxels)
    if suffix in _NUMPY_SUFFIXES:
        return _read_numpy_file(path, axis_order or "HWD", max_voxels)
    if suffix in _DICOM_SUFFIXES or suffix == "":
        return _read_dicom(path, [path], allow_gaps=allow_gaps, tilt=tilt, max_voxels=max_voxels)
    if suffix in _IMAGE_SUFFIXES:
        raise VolumeReadError(f"{label}: a single 2D image is not a volume; pass the folder of slices")
    raise VolumeReadError(
        f"{label}: unknown file extension {suffix!r}; supported: {', '.join(list_supported_formats())}"
    )
