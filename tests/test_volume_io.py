"""Tests for dia_llama.volume_io: every reader lands in the canonical (H, W, D) LPS layout, bad inputs fail loudly."""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dia_llama import volume_io
from dia_llama.volume_io import Volume, VolumeReadError, list_supported_formats, read_volume, write_nifti
from helpers.dicom_fixtures import write_ct_series

SPACING = (0.7, 0.8, 2.5)  # (row, col, slice) mm


@pytest.fixture
def hu():
    """A small asymmetric canonical (H, W, D) = (6, 7, 5) integer-valued HU volume."""
    rng = np.random.default_rng(0)
    return rng.integers(-1000, 2000, size=(6, 7, 5)).astype(np.float32)


def test_module_imports_only_stdlib_and_numpy():
    """The readers are Hub remote code: the standard library, numpy and their own `volume_io*` siblings only."""
    files = sorted(Path(volume_io.__file__).parent.glob("volume_io*.py"))
    assert {f.name for f in files} == {"volume_io.py", "volume_io_core.py", "volume_io_files.py", "volume_io_dicom.py"}
    for file in files:
        top = set()
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module.startswith("volume_io"), f"{file.name}: {node.module}"
            elif isinstance(node, ast.ImportFrom):
                top.add(node.module.split(".")[0])
        assert top <= set(sys.stdlib_module_names) | {"numpy"}, (file.name, top - set(sys.stdlib_module_names))


def test_list_supported_formats():
    fmts = list_supported_formats()
    for ext in (".nii", ".nii.gz", ".nrrd", ".mha", ".dcm", ".npy", ".npz", "dicom_folder"):
        assert ext in fmts


# ----------------------------------------------------------------------------- NIfTI
def test_write_nifti_roundtrip_exact(tmp_path, hu):
    import nibabel as nib

    path = tmp_path / "sub" / "ct.nii.gz"
    write_nifti(path, hu, SPACING)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.7, 2.5), rtol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), hu.transpose(1, 0, 2))

    vol = read_volume(path)
    assert isinstance(vol, Volume) and vol.kind == "hu" and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == SPACING
    assert vol.source == str(path) and vol.meta["orientation"] == "LPS"


def test_write_nifti_rejects_out_of_range_and_nan(tmp_path, hu):
    with pytest.raises(ValueError, match="fit"):
        write_nifti(tmp_path / "x.nii", hu * 100, SPACING)
    with pytest.raises(ValueError, match="NaN"):
        write_nifti(tmp_path / "x.nii", np.full((2, 2, 2), np.nan), SPACING)


@pytest.mark.parametrize(
    "axcodes", [("R", "A", "S"), ("L", "A", "I"), ("A", "S", "R"), ("S", "R", "P"), ("P", "L", "S")]
)
def test_nifti_any_orientation_comes_out_canonical(tmp_path, hu, axcodes):
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    canon = nib.Nifti1Image(hu.transpose(1, 0, 2).astype(np.int16), np.diag([-0.8, -0.7, 2.5, 1.0]))
    img = canon.as_reoriented(ornt_transform(axcodes2ornt(("L", "P", "S")), axcodes2ornt(axcodes)))
    assert nib.aff2axcodes(img.affine) == axcodes
    nib.save(img, tmp_path / "o.nii")
    vol = read_volume(tmp_path / "o.nii")
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == SPACING and vol.meta["orientation"] == "".join(axcodes)


