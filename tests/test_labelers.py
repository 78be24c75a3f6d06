"""Report labelers: rule-based (context machinery, fitted decision layer, held-out agreement), CheXbert and RadBERT
loaders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED

from dia_llama.configuration_dia_llama import CHEXPERT_14, CT_RATE_18
from dia_llama.evaluation.metrics import clinical_efficacy
from dia_llama.labelers import LabelerOutput, ReportLabeler, agreement_table, get_labeler
from dia_llama.labelers import crossval as cv
from dia_llama.labelers.context import Document
from dia_llama.labelers.fitted import DecisionLayer, fit_logistic
from dia_llama.labelers.params import PARAMS_PATH, build_space, check_params, load_params

DATA = SHARED / "data"

# Held-out agreement the fitted layers must keep (test_held_out_agreement: 5-fold CV, seed 0, on the reports outside
# the locked fold, with the shipped l2): CheXbert 0.823 (283 of the 362 labelled CTRG test reports), CT-RATE 0.935
# with every class >= 0.83. docs/labelers.md has the full protocol (scripts/labeler_crossval.py: l2 chosen inside each
# training part, 3 repeats: 0.818 / 0.935) and why CheXbert's 0.85 target is out of reach (its labels of identical
# sentences disagree; test_chexbert_agreement_ceiling).
MIN_HELD_OUT_MICRO_F1 = {"chexbert": 0.81, "ctrate": 0.93}
MIN_HELD_OUT_CLASS_F1 = {"ctrate": 0.80}  # every CT-RATE-18 class
ROUND1_PARAMS = Path(__file__).parent / "fixtures" / "ctrg_chexbert" / "labeler_params_round1.json"


def codes_of(labeler, text):
    out = labeler.label([text])
    return {n: int(c) for n, c in zip(out.disease_names, out.codes[0]) if c}


@pytest.fixture(scope="module")
def rule():
    return get_labeler("rule")


@pytest.fixture(scope="module")
def generic():
    return get_labeler("rule", label_source="generic")


# ------------------------------------------------------------------------------------------- context
@pytest.mark.parametrize(
    "text, word, status",
    [
        ("No pleural effusion.", "effusion", "neg"),
        ("Pleural effusion is not seen.", "effusion", "neg"),
        ("Pleural effusion-thickening was not observed.", "effusion", "neg"),
        ("Heart size is within normal limits.", "heart", "neg"),
        ("There is no nodule, consolidation, or mass in either lung.", "nodule", "neg"),
        ("There is no nodule, consolidation, or mass in either lung.", "mass", "neg_conj"),  # a later conjunct
        ("No mass, nodule, infiltration was detected in both lungs.", "nodule", "neg_conj"),  # a listed subject
        ("Nodule, mass or cyst is not seen in the lungs.", "mass", "neg"),
        ("No obvious enlarged lymph node is found.", "lymph", "neg_hedged"),
        ("The heart is not obviously enlarged.", "heart", "neg_hedged"),
        ("No mass or enlarged lymph node is found in the mediastinum.", "lymph", "neg_conj"),
        ("No pleural effusion, bilateral pleural thickening.", "thickening", "neg_wide"),
        ("Possible small nodule in the right lower lobe.", "nodule", "unc"),
        ("Pneumonia cannot be excluded.", "pneumonia", "unc"),
        ("Atelectasis?", "atelectasis", "unc"),
        ("Findings in favor of pneumonia.", "pneumonia", "unc"),
        ("Nodular shadows can be seen in both lungs.", "nodular", "pos"),  # "can be seen" is not uncertain
        ("No change in the nodule.", "nodule", "pos"),  # pseudo-negation
        ("No pleural effusion, but a nodule is seen.", "nodule", "pos"),  # "but" ends the scope
        ("A 5 mm nodule in the right upper lobe.", "nodule", "pos"),
    ],
)
def test_context_status(text, word, status):
    doc = Document(text)
    i = doc.text.index(word)
    assert doc.status(i, i + len(word)) == status


def test_document_keeps_offsets_and_splits():
    doc = Document("No pleural effusion, bilateral pleural thickening. Nodule of 1.2 cm; heart normal")
    assert len(doc.text) == len("No pleural effusion, bilateral pleural thickening. Nodule of 1.2 cm; heart normal")
    clauses = [doc.text[c.start:c.end] for c in doc.clauses]
    assert clauses == ["no pleural effusion", "bilateral pleural thickening.", "nodule of 1.2 cm;", "heart normal"]


# ------------------------------------------------------------------------------------- rule labeler
GENERIC_CASES = [
    ("Multiple nodules are seen in both lungs.", {"lung lesion": 1}),
    ("No pleural effusion or pleural thickening.", {"pleural effusion": 2, "pleural other": 2, "no finding": 1}),
    ("No pleural effusion, bilateral pleural thickening.", {"pleural effusion": 2, "pleural other": 1}),
    ("Right pleural effusion without pleural thickening.", {"pleural effusion": 1, "pleural other": 2}),
    ("Bilateral pulmonary hili are not large, heart shadow is not enlarged.", {"cardiomegaly": 2, "no finding": 1}),
    ("There is no nodule, consolidation, or mass in either lung.",
     {"lung lesion": 2, "consolidation": 2, "no finding": 1}),
    ("Nodule, mass or cyst is not seen in the lungs.", {"lung lesion": 2, "no finding": 1}),
    ("Free of consolidation.", {"consolidation": 2, "no finding": 1}),
    ("Negative for pneumothorax.", {"pneumothorax": 2, "no finding": 1}),
    ("Possible small nodule in the right lower lobe.", {"lung lesion": 3}),
    ("Pneumonia cannot be excluded.", {"pneumonia": 3}),
    ("Consolidation in the left lower lobe, likely atelectasis.", {"consolidation": 1, "atelectasis": 3}),
    ("Atelectasis?", {"atelectasis": 3}),
    ("Nodular shadows can be seen in both lungs.", {"lung lesion": 1}),
    ("The heart shadow is enlarged.", {"cardiomegaly": 1}),
    ("The mediastinum is widened.", {"enlarged cardiomediastinum": 1}),
    ("A pacemaker shadow can be seen under the skin of the left chest wall.", {"support devices": 1}),
    ("No catheter, tube or pacemaker is seen.", {"support devices": 2, "no finding": 1}),
    ("Old fractures of the left 4th and 5th ribs.", {"fracture": 1}),
    ("Ground glass opacity in the right upper lobe.", {"lung opacity": 1}),
    ("Ground glass nodule in the right upper lobe.", {"lung lesion": 1}),
    ("Small amount of effusion in the bilateral thoracic cavity.", {"pleural effusion": 1}),
    ("A small amount of pericardial effusion.", {}),  # not pleural (a CheXpert "unmention")
    ("A low density nodule is seen in the left adrenal gland.", {"lung lesion": 1}),  # CheXpert: any organ
]


@pytest.mark.parametrize("text, expected", GENERIC_CASES)
def test_generic_reading(generic, text, expected):
    got = codes_of(generic, text)
    if "no finding" not in expected:
        got.pop("no finding", None)
    assert got == expected


@pytest.mark.parametrize("text, expected", [c for c in GENERIC_CASES if c[0] not in (
    "The mediastinum is widened.",)])  # too rare in CheXbert's CTRG labels to test its fitted reading
def test_chexbert_fitted_reading_keeps_the_clear_cases(rule, text, expected):
    got = codes_of(rule, text)
    if "no finding" not in expected:
        got.pop("no finding", None)
    assert got == expected


def test_lung_class_elsewhere_is_kept_apart_for_ctrate():
    thyroid = "A low density nodule is seen in the left lobe of the thyroid."
    ctrate = get_labeler("rule", disease_set="ctrate18")
    assert "lung nodule" not in codes_of(ctrate, thyroid)
    assert codes_of(ctrate, "A 4 mm nodule in the right upper lobe.") == {"lung nodule": 1}


def test_no_finding_needs_an_entirely_normal_report(rule):
    normal = ("Thorax is symmetrical, lung window shows clear lung markings, no obvious consolidation shadow, and "
              "bilateral pulmonary hili are not large. The shape of heart shadow and heart big vessels is normal, "
              "and no obvious mass or enlarged lymph node is found in mediastinum. No pleural effusion.")
    assert codes_of(rule, normal)["no finding"] == 1
    assert "no finding" not in codes_of(rule, normal + " Multiple low density shadows are seen in the liver.")
    assert "no finding" not in codes_of(rule, normal + " The left fourth rib cortex is interrupted.")
    assert "no finding" not in codes_of(rule, "Possible nodule in the left lung.")  # uncertain blocks it
    assert "no finding" not in codes_of(rule, "No pleural effusion. A catheter is seen.")  # any class counts


def test_chexpert_hierarchy_option():
    labeler = get_labeler("rule", cardiomegaly_implies_ecm=True)
    assert codes_of(labeler, "The heart shadow is enlarged.") == {"cardiomegaly": 1, "enlarged cardiomediastinum": 1}


def test_labeler_interface(rule):
    assert isinstance(rule, ReportLabeler)
    assert rule.name == "rule" and rule.disease_names == CHEXPERT_14 and rule.label_source == "chexbert"
    out = rule.label(["Nodules in both lungs.", "", "No pleural effusion."])
    assert isinstance(out, LabelerOutput)
    assert out.present.shape == out.codes.shape == (3, 14)
    assert out.present.dtype.kind == "i" and set(np.unique(out.present)) <= {0, 1}
    assert np.array_equal(out.present, (out.codes == 1).astype(int))
    assert out.to_records(["a", "b", "c"])[0]["id"] == "a"
    assert rule.label([]).present.shape == (0, 14)
    assert out.codes[1].tolist() == [0] * 13 + [1]  # an empty report: "no finding", as in CheXpert
    with pytest.raises(ValueError, match="unknown labeler"):
        get_labeler("nope")
    with pytest.raises(ValueError, match="unknown label_source"):
        get_labeler("rule", label_source="radiologist")
    with pytest.raises(ValueError, match="no rules for"):
        get_labeler("rule", disease_set=["cardiomegaly", "emphysema"], label_source="chexbert")


def test_mentions_explain_a_label(rule):
    found = rule.mentions("No pleural effusion, bilateral pleural thickening.")
    assert ("pleural other", "neg_wide", "pleural thickening", "bilateral pleural thickening.") in found
    assert any(m[0] == "pleural effusion" and m[1] == "neg" for m in found)


CTRATE_ALL = ("A central venous catheter is seen. Atherosclerotic calcifications are observed in the aorta and "
              "coronary arteries. The heart size is increased. Minimal pericardial effusion. A small hiatal hernia. "
              "Pathologically enlarged lymph nodes in the mediastinum, the largest 14 mm in short axis. Centrilobular "
              "emphysema. Atelectasis in the lower lobe. A 4 mm nodule in the right upper lobe. Ground-glass opacities "
              "in the left lung. Fibrotic sequelae in the lingula. Bilateral pleural effusion. Mosaic attenuation "
              "pattern. Peribronchial thickening. Consolidation in the right lower lobe. Cylindrical bronchiectasis. "
              "Interlobular septal thickening is noted.")
CTRATE_NORMAL = ("No pleural or pericardial effusion was detected. No lymphadenopathy. Heart size is normal. "
                 "There is no nodule, consolidation or mass in either lung. No emphysema.")


@pytest.mark.parametrize("label_source", [None, "generic"])
def test_rule_ctrate18(label_source):
    labeler = get_labeler("rule", disease_set="ctrate18", label_source=label_source)
    assert labeler.disease_names == CT_RATE_18 and labeler.name == "rule-ctrate18"
    assert labeler.label([CTRATE_ALL]).present.tolist() == [[1] * 18]
    assert labeler.label([CTRATE_NORMAL]).present.sum() == 0
    only_coronary = codes_of(labeler, "Coronary artery wall calcification is seen.")
    assert {k: v for k, v in only_coronary.items() if v == 1} == {"coronary artery wall calcification": 1}


def test_ctrate_affirmed_lymph_node_is_lymphadenopathy():
    """CT-RATE's hand labels count an affirmed lymph node mention (normal reports deny them): fitted, not generic."""
    text = "Lymph nodes with a short axis of 12 mm are observed in the mediastinum."
    assert codes_of(get_labeler("rule", disease_set="ctrate18"), text).get("lymphadenopathy") == 1
    assert "lymphadenopathy" not in codes_of(get_labeler("rule", disease_set="ctrate18", label_source="generic"), text)


