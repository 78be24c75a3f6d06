#!/usr/bin/env python
"""The paper's training recipe on one large GPU, with RANDOM weights (no download): throughput, memory, MFU.

    python bench/gpu_paper_recipe.py                    # H100/H200: paper preset, bf16, LoRA, checkpointing
    python bench/gpu_paper_recipe.py --smoke            # CPU-sized check of the same code (tiny preset, 2 steps)
    python bench/gpu_paper_recipe.py --steps 10 --batch-size 8 --grad-accum 2 --output /path/result.json

Model: `dia_llama.presets.build_config("paper", vocab_size=32006)` (LLaMA-2-7B shapes + RadFM ViT3D + perceiver),
built directly on the GPU in bf16 (`torch.device("cuda")` + `_from_config(dtype=bfloat16)`); LoRA r 8, α 32, dropout
0.1 on q_proj/v_proj with the vision side fully trained (dia_llama.train.apply_lora: vision tower, perceiver,
projector and disease branch as `modules_to_save`; a plain requires_grad fallback if that fails); trainable weights
kept in fp32 (master weights, as ZeRO-2 bf16 does) under `torch.autocast(bfloat16)`; activation checkpointing
(non-reentrant); SDPA attention, or flash-attention 2 when `flash_attn` imports; AdamW (lr 5e-5, wd 0),
gradient clipping 1.0. Inputs: 3×256×256×64 volumes and ≈ 658-token sequences (BOS, <image_start>, 32 image slots,
<image_end>, a 223-token prompt, a 400-token report + EOS; labels on the report part only), the same batch every step
(data loading is not part of this measurement).

Every phase is wrapped: an error is recorded in the JSON and the script goes on; the JSON is rewritten after each
phase (default bench/results/gpu_paper_recipe.json, or $OUT/gpu_paper_recipe.json when OUT is set). A time budget
(--time-budget-s, default 420 s) shortens the timed loops so the whole run ends in time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
try:  # a bare copy of the repository (no pip install) works too
    import dia_llama  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

import torch  # noqa: E402

T0 = time.perf_counter()
PAPER_STEPS, PAPER_BATCH = 2000, 16
TARGET_MINUTES, TARGET_MEMORY_GB = 30.0, 40.0
# dense bf16 tensor-core peaks (no sparsity), by device name
BF16_PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("GH200", 989e12),
              ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("A10G", 70e12))


def log(msg: str) -> None:
    print(f"[gpu_paper_recipe {time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------------------- FLOPs
def vision_flops(config, batch: int = 1) -> dict:
    """Forward matmul FLOPs (2·m·n·k) of the vision side for `batch` volumes: ViT3D, perceiver, projector, disease
    branch. Backward ≈ 2× forward (×3 in all)."""
    vc = config.vision_config
    m, c = vc.num_patches, vc.hidden_size
    patch_dim = math.prod(vc.patch_size) * vc.num_channels
    inner = vc.num_attention_heads * vc.head_dim
    patch_embed = 2 * m * patch_dim * c
    per_layer = (2 * m * c * 3 * inner  # qkv
                 + 2 * 2 * vc.num_attention_heads * m * m * vc.head_dim  # scores + values
                 + 2 * m * inner * c  # out projection
                 + 2 * 2 * m * c * vc.intermediate_size)  # MLP
    n = vc.num_latents
    p_inner = vc.perceiver_heads * vc.perceiver_head_dim
    per_p_layer = (2 * n * c * p_inner + 2 * (m + n) * c * 2 * p_inner
                   + 2 * 2 * vc.perceiver_heads * n * (m + n) * vc.perceiver_head_dim
                   + 2 * n * p_inner * c + 2 * 2 * n * c * c * vc.perceiver_ff_mult)
    text_hidden = config.get_text_config().hidden_size
    projector = 2 * n * c * text_hidden
    disease = 2 * config.num_diseases * m * c + 2 * config.num_diseases * c * c
    parts = {"patch_embed": patch_embed, "vit_layers": vc.num_hidden_layers * per_layer,
             "perceiver": vc.perceiver_depth * per_p_layer, "projector": projector, "disease_branch": disease}
    parts = {k: float(batch * v) for k, v in parts.items()}
    parts["total_vision_fwd"] = sum(parts.values())
    return parts


def llm_matmul_params(language_model, lm_head) -> int:
    """Parameters that take part in matmuls: every nn.Linear of the LLM (LoRA excluded) + the LM head (the input
    embedding table is a lookup, not counted)."""
    total = 0
    for name, module in language_model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:
            total += module.weight.numel()
    weight = getattr(lm_head, "weight", None)
    return total + (weight.numel() if weight is not None else 0)


def llm_flops_per_sample(n_params: int, layers: int, hidden: int, tokens: int) -> float:
    """6·N·T + 12·L·d·T² (forward + backward; the second term = the attention score/value matmuls, non-causal count)."""
    return 6.0 * n_params * tokens + 12.0 * layers * hidden * tokens**2


# ------------------------------------------------------------------------------------------------------------ recorder
class Recorder:
    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.data = {"benchmark": "gpu_paper_recipe", "settings": settings, "errors": {}, "phases": {}, "rows": []}
        self.flush()

    def flush(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=repr) + "\n")
            tmp.replace(self.path)
        except Exception as exc:  # never die for the JSON
            print(f"could not write {self.path}: {exc}", flush=True)

    @contextlib.contextmanager
    def phase(self, name: str):
        log(f"phase {name} ...")
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        except BaseException as exc:  # noqa: BLE001 - keep going whatever happens (KeyboardInterrupt aside)
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.data["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
            self.data["errors"][name + "_traceback"] = traceback.format_exc()[-4000:]
            log(f"phase {name} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        finally:
            self.data["phases"][name] = {"ok": ok, "seconds": round(time.perf_counter() - t0, 2)}
            self.flush()
            log(f"phase {name} {'done' if ok else 'failed'} in {time.perf_counter() - t0:.1f} s")


def default_output() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_paper_recipe.json"
    return REPO_ROOT / "bench" / "results" / "gpu_paper_recipe.json"


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------- the parts
def environment(device, smoke: bool) -> dict:
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda_available": torch.cuda.is_available(), "device": str(device), "cpu_count": os.cpu_count()}
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError as exc:
        env["peft"] = f"missing: {exc}"
    try:
        import flash_attn  # noqa: F401

        env["flash_attn"] = getattr(flash_attn, "__version__", "yes")
    except Exception as exc:  # ImportError or a broken build
        env["flash_attn"] = None
        env["flash_attn_import_error"] = f"{type(exc).__name__}: {exc}"[:300]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu_name": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                    "multiprocessors": props.multi_processor_count,
                    "bf16_supported": torch.cuda.is_bf16_supported()})
        env["bf16_peak_flops_by_name"] = next((p for k, p in BF16_PEAKS if k in props.name), None)
        env["bf16_matmul_measured"] = measure_bf16_matmul(device, n=8192, repeats=10)
    else:
        env["bf16_peak_flops_by_name"] = None
        env["bf16_matmul_measured"] = measure_bf16_matmul(device, n=512 if smoke else 2048, repeats=3)
    measured = env["bf16_matmul_measured"]["best_flops"]
    env["peak_flops_used"] = env["bf16_peak_flops_by_name"] or measured
    env["peak_source"] = "spec sheet by device name" if env["bf16_peak_flops_by_name"] else "measured bf16 matmul"
    return env


def measure_bf16_matmul(device, n: int, repeats: int) -> dict:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    del a, b
    return {"n": n, "best_s": min(times), "best_flops": 2.0 * n**3 / min(times)}


SPECIALS = ("image", "image_start", "image_end", "dx", "disease", "pad")


def build_config(args):
    from dia_llama.presets import build_config as preset_config

    vocab = args.vocab_size
    config = preset_config(args.preset, vocab_size=vocab)
    if getattr(args, "llm_layers", None):
        config.get_text_config().num_hidden_layers = args.llm_layers
    first = vocab - len(SPECIALS)  # the last ids stand for the special tokens (random weights: any ids do)
    ids = {name: first + i for i, name in enumerate(SPECIALS)}
    config.image_token_id = ids["image"]
    config.image_start_token_id = ids["image_start"]
    config.image_end_token_id = ids["image_end"]
    config.diagnosis_token_id = ids["dx"]
    config.disease_token_id = ids["disease"]
    g = torch.Generator().manual_seed(1)
    sentence = lambda n: torch.randint(3, first, (n,), generator=g).tolist()  # noqa: E731
    config.diagnosis_prompt_ids = [[sentence(8), sentence(8)] for _ in range(config.num_diseases)]
    text = config.get_text_config()
    text.pad_token_id, text.bos_token_id, text.eos_token_id = ids["pad"], 1, 2
    text.use_cache = False
    return config, ids


def build_model(config, device, dtype, attn: str):
    from dia_llama.modeling_dia_llama import DiaLlamaForConditionalGeneration

    info = {"attn_implementation_requested": attn}
    t0 = time.perf_counter()
    with torch.device(device):
        try:
            model = DiaLlamaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attn)
            info["constructed_with"] = f"_from_config(dtype={dtype}, attn_implementation={attn!r}) on {device}"
        except Exception as exc:  # e.g. flash-attention refused: fall back to SDPA, then to a plain construction
            info["first_try_error"] = f"{type(exc).__name__}: {exc}"[:500]
            try:
                model = DiaLlamaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
                info["constructed_with"] = f"_from_config(dtype={dtype}, attn_implementation='sdpa') on {device}"
            except Exception as exc2:
                info["second_try_error"] = f"{type(exc2).__name__}: {exc2}"[:500]
                model = DiaLlamaForConditionalGeneration(config).to(dtype)
                info["constructed_with"] = f"DiaLlamaForConditionalGeneration(config).to({dtype}) on {device}"
    sync(device)
    info["build_s"] = round(time.perf_counter() - t0, 2)
    info["attn_implementation"] = getattr(model.config.get_text_config(), "_attn_implementation", None)
    info["dtype"] = str(next(model.parameters()).dtype)
    return model, info


def enable_checkpointing(model) -> str:
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return "activation_checkpointing_enable(use_reentrant=False)"
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return "gradient_checkpointing_enable(use_reentrant=False)"


VISION_MODULES = ("vision_tower", "resampler", "multi_modal_projector", "disease_branch")


def add_lora(model) -> tuple[torch.nn.Module, dict]:
    """The project's LoRA setup (dia_llama.train.apply_lora); a plain peft + requires_grad fallback."""
    info = {}
    try:
        from dia_llama.training import ModelArguments, apply_lora

        args = ModelArguments(lora_r=8, lora_alpha=32, lora_dropout=0.1, lora_target_modules="q_proj,v_proj")
        peft_model = apply_lora(model, args)
        info["method"] = "dia_llama.train.apply_lora (vision side as modules_to_save, <image_start>/<image_end> rows)"
    except Exception as exc:
        info["apply_lora_error"] = f"{type(exc).__name__}: {exc}"[:500]
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1,
                            target_modules=r".*language_model\..*\.(q_proj|v_proj)$", task_type=None)
        peft_model = get_peft_model(model, config)
        for name in VISION_MODULES:
            module = getattr(model.model, name, None)
            if module is not None:
                module.requires_grad_(True)
        info["method"] = "peft LoRA on q/v + requires_grad on the vision side (fallback)"
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    info["trainable_params"] = sum(p.numel() for p in trainable)
    info["lora_params"] = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n)
    return peft_model, info


