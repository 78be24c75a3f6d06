"""Types and shared helpers of the volume readers (`volume_io`): `Volume`, `StoredArray`, `VolumeReadError`, path
and size checks before allocation, the stored-value conversions and the kind (HU or not) of a volume.

Hub remote-code file: the standard library and numpy only.
"""

from __future__ import annotations

import errno
import importlib
import math
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    # any disagreement is settled by counting: a truncated file's last 4 bytes are arbitrary compressed data, which
    # may well exceed `need` (a trailer that matches, the usual case, costs nothing more)
    if isize != need % 2**32:
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