# ------------------------------------------------------------------------------ shipped parameters
@pytest.mark.parametrize("source", ["chexbert", "ctrate"])
def test_shipped_parameters_match_the_feature_space(source):
    params = load_params()[source]
    assert check_params(source) == []  # a vocabulary change needs scripts/labeler_crossval.py --write-params
    space = build_space(source)
    assert params["disease_names"] == space.names and set(params["classes"]) == set(space.names)
    assert params["n_reports"] == {"chexbert": 362, "ctrate": 800}[source]
    assert params["setting"]["l2"] > 0
    for name, p in params["classes"].items():
        assert p["fitted"] == (p["positives"] >= 5), name


def test_zero_support_classes_keep_the_generic_rule():
    params = load_params()["chexbert"]["classes"]
    for name in ("pneumonia", "pneumothorax"):
        assert params[name]["positives"] == 0 and not params[name]["fitted"]
    space = build_space("chexbert")
    assert params["pneumonia"]["weights"] == dict(zip(space.feature_names["pneumonia"],
                                                      space.prior("pneumonia")[0].tolist()))


def test_unseen_prior_feature_keeps_the_generic_decision():
    """A prior feature absent from the training data is not fitted, and a report whose only mention it is still gets
    the generic rule's logit w0 + b0, however far the data moved the bias."""
    x = np.array([[1, 0, 0]] * 30 + [[0, 0, 1]] * 30 + [[0, 0, 0]] * 40, dtype=float)
    y = np.array([1] * 30 + [0] * 70)  # feature 2 (prior 0) affirmed and always absent: the bias drops
    w0, b0 = np.array([4.0, 4.0, 0.0]), -2.0
    w, b = fit_logistic(x, y, w0, b0, l2=0.1)
    assert b < b0 - 0.5 and w[0] > 4.0 and w[2] < 0  # fitted where seen
    assert w[1] + b == pytest.approx(w0[1] + b0)  # unseen prior feature: the generic decision
    w, b = fit_logistic(np.zeros((4, 3)), np.zeros(4), np.array([0.0, 4.0, 0.0]), b0, l2=1.0)
    assert w[0] == 0 and w[2] == 0 and w[1] + b == pytest.approx(2.0)  # an unseen zero-prior feature stays 0


