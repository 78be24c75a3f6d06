"""Saving the trained model: LoRA merged, decision thresholds calibrated, processor, code, a training summary and the
model card; with `--push_to_hub`, the final folder goes to the Hub in one commit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# TrainingArguments worth a line on the card (numbers and switches only: never paths)
_RECIPE_ARGS = ("max_steps", "num_train_epochs", "learning_rate", "lr_scheduler_type", "warmup_steps",
                "weight_decay", "per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm",
                "bf16", "fp16", "seed")


def training_summary(model_args, data_args, training_args, dataset, lora_used: bool) -> dict:
    """What the model card says about training (`training.json`): the data set's public name and Hub id (never its
    local path: `dataset_card_name`), the split sizes and the recipe."""
    from ..cards import dataset_card_name

    name = dataset_card_name(data_args.data, data_args.data_format)
    if getattr(data_args, "dataset_name", None):
        name = {"name": data_args.dataset_name, "id": name["id"]}
    recipe = {"preset": model_args.preset if not model_args.model else "fine-tuned checkpoint"}
    recipe.update({key: getattr(training_args, key) for key in _RECIPE_ARGS})
    recipe["world_size"] = training_args.world_size
    recipe["deepspeed"] = bool(training_args.deepspeed)
    recipe["lora"] = lora_used
    if lora_used:
        recipe.update(lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                      lora_target_modules=model_args.lora_target_modules, lora_merged=model_args.merge_lora)
    if model_args.calibrate_thresholds:
        recipe["thresholds"] = f"calibrated on the {data_args.eval_split} split ({model_args.calibration_objective})"
    return {"dataset": {**name, "split_counts": {split: len(rows) for split, rows in dataset.items()}},
            "recipe": recipe}


def save_final_model(trainer, model, processor, output_dir: str, merge: bool = True, calibration_set=None,
                     calibration_objective: str = "micro", training: dict | None = None,
                     repo_id: str | None = None) -> Path:
    """Save model + processor with remote code, generation config, `training.json` (from `training`) and a filled
    model card (`model_card.md`, for `repo_id` when it will be pushed); with `calibration_set`, first set the
    per-disease decision thresholds on it (report in threshold_calibration.json)."""
    from ..cards import TRAINING_FILE
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
    if training is not None:
        (out / TRAINING_FILE).write_text(json.dumps(training, indent=2, default=str) + "\n", encoding="utf-8")
    try:
        from ..cards import render_model_card

        (out / "model_card.md").write_text(render_model_card(out, repo_id=repo_id), encoding="utf-8")
    except Exception as exc:  # the card is documentation: never lose a trained model over it
        logger.warning("could not render the model card: %s", exc)
    return out


def push_final_model(trainer, output_dir, training_args) -> str:
    """`--push_to_hub`: the final folder (merged model, processor, code, `training.json`, the card as README.md) to
    `--hub_model_id` (default: the output folder's name) in ONE commit, after the Trainer's checkpoint pushes finish.
    Returns the commit URL."""
    from ..hub import push_to_hub

    pending = getattr(trainer, "push_in_progress", None)
    if pending is not None and not pending.is_done():
        logger.info("waiting for the checkpoint pushes to finish")
        pending.wait_until_done()
    repo_id = getattr(trainer, "hub_model_id", None) or training_args.hub_model_id or Path(output_dir).resolve().name
    url = push_to_hub(output_dir, repo_id, private=bool(training_args.hub_private_repo),
                      revision=training_args.hub_revision, token=training_args.hub_token,
                      commit_message="Dia-LLaMA: final model (LoRA merged), processor, code and model card")
    logger.info("pushed the final model to %s", url)
    return url


__all__ = ["push_final_model", "save_final_model", "training_summary"]
