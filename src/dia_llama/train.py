"""Fine-tune Dia-LLaMA with the 🤗 Trainer (LoRA via peft, accelerate / DeepSpeed launchable).

    dia-llama train --preset tiny --data runs/synth --output_dir runs/tiny --max_steps 200
    accelerate launch -m dia_llama.train configs/paper_recipe.yaml
    python -m dia_llama.train configs/paper_recipe.yaml   # a YAML/JSON file of the arguments below
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

logger = logging.getLogger(__name__)

# Everything except the LLM is trained fully, as in the paper (vision tower, resampler, projector, disease branch).
FULLY_TRAINED_MODULES = ["vision_tower", "resampler", "multi_modal_projector", "disease_branch", "prototype_projector"]


@dataclass
class ModelArguments:
    preset: str = field(default="tiny", metadata={"help": "tiny | paper (when no --model is given)"})
    model: str | None = field(default=None, metadata={"help": "an existing Dia-LLaMA checkpoint to fine-tune"})
    llm: str | None = field(default=None, metadata={"help": "local causal-LM checkpoint + tokenizer for the text part"})
    vision_weights: str | None = field(default=None, metadata={"help": "RadFM / Dia-LLaMA vision weights to import"})
    disease_set: str = field(default="chexpert14", metadata={"help": "chexpert14 | ctrate18 (new models)"})
    prompt_type: str | None = field(default=None, metadata={"help": "text | none | token | feature (ablation)"})
    disease_pooling: str | None = field(default=None, metadata={"help": "attention | mean (ablation)"})
    diagnosis_head: str | None = field(default=None, metadata={"help": "prototype | linear (ablation)"})
    disease_max_pooling: bool | None = field(
        default=None, metadata={"help": "add the patch-wise maximum to each disease's pooled feature (tiny: on)"})
    vision_config: str | None = field(
        default=None, metadata={"help": "JSON of vision-config fields over the preset's (new models), e.g. "
                                        "'{\"patch_embedding\": \"linear\", \"num_hidden_layers\": 3}'; with "
                                        "--vision_weights the patch embedding defaults to RadFM's linear one"}
    )
    dp_loss_weight: float | None = field(default=None, metadata={"help": "weight of L_DP (paper code: 4)"})
    lm_loss_weight: float | None = field(default=None, metadata={"help": "weight of L_LM (paper code: 1)"})
    lora: str = field(default="auto", metadata={"help": "auto (LoRA iff the LLM is pretrained) | on | off"})
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: str = field(default="q_proj,v_proj", metadata={"help": "comma-separated LLM projections"})
    merge_lora: bool = field(default=True, metadata={"help": "merge LoRA adapters into the saved checkpoint"})
    model_seed: int = field(default=0, metadata={"help": "seed of the random initialisation of new models"})
    calibrate_thresholds: bool = field(
        default=False, metadata={"help": "after training, choose the per-disease decision thresholds on --eval_split "
                                         "(stored in config.diagnosis_thresholds)"}
    )
    calibration_objective: str = field(
        default="micro", metadata={"help": "micro (max micro-F1 over all diseases, jointly) | per_class (max each "
                                           "disease's F1)"}
    )


@dataclass
class DataArguments:
    data: str = field(default=None, metadata={"help": "dataset: manifest file/folder, CTRG-Chest or CT-RATE root"})
    data_format: str = field(default="auto", metadata={"help": "auto | manifest | ctrg | ctrate"})
    cache_dir: str | None = field(default=None, metadata={"help": "preprocessing cache (dia-llama preprocess)"})
    train_split: str = "train"
    eval_split: str | None = field(default="validation", metadata={"help": "split for the loss-only evaluation"})
    max_report_tokens: int = 512
    max_train_samples: int | None = None
    on_error: str = field(default="raise", metadata={"help": "raise | skip bad cases (skips are counted)"})
    repeat_factor_threshold: float | None = field(
        default=None, metadata={"help": "repeat-factor sampling (LVIS) for long-tailed labels: a case whose rarest "
                                        "finding has frequency f < t is shown sqrt(t / f) times per epoch; e.g. 0.1"}
    )
    label_reports: str | None = field(
        default=None, metadata={"help": "fill missing disease labels with a report labeler (e.g. rule)"}
    )


# ---------------------------------------------------------------------------------------------------------------------
# Data


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
            from .data import load_example_volume

            volume = load_example_volume(row)  # applies CT-RATE metadata where a header is blank
            pixel_values = self.volume_processor(volume, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixel_values, "report": row["report"], "disease_labels": row["labels"], "id": row["id"]}


class DiaLlamaDataCollator:
    """Stacks volumes and builds right-padded prompts + labels with dynamic padding."""

    def __init__(self, processor, max_report_tokens: int = 512):
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
    """The training set with cases of rare findings repeated (`dia_llama.sampling`): a `Subset` of repeated indices."""
    from .sampling import case_repeat_factors, class_repeat_factors, repeated_indices

    indices = repeated_indices(case_repeat_factors(labels, threshold), seed=seed)
    factors = class_repeat_factors(labels, threshold)
    logger.info("repeat-factor sampling (t=%g): %d cases -> %d per epoch; class factors %s", threshold, len(dataset),
                len(indices), {n: round(float(f), 2) for n, f in zip(disease_names, factors) if f > 1})
    return torch.utils.data.Subset(dataset, indices)


def _fill_missing_labels(split, labeler_name: str | None, disease_names):
    """Label reports whose disease labels are unknown (-1) with a report labeler (the paper used CheXbert)."""
    unknown = [i for i, labels in enumerate(split["labels"]) if any(v < 0 for v in labels)]
    if not unknown:
        return split
    if labeler_name is None:
        raise ValueError(
            f"{len(unknown)} cases have no disease labels; pass --label_reports rule (or chexbert) to label the "
            "reports, or add labels to the data"
        )
    from .labelers import get_labeler

    labeler = get_labeler(labeler_name, disease_set=list(disease_names))
    present = labeler.label([split[i]["report"] for i in unknown]).present
    fill = dict(zip(unknown, present.tolist()))
    return split.map(lambda row, idx: {"labels": fill.get(idx, row["labels"])}, with_indices=True)


# ---------------------------------------------------------------------------------------------------------------------
# Trainer


class DiaLlamaTrainer(Trainer):
    """Logs `lm_loss` and `dp_loss` beside the total loss (means over the logging window)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._component_sums: dict[str, float] = {}
        self._component_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "id"}
        outputs = model(**inputs)
        if model.training:
            for name in ("lm_loss", "dp_loss"):
                value = getattr(outputs, name, None)
                if value is not None:
                    self._component_sums[name] = self._component_sums.get(name, 0.0) + float(value.detach())
            self._component_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs and self._component_count:
            for name, total in self._component_sums.items():
                logs[name] = round(total / self._component_count, 6)
            self._component_sums, self._component_count = {}, 0
        super().log(logs, start_time)