def test_chexbert_layer_reads_words_its_labels_never_show():
    """CheXbert's CTRG labels never show "opacity" (lung opacity's fitted bias is far below the prior's): an affirmed
    opacity still counts, as in the generic reading."""
    params = load_params()["chexbert"]["classes"]["lung opacity"]
    assert params["fitted"] and params["bias"] < -4
    assert codes_of(get_labeler("rule"), "Patchy opacity in the right lower lobe.").get("lung opacity") == 1


def test_params_file_is_json_with_provenance():
    doc = json.loads(PARAMS_PATH.read_text())
    assert doc["format"] == 1 and "labeler_crossval.py" in doc["about"]


# ---------------------------------------------------------------------------- held-out agreement
def _need_data():
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA} (it sits beside the checkout as ../shared)")


def test_locked_fold_rule():
    _need_data()
    ids, _, _ = cv.load_chexbert_dev(DATA)
    assert sum(map(cv.is_locked, ids)) == 43
    ids, _, _ = cv.load_ctrate_manual(DATA)
    assert sum(map(cv.is_locked, ids)) == 157
    assert [len(f) for f in cv.kfold_indices(12, 5, 0)] == [3, 3, 2, 2, 2]


def test_chexbert_test_labels_fixture():
    """The labels copied from the research code cover the 362 test reports; the 180 of the shared file are equal."""
    _need_data()
    ids, texts, codes = cv.load_chexbert_test(DATA)
    assert len(ids) == len(set(ids)) == 362 and all(texts)
    dev_ids, _, dev_codes = cv.load_chexbert_dev(DATA)
    row = {x: i for i, x in enumerate(ids)}
    assert np.array_equal(codes[[row[x] for x in dev_ids]], dev_codes)
    assert sorted(int(x) % 2 for x in ids) == [0] * 182 + [1] * 180  # the shared 180 are the odd ids
    assert sum(map(cv.is_locked, ids)) == 79


