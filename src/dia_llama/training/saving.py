"""Saving the trained model: LoRA merged, decision thresholds calibrated, processor, code and model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def save_final_model(trainer, model, processor, output_dir: str, merge: bool = True, calibration_set=None,
                     calibration_objective: str = "micro") -> Path:
    """Save model + processor with remote code, generation config and a filled model card; with `calibration_set`,
    first set the per-disease decision thresholds on it (report in threshold_calibration.json)."""
    from ..presets import save_model_folder

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    unwrapped = trainer.accelerator.unwrap_model(model) if trainer is not None else model
    if hasattr(unwrapped, "peft_config"):
        if not merge:
            unwrapped.save_pretrained(out / "adapter")
        unwrapped = unwrapped.merge_and_unload()
    if calibration_set is not None:
        from ..evaluation.calibration import calibrate_thresholds

        report = calibrate_thresholds(unwrapped, calibration_set, objective=calibration_objective)
        (out / "threshold_calibration.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        logger.info("decision thresholds set on %d validation cases: %s", report["cases"],
                    unwrapped.config.diagnosis_thresholds)
    unwrapped.config.use_cache = True
    save_model_folder(unwrapped, processor, out)
    try:
        from ..hub import render_model_card

        (out / "model_card.md").write_text(render_model_card(out), encoding="utf-8")
    except Exception as exc:  # the card is documentation: never lose a trained model over it
        logger.warning("could not render the model card: %s", exc)
    return out


__all__ = ["save_final_model"]
