"""The volume processor on real file formats, intensity modes, and errors for bad input."""

import numpy as np
import pytest
import torch

from dia_llama import DiaLlamaVolumeProcessor, VolumeReadError
from dia_llama.volume_io import write_nifti


def hu_volume(shape=(40, 36, 12), seed=0):
    rng = np.random.default_rng(seed)
    vol = np.full(shape, -1000, np.int16)
    vol[5:-5, 5:-5, :] = rng.integers(-900, 1200, size=(shape[0] - 10, shape[1] - 10, shape[2]))
    return vol


def test_hu_mode_on_pydicom_ct_matches_pydicom_rescale():
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # (rows, cols)
    proc = DiaLlamaVolumeProcessor(volume_size=(*hu.shape, 1), num_channels=1, intensity_mode="hu",
                                   hu_window=(-1000, 1000))
    pv = proc(path, return_tensors="pt")["pixel_values"]
    assert pv.shape == (1, 1, *hu.shape, 1)
    expected = (np.clip(hu, -1000, 1000) + 1000) / 2000
    np.testing.assert_allclose(pv[0, 0, :, :, 0].numpy(), expected, atol=1e-6)


def test_dicom_series_folder_through_processor(tmp_path):
    from dicom_fixtures import write_ct_series

    vol = hu_volume()
    write_ct_series(tmp_path / "series", vol, spacing=(0.7, 0.7, 2.5))
    proc = DiaLlamaVolumeProcessor(volume_size=vol.shape, num_channels=3, intensity_mode="hu")
    pv = proc([tmp_path / "series"], return_tensors="pt")["pixel_values"]
    assert pv.shape == (1, 3, *vol.shape)
    expected = (np.clip(vol.astype(np.float64), -1000, 1000) + 1000) / 2000
    np.testing.assert_allclose(pv[0, 1].numpy(), expected, atol=1e-6)
    assert torch.equal(pv[0, 0], pv[0, 2])  # grey replicated to the channels


def test_nifti_png_npy_inputs_give_the_same_volume(tmp_path):
    from PIL import Image

    vol = (hu_volume(shape=(24, 20, 6)) // 8 + 128).clip(0, 255).astype(np.uint8)
    write_nifti(tmp_path / "v.nii.gz", vol.astype(np.int16), spacing=(1.0, 1.0, 2.0))
    np.save(tmp_path / "v.npy", vol)
    (tmp_path / "slices").mkdir()
    for k in range(vol.shape[2]):  # names that sort wrongly as text: 1.png, 10.png, 2.png …
        Image.fromarray(vol[:, :, k]).save(tmp_path / "slices" / f"{k * 5 + 1}.png")
    proc = DiaLlamaVolumeProcessor(volume_size=vol.shape, num_channels=1, intensity_mode="minmax")
    outs = [proc(src, return_tensors="pt")["pixel_values"] for src in
            (tmp_path / "v.nii.gz", tmp_path / "v.npy", tmp_path / "slices", vol)]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0])
    assert outs[0].min() == 0 and outs[0].max() == 1


def test_intensity_modes():
    vol = hu_volume()
    hu = DiaLlamaVolumeProcessor(volume_size=vol.shape, num_channels=1, intensity_mode="hu", hu_window=(-500, 500))
    pv = hu(vol, return_tensors="pt")["pixel_values"][0, 0]
    np.testing.assert_allclose(pv.numpy(), (np.clip(vol, -500, 500) + 500) / 1000, atol=1e-6)
    mm = DiaLlamaVolumeProcessor(volume_size=vol.shape, num_channels=1, intensity_mode="minmax")
    pv = mm(vol, return_tensors="pt")["pixel_values"][0, 0]
    np.testing.assert_allclose(pv.numpy(), (vol - vol.min()) / (vol.max() - vol.min()), atol=1e-6)
    u8 = DiaLlamaVolumeProcessor(volume_size=(8, 8, 4), num_channels=1, intensity_mode="uint8")
    pv = u8(np.full((8, 8, 4), 51, np.uint8), return_tensors="pt")["pixel_values"]
    assert torch.allclose(pv, torch.full_like(pv, 0.2))


def test_resize_to_configured_size_and_batch():
    proc = DiaLlamaVolumeProcessor(volume_size=(32, 32, 16), num_channels=2, intensity_mode="hu")
    out = proc([hu_volume((50, 40, 30)), hu_volume((64, 64, 8), seed=1)], return_tensors="pt")["pixel_values"]
    assert out.shape == (2, 2, 32, 32, 16) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    # constant volumes don't divide by zero in minmax mode
    flat = DiaLlamaVolumeProcessor(volume_size=(4, 4, 4), num_channels=1)(np.ones((4, 4, 4)), return_tensors="pt")
    assert torch.equal(flat["pixel_values"], torch.zeros(1, 1, 4, 4, 4))


def test_declared_axis_order():
    vol = hu_volume((20, 16, 6))
    proc = DiaLlamaVolumeProcessor(volume_size=vol.shape, num_channels=1, intensity_mode="hu")
    a = proc(vol, return_tensors="pt")["pixel_values"]
    b = proc(np.transpose(vol, (2, 0, 1)), axis_order="DHW", return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(a, b)


def test_mode_mismatch_is_an_error():
    proc = DiaLlamaVolumeProcessor(volume_size=(8, 8, 4), num_channels=1, intensity_mode="hu")
    with pytest.raises(ValueError, match="8-bit"):
        proc(np.zeros((8, 8, 4), np.uint8))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: np.zeros((8, 8)), "shape"),
        (lambda d: np.zeros((2, 3, 8, 8, 4)), "shape"),
        (lambda d: np.full((8, 8, 4), np.nan, np.float32), "NaN"),
        (lambda d: d / "missing.nii.gz", "missing.nii.gz"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty"),
    ],
)
def test_bad_inputs_name_the_problem(tmp_path, make, match):
    proc = DiaLlamaVolumeProcessor(volume_size=(8, 8, 4), num_channels=1)
    with pytest.raises((VolumeReadError, ValueError), match=match):
        proc(make(tmp_path))


def test_truncated_nifti_names_the_file(tmp_path):
    write_nifti(tmp_path / "ok.nii.gz", hu_volume(), spacing=(1, 1, 1))
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    proc = DiaLlamaVolumeProcessor(volume_size=(8, 8, 4), num_channels=1)
    with pytest.raises(VolumeReadError, match="cut.nii.gz"):
        proc(tmp_path / "cut.nii.gz")


def test_invalid_processor_settings():
    with pytest.raises(ValueError, match="intensity_mode"):
        DiaLlamaVolumeProcessor(intensity_mode="window")
    with pytest.raises(ValueError, match="hu_window"):
        DiaLlamaVolumeProcessor(hu_window=(100, -100))
    with pytest.raises(ValueError, match="volume_size"):
        DiaLlamaVolumeProcessor(volume_size=(8, 8))


def test_processor_round_trip(tmp_path):
    proc = DiaLlamaVolumeProcessor(volume_size=(16, 16, 8), num_channels=1, intensity_mode="hu", hu_window=(-200, 300))
    proc.save_pretrained(tmp_path)
    again = DiaLlamaVolumeProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == proc.to_dict()