def test_first_round_labeler_on_unseen_reports():
    """The first round's layer (fitted on the 180 odd ids, kept as a fixture) on the 182 even ids it never saw:
    the issue's "below 0.80 on reports it has not seen" (measured 0.787; scripts/labeler_crossval.py --unseen)."""
    _need_data()
    params = json.loads(ROUND1_PARAMS.read_text())["chexbert"]
    assert params["n_reports"] == 180 and check_params("chexbert", params) == []
    truth, pred, names = cv.unseen_chexbert_predictions(DATA, params["classes"])
    f1 = clinical_efficacy(truth, pred, names)["micro"]["f1"]
    assert len(truth) == 182 and 0.77 < f1 < 0.80


def test_chexbert_agreement_ceiling():
    """Why CheXbert's 0.85 is out of reach: on the 283 CV reports, CheXbert labels the two stock mediastinum sentences
    both ways, and giving each report the majority label of the other reports with its feature vector (an oracle for
    unique vectors) scores below 0.85; reading exact wording instead can do better only in-sample."""
    _need_data()
    ids, texts, codes = cv.load_chexbert_test(DATA)
    dev = [i for i, x in enumerate(ids) if not cv.is_locked(x)]
    space = build_space("chexbert")
    texts = [texts[i] for i in dev]
    feats, abnormal = space.transform(texts)
    result = cv.label_consistency(space, texts, (codes[dev] == 1).astype(np.int64), feats, abnormal)
    assert result["feature_ceiling_loo_micro_f1"] < 0.83 < result["feature_ceiling_micro_f1"] < 0.86
    stock = [m for m in result["mixed"] if m["class"] == "enlarged cardiomediastinum" and m["reports"] >= 50]
    assert len(stock) == 2 and sum(m["reports"] for m in stock) > 150
    assert all(0.1 < m["positive"] / m["reports"] < 0.3 for m in stock)  # a minority either way: unpredictable


