"""🤗 `evaluate` module: Dia-LLaMA report-generation metrics (NLG + clinical efficacy), offline.

    import evaluate
    metric = evaluate.load("path/to/dia_llama/dia_llama_metrics  (the folder, or the .py inside it)")
    metric.compute(predictions=["..."], references=["..."], mode="coco_raw", labeler="rule")

A thin wrapper over ``dia_llama.evaluation.metrics`` (which must be installed: evaluate copies this file to its cache
and imports it from there). See that module for the protocols.
"""

import datasets
import evaluate

_DESCRIPTION = """\
Radiology report generation metrics as in Dia-LLaMA (MICCAI 2024): BLEU-1..4, METEOR (1.5, Java), ROUGE-L and
CIDEr from pycocoevalcap in percent -- mode "coco_raw" (raw strings, the paper's protocol) or "coco_ptb" (PTB
tokenizer + lower-casing) -- and clinical efficacy (micro / macro / example-based precision, recall and F1 of the
labels a report labeler reads from predictions vs references; only "present" counts as positive).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated reports.
    references (list of str): reference reports (one per prediction).
    mode (str): "coco_raw" (default) or "coco_ptb".
    labeler (str or labeler object or None): "rule" (default, offline), "chexbert", "ctrate-radbert";
        None skips clinical efficacy.
    nlg_metrics (list of str, optional): subset of BLEU-1..4, METEOR, ROUGE-L, CIDEr (leave out METEOR to avoid Java).
Returns:
    dict: the NLG scores (percent), "mode", "ce_labeler", "ce_{micro,macro,example}_{precision,recall,f1}"
    (fractions) and the full "clinical_efficacy" block (per-class scores included).
Example:
    >>> metric = evaluate.load("dia_llama_metrics.py")
    >>> metric.compute(predictions=["No pleural effusion."], references=["Right pleural effusion."],
    ...                nlg_metrics=["BLEU-1"])["ce_micro_f1"]
    0.0
"""

_CITATION = """\
@inproceedings{chen2024dialama,
  title={Dia-LLaMA: Towards Large Language Model-driven CT Report Generation},
  author={Chen, Zhixuan and Luo, Luyang and Bie, Yequan and Chen, Hao},
  booktitle={MICCAI},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DiaLlamaMetrics(evaluate.Metric):
    """NLG + clinical-efficacy metrics of generated radiology reports."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/zhi-xuan-chen/Dia-LLaMA"],
        )

    def _compute(self, predictions, references, mode="coco_raw", labeler="rule", nlg_metrics=None):
        from dia_llama.evaluation.metrics import clinical_efficacy
        from dia_llama.evaluation.metrics import nlg_metrics as compute_nlg
        from dia_llama.labelers import resolve_labeler

        predictions = ["" if p is None else p for p in predictions]
        references = ["" if r is None else r for r in references]
        result = compute_nlg(references, predictions, mode=mode, metrics=nlg_metrics)
        if labeler is not None:
            lab = resolve_labeler(labeler)
            ce = clinical_efficacy(lab.label(references).present, lab.label(predictions).present, lab.disease_names)
            result["ce_labeler"] = lab.name
            for avg in ("micro", "macro", "example"):
                for key in ("precision", "recall", "f1"):
                    result[f"ce_{avg}_{key}"] = ce[avg][key]
            result["clinical_efficacy"] = {"labeler": lab.name, **ce}
        return result