# ---------------------------------------------------------------------------------------------------------------------
# Model


def build_model(model_args: ModelArguments):
    """Model + processor from a checkpoint, a preset, or parts (LLM checkpoint, vision weights)."""
    overrides = {
        k: getattr(model_args, k)
        for k in ("prompt_type", "disease_pooling", "diagnosis_head", "disease_max_pooling", "dp_loss_weight",
                  "lm_loss_weight")
        if getattr(model_args, k) is not None
    }
    if model_args.model:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(model_args.model)
        processor = AutoProcessor.from_pretrained(model_args.model)
        if model_args.vision_config:
            raise ValueError("--vision_config builds a new model; it cannot change the architecture of --model")
        for key, value in overrides.items():
            if key in ("dp_loss_weight", "lm_loss_weight"):
                setattr(model.config, key, value)
            elif getattr(model.config, key) != value:
                raise ValueError(f"--{key} {value} differs from the checkpoint's {getattr(model.config, key)}")
    else:
        from .presets import build_model_and_processor

        vision_overrides = parse_vision_config(model_args.vision_config)
        if model_args.vision_weights:
            from .convert import RESEARCH_VISION_OVERRIDES

            vision_overrides = {**RESEARCH_VISION_OVERRIDES, **vision_overrides}  # their tower unless told otherwise
        model, processor = build_model_and_processor(
            model_args.preset, llm=model_args.llm, disease_names=model_args.disease_set, seed=model_args.model_seed,
            vision_overrides=vision_overrides, **overrides,
        )
    if model_args.vision_weights:
        from .convert import load_vision_weights

        report = load_vision_weights(model, model_args.vision_weights)
        logger.info("vision weights: %s", report)
    return model, processor


def parse_vision_config(text: str | None) -> dict:
    """`--vision_config` JSON → a dict of DiaLlamaVisionConfig fields (unknown names are an error)."""
    if not text:
        return {}
    from .configuration_dia_llama import DiaLlamaVisionConfig

    try:
        fields = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--vision_config must be a JSON object: {err}") from err
    if not isinstance(fields, dict):
        raise ValueError(f"--vision_config must be a JSON object, got {text!r}")
    unknown = sorted(k for k in fields if k not in DiaLlamaVisionConfig.__annotations__)
    if unknown:
        raise ValueError(f"--vision_config has unknown fields {unknown}")
    return fields


def use_lora(model_args: ModelArguments, model) -> bool:
    if model_args.lora not in ("auto", "on", "off"):
        raise ValueError(f"--lora must be auto, on or off, got {model_args.lora!r}")
    if model_args.lora != "auto":
        return model_args.lora == "on"
    return bool(model_args.llm) or bool(getattr(model.config, "language_model_source", None))