def test_nifti_ras_hand_built_with_translation(tmp_path, hu):
    import nibabel as nib

    # RAS storage: x runs R (= flipped columns), y runs A (= flipped rows).
    data = hu.transpose(1, 0, 2)[::-1, ::-1, :].astype(np.int16)
    affine = np.array([[0.8, 0, 0, -50], [0, 0.7, 0, 20], [0, 0, 2.5, -300], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ras.nii.gz")
    vol = read_volume(tmp_path / "ras.nii.gz")
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == SPACING


def test_nifti_scl_slope_inter_applied(tmp_path):
    import nibabel as nib

    vals = np.linspace(-1024.0, 90000.0, 4 * 5 * 3).reshape(4, 5, 3)  # does not fit int16 unscaled
    img = nib.Nifti1Image(vals, np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.set_data_dtype(np.int16)  # nibabel picks scl_slope/inter on save
    nib.save(img, tmp_path / "s.nii")
    slope = nib.load(tmp_path / "s.nii").dataobj.slope  # the loaded header's scl_* are reset; the proxy keeps them
    assert slope != 1
    vol = read_volume(tmp_path / "s.nii")
    np.testing.assert_allclose(vol.array, vals.transpose(1, 0, 2), atol=slope)


# ----------------------------------------------------------------------------- NRRD / MHA
@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_sitk_formats(tmp_path, hu, ext):
    import SimpleITK as sitk

    a16 = hu.astype(np.int16)
    # 1) LPS storage: sitk array is (z, y, x), spacing (x, y, z).
    img = sitk.GetImageFromArray(a16.transpose(2, 0, 1))
    img.SetSpacing((0.8, 0.7, 2.5))
    # 2) x flipped (index runs towards patient Right).
    flip = sitk.GetImageFromArray(np.ascontiguousarray(a16[:, ::-1, :].transpose(2, 0, 1)))
    flip.SetSpacing((0.8, 0.7, 2.5))
    flip.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    # 3) axes permuted: index axis 0 runs posterior (rows), axis 1 runs left (cols).
    perm = sitk.GetImageFromArray(np.ascontiguousarray(a16.transpose(2, 1, 0)))
    perm.SetSpacing((0.7, 0.8, 2.5))
    perm.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    for name, im in (("lps", img), ("flip", flip), ("perm", perm)):
        path = tmp_path / f"{name}{ext}"
        sitk.WriteImage(im, str(path))
        vol = read_volume(path)
        np.testing.assert_array_equal(vol.array, hu, err_msg=name)
        assert vol.spacing == pytest.approx(SPACING), name
        assert vol.kind == "hu" and vol.array.dtype == np.float32


# ----------------------------------------------------------------------------- DICOM
def test_pydicom_ct_small():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_volume(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert vol.array.shape == (ds.Rows, ds.Columns, 1) and vol.kind == "hu"
    np.testing.assert_array_equal(vol.array[:, :, 0], expected.astype(np.float32))
    assert vol.spacing[:2] == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_dicom_series_shuffled(tmp_path):
    rng = np.random.default_rng(1)
    vol_hu = rng.integers(-1000, 2000, size=(8, 10, 6)).astype(np.float32)
    files = write_ct_series(tmp_path, vol_hu, spacing=(0.7, 0.6, 2.5), shuffle=True)
    assert [p.name for p in files] != sorted(p.name for p in files)  # names/order do not give z order
    (tmp_path / "README").write_text("not dicom")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one clean series: no warning
        vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, vol_hu)
    assert vol.spacing == pytest.approx((0.7, 0.6, 2.5))
    assert vol.kind == "hu" and vol.meta["n_series_found"] == 1 and vol.meta["n_files_skipped"] == 2


def test_dicom_two_series_picks_largest_with_warning(tmp_path):
    small = np.zeros((4, 4, 3), np.float32)
    big = np.full((5, 6, 7), 40.0, np.float32)
    write_ct_series(tmp_path, small, seed=1)
    write_ct_series(tmp_path, big, seed=2)
    with pytest.warns(UserWarning, match=r"2 series") as rec:
        vol = read_volume(tmp_path)
    assert str(tmp_path) in str(rec[0].message)
    assert vol.array.shape == (5, 6, 7) and vol.meta["n_series_found"] == 2
    np.testing.assert_array_equal(vol.array, big)


def test_dicom_mixed_sizes_and_duplicates(tmp_path):
    uid = "1.2.3.4.5"
    write_ct_series(tmp_path / "mixed", np.zeros((4, 4, 3)), series_uid=uid, seed=1)
    write_ct_series(tmp_path / "mixed", np.zeros((5, 4, 2)), series_uid=uid, seed=2)
    # issue #18: one SeriesInstanceUID with two slice sizes is two series (grouped by UID and geometry)
    with pytest.warns(UserWarning, match=r"2 series .*5x4.*4x4") as rec:
        vol = read_volume(tmp_path / "mixed")
    assert str(tmp_path / "mixed") in str(rec[0].message)
    assert vol.array.shape == (4, 4, 3) and vol.meta["n_series_found"] == 2

    write_ct_series(tmp_path / "dup", np.zeros((4, 4, 3)), series_uid=uid, seed=1)
    write_ct_series(tmp_path / "dup", np.zeros((4, 4, 3)), series_uid=uid, seed=2)
    with pytest.raises(VolumeReadError, match="duplicate slice positions"):
        read_volume(tmp_path / "dup")


def test_dicom_prone_orientation_is_flipped_to_canonical(tmp_path):
    import pydicom

    vol_hu = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    stored = vol_hu[::-1, ::-1, :]  # prone: pixel rows run anterior, columns run right
    for f in write_ct_series(tmp_path, stored, spacing=(0.7, 0.6, 2.5)):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
        ds.save_as(f)
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, vol_hu)
    assert vol.spacing == pytest.approx((0.7, 0.6, 2.5))


def test_empty_folder(tmp_path):
    with pytest.raises(VolumeReadError, match="no DICOM files") as exc:
        read_volume(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_garbage_dcm(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(VolumeReadError, match="not a valid DICOM") as exc:
        read_volume(path)
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------- image slice folders
def test_png_folder_numeric_sort(tmp_path):
    from PIL import Image

    for k in range(1, 13):  # 1.png .. 12.png: lexicographic order would put 10, 11, 12 before 2
        img = np.full((9, 11), k * 10, np.uint8)
        img[0, 0] = 255
        mode_img = Image.fromarray(img)
        (mode_img.convert("RGB") if k == 3 else mode_img).save(tmp_path / f"{k}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    vol = read_volume(tmp_path)
    assert vol.kind == "uint8" and vol.array.dtype == np.uint8 and vol.array.shape == (9, 11, 12)
    assert vol.array[5, 5, :].tolist() == [k * 10 for k in range(1, 13)]
    assert vol.spacing == (1.0, 1.0, 1.0)


def test_png_folder_odd_size_and_truncated(tmp_path):
    from PIL import Image

    for k in range(3):
        Image.fromarray(np.full((8, 8), 50 * k, np.uint8)).save(tmp_path / f"s{k}.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "s3.png")
    with pytest.raises(VolumeReadError, match="s3.png") as exc:
        read_volume(tmp_path)
    assert str(tmp_path) in str(exc.value)

    (tmp_path / "s3.png").unlink()
    data = (tmp_path / "s1.png").read_bytes()
    (tmp_path / "s1.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="s1.png") as exc:
        read_volume(tmp_path)
    assert "cannot read" in str(exc.value) and str(tmp_path) in str(exc.value)


# ----------------------------------------------------------------------------- numpy files and arrays
def test_npy_npz(tmp_path, hu):
    np.save(tmp_path / "v.npy", hu)
    np.testing.assert_array_equal(read_volume(tmp_path / "v.npy").array, hu)
    np.save(tmp_path / "d.npy", hu.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_volume(tmp_path / "d.npy", axis_order="DHW").array, hu)
    np.savez(tmp_path / "one.npz", whatever=hu)
    np.testing.assert_array_equal(read_volume(tmp_path / "one.npz").array, hu)
    np.savez(tmp_path / "keyed.npz", volume=hu, mask=hu > 0)
    vol = read_volume(tmp_path / "keyed.npz", spacing=(1, 2, 3))
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == (1.0, 2.0, 3.0) and vol.kind == "unknown"
    np.savez(tmp_path / "amb.npz", a=hu, b=hu)
    with pytest.raises(VolumeReadError, match="amb.npz"):
        read_volume(tmp_path / "amb.npz")


@pytest.mark.parametrize(
    "order,make",
    [
        ("HWD", lambda a: a),
        ("DHW", lambda a: a.transpose(2, 0, 1)),
        ("WHD", lambda a: a.transpose(1, 0, 2)),
        ("CHWD", lambda a: a[None]),
        ("HWDC", lambda a: a[..., None]),
        ("CDHW", lambda a: a.transpose(2, 0, 1)[None]),
    ],
)
def test_array_axis_orders(hu, order, make):
    vol = read_volume(make(hu), axis_order=order)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.source == "<array>" and vol.kind == "unknown" and vol.array.flags.c_contiguous


def test_torch_and_uint8_arrays(hu):
    import torch

    vol = read_volume(torch.from_numpy(hu.transpose(2, 0, 1)), axis_order="DHW")
    np.testing.assert_array_equal(vol.array, hu)
    u8 = read_volume(np.zeros((3, 4, 5), np.uint8))
    assert u8.kind == "uint8" and u8.array.dtype == np.uint8


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "arr,word",
    [
        (np.zeros((4, 4)), "2D"),
        (np.zeros((1, 2, 3, 4, 5)), "5D"),
        (np.zeros((2, 3, 4, 5)), "4D"),
        (np.zeros((0, 3, 4)), "empty"),
        (np.array([[[1.0, np.nan]]]), "NaN"),
        (np.array([[[1.0, np.inf]]]), "inf"),
    ],
)
def test_bad_arrays(arr, word):
    with pytest.raises(VolumeReadError, match=word) as exc:
        read_volume(arr, axis_order="CHWD" if arr.ndim == 4 else None)
    assert "<array>" in str(exc.value)


def test_channel_axis_must_be_unit():
    with pytest.raises(VolumeReadError, match="channel"):
        read_volume(np.zeros((2, 3, 4, 5)), axis_order="CHWD")


def test_truncated_nifti_and_nan_nifti(tmp_path, hu):
    import nibabel as nib

    path = tmp_path / "cut.nii.gz"
    write_nifti(path, hu, SPACING)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="cannot read NIfTI") as exc:
        read_volume(path)
    assert str(path) in str(exc.value)

    bad = hu.copy()
    bad[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(bad, np.diag([-1.0, -1.0, 1.0, 1.0])), tmp_path / "nan.nii")
    with pytest.raises(VolumeReadError, match="NaN") as exc:
        read_volume(tmp_path / "nan.nii")
    assert "nan.nii" in str(exc.value)

    twod = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.int16), np.eye(4)), twod)
    with pytest.raises(VolumeReadError, match="3D"):
        read_volume(twod)


def test_missing_path_unknown_extension_and_bad_args(tmp_path):
    with pytest.raises(VolumeReadError, match="does not exist") as exc:
        read_volume(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(exc.value)
    odd = tmp_path / "scan.xyz"
    odd.write_text("?")
    with pytest.raises(VolumeReadError, match="unknown file extension") as exc:
        read_volume(odd)
    assert str(odd) in str(exc.value)
    with pytest.raises(VolumeReadError, match="axis_order"):
        read_volume(tmp_path, axis_order="DHW")
    with pytest.raises(VolumeReadError, match="spacing"):
        read_volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))


def test_missing_optional_package_names_pip_install(monkeypatch, tmp_path, hu):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "nibabel":
            raise ImportError("no nibabel")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib, "import_module", lambda n: fake_import(n))
    with pytest.raises(ImportError, match="pip install nibabel"):
        write_nifti(tmp_path / "x.nii", hu)