def test_chexbert_no_finding_coding_is_binary_and_exclusive():
    _need_data()
    _, _, ref = cv.load_chexbert_dev(DATA)
    assert set(np.unique(ref[:, -1])) <= {0, 1}
    assert not (ref[ref[:, -1] == 1, :-1] == 1).any()


@pytest.mark.parametrize("source", ["chexbert", "ctrate"])
def test_held_out_agreement(source):
    """5-fold CV on the unlocked reports: each fold's labels are predicted by a layer fitted on the other four."""
    _need_data()
    ids, texts, codes = {"chexbert": cv.load_chexbert_test, "ctrate": cv.load_ctrate_manual}[source](DATA)
    dev = np.array([i for i, x in enumerate(ids) if not cv.is_locked(x)])
    labels = (codes[dev] == 1).astype(np.int64)
    space = build_space(source)
    feats, abnormal = space.transform([texts[i] for i in dev])
    setting = load_params()[source]["setting"]
    pred = np.zeros_like(labels)
    for fold in cv.kfold_indices(len(dev), 5, seed=0):
        train = np.setdiff1d(np.arange(len(dev)), fold)
        layer = DecisionLayer.fit(space, cv._rows(feats, train), abnormal[train], labels[train], **setting)
        pred[fold] = layer.decide(cv._rows(feats, fold), abnormal[fold])
    ce = clinical_efficacy(labels, pred, space.names)
    table = agreement_table(labels, pred, space.names, reference_name=source)
    assert table.count("\n") == len(space.names) + 3
    print(source, round(ce["micro"]["f1"], 4), min(round(r["f1"], 3) for r in ce["per_class"].values()))
    assert ce["micro"]["f1"] >= MIN_HELD_OUT_MICRO_F1[source], table
    for name, row in ce["per_class"].items():
        if source in MIN_HELD_OUT_CLASS_F1:
            assert row["f1"] >= MIN_HELD_OUT_CLASS_F1[source], (name, table)


