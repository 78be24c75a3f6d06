"""Build a model, its config and its processor from a preset record (`tiny.json`, `paper.json` beside this file).

A record holds DiaLlamaVisionConfig fields (`vision`), LlamaConfig fields (`text`), DiaLlamaConfig fields (`model`),
DiaLlamaVolumeProcessor settings (`volume_processor`), DiaLlamaProcessor settings (`text_processor`) and the
decoding settings (`generation`). Why each setting is what it is: docs/presets.md.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoConfig, GenerationConfig, LlamaConfig

from ..configuration_dia_llama import DiaLlamaConfig, DiaLlamaVisionConfig
from ..image_processing_dia_llama import DiaLlamaVolumeProcessor
from ..modeling_dia_llama import DiaLlamaForConditionalGeneration
from ..processing_dia_llama import DiaLlamaProcessor
from .tokenizers import add_special_tokens, load_llm_tokenizer, train_tiny_tokenizer

PRESETS = ("tiny", "paper")


@cache
def _record(name: str) -> str:
    return resources.files("dia_llama.presets").joinpath(f"{name}.json").read_text(encoding="utf-8")


def load_preset(name: str) -> dict:
    """A preset's record (a fresh copy)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
    return json.loads(_record(name))


def build_config(preset: str, vocab_size: int, disease_names="chexpert14", text_config=None, vision_overrides=None,
                 **overrides) -> DiaLlamaConfig:
    """A DiaLlamaConfig for a preset; `text_config` replaces the preset LLM (e.g. a local LLaMA's config);
    `vision_overrides` (DiaLlamaVisionConfig fields) and `overrides` (DiaLlamaConfig fields) win over the preset."""
    record = load_preset(preset)
    vision = DiaLlamaVisionConfig(**{**record["vision"], **(vision_overrides or {})})
    if text_config is None:
        text_config = LlamaConfig(**{**record["text"], "vocab_size": vocab_size})
    else:
        text_config.vocab_size = max(text_config.vocab_size, vocab_size)
    return DiaLlamaConfig(vision_config=vision, text_config=text_config, disease_names=disease_names,
                          **{**record["model"], **overrides})


def preset_volume_processor(preset: str, volume_size=None, num_channels=None) -> DiaLlamaVolumeProcessor:
    """The volume processor of a preset's model (its volume size and channels unless given)."""
    record = load_preset(preset)
    vision = DiaLlamaVisionConfig(**record["vision"])
    return DiaLlamaVolumeProcessor(volume_size=volume_size or vision.volume_size,
                                   num_channels=num_channels or vision.num_channels, **record["volume_processor"])


def build_processor(preset: str, tokenizer, config: DiaLlamaConfig) -> DiaLlamaProcessor:
    vc = config.vision_config
    return DiaLlamaProcessor(
        image_processor=preset_volume_processor(preset, vc.volume_size, vc.num_channels),
        tokenizer=tokenizer,
        disease_names=config.disease_names,
        prompt_template=config.prompt_template,
        present_word=config.present_word,
        absent_word=config.absent_word,
        instruction=config.instruction,
        num_image_tokens=config.num_image_tokens,
        prompt_type=config.prompt_type,
        **load_preset(preset)["text_processor"],
    )


def processor_for_config(preset: str, tokenizer, config: DiaLlamaConfig) -> DiaLlamaProcessor:
    """The preset's processor for `tokenizer`, with its token ids and diagnostic prompt table written into `config`
    (and the tokenizer's pad / BOS / EOS ids into the text config)."""
    processor = build_processor(preset, tokenizer, config)
    processor.prepare_model_config(config)
    text_config = config.get_text_config()
    text_config.pad_token_id = tokenizer.pad_token_id
    text_config.bos_token_id = tokenizer.bos_token_id
    text_config.eos_token_id = tokenizer.eos_token_id
    return processor


def public_model_name(llm) -> str:
    """How a config names its language model: a local folder by its name (`Llama-2-7b-chat-hf`, never a local path:
    configs are published), a Hub id as given."""
    path = Path(str(llm)).expanduser()
    return path.name if path.exists() else str(llm)


def default_generation_config(tokenizer, preset: str = "tiny") -> GenerationConfig:
    """Explicit decoding settings (greedy, 300 new tokens) saved as generation_config.json."""
    return GenerationConfig(**load_preset(preset)["generation"], bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


# ---------------------------------------------------------------------------------------------------------------------
# Memory: refuse before building what cannot fit


def parameter_count(config: DiaLlamaConfig) -> int:
    """Parameters of `DiaLlamaForConditionalGeneration(config)`, counted on the meta device (no memory)."""
    with torch.device("meta"):
        model = DiaLlamaForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError):
        return None


