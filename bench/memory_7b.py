#!/usr/bin/env python
"""Memory of the paper's 7B configuration at inference, COMPUTED (not measured): exact parameter counts of the model
built on the meta device (no memory, no weights), times the bytes each loading mode stores per parameter.

    python bench/memory_7b.py                 # prints the markdown table, writes bench/results/memory_7b.json

Model: `build_config("paper", vocab_size=32006)`: LLaMA-2-7B shapes (32 layers, width 4096, MLP 11008, vocabulary
32,000 + Dia-LLaMA's 6 added tokens) + RadFM's ViT3D + 6-layer perceiver + projector + disease branch.
Per mode:
- fp32: 4 bytes per parameter; bf16: 2 (`dtype="bfloat16"`);
- fp16: 2, except the vision side (vision tower, perceiver, projector, disease branch), which `_keep_in_fp32_modules`
  keeps in float32;
- 8-bit (`--load-in-8bit`, LLM.int8): the language model's linear layers 1 byte per weight + a float32 scale per
  output row; everything else (embeddings, norms, LM head, the vision side) bf16;
- 4-bit (`--load-in-4bit`, NF4 + double quantization, `dia_llama.inference.quantization_config`): those linear
  layers 0.5 byte per weight + one 8-bit absmax per 64 weights + one float32 per 256 absmax values; the rest bf16.
Generation adds the KV cache (bf16; 2 × layers × width × 2 bytes per token: 0.5 MiB) for ~255 prompt tokens (32 visual
slots + the 223-token diagnostic prompt) + 300 new tokens per scan, and a few hundred MB of activations and CUDA
context, not counted here. The 4/8-bit kernels need a CUDA GPU (bitsandbytes); the numbers are what the weights
occupy, which the GPU's `torch.cuda.max_memory_allocated` after loading should match to within a few percent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
try:  # a bare copy of the repository (no pip install) works too
    import dia_llama  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

VOCAB = 32006  # LLaMA-2's 32,000 + <image>, <image_start>, <image_end>, <dx>, <disease>, <pad>
PROMPT_TOKENS, NEW_TOKENS = 255, 300
VISION = ("model.vision_tower", "model.resampler", "model.multi_modal_projector", "model.disease_branch")
GIB = 2**30


def parameter_groups() -> dict[str, int]:
    """Parameter counts: language-model linear weights (quantizable), other language-model parameters, LM head,
    vision side, plus the rows of the quantizable linears (for int8 scales)."""
    from dia_llama import DiaLlamaForConditionalGeneration
    from dia_llama.presets import build_config

    with torch.device("meta"):
        model = DiaLlamaForConditionalGeneration(build_config("paper", VOCAB))
    groups = {"llm_linear": 0, "llm_linear_rows": 0, "llm_other": 0, "lm_head": 0, "vision": 0}
    linear = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for name, param in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if name.startswith(VISION):
            groups["vision"] += param.numel()
        elif name.startswith("lm_head"):
            groups["lm_head"] += param.numel()
        elif module in linear and name.endswith(".weight"):
            groups["llm_linear"] += param.numel()
            groups["llm_linear_rows"] += param.shape[0]
        else:
            groups["llm_other"] += param.numel()
    groups["config"] = {"layers": model.config.text_config.num_hidden_layers,
                        "hidden": model.config.text_config.hidden_size}
    return groups


def weight_bytes(g: dict) -> dict[str, float]:
    total = g["llm_linear"] + g["llm_other"] + g["lm_head"] + g["vision"]
    rest_bf16 = 2 * (g["llm_other"] + g["lm_head"] + g["vision"])
    return {
        "float32": 4 * total,
        "bfloat16": 2 * total,
        "float16 (vision side float32)": 2 * (total - g["vision"]) + 4 * g["vision"],
        "8-bit language model": g["llm_linear"] + 4 * g["llm_linear_rows"] + rest_bf16,
        "4-bit NF4 language model": g["llm_linear"] * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest_bf16,
    }


def main() -> int:
    g = parameter_groups()
    kv_per_token = 2 * g["config"]["layers"] * g["config"]["hidden"] * 2  # K and V, bf16
    kv = kv_per_token * (PROMPT_TOKENS + NEW_TOKENS)
    weights = weight_bytes(g)
    rows = [{"mode": mode, "weights_gib": round(b / GIB, 2), "generate_batch1_gib": round((b + kv) / GIB, 2),
             "generate_batch8_gib": round((b + 8 * kv) / GIB, 2)} for mode, b in weights.items()]
    params = {k: v for k, v in g.items() if k != "config"}
    result = {"computed": True, "parameters": params,
              "parameters_total": g["llm_linear"] + g["llm_other"] + g["lm_head"] + g["vision"],
              "kv_cache_per_scan_gib": round(kv / GIB, 3), "tokens_per_scan": PROMPT_TOKENS + NEW_TOKENS, "rows": rows}
    out = REPO_ROOT / "bench" / "results" / "memory_7b.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"parameters: {result['parameters_total'] / 1e9:.3f} B ({params['vision'] / 1e6:.0f} M vision side); "
          f"KV cache {result['kv_cache_per_scan_gib']} GiB per scan ({PROMPT_TOKENS}+{NEW_TOKENS} tokens)\n")
    print("| loading | weights (GiB) | generate, 1 scan (GiB) | generate, batch 8 (GiB) |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['mode']} | {row['weights_gib']} | {row['generate_batch1_gib']} | {row['generate_batch8_gib']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
