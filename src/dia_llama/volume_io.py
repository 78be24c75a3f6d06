"""Read CT volumes from common formats into one canonical numpy layout.

Hub remote-code file, with its siblings `volume_io_core.py` (types, checks), `volume_io_files.py` (NIfTI, NRRD,
MetaImage) and `volume_io_dicom.py`: the standard library and numpy at module level; nibabel, pydicom, SimpleITK,
Pillow (and torch) are imported lazily when needed.

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

import os
import re
import stat
from pathlib import Path

import numpy as np

from .volume_io_core import (  # noqa: F401  (public names)
    _DICOM_SUFFIXES,
    _IMAGE_SUFFIXES,
    _NIFTI_SUFFIXES,
    _NPZ_KEYS,
    _NUMPY_SUFFIXES,
    _SITK_SUFFIXES,
    _VOLUME_FILE_SUFFIXES,
    AIR_HU,
    ARRAY_SOURCE,
    DEFAULT_MAX_VOXELS,
    TILT_MODES,
    StoredArray,
    Volume,
    VolumeReadError,
    _axes_to_hwd,
    _check_max_voxels,
    _check_spacing,
    _check_voxel_count,
    _exc_text,
    _file_size,
    _finalize,
    _is_torch_tensor,
    _open_file,
    _require,
    _stat_path,
    _stored,
    _suffix,
    _tensor_to_numpy,
    c_contiguous,
    list_supported_formats,
)
from .volume_io_dicom import _read_dicom
from .volume_io_files import (  # noqa: F401  (public names)
    NiftiHeader,
    _isal_igzip,
    _metaimage_guard,
    _nifti_guard,
    _nrrd_guard,
    _read_nifti,
    _read_sitk,
    read_nifti_header,
    write_nifti,
)

__all__ = [
    "VolumeReadError",
    "Volume",
    "StoredArray",
    "c_contiguous",
    "read_volume",
    "check_volume_file",
    "read_nifti_header",
    "NiftiHeader",
    "write_nifti",
    "list_supported_formats",
    "DEFAULT_MAX_VOXELS",
    "TILT_MODES",
    "AIR_HU",
]


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


def check_volume_file(path, *, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> str | None:
    """A cheap check before reading (headers only, no voxel data): None when `path` looks readable, else the problem,
    naming the path (missing, a special file, an empty file or folder, a NIfTI / NRRD / MetaImage header that the file
    cannot hold). For validating a data set's files up front; `read_volume` makes the same checks and more."""
    path = Path(path).expanduser()
    label = str(path)
    try:
        st = _stat_path(path)
        if path.is_dir():
            has_files = any(f.is_file() and not f.name.startswith(".") for f in path.iterdir())
            return None if has_files else f"{label}: the folder is empty"
        if st.st_size == 0:
            return f"{label}: the file is empty (0 bytes)"
        suffix = _suffix(path)
        if suffix in _NIFTI_SUFFIXES:
            _nifti_guard(_require("nibabel", "reading NIfTI"), path, label, _check_max_voxels(max_voxels))
        elif suffix in (".nrrd", ".nhdr"):
            _nrrd_guard(path, label, _check_max_voxels(max_voxels))
        elif suffix in (".mha", ".mhd"):
            _metaimage_guard(path, label, _check_max_voxels(max_voxels))
    except VolumeReadError as err:
        return str(err)
    except ImportError:
        return None  # the reader's own import error will say what to install
    return None


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
