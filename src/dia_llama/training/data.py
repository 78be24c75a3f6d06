"""Training data: volumes (cached or read on the fly) with their reports and labels, batched into prompts."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


class CTReportDataset(torch.utils.data.Dataset):
    """Rows of a `datasets` split → {pixel_values (C, H, W, D), report, disease_labels (L,)}."""

    def __init__(self, split, volume_processor, cache=None):
        self.split, self.volume_processor, self.cache = split, volume_processor, cache

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        row = self.split[index]
        if self.cache is not None:
            pixel_values = self.cache.get(row["id"])
        else:
            from ..data import load_example_volume

            volume = load_example_volume(row)  # applies CT-RATE metadata where a header is blank
            pixel_values = self.volume_processor(volume, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixel_values, "report": row["report"], "disease_labels": row["labels"], "id": row["id"]}


class DiaLlamaDataCollator:
    """Stacks volumes and builds right-padded prompts + labels with dynamic padding."""

    def __init__(self, processor, max_report_tokens: int | None = None):
        self.processor, self.max_report_tokens = processor, max_report_tokens

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.processor(
            reports=[e["report"] for e in examples],
            disease_labels=[e["disease_labels"] for e in examples],
            max_report_tokens=self.max_report_tokens,
            padding_side="right",
        )
        batch = dict(batch)
        batch["pixel_values"] = torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])
        return batch


def repeat_rare_cases(dataset, labels, threshold: float, disease_names, seed: int = 0):
    """The training set with cases of rare findings repeated (`dia_llama.training.sampling`): a `Subset` of repeated
    indices."""
    from .sampling import case_repeat_factors, class_repeat_factors, repeated_indices

    indices = repeated_indices(case_repeat_factors(labels, threshold), seed=seed)
    factors = class_repeat_factors(labels, threshold)
    logger.info("repeat-factor sampling (t=%g): %d cases -> %d per epoch; class factors %s", threshold, len(dataset),
                len(indices), {n: round(float(f), 2) for n, f in zip(disease_names, factors) if f > 1})
    return torch.utils.data.Subset(dataset, indices)


def fill_missing_labels(split, labeler_name: str | None, disease_names):
    """Label reports whose disease labels are unknown (-1) with a report labeler (the paper used CheXbert)."""
    unknown = [i for i, labels in enumerate(split["labels"]) if any(v < 0 for v in labels)]
    if not unknown:
        return split
    if labeler_name is None:
        raise ValueError(
            f"{len(unknown)} cases have no disease labels; pass --label_reports rule (or chexbert) to label the "
            "reports, or add labels to the data"
        )
    from ..labelers import get_labeler

    labeler = get_labeler(labeler_name, disease_set=list(disease_names))
    present = labeler.label([split[i]["report"] for i in unknown]).present
    fill = dict(zip(unknown, present.tolist()))

    def filled(row, idx):
        labels = fill.get(idx, row["labels"])
        out = {"labels": labels}
        if "diseases" in row:  # the ClassLabel column of the diseases present follows the labels
            out["diseases"] = [i for i, v in enumerate(labels) if v == 1]
        return out

    return split.map(filled, with_indices=True)


__all__ = ["CTReportDataset", "DiaLlamaDataCollator", "fill_missing_labels", "repeat_rare_cases"]
