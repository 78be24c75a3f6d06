"""Model presets (`tiny` for CPU, `paper` for the paper's dimensions) and building an untrained model folder."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlamaConfig, PreTrainedTokenizerFast

from .configuration_dia_llama import DiaLlamaConfig, DiaLlamaVisionConfig, resolve_disease_names
from .modeling_dia_llama import DiaLlamaForConditionalGeneration, DiaLlamaModel
from .processing_dia_llama import SPECIAL_TOKENS, DiaLlamaProcessor, DiaLlamaVolumeProcessor

PRESETS = ("tiny", "paper")

# Vision towers. `tiny`: 64×64×32 volumes, 8×8×4 patches → 512 tokens, width 96, embedded by a convolutional stem
# (Conv3d-BatchNorm-GELU 16 → 32 → 64 → 96) and one transformer layer. Measured on 4,000 synthetic cases (2,800
# train, 800 test; vision tower + disease branch only, AdamW 1e-3, batch 8, threshold 0.5): RadFM's linear embedding
# with 3 layers reached test micro-F1 0.59 (static DAA) / 0.62 (dynamic) after 800 steps and learnt none of the
# small findings; the stem (then with a redundant conv bias) and dynamic DAA reached 0.77 after 2,000 steps (support
# devices 0.94, pleural other 0.80, atelectasis 0.90). Converted RadFM / research-code checkpoints keep the linear one.
# Blob features: the stem did not learn lung nodules from the intensities in the demo's budget (lung-lesion AUC 0.50),
# so `tiny` adds per patch the maximum of a LoG filter of σ (1.2, 1.2, 0.8) voxels (nodules are 2-7 voxels wide).
# With them and the branch's max pooling (below), vision tower + branch on the demo's data, 2,400 steps: calibrated
# test micro-F1 0.768 → 0.869, lung lesion F1 0.70 → 0.87 (adding a per-patch air fraction: 0.867).
VISION_PRESETS = {
    "tiny": dict(
        volume_size=(64, 64, 32), num_channels=1, patch_size=(8, 8, 4), hidden_size=96, num_hidden_layers=1,
        patch_embedding="conv", conv_stem_channels=(16, 32, 64),
        blob_filter_sigmas=((1.2, 1.2, 0.8),),
        num_attention_heads=4, head_dim=24, intermediate_size=192, hidden_dropout_prob=0.0, perceiver_depth=1,
        num_latents=8, perceiver_heads=4, perceiver_head_dim=24, perceiver_ff_mult=2,
    ),
    "paper": dict(),  # DiaLlamaVisionConfig defaults are the paper's (RadFM ViT3D 768×12, perceiver 6×32)
}
TEXT_PRESETS = {
    "tiny": dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False,
    ),
    # LLaMA-2-7B shapes
    "paper": dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32000,
    ),
}
PROCESSOR_PRESETS = {
    "tiny": dict(intensity_mode="hu", hu_window=(-1000.0, 1000.0), resample="area"),
    "paper": dict(intensity_mode="minmax", resample="nearest"),
}
# Report length cap of the text processor. `paper`: the official pipeline truncates prompt + report at 2048 tokens
# and its prompt is 223 (+ EOS); CTRG-Chest reports reach 565 LLaMA tokens.
REPORT_TOKEN_PRESETS = {"tiny": 512, "paper": 2048 - 224}
# Disease-branch settings per preset (DiaLlamaConfig fields; explicit overrides win). `paper`: the paper's DAA.
# `tiny`: the static DAA's logits scaled ×30, plus the input-dependent `dynamic` term. Scale: with RadFM's linear
# embedding (700 train cases, 600 steps) test micro-F1 was 0.35 at scale 1 (the table never leaves mean pooling: max
# weight 0.002 = 1/512) vs 0.57-0.60 at scale 30. Dynamic: with the convolutional stem (above, 2,000 steps) static
# alone reached 0.72 and did not learn pleural other (0.13: plaques lie anywhere along the chest wall), dynamic 0.77.
# "no finding" is derived from the other 13 decisions (its definition): its own prototype scored F1 0.07 there.
# Max pooling: the dynamic attention starts near mean pooling, where one nodule patch is 1/512 of the pooled feature;
# the branch did not learn lung lesion even from ideal per-patch features without it (AUC 0.50), with it 0.84.
CONFIG_PRESETS = {
    "tiny": dict(disease_attention="dynamic", disease_attention_scale=30.0, derive_no_finding=True,
                 disease_max_pooling=True),
    "paper": dict(),
}
GENERATION_DEFAULTS = dict(max_new_tokens=300, do_sample=False, num_beams=1, repetition_penalty=1.0)


def report_corpus() -> list[str]:
    """The bundled report-style corpus used to train the tiny tokenizer."""
    text = resources.files("dia_llama").joinpath("resources/report_corpus.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def train_tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on report text and the prompt sentences (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sentences = list(corpus if corpus is not None else report_corpus())
    config = DiaLlamaConfig()
    for names in (resolve_disease_names("chexpert14"), resolve_disease_names("ctrate18")):
        for name in names:
            for word in (config.present_word, config.absent_word):
                sentences.append(config.prompt_template.format(disease=name, state=word))
    sentences.append(config.instruction)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"] + SPECIAL_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, additional_special_tokens=SPECIAL_TOKENS,
        model_max_length=2048,
    )


def load_llm_tokenizer(llm):
    """The tokenizer of a local LLM folder (`--llm`): its `tokenizer.json` / `tokenizer_config.json`, or a bare
    LLaMA-style SentencePiece `tokenizer.model`, which needs the sentencepiece package (`pip install "dia-llama[llama]"`).
    Raises ValueError naming the folder and the problem."""
    import importlib.util

    from transformers import LlamaTokenizer

    path = Path(llm)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; --llm takes a local folder with the language model's tokenizer")
    has_json, has_config = (path / "tokenizer.json").is_file(), (path / "tokenizer_config.json").is_file()
    has_sentencepiece = (path / "tokenizer.model").is_file()
    if not (has_json or has_config or has_sentencepiece):
        raise ValueError(f"{path}: no tokenizer (tokenizer.json, tokenizer_config.json or tokenizer.model) in the folder")
    if has_sentencepiece and not has_json and importlib.util.find_spec("sentencepiece") is None:
        raise ValueError(
            f"{path}: holds a SentencePiece tokenizer.model and no tokenizer.json; reading it needs the sentencepiece "
            "package: pip install 'dia-llama[llama]'"
        )
    try:
        if has_sentencepiece and not (has_json or has_config):
            tokenizer = LlamaTokenizer.from_pretrained(path)  # a bare LLaMA-style SentencePiece model
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, ImportError) as err:
        raise ValueError(f"{path}: could not load its tokenizer ({type(err).__name__}: {err})") from err
    if not tokenizer("The lungs are clear.", add_special_tokens=False)["input_ids"]:
        raise ValueError(f"{path}: its tokenizer turns text into no tokens; the tokenizer files are incomplete")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: its tokenizer has no end-of-sequence token (eos_token)")
    return tokenizer


def add_special_tokens(tokenizer) -> int:
    """Add Dia-LLaMA's placeholder tokens (and a pad token) to an existing tokenizer; returns how many were added."""
    added = tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return added


