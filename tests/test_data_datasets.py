"""Tests of dia_llama.data.datasets: manifest / CTRG-Chest / CT-RATE loaders and bad-case handling (offline, tiny)."""

import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from dia_llama.configuration_dia_llama import CHEXPERT_14, CT_RATE_18
from dia_llama.data.datasets import (
    DatasetError,
    _read_ctrg_labels,
    dataset_disease_names,
    detect_format,
    load_ct_report_dataset,
    load_ctrate_volume,
    load_example_volume,
)
from dia_llama.data.features import cast_volume_column, volume_path
from dia_llama.volume_io import read_volume, write_nifti

SHAPE = (16, 16, 8)
CTRG_COLUMNS = [n.replace(" ", "_") for n in CHEXPERT_14]  # as in CTRG_finding_labels.csv / chexbert_labels_*.csv
SHARED_CTRG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctrg_chest" / "chexbert_labels_dev.csv"


def _array(seed):
    return np.random.default_rng(seed).integers(-1000, 1000, SHAPE).astype(np.int16)  # (H, W, D)


def _write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------- manifest
@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for i in range(4):
        write_nifti(root / "volumes" / f"c{i}.nii.gz", _array(i), (0.8, 0.8, 2.0))
    write_nifti(elsewhere / "abs.nii.gz", _array(9))
    rows = [
        {"id": "c0", "volume": "volumes/c0.nii.gz", "report": "Heart enlarged.", "split": "train",
         "labels": {"cardiomegaly": 1, "pleural effusion": 0}},
        {"id": "c1", "volume": "volumes/c1.nii.gz", "report": "Effusion.", "split": "val",
         "labels": {"Pleural_Effusion": 1}},
        {"id": "c2", "volume": "volumes/c2.nii.gz", "report": "Normal.", "split": "test", "labels": {}},
        {"volume": "volumes/c3.nii.gz", "report": "Normal again.", "labels": {"no finding": True}},  # id, split
        {"id": "abs", "volume": str(elsewhere / "abs.nii.gz"), "report": "Absolute path.", "split": "train"},
    ]
    _write_jsonl(root / "manifest.jsonl", rows)
    return root, elsewhere


def test_manifest_jsonl_splits_labels_and_paths(manifest_dir):
    root, elsewhere = manifest_dir
    ds, rep = load_ct_report_dataset(root, return_report=True)
    assert detect_format(root) == "manifest"
    assert list(ds) == ["train", "validation", "test"]
    assert rep.n_loaded == 5 and rep.n_skipped == 0 and rep.split_counts == {"train": 3, "validation": 1, "test": 1}
    assert dataset_disease_names(ds) == CHEXPERT_14  # inferred: the keys are CheXpert names
    rows = {r["id"]: r for split in ds.values() for r in split}
    assert set(rows) == {"c0", "c1", "c2", "c3", "abs"}  # c3: id from the file stem
    # every volume is NIfTI: a Nifti feature that keeps the path (no bytes in Arrow, decoded by our readers)
    assert ds["train"].features["volume"] == datasets.Nifti(decode=False)
    assert rows["c0"]["volume"] == {"path": str((root / "volumes" / "c0.nii.gz").resolve()), "bytes": None}
    assert volume_path(rows["abs"]["volume"]) == str(elsewhere / "abs.nii.gz")
    # labels: the dense vector, and the diseases present as a ClassLabel sequence carrying the names
    diseases = ds["train"].features["diseases"]
    assert diseases == datasets.List(datasets.ClassLabel(names=CHEXPERT_14))
    assert [diseases.feature.int2str(i) for i in rows["c0"]["diseases"]] == ["cardiomegaly"]
    assert rows["c2"]["diseases"] == []
    assert rows["c3"]["split"] == "train" and rows["c1"]["split"] == "validation"
    lab = dict(zip(CHEXPERT_14, rows["c0"]["labels"]))
    assert lab["cardiomegaly"] == 1 and sum(rows["c0"]["labels"]) == 1
    assert rows["c1"]["labels"][CHEXPERT_14.index("pleural effusion")] == 1
    assert rows["c2"]["labels"] == [-1] * 14 and rows["abs"]["labels"] == [-1] * 14  # unknown
    assert rep.n_unlabelled == 2
    assert set(ds["train"].column_names) == {"id", "volume", "report", "labels", "diseases", "split", "spacing",
                                             "rescale"}
    strings = load_ct_report_dataset(root, volume_feature="string")
    assert strings["train"].features["volume"] == datasets.Value("string")
    assert [volume_path(v) for v in strings["train"]["volume"]] == [volume_path(v) for v in ds["train"]["volume"]]
    assert cast_volume_column(strings)["train"].features == ds["train"].features
    nib_image = cast_volume_column(strings["train"], decode=True)[0]["volume"]  # datasets' own decoding
    assert volume_path(nib_image) == volume_path(ds["train"][0]["volume"])
    assert nib_image.shape == (SHAPE[1], SHAPE[0], SHAPE[2])  # NIfTI stores (W, H, D)
    # the disease names survive map/select/filter
    mapped = ds["train"].map(lambda r: {"labels": [0] * 14}).select([0]).filter(lambda r: True)
    assert dataset_disease_names(mapped) == CHEXPERT_14
    # split_fractions assigns cases without a split deterministically
    a = load_ct_report_dataset(root / "manifest.jsonl", split_fractions=(0.0, 0.0, 1.0))
    assert a["test"].filter(lambda r: r["id"] == "c3").num_rows == 1