def apply_lora(model, model_args: ModelArguments):
    """Wrap the LLM projections with LoRA; train the vision side and the `<image_start>`/`<image_end>` embeddings."""
    from peft import LoraConfig, get_peft_model

    targets = "|".join(m.strip() for m in model_args.lora_target_modules.split(",") if m.strip())
    present = [n for n in FULLY_TRAINED_MODULES if getattr(model.model, n, None) is not None]
    token_ids = [i for i in (model.config.image_start_token_id, model.config.image_end_token_id) if i is not None]
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=rf".*language_model\..*\.({targets})$",
        modules_to_save=present,
        trainable_token_indices={"embed_tokens": token_ids} if token_ids else None,
        task_type=None,
    )
    peft_model = get_peft_model(model, config)
    if model.model.disease_state_embeddings is not None:
        model.model.disease_state_embeddings.requires_grad_(True)
    return peft_model


def save_final_model(trainer, model, processor, output_dir: str, merge: bool = True, calibration_set=None,
                     calibration_objective: str = "micro") -> Path:
    """Save model + processor with remote code, generation config and a filled model card; with `calibration_set`,
    first set the per-disease decision thresholds on it (report in threshold_calibration.json)."""
    from .presets import save_pretrained_with_remote_code

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    unwrapped = trainer.accelerator.unwrap_model(model) if trainer is not None else model
    if hasattr(unwrapped, "peft_config"):
        if not merge:
            unwrapped.save_pretrained(out / "adapter")
        unwrapped = unwrapped.merge_and_unload()
    if calibration_set is not None:
        from .calibration import calibrate_thresholds

        report = calibrate_thresholds(unwrapped, calibration_set, objective=calibration_objective)
        (out / "threshold_calibration.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        logger.info("decision thresholds set on %d validation cases: %s", report["cases"],
                    unwrapped.config.diagnosis_thresholds)
    unwrapped.config.use_cache = True
    save_pretrained_with_remote_code(unwrapped, processor, out)
    try:
        from .hub import render_model_card

        (out / "model_card.md").write_text(render_model_card(out), encoding="utf-8")
    except Exception as exc:  # the card is documentation: never lose a trained model over it
        logger.warning("could not render the model card: %s", exc)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: list[str] | None = None):
    """`--name value` pairs, or a YAML/JSON recipe file followed by optional `--name value` overrides."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = recipe_to_argv(argv[0]) + argv[1:]  # later values win
    return parser.parse_args_into_dataclasses(args=argv)


def recipe_to_argv(path) -> list[str]:
    """A YAML/JSON recipe as command-line arguments (None values are left at their defaults)."""
    import yaml

    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of argument names to values")
    argv = []
    for key, value in recipe.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        argv += [f"--{key}", *[str(v).lower() if isinstance(v, bool) else str(v) for v in values]]
    return argv


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
    train_split = _fill_missing_labels(dataset[data_args.train_split], data_args.label_reports, names)
    if data_args.max_train_samples:
        train_split = train_split.select(range(min(data_args.max_train_samples, len(train_split))))
    train_set = CTReportDataset(train_split, processor.image_processor, cache)
    if data_args.repeat_factor_threshold is not None:
        train_set = repeat_rare_cases(train_set, train_split["labels"], data_args.repeat_factor_threshold, names,
                                      seed=training_args.seed)
    has_eval_split = bool(data_args.eval_split) and data_args.eval_split in dataset
    from .calibration import OBJECTIVES

    if model_args.calibration_objective not in OBJECTIVES:  # before training, not after it
        raise ValueError(f"--calibration_objective must be one of {OBJECTIVES}, "
                         f"got {model_args.calibration_objective!r}")
    if model_args.calibrate_thresholds and not has_eval_split:
        raise ValueError(f"--calibrate_thresholds needs the --eval_split {data_args.eval_split!r} in {data_args.data}; "
                         f"splits: {list(dataset)}")
    validation_set = None  # the loss-only evaluation and the threshold calibration share it
    if has_eval_split and (training_args.eval_strategy != "no" or model_args.calibrate_thresholds):
        eval_split = _fill_missing_labels(dataset[data_args.eval_split], data_args.label_reports, names)
        validation_set = CTReportDataset(eval_split, processor.image_processor, cache)
    eval_set = validation_set if training_args.eval_strategy != "no" else None
    calibration_set = validation_set if model_args.calibrate_thresholds else None

    if use_lora(model_args, model):
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
        save_final_model(trainer, trainer.model, processor, out, merge=model_args.merge_lora,
                         calibration_set=calibration_set, calibration_objective=model_args.calibration_objective)
        (out / "train_args.json").write_text(
            json.dumps({"model": vars(model_args), "data": vars(data_args)}, indent=2, default=str) + "\n"
        )
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
