"""DICOM series and multi-frame (enhanced) files → one canonical volume: series grouped by UID and geometry, slices
ordered along the normal, gaps and gantry tilt refused or resampled (see `volume_io`).

Hub remote-code file: the standard library and numpy at module level; pydicom is imported lazily.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .volume_io_core import (
    _AXIAL_IOP,
    _GAP_ABS_TOL,
    _GAP_REL_TOL,
    _TILT_MIN_PIXELS,
    DEFAULT_MAX_VOXELS,
    Volume,
    VolumeReadError,
    _check_voxel_count,
    _exc_text,
    _file_size,
    _kind_from_values,
    _require,
    _spacing_or_default,
    _stored,
)


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
            f"axial one ({_describe_group(chosen)})",
            stacklevel=2,
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
                f"{grid:.3f} mm grid ({n_out} slices from {len(chosen)} acquired, interpolated linearly)",
                stacklevel=2,
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
        warnings.warn(f"{label}: ImagePositionPatient missing; ordering slices by {what}", stacklevel=2)
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
            "to refuse tilted series instead",
            stacklevel=2,
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
