"""The volume processor on real file formats, intensity modes, and errors for bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dia_llama import DiaLlamaVolumeProcessor, VolumeReadError
from dia_llama.image_processing_dia_llama import resize_volume
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
    from helpers.dicom_fixtures import write_ct_series

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
    torch.testing.assert_close(pv, torch.full_like(pv, 0.2), rtol=1e-5, atol=1e-8)


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


# ---------------------------------------------------------------------------- resize before conversion == the reference
MODES = ("nearest", "trilinear", "area")


def reference_resize(hwd, size, mode) -> torch.Tensor:
    """The straightforward way (the processor's former path): a float32 (H, W, D) copy, then torch."""
    x = torch.from_numpy(np.ascontiguousarray(hwd, dtype=np.float32))
    if tuple(x.shape) == tuple(size):
        return x
    x = x[None, None]
    if mode == "area":
        x = F.adaptive_avg_pool3d(x, size)
    elif mode == "nearest":
        x = F.interpolate(x, size=size, mode="nearest-exact")
    else:
        x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    return x[0, 0]


def reference_pixel_values(hwd, size, mode, intensity, hu_window=(-1000.0, 1000.0)) -> torch.Tensor:
    x = reference_resize(hwd, size, mode)
    if intensity == "minmax":
        return (x - x.min()) / (x.max() - x.min())
    if intensity == "hu":
        low, high = hu_window
        return (x.clamp(low, high) - low) / (high - low)
    return x.clamp(0, 255) / 255.0


def reference_nifti(path) -> np.ndarray:
    """nibabel's scaled data, reoriented to LPS by nibabel, as canonical (H, W, D) float32 — no dia_llama code."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    img = nib.load(str(path))
    lps = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "S"))))
    return np.asanyarray(lps.dataobj).transpose(1, 0, 2).astype(np.float32)


def oblique_nifti(path, shape=(23, 19, 13), dtype=np.int16, slope=0.37, inter=-1024.5):
    """Stored axes (A, I, L) with a translation, non-integer scl_slope/scl_inter."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 255, size=shape) if dtype == np.uint8 else rng.integers(-2000, 3000, size=shape)
    affine = np.array([[0, 0, -0.7, 30.0], [0.8, 0, 0, -12.0], [0, -2.5, 0, 5.0], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(raw.astype(dtype), affine)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))


def assert_matches(got, ref, mode, what):
    if mode == "nearest":  # values are only picked: bit for bit
        assert torch.equal(got, ref), (what, float((got - ref).abs().max()))
    else:  # linear: equal to float32 rounding
        torch.testing.assert_close(got, ref, rtol=0, atol=2e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("mode", MODES)
def test_resize_volume_equals_torch_on_any_layout_and_dtype(mode):
    rng = np.random.default_rng(11)
    for trial in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 24, 3))
        size = tuple(int(v) for v in rng.integers(1, 30, 3))
        if trial % 5 == 0:
            size = (size[0], shape[1], size[2])  # an axis that is not resized
        dtype = (np.int16, np.uint8, np.int32, np.float32, np.float64, np.uint16)[trial % 6]
        hwd = rng.integers(0 if np.dtype(dtype).kind == "u" else -1000, 250, size=shape).astype(dtype)
        if hwd.dtype.kind == "f":
            hwd += rng.random(shape).astype(dtype)
        perm, flips = rng.permutation(3), rng.random(3) < 0.5
        flip = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
        stored = np.ascontiguousarray(hwd[flip].transpose(perm))  # how a file might hold it
        view = stored.transpose(np.argsort(perm))[flip]  # the canonical view a reader hands over
        assert np.array_equal(view, hwd)
        got = torch.from_numpy(resize_volume(view, size, mode))
        ref = reference_resize(hwd, size, mode)
        assert got.shape == ref.shape and got.dtype == torch.float32
        scale = max(1.0, float(ref.abs().max()))
        if mode == "nearest":
            assert torch.equal(got, ref), (trial, shape, size, dtype)
        else:
            torch.testing.assert_close(got, ref, rtol=0, atol=1e-6 * scale,
                                       msg=lambda m, trial=trial: f"trial {trial}: {m}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("intensity", ["minmax", "hu"])
@pytest.mark.parametrize("size", [(10, 8, 5), (30, 7, 13)])  # down, and up/down/unchanged per axis
def test_oriented_scaled_nifti_matches_the_reference(tmp_path, mode, intensity, size):
    path = tmp_path / "obl.nii.gz"
    oblique_nifti(path)
    hwd = reference_nifti(path)  # (H, W, D) = (23, 13, 19): rows from A, cols from L, slices from I
    assert hwd.shape == (23, 13, 19)
    proc = DiaLlamaVolumeProcessor(volume_size=size, num_channels=1, intensity_mode=intensity, resample=mode,
                                   hu_window=(-500.0, 600.0))
    got = proc(str(path), return_tensors="pt")["pixel_values"][0, 0]
    ref = reference_pixel_values(hwd, size, mode, intensity, hu_window=(-500.0, 600.0))
    assert_matches(got, ref, mode, (mode, intensity, size))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("intensity", ["uint8", "minmax"])
def test_uint8_nifti_matches_the_reference(tmp_path, mode, intensity):
    path = tmp_path / "u8.nii.gz"
    oblique_nifti(path, dtype=np.uint8, slope=None)
    proc = DiaLlamaVolumeProcessor(volume_size=(9, 7, 11), num_channels=2, intensity_mode=intensity, resample=mode)
    got = proc(str(path), return_tensors="pt")["pixel_values"]
    assert got.shape == (1, 2, 9, 7, 11)
    ref = reference_pixel_values(reference_nifti(path), (9, 7, 11), mode, intensity)
    assert_matches(got[0, 1], ref, mode, (mode, intensity))


@pytest.mark.parametrize("mode", MODES)
def test_processor_never_builds_the_full_float32_volume(monkeypatch, tmp_path, mode):
    from dia_llama.volume_io import StoredArray

    path = tmp_path / "obl.nii.gz"
    oblique_nifti(path)

    def refuse(self):
        raise AssertionError("the full-size float32 array was built")

    monkeypatch.setattr(StoredArray, "materialize", refuse)
    proc = DiaLlamaVolumeProcessor(volume_size=(10, 8, 5), num_channels=1, resample=mode)
    got = proc(str(path), return_tensors="pt")["pixel_values"][0, 0]
    assert_matches(got, reference_pixel_values(reference_nifti(path), (10, 8, 5), mode, "minmax"), mode, mode)


@pytest.mark.parametrize("mode", MODES)
def test_stdlib_gzip_fallback_gives_the_same_pixel_values(monkeypatch, tmp_path, mode):
    import sys

    import nibabel._compression as nc

    path = tmp_path / "obl.nii.gz"
    oblique_nifti(path)
    proc = DiaLlamaVolumeProcessor(volume_size=(10, 8, 5), num_channels=1, intensity_mode="hu", resample=mode)
    default = proc(str(path), return_tensors="pt")["pixel_values"]
    monkeypatch.setitem(sys.modules, "isal", None)  # python-isal not importable
    monkeypatch.setitem(sys.modules, "isal.igzip", None)
    monkeypatch.setattr(nc, "HAVE_INDEXED_GZIP", False)  # and nibabel on the stdlib gzip module
    fallback = proc(str(path), return_tensors="pt")["pixel_values"]
    assert torch.equal(default, fallback)


@pytest.mark.parametrize("mode", MODES)
def test_dicom_prone_and_arrays_match_the_reference(tmp_path, mode):
    pydicom = pytest.importorskip("pydicom")
    from helpers.dicom_fixtures import write_ct_series

    vol = hu_volume((20, 18, 9), seed=2).astype(np.float32)
    for f in write_ct_series(tmp_path / "prone", vol[::-1, ::-1, :], spacing=(0.7, 0.6, 2.5)):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]  # stored flipped: rows run anterior, columns right
        ds.save_as(f)
    size = (8, 12, 4)
    for intensity in ("hu", "minmax"):
        proc = DiaLlamaVolumeProcessor(volume_size=size, num_channels=1, intensity_mode=intensity, resample=mode)
        ref = reference_pixel_values(vol, size, mode, intensity)
        assert_matches(proc(tmp_path / "prone", return_tensors="pt")["pixel_values"][0, 0], ref, mode, "dicom")
        arr = proc(np.ascontiguousarray(vol.astype(np.int16).transpose(2, 1, 0)), axis_order="DWH",
                   return_tensors="pt")["pixel_values"][0, 0]
        assert_matches(arr, ref, mode, "array DWH")
