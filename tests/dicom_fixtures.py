"""Write small synthetic CT DICOM series for tests (pydicom only, no network).

    from dicom_fixtures import write_ct_series
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np


def write_ct_series(
    folder,
    volume_hwd_hu,
    spacing=(0.7, 0.7, 2.5),
    series_uid=None,
    shuffle=True,
    *,
    origin=(-100.0, -120.0, 50.0),
    rescale_slope=1.0,
    rescale_intercept=-1024.0,
    seed=0,
) -> list[Path]:
    """Write an axial CT series, one file per slice, and return the file paths (in written order).

    ``volume_hwd_hu``: canonical (H, W, D) HU array (rows->posterior, cols->left, slices inferior->superior).
    ``spacing``: (row, col, slice) mm. Files get random, non-sorting names and are written in shuffled
    order when ``shuffle``; stored value = (HU - intercept) / slope as int16.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    vol = np.asarray(volume_hwd_hu)
    assert vol.ndim == 3, vol.shape
    stored = np.rint((vol - rescale_intercept) / rescale_slope)
    assert stored.min() >= -32768 and stored.max() <= 32767, "HU do not fit int16 with this rescale"
    stored = stored.astype(np.int16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    row_sp, col_sp, slice_sp = (float(s) for s in spacing)
    order = list(range(vol.shape[2]))
    if shuffle:
        rng.shuffle(order)
    paths = []
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{rng.getrandbits(40):010x}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        if int(pydicom.__version__.split(".")[0]) < 3:
            ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.PatientID = "SYNTH"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2]) + k * slice_sp]
        ds.PixelSpacing = [row_sp, col_sp]
        ds.SliceThickness = slice_sp
        ds.Rows, ds.Columns = int(vol.shape[0]), int(vol.shape[1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = rescale_slope
        ds.RescaleIntercept = rescale_intercept
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k]).tobytes()  # (Rows, Columns), row-major
        try:
            ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
        except TypeError:
            ds.save_as(str(path), write_like_original=False)  # pydicom 2.x
        paths.append(path)
    return paths
