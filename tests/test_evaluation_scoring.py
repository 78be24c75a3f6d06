"""score_file / label_file / the markdown renderer / `dia-llama score` and `dia-llama label`."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from dia_llama.cli import main
from dia_llama.configuration_dia_llama import CHEXPERT_14
from dia_llama.evaluation import label_file, metrics_markdown, score_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctrg_chest"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
NO_METEOR = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"]

ROWS = [
    {"id": "a", "reference": "Multiple nodules in both lungs. No pleural effusion.",
     "prediction": "A nodule in the right lung. No pleural effusion."},
    {"id": "b", "reference": "Bilateral pleural effusion and pleural thickening.",
     "prediction": "Bilateral pleural effusion."},
    {"id": "c", "reference": "The heart shadow is enlarged.", "prediction": ""},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_java
def test_score_shared_csv():
    if not SHARED.is_dir():
        pytest.skip(f"shared CTRG data not found at {SHARED}")
    result = score_file(SHARED / "test_reports.csv", reference_column="ground_truth", labeler="rule")
    assert result["n"] == 362
    nlg = result["nlg"]["coco_raw"]
    assert [round(nlg[k], 2) for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L")] == [51.23, 29.98, 26.55, 42.77]
    ce = result["clinical_efficacy"]
    assert ce["labeler"] == "rule" and ce["disease_names"] == CHEXPERT_14 and ce["n"] == 362
    assert 0 < ce["micro"]["f1"] < 1 and set(ce["per_class"]) == set(CHEXPERT_14)
    md = metrics_markdown(result)
    assert "| coco_raw | 51.23 | 40.85 | 34.42 | 29.98 | 26.55 | 42.77 |" in md
    assert "labeler: `rule`" in md and "pneumonia (no positives)" in md


@needs_java
def test_score_jsonl_two_modes_and_cli(tmp_path):
    path = write_jsonl(tmp_path / "preds.jsonl", ROWS)
    result = score_file(path, modes=["coco_raw", "coco_ptb"])
    assert set(result["nlg"]) == {"coco_raw", "coco_ptb"} and result["n"] == 3
    assert result["nlg"]["coco_ptb"]["mode"] == "coco_ptb"
    ce = result["clinical_efficacy"]
    # refs: {lesion}, {effusion, pleural other}, {cardiomegaly}; preds: {lesion}, {effusion}, {no finding}
    assert ce["micro"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 4, "f1": 4 / 7})
    assert ce["example"] == pytest.approx({"precision": 2 / 3, "recall": (1 + 0.5) / 3, "f1": (1 + 2 / 3) / 3})

    out = tmp_path / "m.json"
    assert main(["score", str(path), "--output", str(out), "--labeler", "none"]) == 0
    saved = json.loads(out.read_text())
    assert "clinical_efficacy" not in saved and saved["nlg"]["coco_raw"]["n"] == 3


def test_score_csv_columns_without_java(tmp_path):
    path = tmp_path / "other_system.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case", "gt", "gen"])
        writer.writeheader()
        writer.writerows({"case": r["id"], "gt": r["reference"], "gen": r["prediction"]} for r in ROWS)
    result = score_file(path, id_column="case", reference_column="gt", prediction_column="gen",
                        nlg_metric_names=NO_METEOR)
    assert result["columns"] == {"id": "case", "reference": "gt", "prediction": "gen"}
    assert "METEOR" not in result["nlg"]["coco_raw"] and result["clinical_efficacy"]["labeler"] == "rule"


@pytest.mark.parametrize(
    "content, suffix, error, message",
    [
        ("", ".csv", ValueError, "empty"),
        ("id,reference,prediction\n", ".csv", ValueError, "no rows"),
        ("id,reference\n1,x\n", ".csv", KeyError, "no prediction column 'prediction'"),
        ("id,reference,prediction\n1,x,y\n1,z,w\n", ".csv", ValueError, r"duplicate ids .*\['1'\]"),
        ('{"id": 1, "reference": "x", "prediction": "y"}\nnot json\n', ".jsonl", ValueError, "line 2"),
    ],
)
def test_bad_inputs_name_the_file(tmp_path, content, suffix, error, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(error, match=message) as info:
        score_file(path, nlg_metric_names=NO_METEOR)
    assert "bad" + suffix in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        score_file(tmp_path / "absent.csv")


def test_label_file(tmp_path):
    path = write_jsonl(tmp_path / "reports.jsonl", [{"id": r["id"], "report": r["reference"]} for r in ROWS])
    out = label_file(path, "report", output=tmp_path / "labels.csv")
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["id"] + [n.replace(" ", "_") for n in CHEXPERT_14]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["lung_lesion"] == "1" and rows[0]["pleural_effusion"] == "2"  # 4-state codes
    assert rows[2]["cardiomegaly"] == "1"

    assert main(["label", str(path), "--column", "report", "--disease-set", "ctrate18", "--present-only",
                 "--id_column", "missing"]) == 0  # the underscore spelling is accepted too
    rows = list(csv.DictReader(open(tmp_path / "reports.rule-ctrate18_labels.csv")))
    assert rows[0]["id"] == "0" and rows[0]["lung_nodule"] == "1" and rows[0]["pleural_effusion"] == "0"
    with pytest.raises(KeyError, match="no report column 'text'"):
        label_file(path, "text")
