"""Tests of the synthetic chest-CT benchmark (dia_llama.data.synthetic). Offline, small volumes."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dia_llama.configuration_dia_llama import CHEXPERT_14, CT_RATE_18, DISEASE_SETS
from dia_llama.data.synthetic import DEFAULT_PREVALENCE, make_case, sample_labels, synthesize_benchmark

SMALL = (64, 64, 32)


# ----------------------------------------------------------------------------------------------- benchmark
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_a")
    manifest = synthesize_benchmark(out, num_cases=60, seed=0, volume_size=SMALL, progress=False)
    return out, manifest


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_benchmark_layout_manifest_and_splits(bench):
    out, manifest = bench
    assert manifest == out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
    assert len(list((out / "volumes").glob("*.nii.gz"))) == 60
    for r in rows:
        assert {"id", "volume", "report", "labels", "split"} <= set(r)
        assert r["volume"] == f"volumes/{r['id']}.nii.gz" and (out / r["volume"]).is_file()
        assert list(r["labels"]) == CHEXPERT_14 and set(r["labels"].values()) <= {0, 1}
        assert r["labels"]["no finding"] == int(not any(v for k, v in r["labels"].items() if k != "no finding"))
        assert r["split"] in ("train", "validation", "test")
        assert "\n" not in r["report"] and r["report"].endswith(".")
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}
    assert all(splits.values())
    assert len(splits["train"]) > len(splits["test"]) > len(splits["validation"])
    for d in CHEXPERT_14:
        pos = [r for r in rows if r["labels"][d]]
        if d in ("pneumonia", "pneumothorax"):
            assert len(pos) >= 3  # rare classes are forced to occur
        if len(pos) >= 3:
            assert all(any(r["labels"][d] for r in rs) for rs in splits.values()), d
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["seed"] == 0 and meta["num_cases"] == 60 and meta["disease_set"] == "chexpert14"
    assert meta["volume_size"] == list(SMALL) and meta["generator_version"]
    assert set(meta["prevalence"]) == set(CHEXPERT_14) - {"no finding"}


def test_benchmark_volumes_load_with_spacing_and_realistic_hu(bench):
    nib = pytest.importorskip("nibabel")
    from dia_llama.volume_io import read_volume

    out, manifest = bench
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    spacing = (360 / 64, 360 / 64, 300 / 32)
    for r in rows[:4]:
        img = nib.load(out / r["volume"])
        assert img.get_data_dtype() == np.int16
        assert np.allclose(img.header.get_zooms()[:3], (spacing[1], spacing[0], spacing[2]))  # stored (W, H, D)
        vol = read_volume(out / r["volume"])
        assert vol.array.shape == SMALL and np.allclose(vol.spacing, spacing)
        a = vol.array
        assert np.array_equal(np.rint(a), np.asarray(img.dataobj).transpose(1, 0, 2))
        assert (a < -900).sum() > 1000  # air
        assert ((a > -900) & (a < -700)).sum() > 1000  # lung
        assert ((a >= 0) & (a <= 100)).sum() > 1000  # soft tissue
        assert (a > 300).sum() > 20  # bone


def test_benchmark_is_deterministic_for_any_worker_count(bench, tmp_path):
    out, _ = bench
    again = synthesize_benchmark(tmp_path / "b", num_cases=60, seed=0, volume_size=SMALL, num_workers=2, progress=False)
    a, b = _files(out), _files(again.parent)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]
    other = synthesize_benchmark(tmp_path / "c", num_cases=5, seed=1, volume_size=SMALL, progress=False)
    c = _files(other.parent)
    vols = [k for k in c if k.startswith("volumes/")]
    assert len(vols) == 5 and all(c[k] != a[k] for k in vols)


# ----------------------------------------------------------------------------------------------- make_case
def test_make_case_contract():
    hu, sp, report, info = make_case(np.random.default_rng(3), {"lung lesion": 1}, volume_size=(48, 40, 24))
    assert hu.dtype == np.int16 and hu.shape == (48, 40, 24)
    assert np.allclose(sp, (360 / 48, 360 / 40, 300 / 24))
    assert info["labels"]["lung lesion"] == 1 and info["labels"]["no finding"] == 0
    assert set(info["findings"]) == {"lung lesion"}
    json.dumps(info)  # params are JSON-safe
    hu2, _, report2, _ = make_case(np.random.default_rng(3), {"lung lesion": 1}, volume_size=(48, 40, 24))
    assert np.array_equal(hu, hu2) and report == report2
    _, sp3, _, _ = make_case(np.random.default_rng(3), {}, volume_size=(32, 32, 16), spacing=(10, 10, 15))
    assert sp3 == (10.0, 10.0, 15.0)
    with pytest.raises(ValueError):
        make_case(np.random.default_rng(0), {"unknown": 1})
    with pytest.raises(ValueError):
        make_case(np.random.default_rng(0), {}, disease_set="nope")


def test_sample_labels_and_prevalence():
    for ds, names in DISEASE_SETS.items():
        prev = DEFAULT_PREVALENCE[ds]
        assert set(prev) == set(names) - {"no finding"} and min(prev.values()) >= 0.02
    rows = sample_labels(np.random.default_rng(0), 400, "chexpert14")
    assert all(list(r) == CHEXPERT_14 for r in rows)
    freq = {d: np.mean([r[d] for r in rows]) for d in CHEXPERT_14}
    assert 0.45 < freq["lung lesion"] < 0.65 and freq["pneumonia"] < 0.08
    assert all(r["no finding"] == int(not any(r[d] for d in CHEXPERT_14[:-1])) for r in rows)
    rows = sample_labels(np.random.default_rng(0), 20, "ctrate18", prevalence={"emphysema": 0.0, "bronchiectasis": 1.0},
                         min_positives=3)
    assert all(r["bronchiectasis"] == 1 and r["emphysema"] == 0 for r in rows)
    assert all(sum(r[d] for r in rows) >= 3 for d in CT_RATE_18 if d != "emphysema")
    with pytest.raises(ValueError):
        sample_labels(np.random.default_rng(0), 5, prevalence={"no finding": 0.5})


# ----------------------------------------------------------------------------------------------- visibility
def _stat(d):
    """(statistic(hu, masks_of_normal_case), minimum increase) showing finding d in a 64x64x32 volume."""
    lung = lambda lo=-2000, hi=5000: lambda h, m: int((m["lung"] & (h >= lo) & (h <= hi)).sum())  # noqa: E731
    nonbone = lambda lo: lambda h, m: int(((h > lo) & ~m["bone"]).sum())  # noqa: E731
    table = {
        "enlarged cardiomediastinum": (lambda h, m: int(((h >= -30) & (h <= 120))[:, 16:48, 16:].sum()), 200),
        "cardiomegaly": (None, None),  # heart voxel count, checked separately
        "lung opacity": (lung(-650, -250), 50),
        "lung lesion": (lung(-600), 15),
        "lung nodule": (lung(-600), 15),
        "edema": (lambda h, m: float(h[m["lung"]].mean()), 100),
        "consolidation": (lung(-100), 30),
        "pneumonia": (lung(-600), 50),
        "atelectasis": (lung(-100), 100),
        "pneumothorax": (lung(hi=-960), 300),
        "pleural effusion": (lambda h, m: int((m["lung"] & (h >= -30) & (h <= 50))[32:].sum()), 50),  # posterior
        "pleural other": (lung(-100), 20),
        "fracture": (nonbone(250), 10),  # callus and displaced fragment (the gap is checked below)
        "support devices": (lambda h, m: int((h > 1500).sum()), 10),
        "medical material": (lambda h, m: int((h > 1500).sum()), 10),
        "arterial wall calcification": (nonbone(350), 30),
        "coronary artery wall calcification": (nonbone(300), 3),
        "pericardial effusion": (lambda h, m: int(((h >= -40) & (h <= 60)).sum()), 300),
        "hiatal hernia": (lambda h, m: int(((h < -500) & m["body"] & ~m["lung"]).sum()), 5),
        "lymphadenopathy": (lambda h, m: int(((h >= -50) & (h <= 150)).sum()), 20),
        "emphysema": (lung(hi=-940), 50),
        "pulmonary fibrotic sequela": (lung(-600), 15),
        "mosaic attenuation pattern": (lambda h, m: float(h[m["lung"]].std()), 5),
        "peribronchial thickening": (lung(-600), 50),
        "bronchiectasis": (lung(-600), 30),
        "interlobular septal thickening": (lung(-600), 300),
    }
    return table[d]


_BASE: dict = {}


def _case(ds, labels, seed):
    key = (ds, tuple(sorted(labels)), seed)
    if key not in _BASE:
        _BASE[key] = make_case(np.random.default_rng(seed), labels, ds, SMALL, return_masks=True)
    return _BASE[key]


@pytest.mark.parametrize("ds,disease", [(ds, d) for ds in ("chexpert14", "ctrate18") for d in DISEASE_SETS[ds]
                                        if d != "no finding"])
def test_each_finding_is_visible(ds, disease):
    for seed in range(3):
        h0, _, _, i0 = _case(ds, {}, seed)
        h1, _, _, i1 = _case(ds, {disease: 1}, seed)
        h0, h1 = h0.astype(np.float32), h1.astype(np.float32)
        m0 = i0["masks"]
        if disease == "cardiomegaly":
            assert i1["masks"]["heart"].sum() > 1.5 * m0["heart"].sum()
            assert i1["findings"]["cardiomegaly"]["ctr"] >= 0.58 > 0.48 >= i0["anatomy"]["cardiothoracic_ratio"]
            continue
        fm = i1["masks"][f"finding:{disease}"]
        assert fm.sum() > 0, (disease, seed)
        assert np.abs(h1 - h0)[fm].mean() > 50, (disease, seed)
        stat, need = _stat(disease)
        if disease == "fracture":  # rib voxels lost in the gap or moved
            assert (fm & m0["bone"] & ~i1["masks"]["bone"]).sum() >= 1, seed
        gain = stat(h1, m0) - stat(h0, m0)
        assert gain >= need, (disease, seed, gain)


def test_finding_is_local_and_absent_case_unchanged():
    h0, _, _, i0 = _case("chexpert14", {}, 0)
    h1, _, _, i1 = _case("chexpert14", {"lung lesion": 1}, 0)
    changed = h0 != h1
    near = i1["masks"]["finding:lung lesion"]
    for ax in range(3):  # grow the finding by the smoothing kernel (one voxel per axis)
        near = near | np.roll(near, 1, ax) | np.roll(near, -1, ax)
    assert changed.any() and not (changed & ~near).any()


# ----------------------------------------------------------------------------------------------- reports
_POSITIVE = {
    "chexpert14": {
        "enlarged cardiomediastinum": r"widened|enlarged lymph node",
        "cardiomegaly": r"cardiomegaly|heart( shadow)? is enlarged",
        "lung opacity": r"ground-glass opacit", "lung lesion": r"nodule|\bmass\b", "edema": r"edema",
        "consolidation": r"consolidation", "pneumonia": r"pneumonia", "atelectasis": r"atelectasis",
        "pneumothorax": r"pneumothorax", "pleural effusion": r"pleural effusion",
        "pleural other": r"pleural thickening|pleural plaque",
        "fracture": r"fracture", "support devices": r"pacemaker|catheter|\bport\b",
    },
    "ctrate18": {
        "medical material": r"pacemaker|catheter|\bport\b", "arterial wall calcification": r"aort",
        "cardiomegaly": r"cardiomegaly", "pericardial effusion": r"pericardial effusion",
        "coronary artery wall calcification": r"coronary", "hiatal hernia": r"hiatal hernia",
        "lymphadenopathy": r"lymphadenopathy", "emphysema": r"emphysema", "atelectasis": r"atelectasis",
        "lung nodule": r"nodule", "lung opacity": r"ground-glass", "pulmonary fibrotic sequela": r"fibrotic",
        "pleural effusion": r"pleural effusion", "mosaic attenuation pattern": r"mosaic",
        "peribronchial thickening": r"peribronchial", "consolidation": r"consolidation",
        "bronchiectasis": r"bronchiectasis", "interlobular septal thickening": r"interlobular septal",
    },
}
_NEGATION = re.compile(r"\b(no|not|without)\b", re.I)


def _rule_label(report, ds):
    """A minimal negation-aware keyword labeler: a sentence with a negation cue asserts nothing."""
    sents = [s for s in re.split(r"(?<=\.)\s+", report) if s and not _NEGATION.search(s)]
    out = {d: int(any(re.search(rx, s, re.I) for s in sents)) for d, rx in _POSITIVE[ds].items()}
    if ds == "chexpert14":
        out["no finding"] = int(not any(out.values()))
    return out


@pytest.mark.parametrize("ds", ["chexpert14", "ctrate18"])
def test_report_agrees_with_labels(ds):
    names = DISEASE_SETS[ds]
    prev = {d: 0.3 for d in names if d != "no finding"}
    rows = sample_labels(np.random.default_rng(1), 40, ds, prevalence=prev)
    for i, labels in enumerate(rows):
        _, _, report, info = make_case(np.random.default_rng([7, i]), labels, ds, (32, 32, 16))
        assert "\n" not in report and report.endswith(".") and ".." not in report
        assert all(s[0].isupper() for s in report.split(". ")), report
        assert _rule_label(report, ds) == {d: info["labels"][d] for d in names}, report
        f = info["findings"]
        for d in ("lung lesion", "lung nodule", "lung opacity", "consolidation"):
            if d in f:
                a, b = f[d]["size_mm"]
                assert f"{a} mm x {b} mm" in report and f"{f[d]['side']}" in report
        if "cardiomegaly" in f:
            assert f"{f['cardiomegaly']['ctr']:.2f}" in report
        if "pleural effusion" in f:
            assert all(f"{v} mm" in report for v in f["pleural effusion"]["depth_mm"].values())
        if "pneumothorax" in f:
            assert f"{f['pneumothorax']['rim_mm']} mm" in report
        if "enlarged cardiomediastinum" in f:
            assert f"{f['enlarged cardiomediastinum']['largest_node_mm']} mm" in report
        for d in ("support devices", "medical material"):
            if d in f:
                kind = f[d]["kind"]
                assert (kind.split()[0] if kind != "port catheter" else "port") in report.lower()


def test_finding_tables_are_consistent():
    from dia_llama.data.synthetic.constants import FINDING_KIND, RANDOM_STREAMS
    from dia_llama.data.synthetic.findings import FINDING_KINDS, MODIFY_ORDER, PAINT_ORDER
    from dia_llama.data.synthetic.locations import DIFFUSE_KINDS, REGION_DESCRIPTION
    from dia_llama.data.synthetic.reports import ABNORMAL_SENTENCES, REPORT_LAYOUT

    kinds = {kind for table in FINDING_KIND.values() for kind in table.values()}
    assert kinds == set(FINDING_KINDS) == set(ABNORMAL_SENTENCES) == set(REGION_DESCRIPTION) >= DIFFUSE_KINDS
    assert kinds <= set(RANDOM_STREAMS)
    assert all(len(set(table.values())) == len(table) for table in FINDING_KIND.values())  # one kind per disease
    assert {k for k, v in FINDING_KINDS.items() if v.modify_anatomy} == set(MODIFY_ORDER)
    assert {k for k, v in FINDING_KINDS.items() if v.paint} == set(PAINT_ORDER)
    for ds, layout in REPORT_LAYOUT.items():  # every finding of the set is said somewhere in its report
        said = {getattr(item, "replaced_by", None) for item in layout}
        said |= {k for item in layout for k in getattr(item, "members", ())}
        assert set(FINDING_KIND[ds].values()) <= said, ds


# ----------------------------------------------------------------------------------------------- finding locations
def _grow(mask):
    """3x3x3 dilation (the partial-volume smoothing blurs each change by one voxel per axis)."""
    out = mask.copy()
    for ax in range(3):
        grown = out.copy()
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        grown[tuple(lo)] |= out[tuple(hi)]
        grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


# findings that also displace other structures (documented in synthetic.locations): the enlarged heart moves the
# great vessels, the raised hemidiaphragm moves the diaphragm surface and the heart
_DISPLACING = {"cardiomegaly", "atelectasis"}


def _hidden(disease, labels):
    """A finding another one can hide entirely (then its region is empty): a pleural plaque is drawn on the lung's
    rim at the chest wall, which a pneumothorax on that side has moved away."""
    return disease == "pleural other" and labels.get("pneumothorax", 0) == 1


@pytest.mark.parametrize("ds", ["chexpert14", "ctrate18"])
def test_regions_exist_exactly_for_present_findings_and_lie_in_the_body(ds):
    names = [d for d in DISEASE_SETS[ds] if d != "no finding"]
    mixes = sample_labels(np.random.default_rng(4), 2, ds, prevalence={d: 0.4 for d in names})
    for seed, labels in enumerate([{d: 1 for d in names}, *mixes, {}]):
        _, _, _, info = make_case(np.random.default_rng(seed), labels, ds, SMALL, return_masks=True,
                                  return_regions=True)
        present = [d for d in names if info["labels"][d]]
        assert list(info["regions"]) == present
        for d in present:
            region = info["regions"][d]
            assert region.shape == SMALL and region.dtype == bool, (d, seed)
            assert region.any() or _hidden(d, info["labels"]), (d, seed)
            assert not (region & ~info["masks"]["body"]).any(), (d, seed)
            assert np.array_equal(region, info["masks"][f"finding:{d}"])


@pytest.mark.parametrize("ds,disease", [(ds, d) for ds in ("chexpert14", "ctrate18") for d in DISEASE_SETS[ds]
                                        if d != "no finding"])
def test_region_covers_the_voxels_the_finding_changes(ds, disease):
    for seed in range(3):
        h0, _, _, i0 = _case(ds, {}, seed)
        h1, _, _, i1 = _case(ds, {disease: 1}, seed)
        changed = h0 != h1
        region = i1["masks"][f"finding:{disease}"]
        outside = changed & ~_grow(region)
        if disease not in _DISPLACING:
            assert not outside.any(), (disease, seed, int(outside.sum()), int(changed.sum()))
            continue
        # what the region misses are moved borders of non-lung structures, never changes inside the lungs
        near_non_lung = _grow(~i0["masks"]["lung"] | ~i1["masks"]["lung"])
        assert not (outside & ~near_non_lung).any(), (disease, seed)
        assert (changed & _grow(region)).sum() >= (0.85 if disease == "cardiomegaly" else 0.3) * changed.sum()


def _benchmark_rows(manifest):
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_benchmark_writes_finding_locations(bench, tmp_path):
    pytest.importorskip("nibabel")
    from dia_llama.data.synthetic import finding_masks
    from dia_llama.data.synthetic.locations import bounding_box, decode_finding_bits, disease_extents
    from dia_llama.volume_io import read_volume

    out, manifest = bench
    meta = json.loads((out / "benchmark.json").read_text())["finding_masks"]
    assert meta["folder"] == "findings" and meta["dtype"] == "uint16" and list(meta["bits"]) == CHEXPERT_14
    assert meta["extent"]["no finding"] == "global" and meta["extent"]["edema"] == "diffuse"
    assert meta["extent"] == disease_extents("chexpert14") and set(meta["region"]) == set(CHEXPERT_14)
    rows = _benchmark_rows(manifest)
    for i, row in enumerate(rows):
        present = [d for d, v in row["labels"].items() if v]
        assert row["finding_mask"] == f"findings/{row['id']}.nii.gz"
        assert list(row["finding_extent"]) == present
        assert all(row["finding_extent"][d] == meta["extent"][d] for d in present)
        masks = finding_masks(row, out)
        assert list(masks) == [d for d in present if d != "no finding"]
        assert set(row["finding_boxes"]) == {d for d, m in masks.items() if m.any()}
        for d, m in masks.items():
            assert m.shape == SMALL and (m.any() or _hidden(d, row["labels"])), (row["id"], d)
            assert bounding_box(m) == row["finding_boxes"].get(d), (row["id"], d)
        every_bit = decode_finding_bits(read_volume(out / row["finding_mask"]).stored().data, list(row["labels"]))
        assert not any(every_bit[d].any() for d in CHEXPERT_14 if d not in masks)  # absent / global: no bit
        if i < 4:  # the files hold exactly the regions make_case draws
            _, _, _, info = make_case(np.random.default_rng([0, i]), row["labels"], "chexpert14", SMALL,
                                      return_regions=True)
            assert masks.keys() == info["regions"].keys()
            assert all(np.array_equal(masks[d], info["regions"][d]) for d in masks)
            stored = read_volume(out / row["finding_mask"]).stored().data
            assert stored.dtype == np.uint16 and stored.shape == SMALL
    assert any(not finding_masks(r, out) for r in rows if r["labels"]["no finding"])
    # CT-RATE-18 needs 18 bits
    small = synthesize_benchmark(tmp_path / "ct", num_cases=4, seed=2, disease_set="ctrate18", volume_size=(32, 32, 16),
                                 prevalence={d: 0.5 for d in CT_RATE_18}, progress=False)
    for row in _benchmark_rows(small):
        assert read_volume(small.parent / row["finding_mask"]).stored().data.dtype == np.uint32
        assert list(finding_masks(row, small.parent)) == [d for d, v in row["labels"].items() if v]
    bare = synthesize_benchmark(tmp_path / "bare", num_cases=2, volume_size=(32, 32, 16), progress=False,
                                write_finding_masks=False)
    assert not (bare.parent / "findings").exists() and "finding_mask" not in _benchmark_rows(bare)[0]


def test_patch_grid_helpers_on_small_arrays():
    from dia_llama.data.synthetic import dilate_patch_grid, patch_grid_shape, pool_to_patch_grid
    from dia_llama.data.synthetic.locations import decode_finding_bits, encode_finding_bits

    assert patch_grid_shape((64, 64, 32), (8, 8, 4)) == (8, 8, 8)
    assert patch_grid_shape((256, 256, 64), (32, 32, 4)) == (8, 8, 16)
    with pytest.raises(ValueError):
        patch_grid_shape((64, 64, 30), (8, 8, 4))
    mask = np.zeros((8, 8, 4), bool)
    mask[5, 2, 3] = True
    grid = pool_to_patch_grid(mask, (2, 2, 2))
    assert grid.shape == (2, 2, 2) and np.argwhere(grid).tolist() == [[1, 0, 1]]
    rng = np.random.default_rng(0)
    big = rng.random((16, 12, 8)) > 0.97
    expected = big.reshape(4, 4, 3, 4, 2, 4).any(axis=(1, 3, 5))
    assert np.array_equal(pool_to_patch_grid(big, (4, 3, 2)), expected)
    # a grid that does not divide the volume: patches share the boundary voxel
    line = np.zeros((5, 1, 1), bool)
    line[2] = True
    assert pool_to_patch_grid(line, (2, 1, 1))[:, 0, 0].tolist() == [True, True]
    line[:] = False
    line[4] = True
    assert pool_to_patch_grid(line, (2, 1, 1))[:, 0, 0].tolist() == [False, True]
    # a mask at twice the size pools to the same grid as its any-pooled half-size version
    half = big.reshape(8, 2, 6, 2, 4, 2).any(axis=(1, 3, 5))
    assert np.array_equal(pool_to_patch_grid(big, (4, 3, 2)), pool_to_patch_grid(half, (4, 3, 2)))
    with pytest.raises(ValueError):
        pool_to_patch_grid(mask, (16, 1, 1))
    # one-patch dilation: the 26-neighbourhood, clipped at the border
    cells = np.zeros((5, 5, 5), bool)
    cells[2, 2, 2] = True
    assert dilate_patch_grid(cells).sum() == 27 and dilate_patch_grid(cells)[1:4, 1:4, 1:4].all()
    assert dilate_patch_grid(cells, steps=2).all() and dilate_patch_grid(cells, steps=0).sum() == 1
    corner = np.zeros((5, 5, 5), bool)
    corner[0, 0, 0] = True
    assert dilate_patch_grid(corner).sum() == 8 and not dilate_patch_grid(np.zeros((3, 3, 3), bool)).any()
    # bitmask round trip, 18 diseases -> uint32
    regions = {CT_RATE_18[0]: big, CT_RATE_18[17]: ~big}
    bits = encode_finding_bits(regions, CT_RATE_18, big.shape)
    assert bits.dtype == np.uint32 and int(bits.max()) == 1 << 17
    decoded = decode_finding_bits(bits, CT_RATE_18, only=[CT_RATE_18[0], CT_RATE_18[17], CT_RATE_18[5]])
    assert np.array_equal(decoded[CT_RATE_18[0]], big) and np.array_equal(decoded[CT_RATE_18[17]], ~big)
    assert not decoded[CT_RATE_18[5]].any()
    assert np.array_equal(decode_finding_bits(bits.astype(np.float32), CT_RATE_18)[CT_RATE_18[17]], ~big)


# ----------------------------------------------------------------------------------------------- golden outputs
# Fingerprints of the generator's output, recorded from the single-module generator before the issue #22 refactor:
# the package must reproduce every case and every benchmark file exactly. Regenerate only for an intended change
# of the generator (then bump GENERATOR_VERSION): `python tests/test_synthetic.py --record`.
GOLDEN_PATH = Path(__file__).parent / "fixtures" / "synthetic_golden.json"
_GOLDEN_SIZES = ((48, 40, 24), (64, 64, 32))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return _sha(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())


def _golden_label_sets(ds):
    """(name, labels) covering no finding, every finding at once and two random mixes."""
    names = [d for d in DISEASE_SETS[ds] if d != "no finding"]
    mixes = sample_labels(np.random.default_rng(11), 2, ds, prevalence={d: 0.5 for d in names})
    return [("none", {}), ("all", {d: 1 for d in names}), ("mix0", mixes[0]), ("mix1", mixes[1])]


def _golden_cases():
    """Fingerprints of make_case outputs: {key: {"hu", "spacing", "report", "labels", "findings", "anatomy",
    "masks"}}."""
    out = {}
    for ds in ("chexpert14", "ctrate18"):
        for size in _GOLDEN_SIZES:
            for seed, (name, labels) in enumerate(_golden_label_sets(ds)):
                hu, sp, report, info = make_case(np.random.default_rng(seed), labels, ds, size, return_masks=True)
                out[f"{ds}/{'x'.join(map(str, size))}/{name}/seed{seed}"] = {
                    "hu": _array_sha(hu), "spacing": list(sp), "report": _sha(report.encode()),
                    "labels": _sha(json.dumps(info["labels"]).encode()),
                    "findings": _sha(json.dumps(info["findings"]).encode()),
                    "anatomy": _sha(json.dumps(info["anatomy"]).encode()),
                    "masks": {k: _array_sha(m) for k, m in info["masks"].items()},
                }
    _, sp, report, info = make_case(np.random.default_rng(5), {"edema": 1}, "chexpert14", (32, 32, 16),
                                    spacing=(10, 10, 15))
    out["chexpert14/32x32x16/spacing10x10x15/edema/seed5"] = {"spacing": list(sp), "report": _sha(report.encode()),
                                                              "findings": _sha(json.dumps(info["findings"]).encode())}
    return out


_LOCATION_FIELDS = ("finding_mask", "finding_extent", "finding_boxes")


def _golden_benchmark_files(root: Path) -> dict:
    """Fingerprints of the benchmark files: text files byte for byte, NIfTI by voxels + affine + dtype (so that a
    different zlib / nibabel header writer does not matter). The finding-location fields (added after the
    refactor) get their own entries ("<file>#locations"), so "manifest.jsonl" and "benchmark.json" are the bytes
    those files had without them."""
    import nibabel as nib

    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel.endswith(".nii.gz"):
            img = nib.load(p)
            data = np.asarray(img.dataobj)
            out[rel] = _sha(_array_sha(data).encode() + np.asarray(img.affine, np.float64).tobytes()
                            + str(img.get_data_dtype()).encode())
        elif rel == "manifest.jsonl":
            rows = [json.loads(line) for line in p.read_text().splitlines()]
            old = [{k: v for k, v in r.items() if k not in _LOCATION_FIELDS} for r in rows]
            assert all(list(r)[: len(o)] == list(o) for r, o in zip(rows, old, strict=True))  # new fields last
            out[rel] = _sha("".join(json.dumps(r) + "\n" for r in old).encode())
            out[rel + "#locations"] = _sha(json.dumps([[r.get(k) for k in _LOCATION_FIELDS] for r in rows]).encode())
        elif rel == "benchmark.json":
            meta = json.loads(p.read_text())
            masks = meta.pop("finding_masks", None)
            out[rel] = _sha((json.dumps(meta, indent=2) + "\n").encode())
            out[rel + "#locations"] = _sha(json.dumps(masks).encode())
        else:
            out[rel] = _sha(p.read_bytes())
    return out


def _golden_benchmarks(tmp: Path) -> dict:
    out = {}
    for name, kwargs in (("chexpert14_6x48x48x24", dict(num_cases=6, seed=0, disease_set="chexpert14")),
                         ("ctrate18_6x48x48x24", dict(num_cases=6, seed=1, disease_set="ctrate18"))):
        synthesize_benchmark(tmp / name, volume_size=(48, 48, 24), progress=False, **kwargs)
        out[name] = _golden_benchmark_files(tmp / name)
    return out


def test_make_case_reproduces_golden_outputs():
    golden = json.loads(GOLDEN_PATH.read_text())["make_case"]
    now = _golden_cases()
    assert now.keys() == golden.keys()
    bad = {k: [f for f in golden[k] if golden[k][f] != now[k][f]] for k in golden if golden[k] != now[k]}
    assert not bad, bad


def test_benchmark_reproduces_golden_files(tmp_path):
    pytest.importorskip("nibabel")
    golden = json.loads(GOLDEN_PATH.read_text())["synthesize_benchmark"]
    now = _golden_benchmarks(tmp_path)
    for name in golden:
        assert now[name].keys() >= golden[name].keys(), name
        bad = [f for f in golden[name] if golden[name][f] != now[name][f]]
        assert not bad, (name, bad)


if __name__ == "__main__":
    import sys
    import tempfile

    if sys.argv[1:] != ["--record"]:
        raise SystemExit("usage: python tests/test_data_synthetic.py --record  "
                         "(rewrites tests/fixtures/synthetic_golden.json)")
    with tempfile.TemporaryDirectory() as tmp:
        golden = {"make_case": _golden_cases(), "synthesize_benchmark": _golden_benchmarks(Path(tmp))}
    GOLDEN_PATH.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_PATH}")