def test_manifest_csv_per_disease_columns_and_json_labels(tmp_path):
    for i in range(3):
        write_nifti(tmp_path / f"v{i}.nii.gz", _array(i))
    _write_csv(tmp_path / "manifest.csv", ["id", "volume", "report", "split", "Cardiomegaly", "lung_opacity"],
               [["a", "v0.nii.gz", "Big heart.", "train", "1", "0"],
                ["b", "v1.nii.gz", "Opacity.", "validation", "0", "1"],
                ["c", "v2.nii.gz", "Nothing.", "test", "", "0"]])
    ds = load_ct_report_dataset(tmp_path / "manifest.csv")
    assert dataset_disease_names(ds) == CHEXPERT_14
    assert ds["train"][0]["labels"][CHEXPERT_14.index("cardiomegaly")] == 1
    assert ds["validation"][0]["labels"][CHEXPERT_14.index("lung opacity")] == 1
    assert ds["test"][0]["labels"] == [0] * 14

    # custom disease set from a JSON labels column
    _write_csv(tmp_path / "m2.csv", ["volume", "report", "labels"],
               [["v0.nii.gz", "x.", json.dumps({"tumour": 1, "cyst": 0})], ["v1.nii.gz", "y.", ""]])
    ds2 = load_ct_report_dataset(tmp_path / "m2.csv")
    assert dataset_disease_names(ds2) == ["tumour", "cyst"]
    assert ds2["train"]["labels"] == [[1, 0], [-1, -1]] and ds2["train"]["id"] == ["v0", "v1"]

    # an unknown per-disease column for the requested set is an error naming the file and the column
    with pytest.raises(DatasetError, match=r"manifest\.csv.*unknown label column 'lung_opacity'"):
        load_ct_report_dataset(tmp_path / "manifest.csv", disease_set=["cardiomegaly", "edema"])


# ------------------------------------------------------------------------------------------------------------- CTRG
def _jpg_folder(folder, n=4, seed=0):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{k}.jpg")


