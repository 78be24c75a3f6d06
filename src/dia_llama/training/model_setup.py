"""The model to train: a checkpoint, a preset or parts (an LLM folder, vision weights), and LoRA on its LLM."""

from __future__ import annotations

import json
import logging

from .arguments import ModelArguments

logger = logging.getLogger(__name__)

# Everything except the LLM is trained fully, as in the paper (vision tower, resampler, projector, disease branch).
FULLY_TRAINED_MODULES = ["vision_tower", "resampler", "multi_modal_projector", "disease_branch", "prototype_projector"]


def build_model(model_args: ModelArguments):
    """Model + processor from a checkpoint, a preset, or parts (LLM checkpoint, vision weights)."""
    overrides = {
        k: getattr(model_args, k)
        for k in ("prompt_type", "disease_pooling", "diagnosis_head", "disease_max_pooling", "disease_attention",
                  "disease_attention_scale", "derive_no_finding", "dp_loss_weight", "lm_loss_weight")
        if getattr(model_args, k) is not None
    }
    if model_args.disease_attention_min_intensity is not None:
        value = model_args.disease_attention_min_intensity.strip()
        try:
            overrides["disease_attention_min_intensity"] = None if value.lower() == "none" else float(value)
        except ValueError:
            raise ValueError(f"--disease_attention_min_intensity takes a number or 'none', got {value!r}") from None
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
        from ..presets import build_model_and_processor

        vision_overrides = parse_vision_config(model_args.vision_config)
        if model_args.vision_weights:
            from ..convert import RESEARCH_VISION_OVERRIDES

            vision_overrides = {**RESEARCH_VISION_OVERRIDES, **vision_overrides}  # their tower unless told otherwise
        model, processor = build_model_and_processor(
            model_args.preset, llm=model_args.llm, disease_names=model_args.disease_set, seed=model_args.model_seed,
            vision_overrides=vision_overrides, **overrides,
        )
    if model_args.vision_weights:
        from ..convert import load_vision_weights

        report = load_vision_weights(model, model_args.vision_weights)
        logger.info("vision weights: %s", report)
    return model, processor


def parse_vision_config(text: str | None) -> dict:
    """`--vision_config` JSON → a dict of DiaLlamaVisionConfig fields (unknown names are an error)."""
    if not text:
        return {}
    from ..configuration_dia_llama import DiaLlamaVisionConfig

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


__all__ = ["FULLY_TRAINED_MODULES", "apply_lora", "build_model", "parse_vision_config", "use_lora"]
