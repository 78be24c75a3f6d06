"""SimpleITK as an independent reference for dia_llama.volume_io (no dia_llama code in here).

Everything is mapped to volume_io's canonical layout: (H, W, D) = rows anterior->posterior, columns right->left,
slices inferior->superior, spacing (row, col, slice) mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sitk():
    import SimpleITK

    SimpleITK.ProcessObject_SetGlobalWarningDisplay(False)  # "non uniform sampling" chatter on stderr
    return SimpleITK


def canonical(img):
    """A SimpleITK image -> (float64 (H, W, D) array, (row, col, slice) spacing) in LPS display order."""
    s = sitk()
    img = s.DICOMOrient(img, "LPS")  # index axes (x, y, z) -> (L, P, S): the nearest axis-aligned order
    arr = s.GetArrayFromImage(img).astype(np.float64)  # (z, y, x)
    sx, sy, sz = img.GetSpacing()
    return arr.transpose(1, 2, 0), (sy, sx, sz)


def read_file(path):
    return canonical(sitk().ReadImage(str(path)))


def read_series(folder):
    """ImageSeriesReader over the folder's one series: slices stacked in GDCM's order, no resampling."""
    s = sitk()
    reader = s.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return canonical(reader.Execute())


def slice_on_grid(path, grid_origin, shape, fill: float) -> np.ndarray:
    """One single-slice DICOM file resampled (SimpleITK ``Resample``, linear) onto an in-plane grid of ``shape``
    (rows, cols) pixels with the file's own orientation and pixel spacing, whose pixel (0, 0) lies at
    ``grid_origin`` moved along the slice normal into this file's plane. Returns (rows, cols) float64 in the
    file's stored row/column order."""
    s = sitk()
    img = s.Cast(s.ReadImage(str(path)), s.sitkFloat64)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    normal = direction[:, 2]
    origin = np.asarray(grid_origin, np.float64)
    origin = origin + float((np.array(img.GetOrigin()) - origin) @ normal) * normal
    ref = s.Image(int(shape[1]), int(shape[0]), 1, s.sitkFloat64)
    ref.SetOrigin(tuple(origin))
    ref.SetDirection(img.GetDirection())
    ref.SetSpacing(img.GetSpacing())
    out = s.Resample(img, ref, s.Transform(), s.sitkLinear, float(fill))
    return s.GetArrayFromImage(out)[0]


def stored_hu(path) -> np.ndarray:
    """A single-slice DICOM file's real values (rows, cols) as SimpleITK reads them."""
    s = sitk()
    return s.GetArrayFromImage(s.ReadImage(str(path))).astype(np.float64)[0]


def files_of(folder, names) -> list[Path]:
    return [Path(folder) / n for n in names]