# ----------------------------------------------------------------------------- stored values, lazy array, gzip backends
def _reference_nifti_hwd(path) -> np.ndarray:
    """Straightforward reading: nibabel's scaled data, reoriented to LPS by nibabel, (H, W, D) float32 C order."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    img = nib.load(str(path))
    lps = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "S"))))
    return np.ascontiguousarray(np.asanyarray(lps.dataobj).transpose(1, 0, 2), dtype=np.float32)


def _oblique_scaled_nifti(path, dtype=np.int16, slope=0.37, inter=-1024.5, byteorder="<"):
    """A NIfTI with a permuted + flipped orientation, a translation and a non-integer scl_slope/scl_inter."""
    import nibabel as nib

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    raw = rng.integers(max(info.min, -3000), min(info.max, 3000), size=(9, 11, 7)).astype(dtype)
    affine = np.array([[0, 0, -2.5, 30.0], [0.8, 0, 0, -12.0], [0, -0.7, 0, 5.0], [0, 0, 0, 1.0]])  # (S, L, P)-ish
    img = nib.Nifti1Image(raw.astype(np.dtype(dtype).newbyteorder(byteorder)), affine)
    img.header.set_slope_inter(slope, inter)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return raw


def test_nifti_stored_values_are_kept_and_array_is_built_on_access(tmp_path):
    import nibabel as nib

    path = tmp_path / "obl.nii.gz"
    raw = _oblique_scaled_nifti(path)
    vol = read_volume(path)
    stored = vol.stored()
    assert stored.data.dtype == np.int16 and stored.is_scaled  # no float32 copy of the volume yet
    assert not stored.data.flags.c_contiguous  # the canonical axes are a view of the file's memory order
    assert "shape=(9, 7, 11), dtype=float32" in repr(vol)  # (A->P rows, R->L cols, I->S slices)
    proxy = nib.load(str(path)).dataobj
    assert (stored.slope, stored.inter) == (proxy.slope, proxy.inter)
    assert np.array_equal(np.sort(stored.data.ravel()), np.sort(raw.ravel()))

    ref = _reference_nifti_hwd(path)
    arr = vol.array
    assert arr.dtype == np.float32 and arr.flags.c_contiguous and arr.shape == (9, 7, 11)
    np.testing.assert_array_equal(arr, ref)  # bit for bit what nibabel's scaling + a float32 cast give
    assert vol.array is arr and vol.stored().data is arr  # built once, then the only copy
    assert vol.spacing == (0.8, 2.5, 0.7)
    assert vol.meta["orientation"] == "".join(nib.aff2axcodes(nib.load(str(path)).affine))


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_scaled_nifti_that_could_overflow_float32_is_checked_eagerly(tmp_path):
    import nibabel as nib

    data = np.array([[[1, 2], [3, 30000]]], np.int16)
    img = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header.set_slope_inter(1e36, 0.0)
    nib.save(img, str(tmp_path / "huge.nii"))
    with pytest.raises(VolumeReadError, match="inf"):
        read_volume(tmp_path / "huge.nii")


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32])
def test_nifti_dtypes_and_byte_orders_match_the_reference(tmp_path, dtype, byteorder):
    import nibabel as nib

    path = tmp_path / "v.nii.gz"
    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, size=(5, 6, 4)).astype(np.dtype(dtype).newbyteorder(byteorder))
    nib.save(nib.Nifti1Image(data, np.array([[0.9, 0, 0, 0], [0, 0, 1.5, 0], [0, -0.8, 0, 0], [0, 0, 0, 1.0]])), path)
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, _reference_nifti_hwd(path).astype(vol.array.dtype))
    assert vol.array.dtype == (np.uint8 if dtype == np.uint8 else np.float32) and vol.array.flags.c_contiguous
    # issue #18: values 0..199 hold no air, so by the documented rule they are not labelled HU
    assert vol.kind == ("uint8" if dtype == np.uint8 else "other")
    assert vol.meta["kind_from"] == ("dtype" if dtype == np.uint8 else "values")


def _no_isal(monkeypatch):
    """Make `import isal` fail and nibabel use the stdlib gzip module (not indexed_gzip)."""
    import sys

    import nibabel._compression as nc

    monkeypatch.setitem(sys.modules, "isal", None)
    monkeypatch.setitem(sys.modules, "isal.igzip", None)
    monkeypatch.setattr(nc, "HAVE_INDEXED_GZIP", False)
    assert volume_io._isal_igzip() is None


def test_gz_is_decompressed_with_isal_when_installed(monkeypatch, tmp_path):
    igzip = pytest.importorskip("isal.igzip")
    path = tmp_path / "obl.nii.gz"
    _oblique_scaled_nifti(path)
    opened = []
    real_open = igzip.open
    monkeypatch.setattr(igzip, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    vol = read_volume(path)
    assert opened == [str(path)]
    np.testing.assert_array_equal(vol.array, _reference_nifti_hwd(path))


def test_stdlib_gzip_fallback_without_isal(monkeypatch, tmp_path):
    import gzip

    path = tmp_path / "obl.nii.gz"
    _oblique_scaled_nifti(path)
    with_isal = read_volume(path)
    _no_isal(monkeypatch)
    opened = []
    real_init = gzip.GzipFile.__init__

    def spy(self, *args, **kwargs):
        opened.append(True)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(gzip.GzipFile, "__init__", spy)
    vol = read_volume(path)
    assert opened  # read through the stdlib gzip module
    assert vol.stored().data.dtype == np.int16 and vol.stored().is_scaled
    np.testing.assert_array_equal(vol.array, _reference_nifti_hwd(path))
    np.testing.assert_array_equal(vol.array, with_isal.array)
    assert vol.spacing == with_isal.spacing and vol.meta == with_isal.meta


@pytest.mark.parametrize("isal", [True, False])
def test_nifti2_and_4d_singleton_and_uncompressed(monkeypatch, tmp_path, hu, isal):
    import nibabel as nib

    if not isal:
        _no_isal(monkeypatch)
    affine = np.diag([-0.8, -0.7, 2.5, 1.0])
    data = hu.transpose(1, 0, 2).astype(np.int16)
    nib.save(nib.Nifti2Image(data, affine), tmp_path / "two.nii.gz")
    four = nib.Nifti1Image(data[..., None], affine)
    four.header.set_slope_inter(2.0, -10.0)
    nib.save(four, tmp_path / "four.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "plain.nii")
    np.testing.assert_array_equal(read_volume(tmp_path / "two.nii.gz").array, hu)
    np.testing.assert_array_equal(read_volume(tmp_path / "four.nii.gz").array, hu * 2 - 10)  # scl_slope/inter kept
    plain = read_volume(tmp_path / "plain.nii")
    (tmp_path / "plain.nii").unlink()  # read into memory: the Volume does not need the file later
    np.testing.assert_array_equal(plain.array, hu)
    assert read_volume(tmp_path / "two.nii.gz").spacing == SPACING


def test_truncated_gz_names_the_file_with_and_without_isal(monkeypatch, tmp_path, hu):
    path = tmp_path / "cut.nii.gz"
    write_nifti(path, hu, SPACING)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="cannot read NIfTI"):
        read_volume(path)
    _no_isal(monkeypatch)
    with pytest.raises(VolumeReadError, match="cannot read NIfTI"):
        read_volume(path)


def test_every_reader_gives_c_ordered_arrays_and_a_consistent_stored_view(tmp_path, hu):
    import SimpleITK as sitk

    write_nifti(tmp_path / "v.nii.gz", hu, SPACING)
    img = sitk.GetImageFromArray(np.ascontiguousarray(hu.astype(np.int16)[:, ::-1, :].transpose(2, 0, 1)))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "v.nrrd"))
    np.save(tmp_path / "v.npy", hu.astype(np.int16).transpose(2, 0, 1))
    write_ct_series(tmp_path / "dcm", hu, spacing=SPACING)
    sources = [(tmp_path / "v.nii.gz", {}), (tmp_path / "v.nrrd", {}), (tmp_path / "v.npy", {"axis_order": "DHW"}),
               (tmp_path / "dcm", {})]
    for src, kwargs in sources:
        vol = read_volume(src, **kwargs)
        stored = vol.stored()
        np.testing.assert_array_equal(stored.rescale(stored.data).astype(np.float32), hu, err_msg=str(src))
        assert vol.array.dtype == np.float32 and vol.array.flags.c_contiguous, src
        np.testing.assert_array_equal(vol.array, hu, err_msg=str(src))


def test_in_memory_arrays_are_copied_at_read_time_as_before(hu):
    src = hu.astype(np.int16).transpose(2, 0, 1).copy()
    vol = read_volume(src, axis_order="DHW")
    src[:] = 0  # the caller changes its array afterwards
    np.testing.assert_array_equal(vol.array, hu)


def test_volume_array_can_be_replaced():
    vol = read_volume(np.zeros((2, 3, 4), np.float32))
    vol.array = np.ones((2, 3, 4), np.float32)
    assert vol.stored().data is vol.array and float(vol.array.sum()) == 24


# ============================================================================= issue #18: real scans vs SimpleITK
SHARED = Path(__file__).resolve().parents[1].parent / "shared"  # as in conftest.py
REAL = SHARED / "data" / "real_volumes"
needs_real = pytest.mark.skipif(not (REAL / "SOURCES.md").is_file(), reason=f"{REAL} not available")


def _read(source, **kwargs):
    """read_volume with warnings collected: (volume, [warning texts])."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        vol = read_volume(source, **kwargs)
    return vol, [str(w.message) for w in rec]