@pytest.fixture(scope="module")
def ctrg_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctrg")
    ann = {"train": [{"id": 1, "finding": "Nodule in the right lung."}, {"id": 2, "finding": "Normal chest."}],
           "val": [{"id": 3, "finding": "Effusion."}],
           "test": [{"id": 4, "finding": "Heart enlarged."}]}
    (root / "annotation.json").write_text(json.dumps(ann))
    write_nifti(root / "volumes" / "1.nii.gz", _array(1))
    _jpg_folder(root / "images" / "2")
    write_nifti(root / "3.nii.gz", _array(3))
    _jpg_folder(root / "4", seed=4)
    codes = {1: {"lung_lesion": 1, "pleural_effusion": 2, "cardiomegaly": 3},
             2: {"no_finding": 1, "edema": 0},
             3: {"pleural_effusion": 1, "lung_opacity": 3}}  # case 4 has no label row → unknown
    rows = [[cid] + [codes[cid].get(c, "") for c in CTRG_COLUMNS] for cid in codes]
    _write_csv(root / "CTRG_finding_labels.csv", ["id"] + CTRG_COLUMNS, rows)
    return root


def test_ctrg_splits_codes_and_volume_kinds(ctrg_dir):
    assert detect_format(ctrg_dir) == "ctrg"
    ds = load_ct_report_dataset(ctrg_dir)
    assert list(ds) == ["train", "validation", "test"] and ds["validation"]["id"] == ["3"]
    assert dataset_disease_names(ds) == CHEXPERT_14
    rows = {r["id"]: r for s in ds.values() for r in s}
    present = lambda cid: {n for n, v in zip(CHEXPERT_14, rows[cid]["labels"]) if v == 1}  # noqa: E731
    assert present("1") == {"lung lesion"}  # 2 (negative) and 3 (uncertain) are absent
    assert rows["1"]["labels"][CHEXPERT_14.index("cardiomegaly")] == 0
    assert present("2") == {"no finding"} and present("3") == {"pleural effusion"}
    assert rows["4"]["labels"] == [-1] * 14
    assert ds["train"].features["volume"] == datasets.Value("string")  # slice folders too: a string column
    assert rows["1"]["volume"].endswith("volumes/1.nii.gz") and rows["3"]["volume"].endswith("/3.nii.gz")
    assert rows["2"]["volume"].endswith("images/2") and Path(rows["4"]["volume"]).is_dir()
    assert read_volume(rows["2"]["volume"]).array.shape == (16, 16, 4)
    assert rows["1"]["report"] == "Nodule in the right lung."
    assert load_ct_report_dataset(ctrg_dir / "annotation.json")["test"]["id"] == ["4"]


def test_ctrg_unknown_label_column(tmp_path, ctrg_dir):
    import shutil

    root = tmp_path / "ctrg"
    shutil.copytree(ctrg_dir, root)
    _write_csv(root / "CTRG_finding_labels.csv", ["id", "cardiomegaly", "lung_tumour"], [[1, 1, 0]])
    with pytest.raises(DatasetError, match=r"CTRG_finding_labels\.csv.*unknown label column 'lung_tumour'"):
        load_ct_report_dataset(root)


@pytest.mark.skipif(not SHARED_CTRG.is_file(), reason="shared CTRG label file not available")
def test_real_ctrg_label_columns_are_understood(tmp_path):
    import shutil

    shutil.copy(SHARED_CTRG, tmp_path / "CTRG_finding_labels.csv")
    labels = _read_ctrg_labels(tmp_path, CHEXPERT_14)
    assert len(labels) == 180 and all(set(v) <= {0, 1} for v in labels.values())
    with open(SHARED_CTRG) as fh:
        first = next(csv.DictReader(fh))
    expected = [1 if first[c] == "1" else 0 for c in CTRG_COLUMNS]
    assert labels[first["id"]] == expected


# ---------------------------------------------------------------------------------------------------------- CT-RATE
CTRATE_HEADER = [n.capitalize() for n in CT_RATE_18]  # Title Case as in CT-RATE ("Medical material", ...)