# ------------------------------------------------------------------------------------ fake CheXbert
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "nodule", "in", "the", "lung",
         "heart", "is", "enlarged", "."]


def _tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)


def _fake_chexbert(tmp_path, drop_key=None, position_ids=True):
    from dia_llama.labelers.chexbert import CheXbertModel

    torch.manual_seed(0)
    model = CheXbertModel(_tiny_bert_config())
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    if position_ids:  # what checkpoints saved by older transformers hold
        state["module.bert.embeddings.position_ids"] = torch.arange(64)[None]
    if drop_key:
        state.pop(drop_key)
    path = tmp_path / "chexbert.pth"
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return path, model


def test_fake_chexbert_checkpoint_loads_strictly(tmp_path):
    path, reference = _fake_chexbert(tmp_path)
    state_keys = torch.load(path, weights_only=True)["model_state_dict"].keys()
    assert "module.linear_heads.13.weight" in state_keys and "module.bert.pooler.dense.weight" in state_keys
    labeler = get_labeler("chexbert", checkpoint=path, config=_tiny_bert_config(), batch_size=2, max_length=64)
    texts = ["No pleural effusion.", "Nodule in the lung.", "The heart is enlarged.", "x " * 600]
    out = labeler.label(texts)
    assert out.present.shape == out.codes.shape == (4, 14) and out.labeler == "chexbert"
    assert set(np.unique(out.codes[:, :13])) <= {0, 1, 2, 3} and set(np.unique(out.codes[:, 13])) <= {0, 1}
    # identical to the reference module's argmax (weights really loaded); the long text was truncated
    with torch.no_grad():
        reference.eval()
        enc = labeler.tokenizer(texts[:3], padding=True, return_tensors="pt")
        expected = torch.stack([h.argmax(-1) for h in reference(enc["input_ids"], enc["attention_mask"])], 1)
    assert np.array_equal(out.codes[:3], expected.numpy())


def test_fake_chexbert_errors(tmp_path):
    path, _ = _fake_chexbert(tmp_path, drop_key="module.linear_heads.13.bias")
    with pytest.raises(ValueError, match=r"missing keys \['linear_heads.13.bias'\]"):
        get_labeler("chexbert", checkpoint=path, config=_tiny_bert_config())
    with pytest.raises(FileNotFoundError, match="chexbert.pth"):
        get_labeler("chexbert", checkpoint=tmp_path / "absent.pth")
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        get_labeler("chexbert", checkpoint=path, config=_tiny_bert_config())


