"""Fine-tune Dia-LLaMA with the 🤗 Trainer (LoRA via peft; launchable with accelerate / DeepSpeed). The entry point;
the library is `dia_llama.training`.

    dia-llama train tiny_cpu --data runs/synth --output-dir runs/tiny      # a shipped recipe + overrides
    accelerate launch -m dia_llama.train paper --data /data/CTRG-Chest-548K  # the paper's recipe
    python -m dia_llama.train my_recipe.yaml                               # a YAML/JSON file of the arguments
    dia-llama train --help                                                 # every argument
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from .training import (
    CTReportDataset,
    DataArguments,
    DiaLlamaDataCollator,
    DiaLlamaTrainer,
    ModelArguments,
    apply_lora,
    build_model,
    fill_missing_labels,
    parse_args,
    push_final_model,
    repeat_rare_cases,
    save_final_model,
    training_summary,
    use_lora,
)

logger = logging.getLogger(__name__)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> Path:
    """Load data and model, train, save. Returns the output folder."""
    from .data import dataset_disease_names, load_ct_report_dataset

    if not data_args.data:
        raise ValueError("--data is required (a manifest, CTRG-Chest or CT-RATE folder)")
    set_seed(training_args.seed)
    model, processor = build_model(model_args)
    dataset = load_ct_report_dataset(data_args.data, format=data_args.data_format, on_error=data_args.on_error)
    names = dataset_disease_names(dataset)
    if list(names) != list(model.config.disease_names):
        raise ValueError(f"the data's diseases {names} differ from the model's {model.config.disease_names}")
    if data_args.train_split not in dataset:
        raise ValueError(f"no {data_args.train_split!r} split in {data_args.data}; splits: {list(dataset)}")

    cache = None
    if data_args.cache_dir:
        from .data.cache import open_cache

        cache = open_cache(data_args.cache_dir, processor.image_processor)
    train_split = fill_missing_labels(dataset[data_args.train_split], data_args.label_reports, names)
    if data_args.max_train_samples:
        train_split = train_split.select(range(min(data_args.max_train_samples, len(train_split))))
    train_set = CTReportDataset(train_split, processor.image_processor, cache)
    if data_args.repeat_factor_threshold is not None:
        train_set = repeat_rare_cases(train_set, train_split["labels"], data_args.repeat_factor_threshold, names,
                                      seed=training_args.seed)
    has_eval_split = bool(data_args.eval_split) and data_args.eval_split in dataset
    from .evaluation.calibration import OBJECTIVES

    if model_args.calibration_objective not in OBJECTIVES:  # before training, not after it
        raise ValueError(f"--calibration_objective must be one of {OBJECTIVES}, "
                         f"got {model_args.calibration_objective!r}")
    if model_args.calibrate_thresholds and not has_eval_split:
        raise ValueError(f"--calibrate_thresholds needs the --eval_split {data_args.eval_split!r} in {data_args.data}; "
                         f"splits: {list(dataset)}")
    validation_set = None  # the loss-only evaluation and the threshold calibration share it
    if has_eval_split and (training_args.eval_strategy != "no" or model_args.calibrate_thresholds):
        eval_split = fill_missing_labels(dataset[data_args.eval_split], data_args.label_reports, names)
        validation_set = CTReportDataset(eval_split, processor.image_processor, cache)
    eval_set = validation_set if training_args.eval_strategy != "no" else None
    calibration_set = validation_set if model_args.calibrate_thresholds else None

    lora_used = use_lora(model_args, model)
    if lora_used:
        model = apply_lora(model, model_args)
    model.config.use_cache = False
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels", "disease_labels"]
    training_args.prediction_loss_only = True

    trainer = DiaLlamaTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DiaLlamaDataCollator(processor, data_args.max_report_tokens),
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    out = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        summary = training_summary(model_args, data_args, training_args, dataset, lora_used)
        repo_id = (getattr(trainer, "hub_model_id", None) or training_args.hub_model_id) if training_args.push_to_hub \
            else None
        save_final_model(trainer, trainer.model, processor, out, merge=model_args.merge_lora,
                         calibration_set=calibration_set, calibration_objective=model_args.calibration_objective,
                         training=summary, repo_id=repo_id)
        (out / "train_args.json").write_text(  # local record (paths included): never uploaded
            json.dumps({"model": vars(model_args), "data": vars(data_args)}, indent=2, default=str) + "\n"
        )
        if training_args.push_to_hub:  # the Trainer pushes checkpoints only; the final merged model goes here
            push_final_model(trainer, out, training_args)
    _finish_distributed()
    return out


def _finish_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_args, data_args, training_args = parse_args(argv)
    train(model_args, data_args, training_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
