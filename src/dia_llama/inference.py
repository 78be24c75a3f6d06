"""Single-scan inference: `dia-llama generate`, and the `ct-report-generation` 🤗 pipeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

PIPELINE_TASK = "ct-report-generation"

# JSON schema of one `dia-llama generate --json` record (one per scan, one JSON object per line).
RECORD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dia-llama generate record",
    "type": "object",
    "required": ["scan", "report", "diagnoses", "model"],
    "additionalProperties": False,
    "properties": {
        "scan": {"type": "string", "description": "the scan as given on the command line"},
        "report": {"type": "string", "description": "the generated findings"},
        "model": {"type": "string"},
        "diagnoses": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["disease", "probability", "present"],
                "additionalProperties": False,
                "properties": {
                    "disease": {"type": "string"},
                    "probability": {"type": "number", "minimum": 0, "maximum": 1},
                    "present": {"type": "boolean"},
                },
            },
        },
    },
}


def load_for_inference(model: str, revision: str | None = None, device: str = "cpu", dtype: str | None = None,
                       device_map: str | None = None, trust_remote_code: bool = False):
    """Model + processor from a local folder or a Hub id, in the requested dtype / device (map)."""
    from transformers import AutoProcessor

    import dia_llama  # noqa: F401  (registers the Auto classes)

    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if dtype:
        kwargs["dtype"] = "auto" if dtype == "auto" else getattr(torch, dtype)
    if device_map:
        kwargs["device_map"] = device_map
    net = AutoModelForImageTextToText.from_pretrained(model, **kwargs).eval()
    if not device_map:
        net = net.to(device)
    processor = AutoProcessor.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    return net, processor


@torch.no_grad()
def generate_reports(model, processor, scans: list, max_new_tokens: int | None = None, batch_size: int = 4,
                     **generation_kwargs) -> list[dict]:
    """Reports and diagnoses for a list of scans (paths or arrays), batched."""
    device = next(model.parameters()).device
    records = []
    for start in range(0, len(scans), batch_size):
        chunk = scans[start : start + batch_size]
        inputs = {k: v.to(device) for k, v in processor(volumes=chunk).items()}
        if max_new_tokens is not None:
            generation_kwargs["max_new_tokens"] = max_new_tokens
        out = model.generate(**inputs, return_dict_in_generate=True, **generation_kwargs)
        for scan, text, dx in zip(chunk, processor.batch_decode(out.sequences), out["diagnoses"].to_records()):
            records.append({
                "scan": str(scan) if isinstance(scan, (str, Path)) else "<array>",
                "report": text,
                "diagnoses": [{"disease": n, "probability": round(v["probability"], 6), "present": v["present"]}
                              for n, v in dx.items()],
            })
    return records


def format_record(record: dict) -> str:
    lines = [f"== {record['scan']} ==", f"{'disease':<34}{'probability':>12}  decision"]
    for dx in record["diagnoses"]:
        lines.append(f"{dx['disease']:<34}{dx['probability']:>12.3f}  {'present' if dx['present'] else 'absent'}")
    lines += ["", "Report:", record["report"], ""]
    return "\n".join(lines)


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder or Hub id")
    parser.add_argument("scans", nargs="+", help="NIfTI / NRRD / MHA files, DICOM series folders, slice folders, .npy")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--json", action="store_true", help="one JSON record per scan (schema: RECORD_SCHEMA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--device-map", default=None, help='e.g. "auto" (needs accelerate)')
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--trust-remote-code", action="store_true")


def run_generate(args) -> int:
    model, processor = load_for_inference(args.model, args.revision, args.device, args.dtype, args.device_map,
                                          args.trust_remote_code)
    records = generate_reports(model, processor, args.scans, args.max_new_tokens, args.batch_size)
    for record in records:
        record["model"] = str(args.model)
        print(json.dumps(record) if args.json else format_record(record), flush=True)
    return 0


class CTReportGenerationPipeline(Pipeline):
    """`pipeline("ct-report-generation", model=...)(scan)` → {"report": str, "diagnoses": {disease: {...}}}."""

    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, max_new_tokens=None, diagnoses=None, **kwargs):
        forward = {}
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        preprocess = {"diagnoses": diagnoses} if diagnoses is not None else {}
        return preprocess, forward, {}

    def preprocess(self, scan, diagnoses=None):
        return dict(self.processor(volumes=[scan], diagnoses=[diagnoses] if diagnoses is not None else None))

    def _forward(self, inputs, **generation_kwargs):
        out = self.model.generate(**inputs, return_dict_in_generate=True, **generation_kwargs)
        diagnoses = out.get("diagnoses")
        return {"sequences": out.sequences, "diagnoses": diagnoses.to_records()[0] if diagnoses is not None else None}

    def postprocess(self, outputs):
        result = {"report": self.processor.batch_decode(outputs["sequences"])[0]}
        if outputs["diagnoses"] is not None:
            result["diagnoses"] = outputs["diagnoses"]
        return result


def register_pipeline() -> None:
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=CTReportGenerationPipeline, pt_model=AutoModelForImageTextToText,
            type="multimodal",
        )


register_pipeline()