# ------------------------------------------------------------------------------------- fake RadBERT
def _fake_radbert(tmp_path, fmt="safetensors"):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig

    from dia_llama.labelers.radbert import RadBertClassifier

    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "no", "nodule", "pleural", "effusion", "is", "seen", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>").save_pretrained(tmp_path)
    config = RobertaConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40, pad_token_id=1)
    config.save_pretrained(tmp_path)
    torch.manual_seed(0)
    model = RadBertClassifier(config, n_classes=18).eval()
    with torch.no_grad():
        model.classifier.bias[:9] = 50.0  # first 9 labels always present, last 9 always absent
        model.classifier.bias[9:] = -50.0
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "classifier.safetensors"))
    else:
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "radbert_classifier.pt")
    return model


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_fake_radbert(tmp_path, fmt):
    _fake_radbert(tmp_path, fmt)
    labeler = get_labeler("ctrate-radbert", model_dir=tmp_path, max_length=32)
    assert labeler.disease_names == CT_RATE_18
    out = labeler.label(["no nodule is seen .", "pleural effusion ."])
    assert out.codes is None and out.present.shape == (2, 18)
    assert out.present.tolist() == [[1] * 9 + [0] * 9] * 2


def test_radbert_missing_weights_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        get_labeler("ctrate-radbert", model_dir=tmp_path)
    _fake_radbert(tmp_path)
    (tmp_path / "classifier.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="state dict"):
        get_labeler("ctrate-radbert", model_dir=tmp_path)


def test_disease_set_as_a_list():
    assert get_labeler("rule", disease_set=list(CHEXPERT_14)).name == "rule"
    assert get_labeler("rule", disease_set=list(CT_RATE_18)).name == "rule-ctrate18"
    custom = get_labeler("rule", disease_set=["cardiomegaly", "lung nodule", "pleural effusion", "no finding"])
    out = custom.label(["The heart is enlarged. A 5 mm nodule in the right lung.", "No pleural effusion."])
    assert out.codes.tolist() == [[1, 1, 0, 0], [0, 0, 2, 1]]
    with pytest.raises(ValueError, match="no rules for"):
        get_labeler("rule", disease_set=["cardiomegaly", "brain tumour"])


def test_chexbert_column_subset(tmp_path):
    path, _ = _fake_chexbert(tmp_path)
    full = get_labeler("chexbert", checkpoint=path, config=_tiny_bert_config(), max_length=64)
    sub = get_labeler("chexbert", disease_set=["no finding", "lung lesion"], checkpoint=path,
                      config=_tiny_bert_config(), max_length=64)
    texts = ["Nodule in the lung.", "No pleural effusion."]
    assert sub.disease_names == ["no finding", "lung lesion"] and sub.name == "chexbert"
    assert sub.label(texts).codes.tolist() == full.label(texts).codes[:, [13, 3]].tolist()
    with pytest.raises(ValueError, match="does not know"):
        get_labeler("chexbert", disease_set=["emphysema"], checkpoint=path, config=_tiny_bert_config())


# --------------------------------------------------------------------------------- synthetic reports
@pytest.mark.parametrize("disease_set", ["chexpert14", "ctrate18"])
def test_rule_labeler_recovers_synthetic_labels(disease_set):
    """The templated reports of the synthetic benchmark are read right by the fitted and the generic reading."""
    synthetic = pytest.importorskip("dia_llama.data.synthetic")
    rng = np.random.default_rng(0)
    labels = synthetic.sample_labels(rng, 200, disease_set=disease_set, min_positives=5)
    # reports do not depend on the volume size; the smallest volume keeps this fast
    reports = [synthetic.make_case(rng, y, disease_set=disease_set, volume_size=(16, 16, 8))[2] for y in labels]
    for label_source in (None, "generic"):
        labeler = get_labeler("rule", disease_set=disease_set, label_source=label_source)
        truth = np.array([[y[n] for n in labeler.disease_names] for y in labels])
        ce = clinical_efficacy(truth, labeler.label(reports).present, labeler.disease_names)
        assert ce["micro"]["f1"] >= 0.98, (label_source, {n: v for n, v in ce["per_class"].items() if v["f1"] < 1})