def build_config(preset: str, vocab_size: int, disease_names="chexpert14", text_config=None, vision_overrides=None,
                 **overrides) -> DiaLlamaConfig:
    """A DiaLlamaConfig for a preset; `text_config` replaces the preset LLM (e.g. a local LLaMA's config);
    `vision_overrides` (DiaLlamaVisionConfig fields) and `overrides` (DiaLlamaConfig fields) win over the preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    vision = DiaLlamaVisionConfig(**{**VISION_PRESETS[preset], **(vision_overrides or {})})
    if text_config is None:
        text_config = LlamaConfig(**{**TEXT_PRESETS[preset], "vocab_size": vocab_size})
    else:
        text_config.vocab_size = max(text_config.vocab_size, vocab_size)
    overrides = {**CONFIG_PRESETS[preset], **overrides}
    return DiaLlamaConfig(vision_config=vision, text_config=text_config, disease_names=disease_names, **overrides)


def build_processor(preset: str, tokenizer, config: DiaLlamaConfig) -> DiaLlamaProcessor:
    vc = config.vision_config
    volume_processor = DiaLlamaVolumeProcessor(
        volume_size=vc.volume_size, num_channels=vc.num_channels, **PROCESSOR_PRESETS[preset]
    )
    return DiaLlamaProcessor(
        image_processor=volume_processor,
        tokenizer=tokenizer,
        disease_names=config.disease_names,
        prompt_template=config.prompt_template,
        present_word=config.present_word,
        absent_word=config.absent_word,
        instruction=config.instruction,
        num_image_tokens=config.num_image_tokens,
        prompt_type=config.prompt_type,
        max_report_tokens=REPORT_TOKEN_PRESETS[preset],
    )


def build_model_and_processor(
    preset: str = "tiny", llm: str | Path | None = None, disease_names="chexpert14", seed: int = 0,
    vision_overrides: dict | None = None, **overrides
) -> tuple[DiaLlamaForConditionalGeneration, DiaLlamaProcessor]:
    """An untrained Dia-LLaMA and its processor. `llm`: a local causal-LM checkpoint (weights + tokenizer) to use as
    the language model instead of random weights. `vision_overrides` / `overrides`: see `build_config`."""
    torch.manual_seed(seed)
    if llm is not None:
        tokenizer = load_llm_tokenizer(llm)
        add_special_tokens(tokenizer)
        llm_config = AutoConfig.from_pretrained(llm)
        config = build_config(preset, len(tokenizer), disease_names, text_config=llm_config,
                              vision_overrides=vision_overrides, **overrides)
        config.language_model_source = str(llm)
    else:
        tokenizer = train_tiny_tokenizer()
        config = build_config(preset, len(tokenizer), disease_names, vision_overrides=vision_overrides, **overrides)
    processor = build_processor(preset, tokenizer, config)
    processor.prepare_model_config(config)
    config.get_text_config().pad_token_id = tokenizer.pad_token_id
    config.get_text_config().bos_token_id = tokenizer.bos_token_id
    config.get_text_config().eos_token_id = tokenizer.eos_token_id
    if llm is not None:
        model = DiaLlamaForConditionalGeneration.from_pretrained(
            llm, config=config, key_mapping={r"^model\.": "model.language_model.", r"^lm_head\.": "lm_head."},
            ignore_mismatched_sizes=True,
        )
        _resize_for_tokenizer(model, llm, len(tokenizer))
    else:
        model = DiaLlamaForConditionalGeneration(config)
    model.generation_config = default_generation_config(tokenizer)
    return model, processor


def _resize_for_tokenizer(model, llm, vocab_size: int) -> None:
    """Copy the LLM's original embedding rows into the (possibly larger) tables; added rows: the mean input embedding
    and a zero LM-head row (the model masks the added tokens' logits in any case)."""
    from safetensors.torch import load_file

    files = sorted(Path(llm).glob("*.safetensors"))
    state = {}
    for f in files:
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


def default_generation_config(tokenizer) -> GenerationConfig:
    """Explicit decoding settings (greedy, 300 new tokens) saved as generation_config.json."""
    return GenerationConfig(
        **GENERATION_DEFAULTS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def save_pretrained_with_remote_code(model, processor, out_dir: str | Path) -> Path:
    """Save model, processor, tokenizer and generation config with the remote-code files and a full `auto_map`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.register_for_auto_class()
    type(model).register_for_auto_class("AutoModelForImageTextToText")
    processor.register_for_auto_class("AutoProcessor")
    processor.image_processor.register_for_auto_class("AutoImageProcessor")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.setdefault("auto_map", {})
    config["auto_map"].update(
        {
            "AutoConfig": "configuration_dia_llama.DiaLlamaConfig",
            "AutoModel": f"modeling_dia_llama.{DiaLlamaModel.__name__}",
            "AutoModelForImageTextToText": "modeling_dia_llama.DiaLlamaForConditionalGeneration",
            "AutoProcessor": "processing_dia_llama.DiaLlamaProcessor",
            "AutoImageProcessor": "processing_dia_llama.DiaLlamaVolumeProcessor",
        }
    )
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    import shutil

    package = Path(__file__).parent
    for name in ("configuration_dia_llama.py", "modeling_dia_llama.py", "processing_dia_llama.py", "volume_io.py"):
        shutil.copyfile(package / name, out / name)
    return out


def init_model_dir(out_dir, preset: str = "tiny", llm=None, disease_names="chexpert14", seed: int = 0,
                   vision_overrides=None, **overrides) -> Path:
    """`dia-llama init`: write an untrained model + processor folder that `from_pretrained` loads."""
    model, processor = build_model_and_processor(preset, llm=llm, disease_names=disease_names, seed=seed,
                                                 vision_overrides=vision_overrides, **overrides)
    return save_pretrained_with_remote_code(model, processor, out_dir)