def _has_openjpeg() -> bool:
    import importlib.util

    return importlib.util.find_spec("openjpeg") is not None and importlib.util.find_spec("pylibjpeg") is not None


@needs_real
@pytest.mark.parametrize(
    "name, kind, kind_from",
    [
        ("CT_small.dcm", "hu", "modality"),  # single CT slice
        ("693_J2KR.dcm", "hu", "modality"),  # JPEG 2000 lossless CT slice
        ("emri_small.dcm", "other", "modality"),  # enhanced MR, 10 frames, no geometry in the file
        ("example_mr_sm.nii.gz", "other", "values"),  # MR NIfTI: no air-like values
    ],
)
def test_real_files_match_simpleitk(name, kind, kind_from):
    from helpers import sitk_reference as ref

    if name == "693_J2KR.dcm" and not _has_openjpeg():
        with pytest.raises(VolumeReadError, match="pylibjpeg-openjpeg") as exc:
            read_volume(REAL / name)
        assert str(REAL / name) in str(exc.value)
        return
    vol, _ = _read(REAL / name)
    expected, sp = ref.read_file(REAL / name)
    assert vol.array.shape == expected.shape
    np.testing.assert_array_equal(vol.array, expected.astype(np.float32))
    assert vol.kind == kind and vol.meta["kind_from"] == kind_from
    if name == "emri_small.dcm":  # no PixelSpacing / positions: in-plane 1 mm like SimpleITK, slices 1.2 mm from
        assert vol.spacing[:2] == (1.0, 1.0) and vol.meta["spacing_defaulted"]  # SpacingBetweenSlices (ITK: 1.0)
        assert vol.spacing[2] == pytest.approx(1.2) and vol.meta["modality"] == "MR" and vol.meta["multi_frame"]
    else:
        assert vol.spacing == pytest.approx(sp, abs=1e-6)


@needs_real
def test_real_multiframe_seg_matches_simpleitk():
    """liver.dcm is an enhanced multi-frame SEG (a binary liver mask, Modality SEG; 1 bit per pixel): per-frame
    positions give the slice order and spacing; GDCM shows the bits as 0/255, pydicom as 0/1."""
    from helpers import sitk_reference as ref

    vol, _ = _read(REAL / "liver.dcm")
    expected, sp = ref.read_file(REAL / "liver.dcm")
    assert vol.array.shape == expected.shape == (512, 512, 3)
    np.testing.assert_array_equal(vol.array * 255, expected)
    assert vol.spacing == pytest.approx(sp) and vol.spacing[2] == pytest.approx(1.0)
    assert vol.kind == "other" and vol.meta["modality"] == "SEG" and vol.meta["multi_frame"]


@needs_real
def test_real_uneven_series_is_refused_then_resampled_when_allowed():
    from helpers import sitk_reference as ref

    folder = REAL / "sliceincrement_siemens_ct" / "001"  # z = 18.1, 23.1, 28.1, 38.1 mm: slice 33.1 is missing
    with pytest.raises(VolumeReadError) as exc:
        read_volume(folder)
    msg = str(exc.value)
    for part in (str(folder), "10.00 mm", "IM-0001-0009-0001.dcm (instance 9)", "IM-0001-0010-0001.dcm (instance 10)",
                 "about 1 missing slice", "allow_gaps=True"):
        assert part in msg, (part, msg)

    vol, warned = _read(folder, allow_gaps=True)
    assert any("allow_gaps" in w and "5.000 mm" in w for w in warned), warned
    stack, sp = ref.read_series(folder)  # the 4 acquired slices, stacked as they are
    assert vol.array.shape == (512, 512, 5) and vol.spacing == pytest.approx((*sp[:2], 5.0), abs=1e-5)
    np.testing.assert_array_equal(vol.array[..., [0, 1, 2, 4]], stack.astype(np.float32))
    np.testing.assert_allclose(vol.array[..., 3], (stack[..., 2] + stack[..., 3]) / 2, atol=1e-3)
    assert vol.meta["slice_gaps"][0]["mm"] == pytest.approx(10.0) and vol.meta["n_slices_acquired"] == 4


TILT_ATOL = 1e-3  # HU: float32 rounding of values up to ~3000


def _tilt_reference(vol, files, fill=None):
    """Each acquired file resampled by SimpleITK onto the reader's orthogonal grid (meta['tilt_grid_origin'])."""
    from helpers import sitk_reference as ref

    assert vol.meta["image_orientation_patient"][:3] == [1.0, 0.0, 0.0]  # stored rows/cols are already canonical
    if fill is None:
        fill = min(float(ref.stored_hu(f).min()) for f in files)
    shape = vol.array.shape[:2]
    return [ref.slice_on_grid(f, vol.meta["tilt_grid_origin"], shape, fill) for f in files]


@needs_real
def test_real_tilted_series_with_a_missing_slice():
    folder = REAL / "sliceincrement_siemens_ct" / "002"  # 15.5 deg tilt, instance 4 missing
    with pytest.raises(VolumeReadError) as exc:
        read_volume(folder)
    msg = str(exc.value)
    for part in ("1.50 mm", "IM-0001-0003.dcm (instance 3)", "IM-0001-0005.dcm (instance 5)", "tilt of 15.5 deg"):
        assert part in msg, (part, msg)
    with pytest.raises(VolumeReadError, match=r"tilt of 15\.5 deg.*tilt='resample'"):
        _read(folder, allow_gaps=True, tilt="error")

    vol, warned = _read(folder, allow_gaps=True)
    assert any("gantry tilt" in w and "orthogonal grid" in w for w in warned), warned
    assert vol.array.shape == (514, 512, 5)  # the grid dicom2nifti's reference NIfTI beside it has too
    assert vol.meta["tilt"] == "resampled" and vol.meta["gantry_tilt_deg"] == pytest.approx(15.5, abs=0.05)
    assert vol.spacing[2] == pytest.approx(0.7497, abs=1e-4)  # along the slice normal, not the table
    refs = _tilt_reference(vol, sorted(folder.glob("*.dcm")))
    for k, r in zip([0, 1, 2, 4], refs):
        np.testing.assert_allclose(vol.array[..., k], r, atol=1e-3, err_msg=str(k))
    np.testing.assert_allclose(vol.array[..., 3], (refs[2] + refs[3]) / 2, atol=1e-3)