def check_memory(needed_bytes: float, what: str) -> None:
    """Before allocating: a ValueError when `needed_bytes` exceed the available memory."""
    free = available_memory()
    if free is not None and needed_bytes > free:
        raise ValueError(f"{what} needs about {_size(needed_bytes)} of memory, but only {_size(free)} are free; "
                         "use a machine with more memory (or a smaller preset / a half-precision dtype)")


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _dtype_bytes(dtype) -> int:
    return torch.finfo(dtype).bits // 8 if isinstance(dtype, torch.dtype) else 4


# ---------------------------------------------------------------------------------------------------------------------
# Models


def build_model_and_processor(preset: str = "tiny", llm: str | Path | None = None, disease_names="chexpert14",
                              seed: int = 0, vision_overrides: dict | None = None, **overrides
                              ) -> tuple[DiaLlamaForConditionalGeneration, DiaLlamaProcessor]:
    """An untrained Dia-LLaMA and its processor. `llm`: a local causal-LM folder (weights + tokenizer) to use as the
    language model instead of random weights (required by presets that say so: `paper`). `vision_overrides` /
    `overrides`: see `build_config`."""
    record = load_preset(preset)
    if record.get("requires_llm") and llm is None:
        raise ValueError(
            f"the {preset!r} preset needs --llm PATH, a local LLaMA-2 folder (weights + tokenizer): without it the "
            "7B language model would be random weights with no tokenizer to match (about 27 GiB in float32)")
    torch.manual_seed(seed)
    if llm is not None:
        tokenizer = load_llm_tokenizer(llm)
        add_special_tokens(tokenizer)
        config = build_config(preset, len(tokenizer), disease_names, text_config=AutoConfig.from_pretrained(llm),
                              vision_overrides=vision_overrides, **overrides)
        config.language_model_source = public_model_name(llm)
    else:
        tokenizer = train_tiny_tokenizer()
        config = build_config(preset, len(tokenizer), disease_names, vision_overrides=vision_overrides, **overrides)
    processor = processor_for_config(preset, tokenizer, config)
    if llm is not None:
        dtype = getattr(config.get_text_config(), "dtype", None) or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        check_memory(parameter_count(config) * _dtype_bytes(dtype) * 1.1, f"the {preset} model with {llm}")
        model = DiaLlamaForConditionalGeneration.from_pretrained(
            llm, config=config, dtype="auto",
            key_mapping={r"^model\.": "model.language_model.", r"^lm_head\.": "lm_head."},
            ignore_mismatched_sizes=True,
        )
        _resize_for_tokenizer(model, llm, len(tokenizer))
    else:
        check_memory(parameter_count(config) * 4 * 1.1, f"the {preset} model")
        model = DiaLlamaForConditionalGeneration(config)
    model.generation_config = default_generation_config(tokenizer, preset)
    return model, processor


def _resize_for_tokenizer(model, llm, vocab_size: int) -> None:
    """Copy the LLM's original embedding rows into the (possibly larger) tables; added rows: the mean input embedding
    and a zero LM-head row (the model masks the added tokens' logits in any case)."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(llm).glob("*.safetensors")):
        state.update({k: v for k, v in load_file(f).items() if k in ("model.embed_tokens.weight", "lm_head.weight")})
    for key, module in (("model.embed_tokens.weight", model.get_input_embeddings()), ("lm_head.weight", model.lm_head)):
        if key not in state:
            continue
        old = state[key]
        with torch.no_grad():
            module.weight[: old.shape[0]] = old.to(module.weight.dtype)
            if vocab_size > old.shape[0]:  # added tokens: mean input embedding, zero LM-head rows (logits masked)
                added = old.float().mean(0) if key == "model.embed_tokens.weight" else torch.zeros(old.shape[1])
                module.weight[old.shape[0] :] = added.to(module.weight.dtype)


def save_model_folder(model, processor, out_dir: str | Path) -> Path:
    """`save_pretrained` of the model and the processor into one folder. Both write their code files (the remote-code
    set, through `register_for_auto_class` in `dia_llama/__init__.py`), so the folder loads with
    `trust_remote_code=True` where the package is not installed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def init_model_dir(out_dir, preset: str = "tiny", llm=None, disease_names="chexpert14", seed: int = 0,
                   vision_overrides=None, **overrides) -> Path:
    """`dia-llama init`: write an untrained model + processor folder that `from_pretrained` loads."""
    model, processor = build_model_and_processor(preset, llm=llm, disease_names=disease_names, seed=seed,
                                                 vision_overrides=vision_overrides, **overrides)
    return save_model_folder(model, processor, out_dir)


def estimated_bytes(config: DiaLlamaConfig, dtype=torch.float32) -> int:
    """Weights of a model of `config` in `dtype` (bytes)."""
    return int(math.ceil(parameter_count(config) * _dtype_bytes(dtype)))


__all__ = [
    "PRESETS",
    "available_memory",
    "build_config",
    "build_model_and_processor",
    "build_processor",
    "check_memory",
    "default_generation_config",
    "estimated_bytes",
    "init_model_dir",
    "load_preset",
    "parameter_count",
    "preset_volume_processor",
    "processor_for_config",
    "public_model_name",
    "save_model_folder",
]
