"""Import the paper authors' weights (and RadFM's vision weights) into a Dia-LLaMA checkpoint.

    dia-llama convert-official pytorch_model.bin runs/dia-llama-official --llm /models/Llama-2-7b-chat-hf

The official `pytorch_model.bin` (zhi-xuan-chen/Dia-LLaMA) holds the research model's full state dict:
`embedding_layer.*` (RadFM's ViT3D, perceiver, `fc` projector, `figure_token_weight` for `<image>`/`</image>`, the
disease branch `prototype` / `proj` / `pos_sample_memory` / `neg_sample_memory` / `temp`, and `weight`: the LLaMA input
embeddings it embeds the prompt with) and `lang_model.*` (LLaMA-2 wrapped by peft: `base_model.model.` prefix, LoRA
`lora_A/lora_B` on q_proj/v_proj, base weights under `.base_layer.` or not, rotary `inv_freq` buffers). It ships no
tokenizer: the LLaMA-2 tokenizer comes from `--llm`.

Files are read with `torch.load(weights_only=True)` (never unpickling code) or safetensors.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .configuration_dia_llama import DEFAULT_INSTRUCTION, DEFAULT_PROMPT_TEMPLATE

TOKENIZER_ERROR = (
    "the official checkpoint does not ship a tokenizer; pass --llm PATH to a LLaMA-2 folder with its tokenizer"
)

# ---------------------------------------------------------------------------------------------------------------------
# Key layout

# The vision tower of RadFM and the research code: patches embedded linearly, no blob features (vision-config fields
# over a preset's, for models that load their weights).
RESEARCH_VISION_OVERRIDES = {"patch_embedding": "linear", "blob_filter_sigmas": []}

_E = r"^embedding_layer\."
_V = _E + r"vision_encoder\."
_P = _E + r"perceiver\."
_L = r"^lang_model\.(?:base_model\.model\.)?"  # plain LLaMA or peft-wrapped

# Row targets: "<key>#vocab" fills the first rows of a (possibly larger) table; "#image_tokens" writes the rows of
# <image_start> / <image_end>.
_VOCAB, _IMAGE_ROWS = "vocab", "image_tokens"

_KEY_MAP = [
    (_V + r"to_patch_embedding\.1\.(weight|bias)$", r"model.vision_tower.patch_embed.norm_in.\1"),
    (_V + r"to_patch_embedding\.2\.(weight|bias)$", r"model.vision_tower.patch_embed.proj.\1"),
    (_V + r"to_patch_embedding\.3\.(weight|bias)$", r"model.vision_tower.patch_embed.norm_out.\1"),
    (_V + r"pos_embedding\.(row|col|dep)_embed\.weight$", r"model.vision_tower.pos_embed.\1_embed.weight"),
    (_V + r"transformer\.layers\.(\d+)\.0\.norm\.(weight|bias)$", r"model.vision_tower.layers.\1.attn_norm.\2"),
    (_V + r"transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.weight$", r"model.vision_tower.layers.\1.attn.qkv.weight"),
    (_V + r"transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.(weight|bias)$",
     r"model.vision_tower.layers.\1.attn.out_proj.\2"),
    (_V + r"transformer\.layers\.(\d+)\.1\.norm\.(weight|bias)$", r"model.vision_tower.layers.\1.mlp_norm.\2"),
    (_V + r"transformer\.layers\.(\d+)\.1\.fn\.net\.0\.(weight|bias)$", r"model.vision_tower.layers.\1.mlp.fc1.\2"),
    (_V + r"transformer\.layers\.(\d+)\.1\.fn\.net\.3\.(weight|bias)$", r"model.vision_tower.layers.\1.mlp.fc2.\2"),
    (_P + r"latents$", "model.resampler.latents"),
    (_P + r"layers\.(\d+)\.0\.(norm_media|norm_latents)\.(weight|bias)$", r"model.resampler.layers.\1.attn.\2.\3"),
    (_P + r"layers\.(\d+)\.0\.(to_q|to_kv|to_out)\.weight$", r"model.resampler.layers.\1.attn.\2.weight"),
    (_P + r"layers\.(\d+)\.1\.0\.(weight|bias)$", r"model.resampler.layers.\1.ff_norm.\2"),
    (_P + r"layers\.(\d+)\.1\.1\.weight$", r"model.resampler.layers.\1.ff_in.weight"),
    (_P + r"layers\.(\d+)\.1\.3\.weight$", r"model.resampler.layers.\1.ff_out.weight"),
    (_P + r"norm\.(weight|bias)$", r"model.resampler.norm.\1"),
    (_E + r"fc\.(weight|bias)$", r"model.multi_modal_projector.\1"),
    (_E + r"prototype$", "model.disease_branch.attention_weights"),
    (_E + r"proj\.(weight|bias)$", r"model.disease_branch.proj.\1"),
    (_E + r"pos_sample_memory$", "model.disease_branch.abnormal_prototypes"),
    (_E + r"neg_sample_memory$", "model.disease_branch.normal_prototypes"),
    (_E + r"temp$", "model.disease_branch.log_temperature"),
    (_E + r"figure_token_weight$", f"model.language_model.embed_tokens.weight#{_IMAGE_ROWS}"),
    (_E + r"weight$", f"model.language_model.embed_tokens.weight#{_VOCAB}"),
    (_L + r"model\.embed_tokens\.weight$", f"model.language_model.embed_tokens.weight#{_VOCAB}"),
    (_L + r"lm_head\.weight$", f"lm_head.weight#{_VOCAB}"),
    (_L + r"model\.(.+?)(?:\.base_layer)?\.(weight|bias)$", r"model.language_model.\1.\2"),
]

# Obsolete keys: rotary buffers (recomputed), the unused per-disease classifier, RadFM's grounding / segmentation parts.
_DROP_PATTERNS = [
    re.compile(p)
    for p in (
        r"inv_freq$",
        r"^(?:embedding_layer\.)?group_cls_head\.",
        r"^(?:embedding_layer\.)?bert_model\.",
        r"^(?:embedding_layer\.)?bert_projection_fc\.",
        r"^(?:embedding_layer\.)?output_upscaling\.",
        r"^(?:embedding_layer\.)?transformer_decoder",
        r"^(?:embedding_layer\.)?cls_head\.",
    )
]
_LORA = re.compile(_L + r"(.+?)\.lora_([AB])(?:\.([^.]+))?\.weight$")

# Attribute names of the research code's `MyEmbedding` (for state dicts saved without the `embedding_layer.` prefix).
_EMBEDDING_LAYER_NAMES = {
    "vision_encoder", "perceiver", "fc", "prototype", "proj", "pos_sample_memory", "neg_sample_memory", "temp",
    "figure_token_weight", "group_cls_head", "cls_head", "bert_model", "bert_projection_fc", "output_upscaling",
    "transformer_decoder", "transformer_decoder_mlp",
}
_BARE_VIT_NAMES = {"to_patch_embedding", "pos_embedding", "transformer"}  # RadFM_vit3d.pth: the ViT's own state dict

_COMPILED_MAP: list[tuple[re.Pattern, str]] | None = None


def official_key_map() -> list[tuple[re.Pattern, str]]:
    """(official key regex, our key template) pairs, first match wins. A template ending in `#vocab` fills the first
    rows of a larger vocabulary table; `#image_tokens` writes the `<image_start>`/`<image_end>` rows."""
    global _COMPILED_MAP
    if _COMPILED_MAP is None:
        _COMPILED_MAP = [(re.compile(p), t) for p, t in _KEY_MAP]
    return list(_COMPILED_MAP)


def _map_key(key: str) -> str | None:
    for pattern, template in official_key_map():
        match = pattern.match(key)
        if match:
            return match.expand(template)
    return None


def _is_dropped(key: str) -> bool:
    return any(p.search(key) for p in _DROP_PATTERNS)


# ---------------------------------------------------------------------------------------------------------------------
# Report


@dataclass
class ConversionReport:
    """What happened to every key. `mapped`: (source key, our key) pairs; `dropped`: obsolete keys; `unmapped`: keys not
    understood (see `notes`); `shape_mismatches`: (source, ours, source shape, expected shape); `missing`: our keys left
    unfilled; `skipped`: understood keys outside the requested scope (vision-only imports)."""

    mapped: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    unmapped: list = field(default_factory=list)
    shape_mismatches: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    lora_merged: list = field(default_factory=list)
    lora_unmerged: list = field(default_factory=list)
    filled_from_llm: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    source: str | None = None

    @property
    def ok(self) -> bool:
        """No unknown keys and no shape mismatches."""
        return not self.unmapped and not self.shape_mismatches

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape_mismatches"] = [[s, t, list(a), list(b)] for s, t, a, b in self.shape_mismatches]
        return out

    def summary(self, limit: int = 5) -> str:
        def show(items):
            items = [i if isinstance(i, str) else " → ".join(map(str, i)) for i in items]
            more = f" … (+{len(items) - limit})" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = [f"mapped {len(self.mapped)}, dropped {len(self.dropped)}, unmapped {len(self.unmapped)}, "
                 f"shape mismatches {len(self.shape_mismatches)}, missing {len(self.missing)}, "
                 f"LoRA merged {len(self.lora_merged)}"]
        for name in ("unmapped", "shape_mismatches", "missing", "lora_unmerged", "skipped"):
            items = getattr(self, name)
            if items:
                lines.append(f"  {name}: {show(items)}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    __str__ = summary


# ---------------------------------------------------------------------------------------------------------------------
# Reading files


def load_checkpoint_file(path) -> dict[str, torch.Tensor]:
    """A flat {key: tensor} dict from a `.bin`/`.pt`/`.pth` file (``torch.load(weights_only=True)``), a `.safetensors`
    file, or a folder with `pytorch_model*.bin` / `*.safetensors` shards (and their index)."""
    path = Path(path)
    if path.is_dir():
        files = _weight_files(path)
        if not files:
            hint = ""
            if (path / "latest").exists() or any(path.glob("global_step*")):
                hint = " It looks like a DeepSpeed checkpoint: consolidate it first with its zero_to_fp32.py."
            raise ValueError(f"{path}: no pytorch_model*.bin or *.safetensors weights found.{hint}")
        state = {}
        for f in files:
            state.update(load_checkpoint_file(f))
        return state
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if suffix in (".bin", ".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path}: refused to load: it holds pickled Python objects besides tensors. Checkpoints are read with "
                f"torch.load(weights_only=True), which never runs code stored in a file. ({str(err).splitlines()[0]})"
            ) from err
        return _flatten_state(obj, str(path))
    raise ValueError(
        f"{path}: unsupported checkpoint format {suffix or '(no suffix)'!r}; expected a .bin/.pt/.pth file, a "
        ".safetensors file, or a folder of pytorch_model*.bin shards with their index"
    )


def _weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).exists():
            return [folder / single]
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def _flatten_state(obj, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Unwrap {"state_dict"|"model_state_dict"|"model"|"module": …}, flatten nested dicts with dots, drop non-tensor
    leaves and a DDP `module.` prefix."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict, got {type(obj).__name__}")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix, node):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if isinstance(v, torch.Tensor):
                flat[name] = v
            elif isinstance(v, Mapping):
                walk(name + ".", v)

    walk("", obj)
    if not flat:
        raise ValueError(f"{source}: holds no tensors")
    if all(k.startswith("module.") for k in flat):
        flat = {k[len("module."):]: v for k, v in flat.items()}
    return flat


def _official_names(state: Mapping) -> dict:
    """Restore the `embedding_layer.` prefix on partial files (RadFM_vit3d.pth, RadFM_perceiver_fc.pth, …)."""
    out = {}
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head in _EMBEDDING_LAYER_NAMES:
            key = "embedding_layer." + key
        elif head in _BARE_VIT_NAMES:
            key = "embedding_layer.vision_encoder." + key
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Tensor transforms


def _expected_shapes(config) -> dict[str, tuple]:
    """Our state-dict keys and shapes for `config` (built on the meta device: no memory)."""
    from .modeling_dia_llama import DiaLlamaForConditionalGeneration

    with torch.device("meta"):
        model = DiaLlamaForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _transform(target: str, value: torch.Tensor, bounds, report: ConversionReport, source: str) -> torch.Tensor:
    """Official tensor → our parametrisation (prototype memories squeezed, τ → log τ)."""
    if target.endswith(("abnormal_prototypes", "normal_prototypes")) and value.ndim == 3 and value.shape[1] == 1:
        return value[:, 0]
    if target.endswith("log_temperature") and value.numel() == 1:
        tau = float(value.float().reshape(()))
        low, high = bounds
        clamped = min(max(tau, low), high) if math.isfinite(tau) and tau > 0 else low
        if clamped != tau:
            report.warnings.append(
                f"{source}: temperature {tau:g} lies outside temperature_bounds [{low:g}, {high:g}]; "
                f"clamped to {clamped:g}"
            )
        # float32 whatever the checkpoint's dtype: log τ rounded to bfloat16 would move τ by up to 0.4 %
        return torch.tensor([math.log(clamped)], dtype=torch.float32)
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Official state dict → ours


def convert_official_state_dict(
    state: Mapping, config, *, merge_lora: bool = True, lora_alpha: float = 32, lora_r: int = 8
) -> tuple[dict, ConversionReport]:
    """Map an official (or RadFM) state dict onto the keys of `DiaLlamaForConditionalGeneration(config)`.

    LoRA pairs are merged into their base weights, ``W + (lora_alpha / r)·B·A`` with r the adapter's rank (`lora_r` is
    checked against it), or listed in `lora_unmerged` when ``merge_lora=False``. Nothing is silently ignored: every key
    ends in `mapped`, `dropped`, `unmapped`, `shape_mismatches` or `lora_*` of the report.
    """
    from .configuration_dia_llama import CHEXPERT_14

    expected = _expected_shapes(config)
    report = ConversionReport(source="official")
    bounds = tuple(config.temperature_bounds)
    out: dict[str, torch.Tensor] = {}
    vocab_sources: dict[str, list] = {}  # our table → [(source key, tensor)]
    row_writes: list = []  # (our table, source key, tensor)
    lora: dict = {}  # (base key, adapter) → {"A": (key, tensor), "B": …}

    for key, value in _official_names(state).items():
        if not isinstance(value, torch.Tensor):
            report.unmapped.append(key)
            report.notes[key] = f"not a tensor ({type(value).__name__})"
            continue
        if _is_dropped(key):
            report.dropped.append(key)
            continue
        match = _LORA.match(key)
        if match:
            inner, which, adapter = match.groups()
            if inner == "lm_head":
                base = "lm_head.weight"
            else:
                base = "model.language_model." + inner.removeprefix("model.") + ".weight"
            lora.setdefault((base, adapter), {})[which] = (key, value)
            continue
        target = _map_key(key)
        if target is None:
            report.unmapped.append(key)
            report.notes[key] = "no rule maps this key"
            continue
        base, _, rows = target.partition("#")
        if base not in expected:
            report.unmapped.append(key)
            report.notes[key] = f"maps to {base}, which this model's configuration does not have"
            continue
        if rows == _VOCAB:
            vocab_sources.setdefault(base, []).append((key, value))
            continue
        if rows == _IMAGE_ROWS:
            row_writes.append((base, key, value))
            continue
        value = _transform(base, value, bounds, report, key)
        if tuple(value.shape) != expected[base]:
            report.shape_mismatches.append((key, base, tuple(value.shape), expected[base]))
            continue
        out[base] = value
        report.mapped.append((key, base))

    # Vocabulary tables: the official embeds its prompt with `embedding_layer.weight` (the same tensor as LLaMA's).
    for base, sources in vocab_sources.items():
        sources.sort(key=lambda kv: not kv[0].startswith("embedding_layer."))
        key, value = sources[0]
        for other, other_value in sources[1:]:
            report.dropped.append(other)
            same = other_value.shape == value.shape and torch.equal(other_value, value)
            report.notes[other] = f"superseded by {key}" + ("" if same else " (they differ; the latter is used)")
            if not same:
                report.warnings.append(
                    f"{other} differs from {key}; using {key}, the table the official model embeds with"
                )
        rows, width = expected[base]
        if value.ndim != 2 or value.shape[1] != width or value.shape[0] > rows:
            report.shape_mismatches.append((key, base, tuple(value.shape), expected[base]))
            continue
        table = torch.empty((rows, width), dtype=value.dtype)
        table[: value.shape[0]] = value
        if rows > value.shape[0]:
            # Dia-LLaMA's added tokens (placeholders, padding), which the official vocabulary lacks
            # input rows: the mean embedding (HF's mean resizing; placeholders are overwritten by features anyway);
            # LM-head rows: zero, and the model masks their logits, so they take no probability mass
            added = value.float().mean(0) if base.endswith("embed_tokens.weight") else torch.zeros(width)
            table[value.shape[0]:] = added.to(value.dtype)
        out[base] = table
        report.mapped.append((key, f"{base}[:{value.shape[0]}]"))

    for base, key, value in row_writes:
        ids = [config.image_start_token_id, config.image_end_token_id]
        if None in ids:
            raise ValueError("config.image_start_token_id / image_end_token_id are unset; call "
                             "processor.prepare_model_config(config) first")
        if base not in out:
            report.unmapped.append(key)
            report.notes[key] = f"no embedding table ({base}) to write the <image_start>/<image_end> rows into"
            continue
        if tuple(value.shape) != (2, expected[base][1]):
            expected_rows = (2, expected[base][1])
            report.shape_mismatches.append((key, f"{base}[{ids[0]},{ids[1]}]", tuple(value.shape), expected_rows))
            continue
        out[base][ids] = value.to(out[base].dtype)
        report.mapped.append((key, f"{base}[{ids[0]},{ids[1]}]"))

    _apply_lora(lora, out, expected, report, merge_lora, lora_alpha, lora_r)

    report.missing = sorted(set(expected) - set(out))
    if list(config.disease_names) != CHEXPERT_14:
        report.warnings.append("the official model diagnoses the 14 CheXpert observations in CheXbert order; this "
                               "config's disease_names differ, so its disease branch rows will be misassigned")
    return out, report


def _apply_lora(lora, out, expected, report, merge_lora, lora_alpha, lora_r) -> None:
    adapters = {adapter for _, adapter in lora}
    if len(adapters) > 1:
        report.warnings.append(f"several LoRA adapters in the checkpoint ({sorted(map(str, adapters))}); none merged")
    for (base, _adapter), pair in sorted(lora.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        keys = [k for k, _ in pair.values()]
        if not merge_lora or len(adapters) > 1:
            report.lora_unmerged += keys
            continue
        if set(pair) != {"A", "B"} or base not in out:
            report.lora_unmerged += keys
            why = "only one of lora_A / lora_B" if set(pair) != {"A", "B"} else f"no base weight {base}"
            report.warnings.append(f"LoRA {keys[0]} not merged: {why}")
            continue
        (key_a, a), (key_b, b) = pair["A"], pair["B"]
        weight = out[base]
        if a.ndim != 2 or b.ndim != 2 or (b.shape[0], a.shape[1]) != tuple(weight.shape) or b.shape[1] != a.shape[0]:
            report.shape_mismatches.append((key_a, base, (tuple(b.shape), tuple(a.shape)), tuple(weight.shape)))
            report.lora_unmerged += keys
            continue
        rank = a.shape[0]
        if rank != lora_r:
            report.warnings.append(f"LoRA rank {rank} in {key_a} differs from lora_r={lora_r}; scaling by alpha/{rank}")
        merged = weight.float() + (lora_alpha / rank) * (b.float() @ a.float())
        out[base] = merged.to(weight.dtype)
        report.lora_merged.append(base)
        report.mapped += [(key_a, base), (key_b, base)]
    if report.lora_unmerged and not merge_lora:
        report.warnings.append(f"{len(report.lora_unmerged)} LoRA tensors not merged: the converted language model "
                               "lacks the fine-tuning")


# ---------------------------------------------------------------------------------------------------------------------
# Whole checkpoint → model folder


def _llm_name(key: str) -> str | None:
    """Official LLM key → the plain LLaMA name (`model.layers.0…`, `lm_head.weight`), or None."""
    if key == "embedding_layer.weight":
        return "model.embed_tokens.weight"
    match = re.match(_L + r"(.*)$", key)
    if not match or ".lora_" in key or key.endswith("inv_freq"):
        return None
    return match.group(1).replace(".base_layer.", ".")


def _our_llm_names(expected) -> set[str]:
    names = set()
    for key in expected:
        if key.startswith("model.language_model."):
            names.add("model." + key[len("model.language_model."):])
        elif key == "lm_head.weight":
            names.add(key)
    return names


# How `convert-official` stores the model. The official inference ran its `MyEmbedding` (ViT3D, perceiver, projector,
# disease branch, τ) in float32 beside a `.half()` LLaMA: "official" reproduces that (float16 keeps the vision side in
# float32 through `_keep_in_fp32_modules`, and `dtype="auto"` loads it back the same way).
DTYPE_POLICIES = {
    "official": "language model float16, vision tower / resampler / projector / disease branch float32 (default)",
    "auto": "the checkpoint's dominant float dtype (float16 also keeps the vision side in float32)",
    "float32": "everything float32",
    "bfloat16": "everything bfloat16 (how the paper trained)",
    "float16": "same as official",
}


def resolve_dtype_policy(policy: str | torch.dtype, state: Mapping | None = None) -> torch.dtype:
    """A `DTYPE_POLICIES` name (or a torch dtype) → the dtype passed to `from_pretrained`."""
    if isinstance(policy, torch.dtype):
        return policy
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"unknown dtype policy {policy!r}; choose one of {sorted(DTYPE_POLICIES)}")
    if policy == "official":
        return torch.float16
    if policy == "auto":
        return _dominant_dtype(state or {})
    return getattr(torch, policy)


def _dominant_dtype(state: Mapping) -> torch.dtype:
    sizes: dict = {}
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            sizes[value.dtype] = sizes.get(value.dtype, 0) + value.numel()
    return max(sizes, key=sizes.get) if sizes else torch.float32


def _text_config(llm: Path, preset: str, state: Mapping):
    """The LLM's config.json if the folder has one, else the preset's with the sizes read off the checkpoint."""
    from transformers import AutoConfig, LlamaConfig

    from .presets import load_preset

    if (llm / "config.json").exists():
        return AutoConfig.from_pretrained(llm)
    params = dict(load_preset(preset)["text"])
    names = {n: v for k, v in state.items() if (n := _llm_name(k))}
    embed = names.get("model.embed_tokens.weight")
    if embed is not None:
        params.update(vocab_size=embed.shape[0], hidden_size=embed.shape[1])
    layers = {int(m.group(1)) for n in names if (m := re.match(r"model\.layers\.(\d+)\.", n))}
    if layers:
        params["num_hidden_layers"] = max(layers) + 1
    gate, k_proj = names.get("model.layers.0.mlp.gate_proj.weight"), names.get("model.layers.0.self_attn.k_proj.weight")
    if gate is not None:
        params["intermediate_size"] = gate.shape[0]
    if k_proj is not None:
        params["num_key_value_heads"] = k_proj.shape[0] // (params["hidden_size"] // params["num_attention_heads"])
    params.setdefault("vocab_size", 32000)
    return LlamaConfig(**params)


def convert_official_checkpoint(
    checkpoint,
    out_dir,
    *,
    llm=None,
    preset: str = "paper",
    legacy_pooling: bool = False,
    config_overrides: dict | None = None,
    merge_lora: bool = True,
    lora_alpha: float = 32,
    lora_r: int = 8,
    dtype: str | torch.dtype = "official",
    strict: bool = True,
) -> tuple[Path, ConversionReport]:
    """Convert the official `pytorch_model.bin` (path, folder or state dict) into a Dia-LLaMA folder at `out_dir`.

    `llm`: a LLaMA-2 folder; its tokenizer is required (gets Dia-LLaMA's special tokens), its config.json is used when
    present, and its weights only fill LLM weights the checkpoint lacks. `legacy_pooling`: reproduce the research
    code's inference bug (`config.legacy_disease_pooling`). `strict`: raise when keys stay unmapped / mismatched or
    weights are missing. `dtype`: see `DTYPE_POLICIES` ("official" by default).
    """
    from .modeling_dia_llama import DiaLlamaForConditionalGeneration
    from .presets import (
        add_special_tokens,
        build_config,
        default_generation_config,
        load_llm_tokenizer,
        processor_for_config,
        public_model_name,
        save_model_folder,
    )

    if llm is None:
        raise ValueError(TOKENIZER_ERROR)
    llm = Path(llm)
    tokenizer = load_llm_tokenizer(llm)
    add_special_tokens(tokenizer)

    state = dict(checkpoint) if isinstance(checkpoint, Mapping) else load_checkpoint_file(checkpoint)
    state = _official_names(state)
    dtype = resolve_dtype_policy(dtype, state)

    overrides = dict(config_overrides or {})
    overrides.setdefault("legacy_disease_pooling", legacy_pooling)
    # the official disease attention is the paper's: static, its table used as the logits (scale 1)
    overrides.setdefault("disease_attention", "static")
    overrides.setdefault("disease_attention_scale", 1.0)
    overrides.setdefault("disease_max_pooling", False)
    overrides.setdefault("disease_attention_min_intensity", None)  # over every patch
    # the official prompt's words, whatever the preset's (the tiny preset shortens the instruction)
    overrides.setdefault("instruction", DEFAULT_INSTRUCTION)
    overrides.setdefault("prompt_template", DEFAULT_PROMPT_TEMPLATE)
    # the research code's ViT3D, whatever the preset's default
    config = build_config(preset, len(tokenizer), text_config=_text_config(llm, preset, state),
                          vision_overrides=dict(RESEARCH_VISION_OVERRIDES), **overrides)
    config.language_model_source = public_model_name(llm)
    processor = processor_for_config(preset, tokenizer, config)

    # LLM weights the checkpoint lacks (e.g. a trainable-parameters-only save) come from the --llm folder.
    needed = _our_llm_names(_expected_shapes(config))
    have = {_llm_name(k) for k in state} - {None}
    filled = []
    if not needed <= have and _weight_files(llm):
        for key, value in load_checkpoint_file(llm).items():
            if key in needed and key not in have:
                state["lang_model." + key] = value
                filled.append(key)

    converted, report = convert_official_state_dict(
        state, config, merge_lora=merge_lora, lora_alpha=lora_alpha, lora_r=lora_r
    )
    report.filled_from_llm = sorted(filled)
    del state
    missing_llm = [k for k in report.missing if k.startswith("model.language_model.") or k == "lm_head.weight"]
    problems = []
    if missing_llm:
        problems.append(f"{len(missing_llm)} language-model weights are in neither the checkpoint nor --llm {llm} "
                        f"(e.g. {missing_llm[0]})")
    if report.unmapped:
        problems.append(f"unmapped keys: {report.unmapped[:5]}")
    if report.shape_mismatches:
        problems.append(f"shape mismatches (check --preset / config_overrides): {report.shape_mismatches[:3]}")
    if report.missing and not missing_llm:
        problems.append(f"missing weights: {report.missing[:5]}")
    if problems and strict:
        raise ValueError("conversion incomplete: " + "; ".join(problems) + "\n" + report.summary())
    report.warnings += problems

    model = DiaLlamaForConditionalGeneration.from_pretrained(None, config=config, state_dict=converted, dtype=dtype)
    model.generation_config = default_generation_config(tokenizer)
    out = save_model_folder(model.eval(), processor, out_dir)
    return out, report


# ---------------------------------------------------------------------------------------------------------------------
# Vision weights into an existing model


def detect_source(state: Mapping) -> str:
    """`dia_llama` (our keys), `official` (has the disease branch) or `radfm` (ViT3D / perceiver only)."""
    keys = list(state)
    ours = ("model.vision_tower.", "vision_tower.", "base_model.model.model.vision_tower.")
    if any(k.startswith(ours) for k in keys):
        return "dia_llama"
    names = _official_names(state)
    if any(k in names for k in ("embedding_layer.prototype", "embedding_layer.pos_sample_memory")):
        return "official"
    if any(k.startswith(("embedding_layer.vision_encoder.", "embedding_layer.perceiver.")) for k in names):
        return "radfm"
    raise ValueError("unrecognised checkpoint: no RadFM / Dia-LLaMA vision keys (e.g. vision_encoder.*, "
                     "model.vision_tower.*) found")


def load_vision_weights(model, path_or_state, *, source: str = "auto") -> ConversionReport:
    """Copy a RadFM / official / Dia-LLaMA checkpoint's vision tower and perceiver (and, for official and Dia-LLaMA
    files, the disease branch) into `model` in place. Other understood keys are `skipped`; the model's in-scope keys
    left unfilled are `missing`."""
    state = path_or_state if isinstance(path_or_state, Mapping) else load_checkpoint_file(path_or_state)
    state = _flatten_state(state)
    if source == "auto":
        source = detect_source(state)
    if source not in ("radfm", "official", "dia_llama"):
        raise ValueError(f"source must be auto, radfm, official or dia_llama, got {source!r}")
    scope = ("model.vision_tower.", "model.resampler.")
    if source != "radfm":
        scope += ("model.disease_branch.",)

    ours = model.state_dict()
    anchor = "vision_tower.pos_embed.row_embed.weight"
    prefix = next((k[: -len(anchor)] for k in ours if k.endswith(anchor)), None)
    if prefix is None:
        raise ValueError(f"{type(model).__name__} has no Dia-LLaMA vision tower")
    targets = {"model." + k[len(prefix):]: k for k in ours if k.startswith(prefix)}  # canonical → model key
    config = getattr(model, "config", None)
    bounds = tuple(getattr(config, "temperature_bounds", (0.01, 1.0)))
    report = ConversionReport(source=source)

    if source == "dia_llama":
        pairs = []
        for key in state:
            name = key.removeprefix("base_model.model.")
            pairs.append((key, name if name.startswith("model.") or name == "lm_head.weight" else "model." + name))
    else:
        pairs = []
        names = _official_names(state)
        state = names
        for key in names:
            if _is_dropped(key):
                report.dropped.append(key)
                continue
            if _LORA.match(key):
                report.skipped.append(key)
                continue
            target = _map_key(key)
            if target is None:
                report.unmapped.append(key)
                report.notes[key] = "no rule maps this key"
                continue
            pairs.append((key, target))

    filled = set()
    with torch.no_grad():
        for key, target in pairs:
            base = target.partition("#")[0]
            if not base.startswith(scope) or "#" in target:
                report.skipped.append(key)
                continue
            if base not in targets:
                report.unmapped.append(key)
                report.notes[key] = f"maps to {base}, which this model does not have"
                continue
            dest = ours[targets[base]]
            value = state[key]
            if source != "dia_llama":
                value = _transform(base, value, bounds, report, key)
            if tuple(value.shape) != tuple(dest.shape):
                report.shape_mismatches.append((key, base, tuple(value.shape), tuple(dest.shape)))
                continue
            dest.copy_(value.to(dest.dtype))
            filled.add(base)
            report.mapped.append((key, base))
    report.missing = sorted(k for k in targets if k.startswith(scope) and k not in filled)
    return report


__all__ = [
    "ConversionReport",
    "DTYPE_POLICIES",
    "resolve_dtype_policy",
    "official_key_map",
    "convert_official_state_dict",
    "load_checkpoint_file",
    "convert_official_checkpoint",
    "load_vision_weights",
    "detect_source",
]