@pytest.fixture(scope="module")
def ctrate_dir(tmp_path_factory):
    import nibabel as nib

    root = tmp_path_factory.mktemp("ctrate")
    # an early, blank-header volume: float raw values, identity affine, no spacing / slope
    raw = np.random.default_rng(0).integers(0, 2000, (16, 16, 8)).astype(np.float32)
    blank = root / "dataset/train/train_1/train_1_a/train_1_a_1.nii.gz"
    blank.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(blank))
    # a `_fixed` int16 volume with a real header (already HU)
    write_nifti(root / "dataset/train_fixed/train_2/train_2_a/train_2_a_1.nii.gz", _array(2), (0.8, 0.8, 2.0))
    write_nifti(root / "dataset/valid_fixed/valid_1/valid_1_b/valid_1_b_2.nii.gz", _array(3), (0.7, 0.7, 1.5))
    names = ["train_1_a_1.nii.gz", "train_2_a_1.nii.gz"]
    rep_cols = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
    _write_csv(root / "radiology_text_reports/train_reports.csv", rep_cols,
               [[names[0], "Cough.", "Non-contrast.", "Nodule in the left lung.", "Lung nodule."],
                [names[1], "", "", "Cardiomegaly.", "Enlarged heart."]])
    _write_csv(root / "radiology_text_reports/validation_reports.csv", rep_cols,
               [["valid_1_b_2.nii.gz", "", "", "Emphysema.", "Emphysema present."]])
    lab = lambda *present: [1 if n in present else 0 for n in CT_RATE_18]  # noqa: E731
    _write_csv(root / "multi_abnormality_labels/train_predicted_labels.csv", ["VolumeName"] + CTRATE_HEADER,
               [[names[0]] + lab("lung nodule"), [names[1]] + lab("cardiomegaly")])
    _write_csv(root / "multi_abnormality_labels/valid_predicted_labels.csv", ["VolumeName"] + CTRATE_HEADER,
               [["valid_1_b_2.nii.gz"] + lab("emphysema")])
    meta_cols = ["VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept", "Rows", "Columns"]
    _write_csv(root / "metadata/train_metadata.csv", meta_cols,
               [[names[0], "[0.75, 0.75]", "1.5", "1.0", "-1024.0", 16, 16],
                [names[1], "[0.8, 0.8]", "2.0", "1", "-1024", 16, 16]])
    _write_csv(root / "metadata/validation_metadata.csv", meta_cols,
               [["valid_1_b_2.nii.gz", "[0.7, 0.7]", "1.5", "1", "-1024", 16, 16]])
    return root, raw


def test_ctrate_layout_labels_reports_and_metadata(ctrate_dir):
    root, raw = ctrate_dir
    assert detect_format(root) == "ctrate"
    ds = load_ct_report_dataset(root)
    assert list(ds) == ["train", "validation"] and dataset_disease_names(ds) == CT_RATE_18
    rows = {r["id"]: r for s in ds.values() for r in s}
    assert set(rows) == {"train_1_a_1", "train_2_a_1", "valid_1_b_2"}
    assert rows["train_1_a_1"]["report"] == "Nodule in the left lung."
    assert rows["train_1_a_1"]["labels"][CT_RATE_18.index("lung nodule")] == 1
    assert sum(rows["valid_1_b_2"]["labels"]) == 1 and rows["valid_1_b_2"]["split"] == "validation"
    assert rows["train_1_a_1"]["spacing"] == [0.75, 0.75, 1.5] and rows["train_1_a_1"]["rescale"] == [1.0, -1024.0]
    assert "/dataset/train_fixed/train_2/" in volume_path(rows["train_2_a_1"]["volume"])
    both = load_ct_report_dataset(root, report_field="findings+impressions")
    assert both["train"][0]["report"] == "Nodule in the left lung. Lung nodule."

    # blank header: metadata spacing + rescale applied (canonical layout from read_volume)
    vol = load_example_volume(rows["train_1_a_1"])
    plain = read_volume(volume_path(rows["train_1_a_1"]["volume"]))
    assert vol.spacing == (0.75, 0.75, 1.5) and plain.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(vol.array, plain.array - 1024.0)
    assert vol.kind == "hu" and vol.meta["rescale_from_metadata"] == [1.0, -1024.0]
    assert sorted(np.unique(vol.array + 1024)) == sorted(np.unique(raw))
    # real header: left alone although the metadata has a rescale
    fixed = load_ctrate_volume(volume_path(rows["train_2_a_1"]["volume"]), [9, 9, 9], [1.0, -1024.0])
    np.testing.assert_array_equal(fixed.array, _array(2).astype(np.float32))
    assert fixed.spacing == (0.8, 0.8, 2.0)


