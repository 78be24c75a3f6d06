"""Model presets (`tiny` for CPU, `paper` for the paper's dimensions), one JSON record each, and building untrained
models, processors and tokenizers from them."""

from .building import (
    PRESETS,
    available_memory,
    build_config,
    build_model_and_processor,
    build_processor,
    check_memory,
    default_generation_config,
    estimated_bytes,
    init_model_dir,
    load_preset,
    parameter_count,
    preset_volume_processor,
    processor_for_config,
    public_model_name,
    save_model_folder,
)
from .tokenizers import add_special_tokens, load_llm_tokenizer, report_corpus, train_tiny_tokenizer

__all__ = [
    "PRESETS",
    "add_special_tokens",
    "available_memory",
    "build_config",
    "build_model_and_processor",
    "build_processor",
    "check_memory",
    "default_generation_config",
    "estimated_bytes",
    "init_model_dir",
    "load_llm_tokenizer",
    "load_preset",
    "parameter_count",
    "preset_volume_processor",
    "processor_for_config",
    "public_model_name",
    "report_corpus",
    "save_model_folder",
    "train_tiny_tokenizer",
]
