"""Volume files read through nibabel and SimpleITK: NIfTI (read and write), NRRD and MetaImage, each with its header
checked against the file before anything is allocated (see `volume_io`).

Hub remote-code file: the standard library and numpy at module level; nibabel and SimpleITK are imported lazily.
"""

from __future__ import annotations

import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .volume_io_core import (
    _DEFLATE_MAX_RATIO,
    _NIFTI_SUFFIXES,
    DEFAULT_MAX_VOXELS,
    Volume,
    VolumeReadError,
    _check_gzip_payload,
    _check_spacing,
    _check_voxel_count,
    _exc_text,
    _file_size,
    _is_torch_tensor,
    _kind_from_values,
    _open_file,
    _require,
    _spacing_or_default,
    _stat_path,
    _stored,
    _suffix,
    _tensor_to_numpy,
)


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


@dataclass(frozen=True)
class NiftiHeader:
    """What a NIfTI header declares (no voxel data read): shape, voxel sizes, stored dtype, `scl_slope`/`scl_inter`
    (None when unset) and the byte offset of the data."""

    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    dtype: np.dtype
    slope: float | None
    inter: float | None
    offset: int


def read_nifti_header(path) -> NiftiHeader:
    """The header of a `.nii` / `.nii.gz` file, read without the voxel data; VolumeReadError names the problem."""
    nib = _require("nibabel", "reading NIfTI")
    path = Path(path)
    _stat_path(path)
    hdr, shape, dtype, offset = _nifti_header(nib, path, str(path))
    slope, inter = hdr.get_slope_inter()
    zooms = tuple(float(z) for z in hdr.get_zooms())
    return NiftiHeader(shape, zooms, dtype, slope, inter, offset)


def _nifti_header(nib, path: Path, label: str):
    """(header, shape, dtype, data offset) from the first 540 bytes (decompressed)."""
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
    return hdr, shape, dtype, offset


def _nifti_guard(nib, path: Path, label: str, max_voxels: int | None) -> None:
    """Read only the header (the first 540 bytes, decompressed) and refuse a declared size that the file cannot
    hold or that is over ``max_voxels``, before nibabel allocates the data."""
    _, shape, dtype, offset = _nifti_header(nib, path, label)
    gz = path.name.lower().endswith(".gz")
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
            warnings.warn(f"{label}: NIfTI has no qform/sform; orientation taken from nibabel's default affine",
                          stacklevel=2)
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
