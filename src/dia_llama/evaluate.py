"""Evaluate a Dia-LLaMA checkpoint: batched generation, report metrics and the disease branch's own diagnoses.

    dia-llama evaluate MODEL --data DATA --split test --output-dir OUT
    python -m dia_llama.evaluate MODEL --data DATA ...    # (run as a module: a script named evaluate.py would
                                                           #  shadow the `evaluate` library)

Writes `predictions.jsonl` (appended as it goes, so an interrupted run resumes), `metrics.json` and `metrics.md`.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


def load_model_and_processor(model_path, device="cpu", dtype=None):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import dia_llama  # noqa: F401  (registers the Auto classes)

    kwargs = {"dtype": getattr(torch, dtype)} if isinstance(dtype, str) and dtype != "auto" else {}
    model = AutoModelForImageTextToText.from_pretrained(model_path, **kwargs).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    return model, processor


def _read_done(path: Path) -> dict[str, dict]:
    """Records already in a predictions file (a partial last line from a kill is ignored)."""
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["id"]] = record
    return done


@torch.no_grad()
def generate_predictions(
    model, processor, split, output_path, batch_size: int = 8, max_new_tokens: int | None = None, cache=None,
    progress: bool = True, generation_kwargs: dict | None = None,
) -> list[dict]:
    """Generate a report and diagnoses for every case of `split` (rows with id, volume, report, labels).

    Records are appended to `output_path` (JSONL) batch by batch; cases already there are skipped."""
    output_path = Path(output_path)
    done = _read_done(output_path)
    if done:  # rewrite without a possibly truncated last line
        output_path.write_text("".join(json.dumps(r) + "\n" for r in done.values()), encoding="utf-8")
    todo = [i for i, case_id in enumerate(split["id"]) if case_id not in done]
    device = next(model.parameters()).device
    gen_kwargs = dict(generation_kwargs or {})
    if max_new_tokens is not None:
        gen_kwargs["max_new_tokens"] = max_new_tokens
    with output_path.open("a", encoding="utf-8") as sink:
        for start in tqdm(range(0, len(todo), batch_size), desc="generating", unit="batch", disable=not progress):
            rows = [split[i] for i in todo[start : start + batch_size]]
            if cache is not None:
                pixel_values = torch.stack([cache.get(r["id"]) for r in rows])
                inputs = dict(processor.pad([processor.prompt_ids() for _ in rows], side="left"))
                inputs["pixel_values"] = pixel_values
            else:
                from .data import load_example_volume

                inputs = dict(processor(volumes=[load_example_volume(r) for r in rows]))
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = model.generate(**inputs, return_dict_in_generate=True, **gen_kwargs)
            texts = processor.batch_decode(out.sequences)
            diagnoses = out["diagnoses"].to_records()
            for row, text, dx in zip(rows, texts, diagnoses):
                record = {"id": row["id"], "reference": row["report"], "prediction": text, "diagnoses": dx,
                          "labels": row.get("labels")}
                sink.write(json.dumps(record) + "\n")
                done[row["id"]] = record
            sink.flush()
    return [done[case_id] for case_id in split["id"]]


def score_predictions(records: list[dict], disease_names, labeler: str = "rule", modes=("coco_raw",),
                      train_reports: list[str] | None = None) -> dict:
    """NLG metrics (each mode), CE of generated reports (labeler on both sides), and diagnosis metrics."""
    from .labelers import get_labeler
    from .metrics import clinical_efficacy, nlg_metrics

    ids = [r["id"] for r in records]
    refs = [r["reference"] for r in records]
    preds = [r["prediction"] for r in records]
    metrics: dict = {"n": len(records), "nlg": {}}
    for mode in modes:
        metrics["nlg"][mode] = nlg_metrics(refs, preds, mode=mode, ids=ids)

    lab = get_labeler(labeler, disease_set=list(disease_names))
    ref_text_labels = lab.label(refs).present
    pred_text_labels = lab.label(preds).present
    metrics["clinical_efficacy"] = {"labeler": lab.name, **clinical_efficacy(ref_text_labels, pred_text_labels, disease_names)}

    truth = np.array([r["labels"] if r.get("labels") and min(r["labels"]) >= 0 else t
                      for r, t in zip(records, ref_text_labels.tolist())])
    model_dx = np.array([[int(r["diagnoses"][n]["present"]) for n in disease_names] for r in records])
    dx = clinical_efficacy(truth, model_dx, disease_names)
    dx["accuracy"] = float((truth == model_dx).mean())
    dx["reference"] = "dataset labels" if all(r.get("labels") and min(r["labels"]) >= 0 for r in records) else f"{lab.name} labels of references"
    metrics["diagnosis"] = dx

    metrics["baselines"] = baselines(refs, ref_text_labels, disease_names, lab, train_reports)
    return metrics


def baselines(refs, ref_labels, disease_names, labeler, train_reports=None) -> dict:
    """CE micro-F1 of trivial systems: always "no finding", and always the most frequent training report."""
    from .metrics import clinical_efficacy

    out = {}
    if "no finding" in disease_names:
        always = np.zeros_like(ref_labels)
        always[:, list(disease_names).index("no finding")] = 1
        out["always_no_finding"] = {"ce_micro_f1": clinical_efficacy(ref_labels, always)["micro"]["f1"]}
    if train_reports:
        report, _ = collections.Counter(train_reports).most_common(1)[0]
        pred = np.repeat(labeler.label([report]).present, len(refs), axis=0)
        out["most_frequent_report"] = {"ce_micro_f1": clinical_efficacy(ref_labels, pred)["micro"]["f1"], "report": report}
    return out


def metrics_markdown(metrics: dict) -> str:
    lines = [f"# Evaluation ({metrics.get('n')} cases)", ""]
    for mode, nlg in metrics["nlg"].items():
        lines.append(f"## NLG (`{mode}`)")
        lines.append("| BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr |")
        lines.append("|---|---|---|---|---|---|---|")
        lines.append("| " + " | ".join(f"{nlg.get(k, float('nan')):.2f}" for k in
                                         ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")) + " |")
        lines.append("")
    ce, dx = metrics["clinical_efficacy"], metrics["diagnosis"]
    lines += [f"## Clinical efficacy of generated reports (labeler: `{ce['labeler']}`)",
              "| averaging | precision | recall | F1 |", "|---|---|---|---|"]
    for avg in ("micro", "macro", "example"):
        lines.append(f"| {avg} | {ce[avg]['precision']:.3f} | {ce[avg]['recall']:.3f} | {ce[avg]['f1']:.3f} |")
    lines += ["", f"## Diagnoses of the disease branch (against {dx['reference']})",
              f"accuracy {dx['accuracy']:.3f}, micro-F1 {dx['micro']['f1']:.3f}, macro-F1 {dx['macro']['f1']:.3f}", "",
              "| disease | support | report F1 | diagnosis F1 |", "|---|---|---|---|"]
    for name, row in ce["per_class"].items():
        lines.append(f"| {name} | {dx['per_class'][name]['support']} | {row['f1']:.3f} | {dx['per_class'][name]['f1']:.3f} |")
    if metrics.get("baselines"):
        lines += ["", "## Baselines (CE micro-F1)"]
        for name, row in metrics["baselines"].items():
            lines.append(f"- {name}: {row['ce_micro_f1']:.3f}")
    return "\n".join(lines) + "\n"


def evaluate_model(
    model, data, split: str = "test", output_dir="eval", batch_size: int = 8, max_new_tokens: int | None = None,
    labeler: str = "rule", modes=("coco_raw",), cache_dir=None, limit: int | None = None, device: str = "cpu",
    dtype=None, data_format: str = "auto", progress: bool = True, processor=None,
) -> dict:
    """Generate for `split` of `data` and write predictions.jsonl, metrics.json and metrics.md to `output_dir`."""
    from .data import load_ct_report_dataset

    if isinstance(model, (str, Path)):
        model, processor = load_model_and_processor(model, device=device, dtype=dtype)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_ct_report_dataset(data, format=data_format)
    if split not in dataset:
        raise ValueError(f"no {split!r} split in {data}; splits: {list(dataset)}")
    rows = dataset[split]
    if limit:
        rows = rows.select(range(min(limit, len(rows))))
    cache = None
    if cache_dir:
        from .data.cache import open_cache

        cache = open_cache(cache_dir, processor.image_processor)
    records = generate_predictions(model, processor, rows, out / "predictions.jsonl", batch_size, max_new_tokens,
                                   cache=cache, progress=progress)
    train_reports = dataset["train"]["report"] if "train" in dataset else None
    metrics = score_predictions(records, model.config.disease_names, labeler, modes, train_reports)
    metrics["dataset"] = {"name": str(data), "split": split}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "metrics.md").write_text(metrics_markdown(metrics), encoding="utf-8")
    return metrics


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("--data", required=True, help="dataset (manifest, CTRG-Chest or CT-RATE folder)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output-dir", default="eval")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--labeler", default="rule")
    parser.add_argument("--mode", action="append", choices=["coco_raw", "coco_ptb"], help="NLG protocol (repeatable)")
    parser.add_argument("--cache-dir", default=None, help="preprocessing cache (dia-llama preprocess)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    parser.add_argument("--format", default="auto", dest="data_format")


def run_evaluate(args) -> int:
    metrics = evaluate_model(
        args.model, args.data, args.split, args.output_dir, args.batch_size, args.max_new_tokens, args.labeler,
        tuple(args.mode or ["coco_raw"]), args.cache_dir, args.limit, args.device, args.dtype, args.data_format,
    )
    print(metrics_markdown(metrics))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dia_llama.evaluate", description=__doc__.splitlines()[0])
    add_evaluate_arguments(parser)
    return run_evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
