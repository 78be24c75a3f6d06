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
    iop=(1, 0, 0, 0, 1, 0),
    positions=None,
    drop=(),
    modality="CT",
) -> list[Path]:
    """Write an axial CT series, one file per slice, and return the file paths (in written order).

    ``volume_hwd_hu``: canonical (H, W, D) HU array (rows->posterior, cols->left, slices inferior->superior).
    ``spacing``: (row, col, slice) mm. Files get random, non-sorting names and are written in shuffled
    order when ``shuffle``; stored value = (HU - intercept) / slope as int16.
    ``series_uid``: None for a new one, "" for an empty SeriesInstanceUID. ``iop``: ImageOrientationPatient;
    slice k lies at ``origin + k * slice_spacing * normal`` unless ``positions[k]`` says otherwise (a gantry tilt:
    positions that also move within the image plane). ``drop``: slice indices left out (missing slices).
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
    series_uid = generate_uid() if series_uid is None else series_uid
    row_cos, col_cos = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row_cos, col_cos)
    study_uid = generate_uid()
    row_sp, col_sp, slice_sp = (float(s) for s in spacing)
    order = list(range(vol.shape[2]))
    if shuffle:
        rng.shuffle(order)
    paths = []
    for k in order:
        if k in drop:
            continue
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
        ds.Modality = modality
        ds.PatientID = "SYNTH"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [float(v) for v in iop]
        pos = np.asarray(origin, float) + k * slice_sp * normal if positions is None else positions[k]
        ds.ImagePositionPatient = [round(float(v), 6) for v in pos]
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


def write_enhanced_ct(
    path,
    volume_hwd_hu,
    spacing=(0.7, 0.6, 2.5),
    *,
    origin=(-100.0, -120.0, 50.0),
    frame_order=None,
    slopes=None,
    intercepts=None,
    modality="CT",
) -> Path:
    """Write one Enhanced CT (multi-frame) DICOM file: frame ``i`` holds slice ``frame_order[i]`` of the canonical
    (H, W, D) HU volume, with its own ImagePositionPatient in the per-frame functional groups. ``slopes`` /
    ``intercepts`` (one per slice, default 1 / -1024) go per frame into PixelValueTransformationSequence; orientation
    and pixel spacing are shared functional groups."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    enhanced_ct = "1.2.840.10008.5.1.4.1.1.2.1"
    vol = np.asarray(volume_hwd_hu, dtype=np.float64)
    depth = vol.shape[2]
    order = list(range(depth)) if frame_order is None else list(frame_order)
    slopes = [1.0] * depth if slopes is None else list(slopes)
    intercepts = [-1024.0] * depth if intercepts is None else list(intercepts)
    row_sp, col_sp, slice_sp = (float(s) for s in spacing)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = enhanced_ct
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = enhanced_ct
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "SYNTH"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = int(vol.shape[0]), int(vol.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1

    def item(**kw):
        it = Dataset()
        for k, v in kw.items():
            setattr(it, k, v)
        return it

    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([item(PixelSpacing=[row_sp, col_sp], SliceThickness=slice_sp)])
    shared.PlaneOrientationSequence = Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame, pixels = [], []
    for k in order:
        fg = Dataset()
        fg.FrameContentSequence = Sequence([item(InStackPositionNumber=k + 1, DimensionIndexValues=[1, k + 1])])
        fg.PlanePositionSequence = Sequence(
            [item(ImagePositionPatient=[float(origin[0]), float(origin[1]), float(origin[2]) + k * slice_sp])]
        )
        fg.PixelValueTransformationSequence = Sequence(
            [item(RescaleSlope=slopes[k], RescaleIntercept=intercepts[k], RescaleType="HU")]
        )
        per_frame.append(fg)
        stored = np.rint((vol[:, :, k] - intercepts[k]) / slopes[k])
        assert stored.min() >= -32768 and stored.max() <= 32767
        pixels.append(stored.astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).tobytes()
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.save_as(str(path), write_like_original=False)  # pydicom 2.x
    return path
