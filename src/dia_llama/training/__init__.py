"""Training library behind `dia-llama train` / `python -m dia_llama.train`: arguments and recipes, data, the Trainer,
the model to train (LoRA), saving."""

from .arguments import DataArguments, ModelArguments, parse_args, recipe_path, recipe_to_argv, shipped_recipes
from .data import CTReportDataset, DiaLlamaDataCollator, fill_missing_labels, repeat_rare_cases
from .model_setup import FULLY_TRAINED_MODULES, apply_lora, build_model, parse_vision_config, use_lora
from .saving import push_final_model, save_final_model, training_summary
from .trainer import DiaLlamaTrainer

__all__ = [
    "CTReportDataset",
    "DataArguments",
    "DiaLlamaDataCollator",
    "DiaLlamaTrainer",
    "FULLY_TRAINED_MODULES",
    "ModelArguments",
    "apply_lora",
    "build_model",
    "fill_missing_labels",
    "parse_args",
    "parse_vision_config",
    "recipe_path",
    "recipe_to_argv",
    "repeat_rare_cases",
    "push_final_model",
    "save_final_model",
    "training_summary",
    "shipped_recipes",
    "use_lora",
]
