"""The training command's arguments (model, data; the Trainer's own are `TrainingArguments`) and recipes: YAML/JSON
files of those arguments, a path or the name of a recipe shipped in `dia_llama/recipes/`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
RECIPE_RELATIVE_PATHS = ("deepspeed",)  # recipe values read relative to the recipe's folder when not found as given


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
        default=None, metadata={"help": "add the patch-wise maximum to each disease's pooled feature (tiny: off)"})
    disease_attention: str | None = field(
        default=None, metadata={"help": "static (the paper's DAA) | dynamic (tiny: input-dependent query·key term)"})
    disease_attention_scale: float | None = field(
        default=None, metadata={"help": "multiplier on the static attention logits (paper: 1, tiny: 30)"})
    disease_attention_min_intensity: str | None = field(
        default=None, metadata={"help": "body-only disease attention: patches whose brightest voxel is above this "
                                        "value (tiny: 0.05); 'none': all patches (the paper)"})
    derive_no_finding: bool | None = field(
        default=None, metadata={"help": "derive \"no finding\" from the other classes' decisions (tiny: on)"})
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
    dataset_name: str | None = field(
        default=None, metadata={"help": "the data set's public name for the model card (default: CT-RATE / "
                                        "CTRG-Chest-548K / the synthetic benchmark by layout; never a local path)"}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "preprocessing cache (dia-llama preprocess)"})
    train_split: str = "train"
    eval_split: str | None = field(default="validation", metadata={"help": "split for the loss-only evaluation"})
    max_report_tokens: int | None = field(
        default=None, metadata={"help": "report length cap (default: the processor's)"}
    )
    max_train_samples: int | None = None
    on_error: str = field(default="raise", metadata={"help": "raise | skip bad cases (skips are counted)"})
    repeat_factor_threshold: float | None = field(
        default=None, metadata={"help": "repeat-factor sampling (LVIS) for long-tailed labels: a case whose rarest "
                                        "finding has frequency f < t is shown sqrt(t / f) times per epoch; e.g. 0.1"}
    )
    label_reports: str | None = field(
        default=None, metadata={"help": "fill missing disease labels with a report labeler (e.g. rule)"}
    )


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with the package (`dia-llama train NAME`)."""
    folder = resources.files("dia_llama.recipes")
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(RECIPE_SUFFIXES))


def recipe_path(recipe: str) -> Path:
    """A recipe file: `recipe` itself when it is a file, else the shipped recipe of that name."""
    path = Path(recipe)
    if path.is_file():
        return path
    for suffix in RECIPE_SUFFIXES:
        shipped = resources.files("dia_llama.recipes").joinpath(recipe + suffix)
        if shipped.is_file():
            return Path(str(shipped))
    raise ValueError(f"{recipe}: no such recipe file, and no shipped recipe of that name ({shipped_recipes()})")


def _underscored(arg: str) -> str:
    """`--output-dir=x` → `--output_dir=x`: HfArgumentParser knows the field names only (values are untouched)."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def _is_recipe(arg: str) -> bool:
    """A leading word that is not an option names a recipe (a file or a shipped recipe)."""
    return not arg.startswith("-")


def parse_args(argv: list[str] | None = None):
    """`--name value` pairs, or a recipe (a YAML/JSON file or a shipped recipe's name) followed by optional
    `--name value` overrides."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    argv = [_underscored(a) for a in (sys.argv[1:] if argv is None else argv)]
    if argv and _is_recipe(argv[0]):
        argv = recipe_to_argv(recipe_path(argv[0])) + argv[1:]  # later values win
    return parser.parse_args_into_dataclasses(args=argv)


def recipe_to_argv(path) -> list[str]:
    """A YAML/JSON recipe as command-line arguments (None values are left at their defaults)."""
    import yaml

    path = Path(path)
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of argument names to values")
    argv = []
    for key, value in recipe.items():
        if value is None:
            continue
        if key in RECIPE_RELATIVE_PATHS and not Path(str(value)).is_file() and (path.parent / str(value)).is_file():
            value = str(path.parent / str(value))  # a file shipped beside the recipe
        values = value if isinstance(value, list) else [value]
        argv += [f"--{key}", *[str(v).lower() if isinstance(v, bool) else str(v) for v in values]]
    return argv


__all__ = ["DataArguments", "ModelArguments", "parse_args", "recipe_path", "recipe_to_argv", "shipped_recipes"]