@needs_real
def test_real_gantry_tilt_is_resampled_like_simpleitk(tmp_path):
    """GE head CT, 18.5 deg tilt: the 14 evenly spaced 4 mm slices (links to the shared files)."""
    folder = tmp_path / "ge14"
    folder.mkdir()
    files = [REAL / "ge_head_ct_tilted" / f"{i:02d}.dcm" for i in range(1, 15)]
    for f in files:
        (folder / f.name).symlink_to(f)
    with pytest.raises(VolumeReadError, match=r"tilt of 18\.5 deg") as exc:
        read_volume(folder, tilt="error")
    assert str(folder) in str(exc.value) and "tilt='resample'" in str(exc.value)

    vol, warned = _read(folder)
    assert any("18.5 deg gantry tilt" in w for w in warned), warned
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.05) and vol.meta["gantry_detector_tilt_tag"] == 18.5
    # the grid grows by the drift: 13 steps x 4.22 mm x sin(18.5 deg) / 0.488 mm = 35.7 -> 36 rows
    assert vol.array.shape == (512 + 36, 512, 14)
    assert vol.spacing == pytest.approx((0.4882812, 0.4882812, 4.0019), abs=1e-4)
    for k, r in enumerate(_tilt_reference(vol, files)):
        np.testing.assert_allclose(vol.array[..., k], r, atol=TILT_ATOL, err_msg=str(k))
    assert vol.kind == "hu"


@needs_real
def test_real_tilted_uneven_series():
    folder = REAL / "ge_head_ct_tilted"  # 4 mm then 7 mm slices (1.08 mm between the two parts), 18.5 deg tilt
    with pytest.raises(VolumeReadError) as exc:
        read_volume(folder)
    msg = str(exc.value)
    for part in ("1.08 mm between 14.dcm (instance 14)", "15.dcm (instance 15)", "7.00 mm", "tilt of 18.5 deg",
                 "allow_gaps=True"):
        assert part in msg, (part, msg)
    vol, _ = _read(folder, allow_gaps=True)
    files = sorted(folder.glob("*.dcm"))
    assert vol.array.shape[2] == 37 and vol.spacing[2] == pytest.approx(4.0025, abs=1e-4)
    z = _normal_positions(files)  # acquired slices along the normal, ascending with the file names
    grid = z[0] + (z[-1] - z[0]) * np.arange(37) / 36
    ks = np.clip(np.searchsorted(z, grid) - 1, 0, len(z) - 2)  # acquired slices k, k + 1 around each grid slice
    ws = (grid - z[ks]) / (z[ks + 1] - z[ks])
    j = int(np.argmin(np.abs(ws - 0.5)))  # the grid slice furthest from both acquired slices around it
    k, w = int(ks[j]), float(ws[j])
    assert 0.4 < w < 0.6
    from helpers import sitk_reference as ref

    fill = min(float(ref.stored_hu(f).min()) for f in files)  # the lowest value of the whole series
    refs = _tilt_reference(vol, [files[0], files[k], files[k + 1], files[-1]], fill)
    np.testing.assert_allclose(vol.array[..., 0], refs[0], atol=TILT_ATOL)  # the ends are kept
    np.testing.assert_allclose(vol.array[..., -1], refs[-1], atol=TILT_ATOL)
    np.testing.assert_allclose(vol.array[..., j], (1 - w) * refs[1] + w * refs[2], atol=1e-2)


def _normal_positions(files) -> np.ndarray:
    import pydicom

    out = []
    for f in files:
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        out.append(float(np.array([float(v) for v in ds.ImagePositionPatient]) @ np.cross(iop[:3], iop[3:])))
    return np.array(out)


@needs_real
def test_real_folders_of_volume_files_are_refused():
    with pytest.raises(VolumeReadError, match=r"holds 2 volume file\(s\) \(002_ground_truth.nii.gz") as exc:
        read_volume(REAL / "sliceincrement_siemens_ct")
    assert "pass one volume file" in str(exc.value) and str(REAL / "sliceincrement_siemens_ct") in str(exc.value)
    with pytest.raises(VolumeReadError, match=r"holds 1 volume file\(s\) \(example_mr_sm.nii.gz\) and \d+ other"):
        read_volume(REAL)


# ============================================================================= issue #18: multi-frame DICOM
def test_enhanced_ct_matches_simpleitk_and_per_frame_values(tmp_path, hu):
    from helpers import sitk_reference as ref
    from helpers.dicom_fixtures import write_enhanced_ct

    path = write_enhanced_ct(tmp_path / "enh.dcm", hu, SPACING)
    vol, warned = _read(path)
    expected, sp = ref.read_file(path)
    np.testing.assert_array_equal(vol.array, expected.astype(np.float32))
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.spacing == pytest.approx(sp) and vol.spacing == pytest.approx(SPACING) and not warned
    assert vol.kind == "hu" and vol.meta["multi_frame"] and vol.meta["n_slices"] == 5

    # frames stored out of order, each with its own rescale: sorted by position, rescaled per frame
    slopes, inters = [1.0, 2.0, 0.5, 1.0, 1.0], [-1024.0, -2000.0, -500.0, 0.0, -1024.0]
    shuffled = write_enhanced_ct(tmp_path / "shuf.dcm", hu, SPACING, frame_order=[3, 0, 4, 1, 2],
                                 slopes=slopes, intercepts=inters)
    vol = read_volume(shuffled)
    stored = np.rint((hu - np.array(inters)) / np.array(slopes))
    np.testing.assert_array_equal(vol.array, (stored * np.array(slopes) + np.array(inters)).astype(np.float32))
    assert vol.spacing == pytest.approx(SPACING)


