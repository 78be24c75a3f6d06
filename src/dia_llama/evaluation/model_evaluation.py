"""Evaluate a Dia-LLaMA checkpoint on a data set split: generate, then score the reports (NLG, clinical efficacy),
the disease branch's own diagnoses and, where the data set records where each finding is (the synthetic benchmark's
finding masks), how well the disease-aware attention points at it. The library behind `dia-llama evaluate` /
`python -m dia_llama.evaluate`.

Writes `predictions.jsonl` (one record per case, appended as it goes: an interrupted run resumes), `metrics.json`
and `metrics.md`.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np

from .markdown import metrics_markdown
from .metrics import clinical_efficacy, nlg_metrics


def generate_predictions(model, processor, split, output_path, batch_size: int = 8, max_new_tokens: int | None = None,
                         cache=None, progress: bool = True, generation_kwargs: dict | None = None) -> list[dict]:
    """A report and diagnoses for every case of `split` (rows with id, volume, report, labels), through
    `dia_llama.inference.stream_records`: records go to `output_path` (JSONL) as they finish; cases already there are
    skipped. Returns the records in the split's order."""
    from ..data import load_example_volume
    from ..inference import read_jsonl_records, stream_records

    output_path = Path(output_path)
    gen_kwargs = dict(generation_kwargs or {})
    if max_new_tokens is not None:
        gen_kwargs["max_new_tokens"] = max_new_tokens
    rows = [split[i] for i in range(len(split))]

    def load(row):
        if cache is not None:
            return cache.get(row["id"])
        return processor.image_processor(load_example_volume(row), return_tensors="pt")["pixel_values"][0]

    def record(row, text, diagnoses):
        return {"id": row["id"], "reference": row["report"], "prediction": text,
                "diagnoses": {d["disease"]: {"probability": d["probability"], "present": d["present"]}
                              for d in diagnoses},
                "labels": row.get("labels")}

    for _ in stream_records(model, processor, rows, key=lambda row: str(row["id"]), key_field="id", load=load,
                            record=record, output=output_path, batch_size=batch_size, progress=progress,
                            **gen_kwargs):
        pass
    done = read_jsonl_records(output_path, "id")
    return [done[str(case_id)] for case_id in split["id"]]


def score_predictions(records: list[dict], disease_names, labeler: str = "rule", modes=("coco_raw",),
                      train_reports: list[str] | None = None) -> dict:
    """NLG metrics (each mode), CE of the generated reports (the labeler on both sides), the diagnoses' metrics
    against the data set's labels (or the labeler's labels of the references) and two trivial baselines."""
    from ..labelers import get_labeler

    ids = [r["id"] for r in records]
    refs = [r["reference"] for r in records]
    preds = [r["prediction"] for r in records]
    metrics: dict = {"n": len(records), "nlg": {mode: nlg_metrics(refs, preds, mode=mode, ids=ids) for mode in modes}}

    lab = get_labeler(labeler, disease_set=list(disease_names))
    ref_text_labels = lab.label(refs).present
    pred_text_labels = lab.label(preds).present
    metrics["clinical_efficacy"] = {"labeler": lab.name,
                                    **clinical_efficacy(ref_text_labels, pred_text_labels, disease_names)}

    has_labels = all(r.get("labels") and min(r["labels"]) >= 0 for r in records)
    truth = np.array([r["labels"] if r.get("labels") and min(r["labels"]) >= 0 else t
                      for r, t in zip(records, ref_text_labels.tolist())])
    model_dx = np.array([[int(r["diagnoses"][n]["present"]) for n in disease_names] for r in records])
    dx = clinical_efficacy(truth, model_dx, disease_names)
    dx["accuracy"] = float((truth == model_dx).mean())
    dx["reference"] = "dataset labels" if has_labels else f"{lab.name} labels of references"
    metrics["diagnosis"] = dx
    metrics["baselines"] = baselines(refs, ref_text_labels, disease_names, lab, train_reports)
    return metrics


def baselines(refs, ref_labels, disease_names, labeler, train_reports=None) -> dict:
    """CE micro-F1 of trivial systems: always "no finding", and always the most frequent training report."""
    out = {}
    if "no finding" in disease_names:
        always = np.zeros_like(ref_labels)
        always[:, list(disease_names).index("no finding")] = 1
        out["always_no_finding"] = {"ce_micro_f1": clinical_efficacy(ref_labels, always)["micro"]["f1"]}
    if train_reports:
        report, _ = collections.Counter(train_reports).most_common(1)[0]
        pred = np.repeat(labeler.label([report]).present, len(refs), axis=0)
        out["most_frequent_report"] = {"ce_micro_f1": clinical_efficacy(ref_labels, pred)["micro"]["f1"],
                                       "report": report}
    return out


def evaluate_model(model, data, split: str = "test", output_dir="eval", batch_size: int = 8,
                   max_new_tokens: int | None = None, labeler: str = "rule", modes=("coco_raw",), cache_dir=None,
                   limit: int | None = None, data_format: str = "auto", progress: bool = True, processor=None,
                   localization: bool = True, **load_kwargs) -> dict:
    """Generate for `split` of `data` and write predictions.jsonl, metrics.json and metrics.md to `output_dir`.
    `model`: a loaded model (with `processor`) or a folder / Hub id, loaded with `load_for_inference(**load_kwargs)`.
    `localization`: add `attention_localization` (`dia_llama.evaluation.localization`) when `data` is a manifest with
    finding masks and the model has disease-aware attention."""
    from ..data import load_ct_report_dataset
    from ..inference import load_for_inference

    if isinstance(model, (str, Path)):
        model, processor = load_for_inference(str(model), **load_kwargs)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_ct_report_dataset(data, format=data_format)
    if split not in dataset:
        raise ValueError(f"{data}: no {split!r} split; its splits are {list(dataset)}")
    rows = dataset[split]
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    cache = None
    if cache_dir:
        from ..data.cache import open_cache

        cache = open_cache(cache_dir, processor.image_processor)
    records = generate_predictions(model, processor, rows, out / "predictions.jsonl", batch_size, max_new_tokens,
                                   cache=cache, progress=progress)
    train_reports = dataset["train"]["report"] if "train" in dataset else None
    metrics = score_predictions(records, model.config.disease_names, labeler, modes, train_reports)
    from ..cards import dataset_card_name

    metrics["dataset"] = {**dataset_card_name(data, data_format), "split": split}  # a public name, never a path
    if localization:
        block = split_attention_localization(model, processor, data, rows, cache, batch_size, progress)
        if block is not None:
            metrics["attention_localization"] = block
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "metrics.md").write_text(metrics_markdown(metrics), encoding="utf-8")
    return metrics


def split_attention_localization(model, processor, data, rows, cache=None, batch_size: int = 16,
                                 progress: bool = False) -> dict | None:
    """The `attention_localization` block for the cases `rows` of `data` (None without finding locations)."""
    from .localization import location_rows, model_attention_localization

    locations = location_rows(data)
    if locations is None:
        return None
    by_id = {str(row["id"]): row for row in rows}

    def load(case_id):
        if cache is not None:
            return cache.get(case_id)
        from ..data import load_example_volume

        return processor.image_processor(load_example_volume(by_id[case_id]), return_tensors="pt")["pixel_values"][0]

    return model_attention_localization(model, list(by_id), locations, load, batch_size, progress)


__all__ = ["baselines", "evaluate_model", "generate_predictions", "score_predictions", "split_attention_localization"]