def test_ctrate_unknown_label_column(tmp_path, ctrate_dir):
    import shutil

    root = tmp_path / "ctrate"
    shutil.copytree(ctrate_dir[0], root)
    bad = root / "multi_abnormality_labels/train_predicted_labels.csv"
    _write_csv(bad, ["VolumeName", "Cardiomegaly", "Lung tumour"], [["train_1_a_1.nii.gz", 1, 0]])
    with pytest.raises(DatasetError, match=r"train_predicted_labels\.csv.*unknown label column 'Lung tumour'"):
        load_ct_report_dataset(root)


# --------------------------------------------------------------------------------------------------------- bad data
@pytest.fixture()
def bad_manifest(tmp_path):
    for i in range(3):
        write_nifti(tmp_path / f"ok{i}.nii.gz", _array(i))
    (tmp_path / "corrupt.nii.gz").write_bytes(b"this is not a nifti file at all" * 20)
    good = (tmp_path / "ok0.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    write_nifti(tmp_path / "noreport.nii.gz", _array(5))
    rows = [{"id": f"ok{i}", "volume": f"ok{i}.nii.gz", "report": "Fine.", "labels": {"edema": 0}} for i in range(3)]
    rows += [
        {"id": "missing", "volume": "gone.nii.gz", "report": "x."},
        {"id": "corrupt", "volume": "corrupt.nii.gz", "report": "x."},
        {"id": "truncated", "volume": "truncated.nii.gz", "report": "x."},
        {"id": "noreport", "volume": "noreport.nii.gz", "report": "   "},
        {"id": "badlabel", "volume": "ok1.nii.gz", "report": "x.", "labels": {"tumour": 1}},
    ]
    _write_jsonl(tmp_path / "manifest.jsonl", rows)
    return tmp_path


def test_bad_cases_raise_with_id_and_path(bad_manifest):
    with pytest.raises(DatasetError) as info:
        load_ct_report_dataset(bad_manifest, disease_set="chexpert14")
    msg = str(info.value)
    assert "5 bad case(s)" in msg
    for case_id, name, reason in [("missing", "gone.nii.gz", "no such file"), ("corrupt", "corrupt.nii.gz", "NIfTI"),
                                  ("truncated", "truncated.nii.gz", "truncated"), ("noreport", "noreport", "empty"),
                                  ("badlabel", "ok1.nii.gz", "unknown label name 'tumour'")]:
        line = next(ln for ln in msg.splitlines() if f"case {case_id} " in ln)
        assert name in line and reason in line, line


def test_bad_cases_skip_and_count(bad_manifest):
    with pytest.warns(UserWarning, match="skipped 5 bad case"):
        ds, rep = load_ct_report_dataset(bad_manifest, disease_set="chexpert14", on_error="skip", return_report=True)
    assert ds["train"]["id"] == ["ok0", "ok1", "ok2"]
    assert rep.n_loaded == 3 and rep.n_skipped == 5
    assert {p[0] for p in rep.problems} == {"missing", "corrupt", "truncated", "noreport", "badlabel"}
    # without volume checks only the report/label problems are found
    with pytest.warns(UserWarning, match="skipped 2 bad case"):
        ds2, rep2 = load_ct_report_dataset(bad_manifest, disease_set="chexpert14", on_error="skip",
                                           check_volumes=False, return_report=True)
    assert rep2.n_skipped == 2 and ds2["train"].num_rows == 6


def test_unknown_layout_and_bad_json(tmp_path):
    with pytest.raises(DatasetError, match="unknown data layout"):
        load_ct_report_dataset(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"volume": "a.nii.gz", "report": "x"}\n{not json\n')
    with pytest.raises(DatasetError, match="line 2"):
        load_ct_report_dataset(tmp_path)


# -------------------------------------------------------------------------------------------------------- streaming
def test_streaming_and_non_streaming_give_the_same_examples(manifest_dir, ctrate_dir):
    """Manifest and CT-RATE (whose train split sits in both `train/` and `train_fixed/`): same splits, features,
    disease names and rows, in the same order."""
    for root in (manifest_dir[0], ctrate_dir[0]):
        eager = load_ct_report_dataset(root)
        lazy = load_ct_report_dataset(root, streaming=True)
        assert isinstance(lazy, datasets.IterableDatasetDict) and list(lazy) == list(eager)
        assert dataset_disease_names(lazy) == dataset_disease_names(eager)
        for split in eager:
            assert isinstance(lazy[split], datasets.IterableDataset)
            assert lazy[split].features == eager[split].features
            assert list(lazy[split]) == list(eager[split]), (root, split)
    # the volumes of a streamed row read like the others
    row = next(r for r in load_ct_report_dataset(ctrate_dir[0], streaming=True)["train"] if r["id"] == "train_1_a_1")
    assert load_example_volume(row).spacing == (0.75, 0.75, 1.5)


def test_streaming_ctrate_from_a_remote_filesystem(ctrate_dir):
    """CT-RATE at an fsspec URL (an in-memory filesystem standing in for hf://datasets/...): rows come from the CSVs
    and one listing; a volume is fetched only when its row is read; a missing one is named when read."""
    import fsspec

    root, _ = ctrate_dir
    memory = fsspec.filesystem("memory")
    for path in root.rglob("*"):
        if path.is_file():
            memory.pipe(f"/ctrate/{path.relative_to(root).as_posix()}", path.read_bytes())
            if path.suffix == ".csv" or "valid" in path.name:  # a second tree: the metadata only, plus one volume
                memory.pipe(f"/meta-only/{path.relative_to(root).as_posix()}", path.read_bytes())
    eager = load_ct_report_dataset(root)
    lazy = load_ct_report_dataset("memory://ctrate", streaming=True)
    for split in eager:
        for local, remote in zip(eager[split], lazy[split], strict=True):
            local_path = Path(volume_path(local["volume"]))
            url = memory.unstrip_protocol("/ctrate/" + local_path.relative_to(root).as_posix())  # memory:///ctrate/…
            assert volume_path(remote["volume"]) == url
            assert {k: v for k, v in remote.items() if k != "volume"} == {k: v for k, v in local.items()
                                                                       if k != "volume"}
            a, b = load_example_volume(local), load_example_volume(remote)
            np.testing.assert_array_equal(a.array, b.array)
            assert a.spacing == b.spacing and a.kind == b.kind

    meta_only = load_ct_report_dataset("memory://meta-only", streaming=True)
    train = list(meta_only["train"])  # the rows need no volume
    assert [r["id"] for r in train] == ["train_1_a_1", "train_2_a_1"]
    with pytest.raises(OSError, match=r"memory:///?meta-only/dataset/.*train_1_a_1\.nii\.gz"):
        load_example_volume(train[0])
    assert load_example_volume(next(iter(meta_only["validation"]))).array.shape == SHAPE


def test_streaming_a_manifest_at_a_url(manifest_dir):
    import fsspec

    root, elsewhere = manifest_dir
    memory = fsspec.filesystem("memory")
    for path in root.rglob("*"):
        if path.is_file():
            memory.pipe(f"/manifest/{path.relative_to(root).as_posix()}", path.read_bytes())
    lazy = load_ct_report_dataset("memory://manifest", streaming=True)
    rows = {r["id"]: r for split in lazy.values() for r in split}
    assert volume_path(rows["c0"]["volume"]) == memory.unstrip_protocol("/manifest/volumes/c0.nii.gz")
    assert volume_path(rows["abs"]["volume"]) == str(elsewhere / "abs.nii.gz")  # absolute paths stay
    np.testing.assert_array_equal(load_example_volume(rows["c1"]).array, _array(1).astype(np.float32))
