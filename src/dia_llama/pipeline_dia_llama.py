"""The `ct-report-generation` 🤗 pipeline: a scan in, its report and diagnoses out.

Hub remote-code file: depends only on torch and transformers (and the processor it is given). A model folder saved by
`save_pretrained` declares it in `config.json` (`custom_pipelines`), so `pipeline(model=REPO, trust_remote_code=True)`
builds it where the package is not installed.

Batching (`batch_size=n`): each scan is preprocessed on its own (its prompt ids (1, T_i) and pixel values
(1, C, H, W, D)), `collate` left-pads the prompts and stacks the volumes, `generate` runs once per batch and returns
per-case tensors that transformers splits back into one result per scan.
"""

from __future__ import annotations

import collections.abc

import torch
from transformers import Pipeline

PIPELINE_TASK = "ct-report-generation"


class CTReportGenerationPipeline(Pipeline):
    """`pipeline(model=REPO, trust_remote_code=True)(scan)` → {"report": str, "diagnoses": {disease: {...}}}.

    `scan`: a NIfTI / NRRD / MHA file, a DICOM series folder, a folder of slices, a `.npy` or an array; a list of
    scans gives a list of results (`batch_size=n` generates n at a time). `diagnoses`: optional disease names to
    write into the prompt instead of the model's own diagnoses. `max_new_tokens` and other `generate` keyword
    arguments (`generate_kwargs={...}`) pass through."""

    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, max_new_tokens=None, diagnoses=None, generate_kwargs=None, **kwargs):
        forward = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        preprocess = {"diagnoses": diagnoses} if diagnoses is not None else {}
        return preprocess, forward, {}

    def preprocess(self, scan, diagnoses=None) -> dict:
        inputs = self.processor(volumes=[scan], diagnoses=[diagnoses] if diagnoses is not None else None)
        # input_ids / attention_mask (1, T), pixel_values (1, C, H, W, D)
        return {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values")}

    def collate(self, items: list[dict]) -> dict:
        """Preprocessed scans → a batch: prompts left-padded to the longest (B, T), volumes stacked (B, C, H, W, D)."""
        rows = [item["input_ids"][0][item["attention_mask"][0].bool()].tolist() for item in items]
        batch = dict(self.processor.pad(rows, side="left"))
        batch["pixel_values"] = torch.cat([item["pixel_values"] for item in items])
        return batch

    def get_iterator(self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params,
                     postprocess_params):
        # transformers' own iterator with `collate` in place of its tokenizer / feature-extractor padding
        from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        loader = torch.utils.data.DataLoader(dataset, num_workers=num_workers, batch_size=batch_size,
                                             collate_fn=self.collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, inputs, **generate_kwargs) -> dict:
        out = self.model.generate(**inputs, return_dict_in_generate=True, **generate_kwargs)
        result = {"sequences": out.sequences}  # (B, T'); first key: transformers reads the batch size from it
        diagnosis = out.get("diagnoses")
        if diagnosis is not None:
            result["probabilities"] = diagnosis.probabilities.float()  # (B, L)
            result["present"] = diagnosis.present  # (B, L)
        return result

    def postprocess(self, outputs) -> dict:
        result = {"report": self.processor.batch_decode(outputs["sequences"])[0]}
        if "probabilities" in outputs:
            names = self.model.config.disease_names
            probabilities, present = outputs["probabilities"][0].tolist(), outputs["present"][0].tolist()
            result["diagnoses"] = {name: {"probability": p, "present": bool(x)}
                                   for name, p, x in zip(names, probabilities, present)}
        return result


__all__ = ["PIPELINE_TASK", "CTReportGenerationPipeline"]