def test_enhanced_mr_is_not_hu_and_repeated_positions_are_named(tmp_path, hu):
    from helpers.dicom_fixtures import write_enhanced_ct

    mr = read_volume(write_enhanced_ct(tmp_path / "mr.dcm", hu, SPACING, modality="MR"))
    assert mr.kind == "other" and mr.meta["modality"] == "MR" and mr.meta["kind_from"] == "modality"
    two_times = np.concatenate([hu, hu], axis=2)  # 10 frames, two at each position (e.g. two time points)
    path = write_enhanced_ct(tmp_path / "4d.dcm", two_times, SPACING, frame_order=[0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    with pytest.raises(VolumeReadError, match=r"duplicate slice positions .*4d.dcm frame \d+ and 4d.dcm frame \d+"
                       r".*more than one volume") as exc:
        read_volume(path)
    assert str(path) in str(exc.value)


# ============================================================================= issue #18: series geometry
def test_empty_series_uid_with_two_pixel_spacings_is_two_series(tmp_path):
    big = np.full((6, 6, 5), 40.0, np.float32)
    write_ct_series(tmp_path, np.zeros((6, 6, 3), np.float32), spacing=(0.5, 0.5, 2.0), series_uid="", seed=1)
    write_ct_series(tmp_path, big, spacing=(0.9, 0.9, 2.5), series_uid="", seed=2, origin=(0.0, 0.0, 400.0))
    with pytest.warns(UserWarning, match=r"2 series .*<empty SeriesInstanceUID>: 3 slice\(s\) of 6x6, 0.5x0.5 mm"):
        vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, big)
    assert vol.spacing == pytest.approx((0.9, 0.9, 2.5)) and vol.meta["series_uid"] == ""


def test_a_202_mm_gap_is_refused_with_its_size_and_files(tmp_path):
    vol_hu = np.random.default_rng(2).integers(-1000, 500, size=(5, 4, 6)).astype(np.float32)
    z = [0.0, 1.25, 2.5, 204.5, 205.75, 207.0]  # a 202 mm gap between the 3rd and 4th slices
    files = write_ct_series(tmp_path, vol_hu, spacing=(0.7, 0.7, 1.25), shuffle=False,
                            positions=[(-100.0, -120.0, v) for v in z])
    with pytest.raises(VolumeReadError) as exc:
        read_volume(tmp_path)
    msg = str(exc.value)
    assert "202.00 mm between" in msg and f"{files[2].name} (instance 3)" in msg
    assert f"{files[3].name} (instance 4)" in msg
    assert "the median step is 1.25 mm" in msg and str(tmp_path) in msg
    with pytest.warns(UserWarning, match="allow_gaps=True: resampled onto an even 1.247 mm grid"):
        vol = read_volume(tmp_path, allow_gaps=True)
    # 207 mm / 1.25 mm = 165.6 steps -> 166 steps of 1.247 mm, so that the first and last slices are kept
    assert vol.array.shape == (5, 4, 167) and vol.spacing[2] == pytest.approx(207 / 166)
    grid = np.arange(167) * 207 / 166
    expected = np.stack([np.interp(grid, z, vol_hu[i, j]) for i in range(5) for j in range(4)]).reshape(5, 4, 167)
    np.testing.assert_allclose(vol.array, expected, atol=1e-3)  # linear between the acquired slices around
    np.testing.assert_array_equal(vol.array[..., [0, -1]], vol_hu[..., [0, -1]])
    assert vol.meta["slice_gaps"] == [{"mm": 202.0, "between": [f"{files[2].name} (instance 3)",
                                                                 f"{files[3].name} (instance 4)"]}]


def test_a_missing_slice_is_named(tmp_path, hu):
    write_ct_series(tmp_path, hu, spacing=SPACING, drop=(2,))
    with pytest.raises(VolumeReadError, match=r"5.00 mm between .*\(instance 2\).*\(instance 4\).*1 missing slice"):
        read_volume(tmp_path)
    vol, warned = _read(tmp_path, allow_gaps=True)
    assert len(warned) == 1 and vol.array.shape == hu.shape
    np.testing.assert_array_equal(vol.array[..., [0, 1, 3, 4]], hu[..., [0, 1, 3, 4]])
    np.testing.assert_allclose(vol.array[..., 2], (hu[..., 1] + hu[..., 3]) / 2)


def test_gantry_tilt_with_whole_pixel_shifts_is_undone_exactly(tmp_path):
    """Slice k's image origin moves k rows (k * row spacing) along the image columns: the orthogonal grid gets
    D - 1 more rows, and every slice lands back where it belongs, copied exactly (whole-pixel shifts)."""
    rng = np.random.default_rng(4)
    h, w, d = 6, 5, 4
    rs, cs, ss = 0.8, 0.7, 2.0
    truth = np.full((h + d - 1, w, d), -2000.0, np.float32)  # the orthogonal grid: rows 0 .. h + d - 2
    stored = rng.integers(-1000, 1000, size=(h, w, d)).astype(np.float32)
    for k in range(d):
        truth[k:k + h, :, k] = stored[:, :, k]  # slice k's rows sit k rows further posterior
    positions = [(-100.0, -120.0 + k * rs, 50.0 + k * ss) for k in range(d)]
    write_ct_series(tmp_path, stored, spacing=(rs, cs, ss), positions=positions)
    with pytest.raises(VolumeReadError, match=r"gantry tilt of 21.8 deg .*tilt='resample'"):
        read_volume(tmp_path, tilt="error")
    with pytest.warns(UserWarning, match=r"gantry tilt: slices resampled onto an orthogonal grid \(9x5 pixels"):
        vol = read_volume(tmp_path)
    fill = stored.min()
    np.testing.assert_array_equal(vol.array, np.where(truth == -2000.0, fill, truth))
    assert vol.spacing == pytest.approx((rs, cs, ss)) and vol.meta["tilt"] == "resampled"
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan2(3 * rs, 3 * ss)), abs=1e-3)
    assert vol.meta["tilt_grid_origin"] == pytest.approx([-100.0, -120.0, 50.0])


def test_tiny_position_jitter_is_neither_a_gap_nor_a_tilt(tmp_path, hu):
    rng = np.random.default_rng(5)
    positions = [(-100.0 + rng.normal(0, 0.01), -120.0 + rng.normal(0, 0.01), 50.0 + k * 2.5 + rng.normal(0, 0.004))
                 for k in range(hu.shape[2])]
    write_ct_series(tmp_path, hu, spacing=SPACING, positions=positions)
    vol, warned = _read(tmp_path)
    assert not warned and "tilt" not in vol.meta and "slice_gaps" not in vol.meta
    np.testing.assert_array_equal(vol.array, hu)


def test_dicom_modality_decides_the_kind(tmp_path, hu):
    write_ct_series(tmp_path / "mr", hu, spacing=SPACING, modality="MR")  # MR with a RescaleSlope/Intercept
    mr = read_volume(tmp_path / "mr")
    assert mr.kind == "other" and mr.meta["modality"] == "MR" and mr.meta["kind_from"] == "modality"
    write_ct_series(tmp_path / "none", hu, spacing=SPACING, modality="")
    untagged = read_volume(tmp_path / "none")
    assert untagged.kind == "hu" and untagged.meta["kind_from"] == "values" and untagged.meta["sampled_min"] <= -500


def test_jpeg2000_without_a_decoder_says_what_to_install(monkeypatch):
    pydicom = pytest.importorskip("pydicom")
    path = REAL / "693_J2KR.dcm"
    if not path.is_file():
        pytest.skip("no real scans")

    def no_decoder(self):
        raise RuntimeError("Unable to decode the pixel data: no plugins available")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    with pytest.raises(VolumeReadError) as exc:
        read_volume(path)
    msg = str(exc.value)
    assert str(path) in msg and "pip install pylibjpeg pylibjpeg-openjpeg" in msg and "JPEG 2000" in msg


# ============================================================================= issue #18: guards before allocation
def _huge_nifti(path, shape=(1000, 1000, 1000), gz=False):
    """A 4 KB NIfTI whose header declares `shape` int16 voxels (2 GB for 1000**3)."""
    import gzip

    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(np.eye(4), code=1)
    hdr.set_data_offset(352)
    blob = hdr.binaryblock + b"\0" * 4 + b"\1\0" * 2000
    Path(path).write_bytes(gzip.compress(blob) if gz else blob)
    return path


def _huge_others(folder: Path):
    """NRRD, MetaImage and .npy files whose headers declare 1000**3 int16 voxels, with 4 KB of data."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\1\0" * 2000
    (folder / "huge.nrrd").write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1000 1000 1000\nencoding: raw\nendian: little\n\n" + data)
    (folder / "huge.mha").write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\nElementType = MET_SHORT\n"
        b"ElementDataFile = LOCAL\n" + data)
    header = {"descr": "<i2", "fortran_order": False, "shape": (1000, 1000, 1000)}
    with open(folder / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)
    return [folder / "huge.nrrd", folder / "huge.mha", folder / "huge.npy"]


_HUGE_SCRIPT = r"""
import importlib.util, json, resource, sys, time, tracemalloc
import os, types
package = types.ModuleType("hub_code")  # the Hub files on their own, without the dia_llama package
package.__path__ = [os.path.dirname(sys.argv[1])]
sys.modules["hub_code"] = package
mod = importlib.import_module("hub_code.volume_io")
import nibabel, SimpleITK  # imported before measuring
def peak_rss_mb():
    # VmHWM: this process's peak resident memory (ru_maxrss would carry over the parent's peak across exec)
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak_rss_mb()
out = []
for path in sys.argv[2:]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        mod.read_volume(path)
        msg = None
    except mod.VolumeReadError as exc:
        msg = str(exc)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out.append({"path": path, "seconds": seconds, "traced_peak_mb": peak / 1e6, "error": msg})