def master_weights_fp32(model) -> int:
    """Trainable LoRA and vision-side weights in fp32 (autocast runs their matmuls in bf16); others untouched."""
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad and p.dtype != torch.float32 and ("lora_" in name or any(m in name for m in VISION_MODULES)):
            p.data = p.data.float()
            n += p.numel()
    return n


def make_batch(config, ids, batch: int, prompt_tokens: int, report_tokens: int, device, seed: int = 0) -> dict:
    vc = config.vision_config
    g = torch.Generator().manual_seed(seed)
    low, high = 3, ids["image"]
    rows, labels = [], []
    for _ in range(batch):
        prompt = ([1, ids["image_start"]] + [ids["image"]] * config.num_image_tokens + [ids["image_end"]]
                  + torch.randint(low, high, (prompt_tokens,), generator=g).tolist())
        report = torch.randint(low, high, (report_tokens,), generator=g).tolist() + [2]
        rows.append(prompt + report)
        labels.append([-100] * len(prompt) + report)
    return {
        "input_ids": torch.tensor(rows, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.ones(len(rows), len(rows[0]), dtype=torch.long, device=device),
        "pixel_values": torch.rand(batch, vc.num_channels, *vc.volume_size, generator=g).to(device),
        "disease_labels": (torch.rand(batch, config.num_diseases, generator=g) > 0.7).float().to(device),
    }


def autocast(device, dtype):
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_phase(rec: Recorder, args, model, config, ids, device, dtype, deadline: float) -> None:
    out = rec.data.setdefault("train", {})
    trainable = [p for p in model.parameters() if p.requires_grad]
    # torch's default implementation (foreach on CUDA); not `fused`: one chance to run, mixed fp32/bf16 trainables
    optimizer = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.0)
    out["optimizer"] = "AdamW(lr=5e-5, weight_decay=0), clip_grad_norm 1.0"
    model.train()
    micro, accum = args.batch_size, args.grad_accum
    attempts = []

    def one_step(batch):
        for _ in range(accum):
            with autocast(device, dtype):
                loss = model(**batch, use_cache=False).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()) * accum

    while True:
        out.update({"micro_batch": micro, "grad_accum": accum, "samples_per_step": micro * accum})
        batch = None
        try:
            batch = make_batch(config, ids, micro, args.prompt_tokens, args.report_tokens, device)
            out["tokens_per_sample"] = int(batch["input_ids"].shape[1])
            out["report_tokens_with_labels"] = int((batch["labels"][0] != -100).sum())
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            warm = []
            for i in range(args.warmup):
                t0 = time.perf_counter()
                loss = one_step(batch)
                sync(device)
                warm.append(time.perf_counter() - t0)
                log(f"warm-up step {i + 1}/{args.warmup}: {warm[-1]:.2f} s, loss {loss:.3f}")
            out["warmup_step_s"] = warm
            if device.type == "cuda":
                out["peak_memory_gb_incl_warmup"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                torch.cuda.reset_peak_memory_stats(device)
            times, losses = [], []
            for i in range(args.steps):
                if time.perf_counter() > deadline and times:
                    out["stopped_early"] = f"time budget: {len(times)} of {args.steps} steps timed"
                    break
                t0 = time.perf_counter()
                losses.append(one_step(batch))
                sync(device)
                times.append(time.perf_counter() - t0)
                log(f"step {i + 1}/{args.steps}: {times[-1]:.3f} s, loss {losses[-1]:.3f}")
            break
        except Exception as exc:
            attempts.append({"micro_batch": micro, "grad_accum": accum, "error": f"{type(exc).__name__}: {exc}"[:500]})
            out["attempts"] = attempts
            optimizer.zero_grad(set_to_none=True)
            del batch
            free_memory(device)
            if is_oom(exc) and micro > 1:
                micro, accum = micro // 2, accum * 2
                log(f"out of memory: retrying with micro-batch {micro} × accumulation {accum}")
                continue
            raise
    n = len(times)
    samples = micro * accum
    step_median = sorted(times)[n // 2]
    total = sum(times)
    samples_per_s = samples * n / total
    tokens = out["tokens_per_sample"]
    out.update({"step_s": [round(t, 4) for t in times], "step_median_s": round(step_median, 4),
                "losses": [round(v, 4) for v in losses], "timed_steps": n,
                "samples_per_s": round(samples_per_s, 3), "tokens_per_s": round(samples_per_s * tokens, 1)})
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        out["peak_memory_gb_max"] = max(out["peak_memory_gb"], out.get("peak_memory_gb_incl_warmup", 0))

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = config.get_text_config()
    n_llm = llm_matmul_params(base.model.language_model, base.lm_head)
    llm = llm_flops_per_sample(n_llm, text.num_hidden_layers, text.hidden_size, tokens)
    vision = 3 * vision_flops(config)["total_vision_fwd"]
    per_sample = llm + vision
    peak = rec.data.get("environment", {}).get("peak_flops_used")
    out["flops"] = {
        "formula": "per sample: 6·N·T + 12·L·d·T² (LLM, fwd+bwd; N = LLM matmul weights incl. lm_head, excl. "
                   "embeddings; T tokens; the T² term = attention matmuls, non-causal count) + 3·vision forward "
                   "(ViT3D, perceiver, projector, disease branch, analytic). Model FLOPs: the checkpointing recompute "
                   "is not counted (with frozen LLM weights the executed work, fwd + recompute + input grads, is also "
                   "≈ 6·N·T).",
        "N_llm_matmul_params": n_llm, "T": tokens, "llm_per_sample": llm, "vision_per_sample": vision,
        "per_sample": per_sample}
    if peak:
        out["achieved_flops"] = per_sample * samples_per_s
        out["mfu"] = round(per_sample * samples_per_s / peak, 4)
    measured = rec.data.get("environment", {}).get("bf16_matmul_measured", {}).get("best_flops")
    if measured:
        out["fraction_of_measured_bf16_matmul"] = round(per_sample * samples_per_s / measured, 4)
    out["projected_minutes_2000x16"] = round(PAPER_STEPS * PAPER_BATCH / samples_per_s / 60, 2)


def generate_phase(rec: Recorder, args, model, config, ids, device, dtype) -> None:
    out = rec.data.setdefault("generate", {})
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.eval()
    b, new = args.gen_batch, args.gen_tokens
    g = torch.Generator().manual_seed(2)
    vc = config.vision_config
    prompt = ([1, ids["image_start"]] + [ids["image"]] * config.num_image_tokens + [ids["image_end"], ids["dx"]]
              + torch.randint(3, ids["image"], (args.instruction_tokens,), generator=g).tolist())
    input_ids = torch.tensor([prompt] * b, device=device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              "pixel_values": torch.rand(b, vc.num_channels, *vc.volume_size, generator=g).to(device)}
    kwargs = dict(do_sample=False, use_cache=True, pad_token_id=ids["pad"], eos_token_id=2)
    out.update({"batch": b, "new_tokens": new, "prompt_tokens_before_expansion": len(prompt), "decoding": "greedy",
                "note": "generate() diagnoses the volumes, writes the 14-disease prompt, then decodes (KV cache)"})
    with torch.no_grad(), autocast(device, dtype):
        t0 = time.perf_counter()
        base.generate(**inputs, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        sync(device)
        out["warmup_s"] = round(time.perf_counter() - t0, 3)
        times = []
        for _ in range(args.gen_repeats):
            t0 = time.perf_counter()
            seq = base.generate(**inputs, max_new_tokens=new, min_new_tokens=new, **kwargs)
            sync(device)
            times.append(time.perf_counter() - t0)
            log(f"generate batch {b} × {new} tokens: {times[-1]:.2f} s")
    sequences = seq.sequences if hasattr(seq, "sequences") else seq
    out["output_shape"] = list(sequences.shape)
    best = min(times)
    out.update({"seconds": [round(t, 4) for t in times], "best_s": round(best, 4),
                "tokens_per_s": round(b * new / best, 1), "reports_per_s": round(b / best, 3)})
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def summary_rows(rec: Recorder) -> list[dict]:
    rows = []
    train, gen = rec.data.get("train", {}), rec.data.get("generate", {})

    smoke = rec.data["settings"].get("smoke")

    def r(quantity, value, unit="", target="", passed=None, miss_by="", note=""):
        if smoke and passed is not None:  # the targets are for the paper preset on a GPU
            passed, miss_by, note = None, "", f"smoke run (tiny preset on CPU), target not applied; {note}"
        rows.append({"quantity": quantity, "value": value, "unit": unit, "target": target, "passed": passed,
                     "miss_by": miss_by, "what_limits_it": "", "note": note})

    if "projected_minutes_2000x16" in train:
        v = train["projected_minutes_2000x16"]
        ok = v <= TARGET_MINUTES
        r("paper recipe 2000 steps × 16, projected wall time (1 GPU)", v, "min", f"≤ {TARGET_MINUTES:g} min", ok,
          "" if ok else f"{v / TARGET_MINUTES:.2f}×",
          note=f"{train['samples_per_s']} samples/s, micro-batch {train['micro_batch']} × {train['grad_accum']}")
    if "peak_memory_gb_max" in train:
        v = train["peak_memory_gb_max"]
        ok = v <= TARGET_MEMORY_GB
        r("paper recipe peak GPU memory (max_memory_allocated)", v, "GB", f"≤ {TARGET_MEMORY_GB:g} GB", ok,
          "" if ok else f"{v / TARGET_MEMORY_GB:.2f}×")
    if "mfu" in train:
        r("paper recipe MFU (6·N·T + attention + vision, vs bf16 peak)", round(100 * train["mfu"], 1), "%",
          note=rec.data.get("environment", {}).get("peak_source", ""))
    if "tokens_per_s" in gen:
        r(f"generation batch {gen['batch']} × {gen['new_tokens']} new tokens", gen["tokens_per_s"], "tokens/s",
          note=f"{gen['reports_per_s']} reports/s")
    for name, err in rec.data.get("errors", {}).items():
        if not name.endswith("_traceback"):
            r(f"phase {name} failed", None, note=err[:200])
    return rows


# ---------------------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU-sized: tiny preset on CPU, 2 steps (for tests)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 10; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; smoke 1)")
    p.add_argument("--batch-size", type=int, default=None, help="micro-batch per forward (default 8; smoke 2)")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per step (default 2 → 16 samples)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="prompt text tokens after the image (default 223)")
    p.add_argument("--report-tokens", type=int, default=None, help="report tokens with labels (default 400)")
    p.add_argument("--gen-batch", type=int, default=None, help="generation batch (default 16)")
    p.add_argument("--gen-tokens", type=int, default=None, help="new tokens per report (default 128)")
    p.add_argument("--gen-repeats", type=int, default=None, help="timed generate calls (default 2)")
    p.add_argument("--time-budget-s", type=float, default=420.0, help="stop timed loops after this (default 420)")
    p.add_argument("--llm-layers", type=int, default=None, help="override the LLM depth (for checking on a CPU)")
    p.add_argument("--device", default=None, help="default cuda if available (smoke: cpu)")
    p.add_argument("--output", default=None, help="JSON path (default $OUT/gpu_paper_recipe.json or bench/results/)")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = dict(steps=2 if smoke else 10, warmup=1 if smoke else 2, batch_size=2 if smoke else 8,
                    grad_accum=1 if smoke else 2, prompt_tokens=16 if smoke else 223,
                    report_tokens=24 if smoke else 400, gen_batch=2 if smoke else 16, gen_tokens=4 if smoke else 128,
                    gen_repeats=1 if smoke else 2)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.preset = "tiny" if smoke else "paper"
    args.vocab_size = 1030 if smoke else 32006
    args.instruction_tokens = 8 if smoke else 60
    if args.device is None:
        args.device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16
    deadline = T0 + args.time_budget_s
    out_path = Path(args.output) if args.output else default_output()
    settings = {k: v for k, v in vars(args).items()}
    settings["dtype"] = "bfloat16 autocast; frozen LLM weights bf16, trainable weights fp32"
    rec = Recorder(out_path, settings)
    log(f"writing {out_path}; device {device}; preset {args.preset}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    with rec.phase("environment"):
        rec.data["environment"] = environment(device, args.smoke)
        env = rec.data["environment"]
        rec.data["machine"] = {"gpu_name": env.get("gpu_name", "cpu (smoke)"), "usable_cores": os.cpu_count(),
                               "torch_version": env["torch"], "transformers_version": env["transformers"],
                               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        log(f"environment: {json.dumps(rec.data['environment'], default=repr)[:600]}")

    model = config = ids = None
    with rec.phase("build"):
        config, ids = build_config(args)
        flash = bool(rec.data.get("environment", {}).get("flash_attn")) and device.type == "cuda"
        model, info = build_model(config, device, dtype, "flash_attention_2" if flash else "sdpa")
        rec.data["build"] = info
        base = model
        info["params_total"] = sum(p.numel() for p in base.parameters())
        info["params_vision_side"] = sum(p.numel() for n in VISION_MODULES if getattr(base.model, n, None) is not None
                                         for p in getattr(base.model, n).parameters())
        info["params_llm_matmul"] = llm_matmul_params(base.model.language_model, base.lm_head)
        info["checkpointing"] = enable_checkpointing(base)
        model, lora_info = add_lora(base)
        info.update(lora_info)
        info["fp32_master_params"] = master_weights_fp32(model)
        if device.type == "cuda":
            info["memory_after_build_gb"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)
        log(f"build: {json.dumps(info, default=repr)[:800]}")

    if model is not None:
        with rec.phase("train"):
            try:
                train_phase(rec, args, model, config, ids, device, dtype, deadline - 90 * (not args.smoke))
            except Exception as exc:
                if is_oom(exc):
                    raise
                # one retry in pure bf16 (every weight bf16, no autocast mixing) before giving up
                rec.data.setdefault("train", {})["mixed_precision_error"] = f"{type(exc).__name__}: {exc}"[:1000]
                log(f"train failed with fp32 master weights ({exc}); retrying in pure bf16")
                free_memory(device)
                model.to(dtype)
                rec.data["train"]["retried_pure_bf16"] = True
                train_phase(rec, args, model, config, ids, device, dtype, deadline - 90 * (not args.smoke))
        free_memory(device)
        with rec.phase("generate"):
            generate_phase(rec, args, model, config, ids, device, dtype)

    with rec.phase("summary"):
        rec.data["rows"] = summary_rows(rec)
        rec.data["total_seconds"] = round(time.perf_counter() - T0, 1)
        for row in rec.data["rows"]:
            status = {True: "pass", False: "MISS", None: "info"}[row["passed"]]
            log(f"{status:5s} {row['quantity']}: {row['value']} {row['unit']} {row['note']}")
    log(f"done; JSON at {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
