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
    from dia_llama.data.synthetic.reports import ABNORMAL_SENTENCES, REPORT_LAYOUT

    kinds = {kind for table in FINDING_KIND.values() for kind in table.values()}
    assert kinds == set(FINDING_KINDS) == set(ABNORMAL_SENTENCES) and kinds <= set(RANDOM_STREAMS)
    assert all(len(set(table.values())) == len(table) for table in FINDING_KIND.values())  # one kind per disease
    assert {k for k, v in FINDING_KINDS.items() if v.modify_anatomy} == set(MODIFY_ORDER)
    assert {k for k, v in FINDING_KINDS.items() if v.paint} == set(PAINT_ORDER)
    for ds, layout in REPORT_LAYOUT.items():  # every finding of the set is said somewhere in its report
        said = {getattr(item, "replaced_by", None) for item in layout}
        said |= {k for item in layout for k in getattr(item, "members", ())}
        assert set(FINDING_KIND[ds].values()) <= said, ds


# ----------------------------------------------------------------------------------------------- golden outputs
# Fingerprints of the generator's output, recorded from the single-module generator before the issue #22 refactor:
# the package must reproduce every case and every benchmark file exactly. Regenerate only for an intended change
# of the generator (then bump GENERATOR_VERSION): `python tests/test_synthetic.py --record`.
GOLDEN_PATH = Path(__file__).with_name("synthetic_golden.json")
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


def _golden_benchmark_files(root: Path) -> dict:
    """Fingerprints of the benchmark files: text files byte for byte, NIfTI by voxels + affine + dtype (so that a
    different zlib / nibabel header writer does not matter)."""
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
        raise SystemExit("usage: python tests/test_synthetic.py --record  (rewrites tests/synthetic_golden.json)")
    with tempfile.TemporaryDirectory() as tmp:
        golden = {"make_case": _golden_cases(), "synthesize_benchmark": _golden_benchmarks(Path(tmp))}
    GOLDEN_PATH.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_PATH}")