print(json.dumps({"files": out, "max_rss_mb": peak_rss_mb(), "rss_after_imports_mb": base}))
"""


def test_huge_headers_fail_fast_without_allocating(tmp_path):
    """Headers declaring >= 1000**3 voxels (2 GB+; 1400**3 = 5.5 GB) in 4 KB files: each read fails in < 2 s,
    the whole process peaks under 300 MB (measured in a fresh interpreter: ru_maxrss and tracemalloc)."""
    import json
    import subprocess

    files = [
        _huge_nifti(tmp_path / "huge.nii"),
        _huge_nifti(tmp_path / "huge.nii.gz", gz=True),
        _huge_nifti(tmp_path / "huger.nii.gz", shape=(1400, 1400, 1400), gz=True),
        *_huge_others(tmp_path),
    ]
    assert all(f.stat().st_size < 5000 for f in files)
    run = subprocess.run([sys.executable, "-c", _HUGE_SCRIPT, volume_io.__file__, *map(str, files)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))  # shown with pytest -s: the measured times and memory
    for r in report["files"]:
        assert r["error"] and r["path"] in r["error"], r
        assert r["seconds"] < 2.0 and r["traced_peak_mb"] < 50, r
    errors = {Path(r["path"]).name: r["error"] for r in report["files"]}
    assert "max_voxels=2,147,483,648" in errors["huger.nii.gz"] and "1400x1400x1400" in errors["huger.nii.gz"]
    assert "read_volume(..., max_voxels=2744000000)" in errors["huger.nii.gz"]
    for name in ("huge.nii", "huge.nii.gz", "huge.nrrd", "huge.mha", "huge.npy"):
        assert "truncated or corrupt" in errors[name], errors[name]
    assert report["max_rss_mb"] < 300, report


def test_max_voxels_is_configurable(tmp_path, hu):
    write_nifti(tmp_path / "v.nii.gz", hu, SPACING)
    with pytest.raises(VolumeReadError, match=r"7x6x5 = 210 voxels .*more than max_voxels=100.*max_voxels=210"):
        read_volume(tmp_path / "v.nii.gz", max_voxels=100)
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nii.gz", max_voxels=210).array, hu)
    write_ct_series(tmp_path / "dcm", hu, spacing=SPACING)
    with pytest.raises(VolumeReadError, match="the DICOM series declares 6x7x5 = 210 voxels"):
        read_volume(tmp_path / "dcm", max_voxels=209)
    np.save(tmp_path / "v.npy", hu)
    with pytest.raises(VolumeReadError, match="max_voxels=10"):
        read_volume(tmp_path / "v.npy", max_voxels=10)
    assert read_volume(tmp_path / "v.npy", max_voxels=None).array.shape == hu.shape
    with pytest.raises(VolumeReadError, match="max_voxels must be a positive int"):
        read_volume(tmp_path / "v.npy", max_voxels=0)
    with pytest.raises(VolumeReadError, match="tilt must be one of"):
        read_volume(tmp_path / "v.npy", tilt="shear")


def test_truncated_uncompressed_files_are_named_before_reading(tmp_path, hu):
    import SimpleITK as sitk

    write_nifti(tmp_path / "v.nii", hu, SPACING)
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "v.nii").write_bytes(data[:-10])
    with pytest.raises(VolumeReadError, match=r"v.nii: cannot read NIfTI: truncated or corrupt file: .*7x6x5 int16"):
        read_volume(tmp_path / "v.nii")
    for ext in (".nrrd", ".mha"):
        img = sitk.GetImageFromArray(hu.astype(np.int16).transpose(2, 0, 1))
        sitk.WriteImage(img, str(tmp_path / f"v{ext}"), useCompression=False)
        data = (tmp_path / f"v{ext}").read_bytes()
        (tmp_path / f"v{ext}").write_bytes(data[:-10])
        with pytest.raises(VolumeReadError, match="truncated or corrupt file") as exc:
            read_volume(tmp_path / f"v{ext}")
        assert str(tmp_path / f"v{ext}") in str(exc.value)
    for name in ("v.nrrd", "v.mha"):  # compressed ones read fine
        sitk.WriteImage(sitk.GetImageFromArray(hu.astype(np.int16).transpose(2, 0, 1)), str(tmp_path / name), True)
        assert read_volume(tmp_path / name).array.shape == hu.shape
    np.save(tmp_path / "v.npy", hu)
    data = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "v.npy").write_bytes(data[:-8])
    with pytest.raises(VolumeReadError, match=r"v.npy: cannot read .npy: truncated or corrupt file"):
        read_volume(tmp_path / "v.npy")
    import pydicom

    files = write_ct_series(tmp_path / "dcm", hu, spacing=SPACING)
    files[0].write_bytes(files[0].read_bytes()[:-20])
    with pytest.raises(VolumeReadError, match=rf"pixel data of .*{files[0].name} .*less than expected") as exc:
        read_volume(tmp_path / "dcm")
    assert "truncated or corrupt" in str(exc.value) and "pip install" not in str(exc.value)
    ds = pydicom.dcmread(files[1])
    ds.Rows = ds.Columns = 40000  # a header that declares 3.2 GB of pixel data in a small file
    ds.save_as(files[1])
    with pytest.raises(VolumeReadError, match=rf"{files[1].name} is truncated: .*\(40000x40000x1, 16 bits"):
        read_volume(files[1])


def test_multi_member_gzip_passes_the_trailer_check(tmp_path, hu):
    """The gzip trailer holds only the last member's size: a multi-member .nii.gz is counted, not refused."""
    import gzip

    write_nifti(tmp_path / "v.nii", hu, SPACING)
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(data[:400]) + gzip.compress(data[400:]))
    np.testing.assert_array_equal(read_volume(tmp_path / "multi.nii.gz").array, hu)


