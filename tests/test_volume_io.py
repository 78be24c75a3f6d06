"""Tests for dia_llama.volume_io: every reader lands in the canonical (H, W, D) LPS layout, bad inputs fail loudly."""

import ast
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from dia_llama import volume_io
from dia_llama.volume_io import Volume, VolumeReadError, list_supported_formats, read_volume, write_nifti
from dicom_fixtures import write_ct_series

SPACING = (0.7, 0.8, 2.5)  # (row, col, slice) mm


@pytest.fixture
def hu():
    """A small asymmetric canonical (H, W, D) = (6, 7, 5) integer-valued HU volume."""
    rng = np.random.default_rng(0)
    return rng.integers(-1000, 2000, size=(6, 7, 5)).astype(np.float32)


def test_module_imports_only_stdlib_and_numpy():
    tree = ast.parse(Path(volume_io.__file__).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports of other dia_llama modules"
            top.add(node.module.split(".")[0])
    assert top <= set(sys.stdlib_module_names) | {"numpy"}, top - set(sys.stdlib_module_names)


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
    monkeypatch.setattr(volume_io.importlib, "import_module", lambda n: fake_import(n))
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
