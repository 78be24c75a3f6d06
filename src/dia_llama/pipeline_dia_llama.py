"""The `ct-report-generation` 🤗 pipeline: a scan in, its report and diagnoses out.

Hub remote-code file: depends only on transformers (and the processor it is given).
"""

from __future__ import annotations

from transformers import Pipeline

PIPELINE_TASK = "ct-report-generation"


class CTReportGenerationPipeline(Pipeline):
    """`pipeline("ct-report-generation", model=...)(scan)` → {"report": str, "diagnoses": {disease: {...}}}.

    `scan`: a NIfTI / NRRD / MHA file, a DICOM series folder, a folder of slices, a `.npy` or an array.
    `diagnoses`: optional disease names to write into the prompt instead of the model's own diagnoses."""

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


__all__ = ["PIPELINE_TASK", "CTReportGenerationPipeline"]