@pytest.mark.timeout(30)
def test_fifos_devices_links_and_permissions(tmp_path, hu, monkeypatch):
    import errno
    import os

    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(VolumeReadError, match=r"scan.nii.gz: is a FIFO \(named pipe\), not a regular file"):
        read_volume(fifo)
    with pytest.raises(VolumeReadError, match=r"/dev/null: is a character device, not a regular file"):
        read_volume("/dev/null")
    loop_a, loop_b = tmp_path / "a.nii", tmp_path / "b.nii"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    with pytest.raises(VolumeReadError, match=r"a.nii: symbolic link loop"):
        read_volume(loop_a)
    (tmp_path / "dangling.nii").symlink_to(tmp_path / "gone.nii")
    with pytest.raises(VolumeReadError, match=r"dangling.nii: broken symbolic link .*gone.nii"):
        read_volume(tmp_path / "dangling.nii")
    with pytest.raises(VolumeReadError, match="does not exist"):
        read_volume(tmp_path / "missing.nii")

    # a FIFO or a link loop inside a DICOM folder is skipped, not read (no hang)
    write_ct_series(tmp_path / "dcm", hu, spacing=SPACING)
    os.mkfifo(tmp_path / "dcm" / "pipe.dcm")
    (tmp_path / "dcm" / "loop.dcm").symlink_to(tmp_path / "dcm" / "loop.dcm")
    np.testing.assert_array_equal(read_volume(tmp_path / "dcm").array, hu)

    real_stat = os.stat  # root ignores file modes, so permission errors are simulated

    def denied(path, *args, **kwargs):
        if str(path).endswith("secret.nii"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(VolumeReadError, match=r"secret.nii: permission denied"):
        read_volume(tmp_path / "secret.nii")


def test_every_refusal_names_the_path_and_the_problem(tmp_path, hu):
    """A sweep over bad inputs: every VolumeReadError message is non-empty and contains the path."""
    import os

    cases = []

    def add(path, **kwargs):
        cases.append((Path(path), kwargs))

    (tmp_path / "empty").mkdir()
    add(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    add(tmp_path / "junk")
    (tmp_path / "zero.nii.gz").write_bytes(b"")
    add(tmp_path / "zero.nii.gz")
    (tmp_path / "zero.nii").write_bytes(b"")
    add(tmp_path / "zero.nii")
    (tmp_path / "text.nii.gz").write_text("not gzip")
    add(tmp_path / "text.nii.gz")
    (tmp_path / "text.nrrd").write_text("not nrrd")
    add(tmp_path / "text.nrrd")
    (tmp_path / "text.mha").write_text("not a header")
    add(tmp_path / "text.mha")
    (tmp_path / "text.npy").write_text("not npy")
    add(tmp_path / "text.npy")
    (tmp_path / "text.npz").write_text("not npz")
    add(tmp_path / "text.npz")
    (tmp_path / "empty.dcm").write_bytes(b"")
    add(tmp_path / "empty.dcm")
    write_nifti(tmp_path / "nii" / "a.nii.gz", hu, SPACING)
    write_nifti(tmp_path / "nii" / "b.nii.gz", hu, SPACING)
    add(tmp_path / "nii")
    write_ct_series(tmp_path / "mixed", hu, spacing=SPACING)
    write_nifti(tmp_path / "mixed" / "converted.nii.gz", hu, SPACING)
    add(tmp_path / "mixed")
    write_ct_series(tmp_path / "gap", hu, spacing=SPACING, drop=(1,))
    add(tmp_path / "gap")
    os.mkfifo(tmp_path / "fifo.nii")
    add(tmp_path / "fifo.nii")
    (tmp_path / "self.nii").symlink_to(tmp_path / "self.nii")
    add(tmp_path / "self.nii")
    add(_huge_nifti(tmp_path / "huge.nii.gz", gz=True))
    write_nifti(tmp_path / "cut.nii.gz", hu, SPACING)
    (tmp_path / "cut.nii.gz").write_bytes((tmp_path / "cut.nii.gz").read_bytes()[:60])
    add(tmp_path / "cut.nii.gz")
    for path, kwargs in cases:
        with pytest.raises(VolumeReadError) as exc:
            read_volume(path, **kwargs)
        msg = str(exc.value)
        assert msg.strip() and str(path) in msg and len(msg) > len(str(path)) + 10, (path, msg)


# ============================================================================= issue #18: what a volume holds
def test_nifti_kind_from_values(tmp_path):
    ct = np.full((8, 8, 4), -1000.0, np.float32)
    ct[2:6, 2:6] = 40.0
    write_nifti(tmp_path / "ct.nii.gz", ct, SPACING)
    vol, warned = _read(tmp_path / "ct.nii.gz")
    assert vol.kind == "hu" and vol.meta["kind_from"] == "values" and vol.meta["sampled_min"] == -1000 and not warned
    mr = np.random.default_rng(0).integers(0, 800, size=(8, 8, 4))
    write_nifti(tmp_path / "mr.nii.gz", mr, SPACING)
    vol = read_volume(tmp_path / "mr.nii.gz")
    assert vol.kind == "other" and vol.meta["sampled_min"] >= 0
    assert read_volume(np.zeros((2, 2, 2))).meta["kind_from"] == "array"


def test_synthetic_benchmark_volume_is_hu_without_warnings(tmp_path):
    from dia_llama.data.synthetic import make_case
    from dia_llama.image_processing_dia_llama import DiaLlamaVolumeProcessor

    hu_vol, sp, _, _ = make_case(np.random.default_rng(0), {}, volume_size=(32, 32, 16))
    write_nifti(tmp_path / "case.nii.gz", hu_vol, sp, dtype=np.int16)  # as synthesize_benchmark writes it
    proc = DiaLlamaVolumeProcessor(volume_size=(16, 16, 8), num_channels=1, intensity_mode="hu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = read_volume(tmp_path / "case.nii.gz")
        pv = proc(tmp_path / "case.nii.gz", return_tensors="pt")["pixel_values"]
    assert vol.kind == "hu" and pv.min() >= 0 and pv.max() <= 1


def test_processor_does_not_window_non_ct_volumes(tmp_path):
    import torch

    from dia_llama.image_processing_dia_llama import DiaLlamaVolumeProcessor

    mr = np.random.default_rng(0).integers(100, 3000, size=(8, 8, 4)).astype(np.float32)
    write_ct_series(tmp_path / "mr", mr, spacing=SPACING, modality="MR")
    kwargs = {"volume_size": (8, 8, 4), "num_channels": 1, "intensity_mode": "hu", "resample": "nearest"}
    with pytest.warns(UserWarning, match=r"mr: MR data, not Hounsfield units .*Modality tag.*min-max"):
        pv = DiaLlamaVolumeProcessor(**kwargs)(tmp_path / "mr", return_tensors="pt")["pixel_values"][0, 0]
    torch.testing.assert_close(pv, torch.from_numpy((mr - mr.min()) / (mr.max() - mr.min())))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        windowed = DiaLlamaVolumeProcessor(**kwargs, non_hu_intensity="window")(tmp_path / "mr", return_tensors="pt")
    assert float(windowed["pixel_values"].min()) == pytest.approx((mr.min() + 1000) / 2000)  # the HU window
    with pytest.raises(ValueError, match=r"mr: MR data, not Hounsfield units.*HU window is for CT"):
        DiaLlamaVolumeProcessor(**kwargs, non_hu_intensity="error")(tmp_path / "mr")
    with pytest.raises(ValueError, match="non_hu_intensity"):
        DiaLlamaVolumeProcessor(non_hu_intensity="clip")


def test_processor_passes_read_options(tmp_path, hu):
    from dia_llama.image_processing_dia_llama import DiaLlamaVolumeProcessor

    write_ct_series(tmp_path / "gap", hu, spacing=SPACING, drop=(2,))
    kwargs = {"volume_size": hu.shape, "num_channels": 1, "intensity_mode": "hu"}
    with pytest.raises(VolumeReadError, match="allow_gaps=True"):
        DiaLlamaVolumeProcessor(**kwargs)(tmp_path / "gap")
    proc = DiaLlamaVolumeProcessor(**kwargs, read_options={"allow_gaps": True, "max_voxels": 10**6})
    with pytest.warns(UserWarning, match="allow_gaps=True"):
        assert proc(tmp_path / "gap", return_tensors="pt")["pixel_values"].shape == (1, 1, *hu.shape)
    proc.save_pretrained(tmp_path / "saved")
    again = DiaLlamaVolumeProcessor.from_pretrained(tmp_path / "saved")
    assert again.read_options == {"allow_gaps": True, "max_voxels": 10**6} and again.to_dict() == proc.to_dict()
    with pytest.raises(ValueError, match="read_options: unknown option"):
        DiaLlamaVolumeProcessor(read_options={"allow_gap": True})


# ----------------------------------------------------------------------------- header-only checks for data sets
def test_read_nifti_header_reads_no_voxels(tmp_path):
    from dia_llama.volume_io import read_nifti_header

    write_nifti(tmp_path / "a.nii.gz", np.zeros((8, 9, 4), np.int16), spacing=(0.5, 0.6, 2.0))
    header = read_nifti_header(tmp_path / "a.nii.gz")
    assert header.shape == (9, 8, 4) and header.dtype == np.int16  # stored (x, y, z): (W, H, D)
    assert header.zooms == pytest.approx((0.6, 0.5, 2.0))
    with pytest.raises(VolumeReadError, match="no such file"):
        read_nifti_header(tmp_path / "missing.nii")


def test_check_volume_file_names_each_problem_without_reading_voxels(tmp_path):
    from dia_llama.volume_io import check_volume_file

    write_nifti(tmp_path / "good.nii.gz", np.zeros((8, 9, 4), np.int16))
    full = (tmp_path / "good.nii.gz").read_bytes()
    write_nifti(tmp_path / "plain.nii", np.zeros((8, 9, 4), np.int16))
    (tmp_path / "truncated.nii").write_bytes((tmp_path / "plain.nii").read_bytes()[:400])
    (tmp_path / "cut.nii.gz").write_bytes(full[: len(full) // 2])
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    assert check_volume_file(tmp_path / "good.nii.gz") is None
    for name, says in [("truncated.nii", "truncated"), ("cut.nii.gz", "NIfTI"), ("empty.nii.gz", "empty (0 bytes)"),
                       ("folder", "folder is empty"), ("missing.nii.gz", "no such file")]:
        problem = check_volume_file(tmp_path / name)
        assert problem and says in problem and str(tmp_path / name) in problem, (name, problem)
