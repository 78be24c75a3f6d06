"""Importing the paper authors' checkpoint layout (and RadFM vision weights), on a fake official file at tiny sizes."""

import json
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dia_llama import DiaLlamaForConditionalGeneration
from dia_llama.cli import main
from dia_llama.convert import (
    RESEARCH_VISION_OVERRIDES,
    TOKENIZER_ERROR,
    convert_official_checkpoint,
    convert_official_state_dict,
    load_checkpoint_file,
    load_vision_weights,
    official_key_map,
)
from dia_llama.presets import build_model_and_processor, load_preset

LLM_VOCAB = 64
LLM_HIDDEN = 64
LORA_R, LORA_ALPHA = 8, 32
TEMP = 0.05
E = "embedding_layer."
LM = "lang_model.base_model.model."  # peft-0.7-wrapped LLaMA

# Tiny vision sizes (the `tiny` preset): 1 channel, 8×8×4 patches of a 64×64×32 volume → 512 tokens of width 96.
VIS = load_preset("tiny")["vision"]
LINEAR = RESEARCH_VISION_OVERRIDES  # RadFM / research-code tower: linear embedding, no blob features
C = VIS["hidden_size"]
INNER = VIS["num_attention_heads"] * VIS["head_dim"]
P_INNER = VIS["perceiver_heads"] * VIS["perceiver_head_dim"]
PATCH_DIM = math.prod(VIS["patch_size"]) * VIS["num_channels"]
NUM_PATCHES = math.prod(v // p for v, p in zip(VIS["volume_size"], VIS["patch_size"]))


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=LLM_VOCAB, hidden_size=LLM_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def write_llm_folder(path, with_weights=True):
    """A LLaMA folder like Llama-2-7b-chat-hf at toy size: word-level tokenizer (+ config and random weights)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(LLM_VOCAB - 3)])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(path)
    if with_weights:
        torch.manual_seed(1)
        LlamaForCausalLM(llama_config()).save_pretrained(path)
    return path


def official_state_dict(seed=0):
    """The research code's `MultiLLaMAForCausalLM.state_dict()` layout with random tensors at tiny sizes."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    sd = {}
    v = E + "vision_encoder."
    sd.update({v + "to_patch_embedding.1.weight": r(PATCH_DIM), v + "to_patch_embedding.1.bias": r(PATCH_DIM),
               v + "to_patch_embedding.2.weight": r(C, PATCH_DIM) * 0.05, v + "to_patch_embedding.2.bias": r(C),
               v + "to_patch_embedding.3.weight": r(C), v + "to_patch_embedding.3.bias": r(C)})
    sd.update({v + "pos_embedding.row_embed.weight": r(16, C // 3), v + "pos_embedding.col_embed.weight": r(16, C // 3),
               v + "pos_embedding.dep_embed.weight": r(128, C - 2 * (C // 3))})
    for i in range(VIS["num_hidden_layers"]):
        p = f"{v}transformer.layers.{i}."
        sd.update({p + "0.norm.weight": 1 + 0.1 * r(C), p + "0.norm.bias": 0.1 * r(C),
                   p + "0.fn.to_qkv.weight": r(3 * INNER, C) * 0.1,
                   p + "0.fn.to_out.0.weight": r(C, INNER) * 0.1, p + "0.fn.to_out.0.bias": 0.1 * r(C),
                   p + "1.norm.weight": 1 + 0.1 * r(C), p + "1.norm.bias": 0.1 * r(C),
                   p + "1.fn.net.0.weight": r(VIS["intermediate_size"], C) * 0.1,
                   p + "1.fn.net.0.bias": 0.1 * r(VIS["intermediate_size"]),
                   p + "1.fn.net.3.weight": r(C, VIS["intermediate_size"]) * 0.1, p + "1.fn.net.3.bias": 0.1 * r(C)})
    q = E + "perceiver."
    ff = C * VIS["perceiver_ff_mult"]
    sd[q + "latents"] = r(VIS["num_latents"], C)
    for i in range(VIS["perceiver_depth"]):
        p = f"{q}layers.{i}."
        for n in ("norm_media", "norm_latents"):
            sd[p + f"0.{n}.weight"], sd[p + f"0.{n}.bias"] = 1 + 0.1 * r(C), 0.1 * r(C)
        sd.update({p + "0.to_q.weight": r(P_INNER, C) * 0.1, p + "0.to_kv.weight": r(2 * P_INNER, C) * 0.1,
                   p + "0.to_out.weight": r(C, P_INNER) * 0.1, p + "1.0.weight": 1 + 0.1 * r(C),
                   p + "1.0.bias": 0.1 * r(C), p + "1.1.weight": r(ff, C) * 0.1, p + "1.3.weight": r(C, ff) * 0.1})
    sd[q + "norm.weight"], sd[q + "norm.bias"] = 1 + 0.1 * r(C), 0.1 * r(C)
    sd[E + "fc.weight"], sd[E + "fc.bias"] = r(LLM_HIDDEN, C) * 0.1, 0.1 * r(LLM_HIDDEN)
    sd[E + "figure_token_weight"] = r(2, LLM_HIDDEN)
    sd[E + "prototype"] = r(14, NUM_PATCHES)
    sd[E + "proj.weight"], sd[E + "proj.bias"] = r(C, C) * 0.1, 0.1 * r(C)
    sd[E + "pos_sample_memory"], sd[E + "neg_sample_memory"] = r(14, 1, C), r(14, 1, C)
    sd[E + "temp"] = torch.tensor(TEMP)
    for i in range(14):  # the unused per-disease classifier
        sd[E + f"group_cls_head.{i}.weight"], sd[E + f"group_cls_head.{i}.bias"] = r(2, C), r(2)
    sd[E + "bert_model.x"] = r(3)  # a RadFM-only leftover
    # LLaMA wrapped by peft 0.7: base weights under .base_layer (layer 0) or not (layer 1), LoRA on q/v, inv_freq.
    embed = r(LLM_VOCAB, LLM_HIDDEN)
    sd[E + "weight"] = embed  # the research code embeds its prompt with this (the same tensor as LLaMA's)
    sd[LM + "model.embed_tokens.weight"] = embed
    h, kv, inter = LLM_HIDDEN, LLM_HIDDEN // 2, 128
    for i in range(2):
        p = f"{LM}model.layers.{i}."
        base = ".base_layer.weight" if i == 0 else ".weight"
        sd.update({p + "self_attn.q_proj" + base: r(h, h) * 0.1, p + "self_attn.k_proj.weight": r(kv, h) * 0.1,
                   p + "self_attn.v_proj" + base: r(kv, h) * 0.1, p + "self_attn.o_proj.weight": r(h, h) * 0.1,
                   p + "mlp.gate_proj.weight": r(inter, h) * 0.1, p + "mlp.up_proj.weight": r(inter, h) * 0.1,
                   p + "mlp.down_proj.weight": r(h, inter) * 0.1, p + "input_layernorm.weight": 1 + 0.1 * r(h),
                   p + "post_attention_layernorm.weight": 1 + 0.1 * r(h),
                   p + "self_attn.rotary_emb.inv_freq": r(8)})
        for proj, out_dim in (("q_proj", h), ("v_proj", kv)):
            sd[p + f"self_attn.{proj}.lora_A.default.weight"] = r(LORA_R, h) * 0.1
            sd[p + f"self_attn.{proj}.lora_B.default.weight"] = r(out_dim, LORA_R) * 0.1
    sd[LM + "model.norm.weight"] = 1 + 0.1 * r(h)
    sd[LM + "lm_head.weight"] = r(LLM_VOCAB, h) * 0.1
    return sd


def merged(sd, prefix, proj):
    """LoRA merge written out: W + (alpha / r) · B · A."""
    base = sd.get(f"{prefix}self_attn.{proj}.base_layer.weight", sd.get(f"{prefix}self_attn.{proj}.weight"))
    a = sd[f"{prefix}self_attn.{proj}.lora_A.default.weight"]
    b = sd[f"{prefix}self_attn.{proj}.lora_B.default.weight"]
    return base + (LORA_ALPHA / LORA_R) * b @ a


@torch.no_grad()
def place_by_hand(config, sd):
    """The official tensors copied one by one into a freshly built model (independent of convert.py)."""
    model = DiaLlamaForConditionalGeneration(config).eval()
    m, v = model.model, E + "vision_encoder."
    pe = m.vision_tower.patch_embed
    for mod, i in ((pe.norm_in, 1), (pe.proj, 2), (pe.norm_out, 3)):
        mod.weight.copy_(sd[f"{v}to_patch_embedding.{i}.weight"])
        mod.bias.copy_(sd[f"{v}to_patch_embedding.{i}.bias"])
    for n in ("row", "col", "dep"):
        getattr(m.vision_tower.pos_embed, f"{n}_embed").weight.copy_(sd[f"{v}pos_embedding.{n}_embed.weight"])
    for i, layer in enumerate(m.vision_tower.layers):
        p = f"{v}transformer.layers.{i}."
        for mod, name in ((layer.attn_norm, "0.norm"), (layer.attn.out_proj, "0.fn.to_out.0"),
                          (layer.mlp_norm, "1.norm"), (layer.mlp.fc1, "1.fn.net.0"), (layer.mlp.fc2, "1.fn.net.3")):
            mod.weight.copy_(sd[p + name + ".weight"])
            mod.bias.copy_(sd[p + name + ".bias"])
        layer.attn.qkv.weight.copy_(sd[p + "0.fn.to_qkv.weight"])
    rs, q = m.resampler, E + "perceiver."
    rs.latents.copy_(sd[q + "latents"])
    for i, layer in enumerate(rs.layers):
        p = f"{q}layers.{i}."
        for n in ("norm_media", "norm_latents"):
            getattr(layer.attn, n).weight.copy_(sd[p + f"0.{n}.weight"])
            getattr(layer.attn, n).bias.copy_(sd[p + f"0.{n}.bias"])
        for n in ("to_q", "to_kv", "to_out"):
            getattr(layer.attn, n).weight.copy_(sd[p + f"0.{n}.weight"])
        layer.ff_norm.weight.copy_(sd[p + "1.0.weight"])
        layer.ff_norm.bias.copy_(sd[p + "1.0.bias"])
        layer.ff_in.weight.copy_(sd[p + "1.1.weight"])
        layer.ff_out.weight.copy_(sd[p + "1.3.weight"])
    rs.norm.weight.copy_(sd[q + "norm.weight"])
    rs.norm.bias.copy_(sd[q + "norm.bias"])
    m.multi_modal_projector.weight.copy_(sd[E + "fc.weight"])
    m.multi_modal_projector.bias.copy_(sd[E + "fc.bias"])
    db = m.disease_branch
    db.attention_weights.copy_(sd[E + "prototype"])
    db.proj.weight.copy_(sd[E + "proj.weight"])
    db.proj.bias.copy_(sd[E + "proj.bias"])
    db.abnormal_prototypes.copy_(sd[E + "pos_sample_memory"][:, 0])
    db.normal_prototypes.copy_(sd[E + "neg_sample_memory"][:, 0])
    db.log_temperature.fill_(math.log(float(sd[E + "temp"])))
    lm = m.language_model
    lm.embed_tokens.weight[:LLM_VOCAB] = sd[E + "weight"]
    lm.embed_tokens.weight[config.image_start_token_id] = sd[E + "figure_token_weight"][0]
    lm.embed_tokens.weight[config.image_end_token_id] = sd[E + "figure_token_weight"][1]
    for i, layer in enumerate(lm.layers):
        p = f"{LM}model.layers.{i}."
        layer.self_attn.q_proj.weight.copy_(merged(sd, p, "q_proj"))
        layer.self_attn.v_proj.weight.copy_(merged(sd, p, "v_proj"))
        layer.self_attn.k_proj.weight.copy_(sd[p + "self_attn.k_proj.weight"])
        layer.self_attn.o_proj.weight.copy_(sd[p + "self_attn.o_proj.weight"])
        for n in ("gate_proj", "up_proj", "down_proj"):
            getattr(layer.mlp, n).weight.copy_(sd[p + f"mlp.{n}.weight"])
        layer.input_layernorm.weight.copy_(sd[p + "input_layernorm.weight"])
        layer.post_attention_layernorm.weight.copy_(sd[p + "post_attention_layernorm.weight"])
    lm.norm.weight.copy_(sd[LM + "model.norm.weight"])
    model.lm_head.weight[:LLM_VOCAB] = sd[LM + "lm_head.weight"]
    return model


def official_disease_logits(sd, patch_features, legacy):
    """The research code's disease branch: training-mode pooling (over patches) or its inference path (`mode='cls'`,
    summing over the disease axis so disease i reads patch token i). Returns (sim_pos − sim_neg) / temp, (B, 14)."""
    attention = F.softmax(sd[E + "prototype"].unsqueeze(0).unsqueeze(-1), dim=-2)  # 1, 14, v, 1
    group = patch_features.unsqueeze(1) * attention  # b, 14, v, d
    pooled = group.sum(dim=1)[:, :14] if legacy else group.sum(dim=2)  # b, 14, d
    feats = F.normalize(F.linear(pooled, sd[E + "proj.weight"], sd[E + "proj.bias"]), dim=-1)
    pos = F.normalize(sd[E + "pos_sample_memory"][:, 0], dim=-1)
    neg = F.normalize(sd[E + "neg_sample_memory"][:, 0], dim=-1)
    return ((feats * pos).sum(-1) - (feats * neg).sum(-1)) / float(sd[E + "temp"])


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return write_llm_folder(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    sd = official_state_dict()
    path = tmp_path_factory.mktemp("official") / "pytorch_model.bin"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def converted(tmp_path_factory, official, llm_dir):
    """`dia-llama convert-official` through the CLI."""
    out = tmp_path_factory.mktemp("converted")
    report = out.parent / "report.json"
    assert main(["convert-official", str(official[0]), str(out), "--llm", str(llm_dir), "--preset", "tiny",
                 "--dtype", "float32", "--report", str(report)]) == 0
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    return model, AutoProcessor.from_pretrained(out), json.loads(report.read_text())


def inputs(processor, diagnoses=None):
    rng = np.random.default_rng(0)
    vols = [rng.normal(-300, 400, size=(64, 64, 32)).astype(np.float32) for _ in range(2)]
    diagnoses = diagnoses if diagnoses is not None else [[1, 0] * 7, [1, 0] * 7]
    return processor(volumes=vols, diagnoses=diagnoses)


# ---------------------------------------------------------------------------------------------------------------------
# Tests


def test_converted_model_equals_hand_placed_weights(converted, official, llm_dir):
    model, processor, report = converted
    sd = official[1]
    ref = place_by_hand(model.config, sd)
    batch = inputs(processor)
    with torch.no_grad():
        ours, theirs = model(**batch), ref(**batch)
        dx_ours, dx_ref = model.diagnose(batch["pixel_values"]), ref.diagnose(batch["pixel_values"])
        expected = official_disease_logits(sd, ref.model.encode_volume(batch["pixel_values"]), legacy=False)
    torch.testing.assert_close(ours.logits[..., :LLM_VOCAB], theirs.logits[..., :LLM_VOCAB], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx_ours.probabilities, dx_ref.probabilities, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx_ours.logits, dx_ref.logits, rtol=1e-5, atol=1e-5)
    # the research code's (training-mode) disease branch
    torch.testing.assert_close(dx_ours.logits, expected, rtol=1e-5, atol=1e-4)
    assert not model.config.legacy_disease_pooling
    assert model.config.language_model_source == llm_dir.name  # the --llm folder's name, never a local path
    assert math.isclose(model.model.disease_branch.temperature.item(), TEMP, rel_tol=1e-6)
    # the added tokens (placeholders, padding) take no probability mass: the official head has no rows for them
    assert torch.equal(model.lm_head.weight[LLM_VOCAB:], torch.zeros_like(model.lm_head.weight[LLM_VOCAB:]))
    assert (ours.logits[..., LLM_VOCAB:] == torch.finfo(ours.logits.dtype).min).all()
    torch.testing.assert_close(ours.logits.softmax(-1)[..., :LLM_VOCAB].sum(-1), torch.ones(ours.logits.shape[:2]),
                               rtol=1e-5, atol=1e-8)
    # the report: nothing unknown, obsolete keys dropped, 4 LoRA pairs merged
    assert report["unmapped"] == [] and report["shape_mismatches"] == [] and report["missing"] == []
    assert E + "bert_model.x" in report["dropped"] and E + "group_cls_head.3.weight" in report["dropped"]
    assert f"{LM}model.layers.1.self_attn.rotary_emb.inv_freq" in report["dropped"]
    assert len(report["lora_merged"]) == 4 and report["lora_unmerged"] == []


def test_legacy_flag_reproduces_research_inference_path(official, llm_dir, tmp_path, converted):
    out, report = convert_official_checkpoint(official[0], tmp_path / "legacy", llm=llm_dir, preset="tiny",
                                              legacy_pooling=True, dtype="float32")
    legacy = DiaLlamaForConditionalGeneration.from_pretrained(out).eval()
    assert legacy.config.legacy_disease_pooling
    # the official prompt's words and attention, although the tiny preset shortens the instruction
    from dia_llama.configuration_dia_llama import DEFAULT_INSTRUCTION, DEFAULT_PROMPT_TEMPLATE

    assert legacy.config.instruction == DEFAULT_INSTRUCTION and legacy.config.prompt_template == DEFAULT_PROMPT_TEMPLATE
    assert legacy.config.disease_attention_min_intensity is None and not legacy.config.disease_max_pooling
    pixel_values = inputs(converted[1])["pixel_values"]
    with torch.no_grad():
        feats = legacy.model.encode_volume(pixel_values)
        dx = legacy.diagnose(pixel_values)
        fixed = converted[0].diagnose(pixel_values)
    expected = official_disease_logits(official[1], feats, legacy=True)
    torch.testing.assert_close(dx.logits, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(dx.present, expected > 0)  # research code: present iff sim(pos) > sim(neg)
    assert not torch.allclose(dx.logits, fixed.logits, atol=1e-3)


def test_lora_merge_math_and_report(official, converted):
    config = converted[0].config
    sd = official[1]
    out, report = convert_official_state_dict(sd, config)
    p = f"{LM}model.layers.0.self_attn."
    w = sd[p + "q_proj.base_layer.weight"]
    a, b = sd[p + "q_proj.lora_A.default.weight"], sd[p + "q_proj.lora_B.default.weight"]
    q = out["model.language_model.layers.0.self_attn.q_proj.weight"]
    torch.testing.assert_close(q, w + 4.0 * (b @ a), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(q, w)
    assert torch.equal(out["model.language_model.layers.0.self_attn.k_proj.weight"], sd[p + "k_proj.weight"])
    assert sorted(report.lora_merged)[0] == "model.language_model.layers.0.self_attn.q_proj.weight"
    # other alpha: scaling alpha / r
    out16, _ = convert_official_state_dict(sd, config, lora_alpha=16)
    torch.testing.assert_close(out16["model.language_model.layers.0.self_attn.q_proj.weight"], w + 2.0 * (b @ a),
                               rtol=1e-5, atol=1e-6)
    # not merged: base weights kept, every LoRA tensor reported
    raw, report = convert_official_state_dict(sd, config, merge_lora=False)
    assert torch.equal(raw["model.language_model.layers.0.self_attn.q_proj.weight"], w)
    assert len(report.lora_unmerged) == 8 and report.warnings


def test_unexpected_keys_are_reported_never_ignored(official, llm_dir, converted, tmp_path):
    sd = dict(official[1])
    sd[E + "mystery_head.weight"] = torch.zeros(3)
    sd[f"{LM}model.layers.7.mlp.up_proj.weight"] = torch.zeros(2, 2)  # a layer this config does not have
    sd[E + "prototype"] = torch.zeros(14, NUM_PATCHES + 1)  # wrong patch count
    out, report = convert_official_state_dict(sd, converted[0].config)
    assert E + "mystery_head.weight" in report.unmapped and f"{LM}model.layers.7.mlp.up_proj.weight" in report.unmapped
    assert "layers.7" in report.notes[f"{LM}model.layers.7.mlp.up_proj.weight"]
    assert report.shape_mismatches[0][:2] == (E + "prototype", "model.disease_branch.attention_weights")
    assert report.missing == ["model.disease_branch.attention_weights"] and not report.ok
    assert "mystery_head" in report.summary()
    with pytest.raises(ValueError, match="mystery_head"):
        convert_official_checkpoint(sd, tmp_path / "strict", llm=llm_dir, preset="tiny")
    # embedding_layer.weight (what the research code embeds with) wins over a differing lang_model copy
    sd = dict(official[1], **{f"{LM}model.embed_tokens.weight": torch.zeros(LLM_VOCAB, LLM_HIDDEN)})
    out, report = convert_official_state_dict(sd, converted[0].config)
    assert torch.equal(out["model.language_model.embed_tokens.weight"][:LLM_VOCAB], sd[E + "weight"])
    assert f"{LM}model.embed_tokens.weight" in report.dropped and any("differs" in w for w in report.warnings)
    # τ outside the bounds is clamped with a warning
    sd = dict(official[1], **{E + "temp": torch.tensor(5.0)})
    out, report = convert_official_state_dict(sd, converted[0].config)
    assert math.isclose(out["model.disease_branch.log_temperature"].item(), 0.0, abs_tol=1e-7)
    assert any("temperature" in w for w in report.warnings)


def test_llm_weights_from_llm_folder_when_checkpoint_lacks_them(official, llm_dir, tmp_path):
    """A trainable-parameters-only save: base LLaMA weights come from --llm, LoRA merges onto them."""
    sd = {k: v for k, v in official[1].items()
          if not (k.startswith("lang_model.") and ".lora_" not in k) and k != E + "weight"}
    out, report = convert_official_checkpoint(sd, tmp_path / "partial", llm=llm_dir, preset="tiny", dtype="float32")
    assert "model.layers.0.self_attn.q_proj.weight" in report.filled_from_llm
    from safetensors.torch import load_file

    llama = load_file(llm_dir / "model.safetensors")
    model = DiaLlamaForConditionalGeneration.from_pretrained(out)
    p = f"{LM}model.layers.1.self_attn."
    expected = llama["model.layers.1.self_attn.v_proj.weight"] + 4.0 * (
        official[1][p + "v_proj.lora_B.default.weight"] @ official[1][p + "v_proj.lora_A.default.weight"])
    torch.testing.assert_close(model.model.language_model.layers[1].self_attn.v_proj.weight, expected,
                               rtol=1e-5, atol=1e-6)
    emb = model.model.language_model.embed_tokens.weight
    assert torch.equal(emb[:LLM_VOCAB], llama["model.embed_tokens.weight"])
    assert torch.equal(emb[model.config.image_end_token_id], official[1][E + "figure_token_weight"][1])


def test_default_dtype_policy_mirrors_the_official_inference(official, llm_dir, tmp_path):
    """A bfloat16 checkpoint (as the paper trained) → language model float16, vision side float32 (the official
    inference ran `MyEmbedding` in float32 beside a `.half()` LLaMA), τ exact in float32; `dtype="auto"` reloads it
    the same way."""
    sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in official[1].items()}
    out, _ = convert_official_checkpoint(sd, tmp_path / "official_dtype", llm=llm_dir, preset="tiny")
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    for model in (DiaLlamaForConditionalGeneration.from_pretrained(out, dtype="auto"),
                  DiaLlamaForConditionalGeneration.from_pretrained(out, dtype=torch.float16)):
        dtypes = {name: p.dtype for name, p in model.named_parameters()}
        vision_side = ("model.vision_tower.", "model.resampler.", "model.multi_modal_projector.",
                       "model.disease_branch.")
        assert all(d == torch.float32 for n, d in dtypes.items() if n.startswith(vision_side))
        assert all(d == torch.float16 for n, d in dtypes.items() if not n.startswith(vision_side))
        assert model.dtype == torch.float16
        tau = float(sd[E + "temp"].float())  # the bfloat16 value, as the official code reads it into float32
        assert model.model.disease_branch.temperature.item() == pytest.approx(tau, rel=1e-6)
        row = model.model.vision_tower.pos_embed.row_embed.weight
        torch.testing.assert_close(row, sd[E + "vision_encoder.pos_embedding.row_embed.weight"].float(),
                                   rtol=0, atol=0)
    # the other policies are explicit
    out32, _ = convert_official_checkpoint(sd, tmp_path / "fp32", llm=llm_dir, preset="tiny", dtype="float32")
    assert {p.dtype for p in DiaLlamaForConditionalGeneration.from_pretrained(out32).parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="unknown dtype policy"):
        convert_official_checkpoint(sd, tmp_path / "bad", llm=llm_dir, preset="tiny", dtype="half-ish")


def test_llm_is_required_for_the_tokenizer(official, tmp_path, capsys):
    with pytest.raises(ValueError, match="does not ship a tokenizer"):
        convert_official_checkpoint(official[0], tmp_path / "x")
    assert main(["convert-official", str(official[0]), str(tmp_path / "y"), "--preset", "tiny"]) == 2
    assert TOKENIZER_ERROR in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_tokenizer_only_llm_folder_uses_checkpoint_llama(official, tmp_path, converted):
    """--llm with only a tokenizer: the checkpoint's frozen LLaMA is used, its sizes read off the tensors."""
    llm = write_llm_folder(tmp_path / "tok", with_weights=False)
    out, report = convert_official_checkpoint(official[0], tmp_path / "conv", llm=llm, preset="tiny", dtype="float32")
    assert report.filled_from_llm == []
    model = DiaLlamaForConditionalGeneration.from_pretrained(out)
    for (name, a), b in zip(model.state_dict().items(), converted[0].state_dict().values()):
        assert torch.equal(a, b), name
    # neither the checkpoint nor --llm holds the LLaMA weights: a clear error
    partial = {k: v for k, v in official[1].items() if not k.startswith("lang_model.") and k != E + "weight"}
    with pytest.raises(ValueError, match="language-model weights are in neither the checkpoint nor --llm"):
        convert_official_checkpoint(partial, tmp_path / "none", llm=llm, preset="tiny")


def test_load_checkpoint_file_is_weights_only(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    torch.save({"w": torch.ones(2), "payload": Payload()}, tmp_path / "evil.bin")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint_file(tmp_path / "evil.bin")
    assert not marker.exists()
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        load_checkpoint_file(tmp_path / "weights.npz")
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(tmp_path / "absent.bin")


def test_load_checkpoint_file_formats(tmp_path, official):
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in list(official[1].items())[:40]}
    save_file(sd, tmp_path / "w.safetensors")
    assert load_checkpoint_file(tmp_path / "w.safetensors").keys() == sd.keys()
    # a folder of pytorch_model*.bin shards with their index
    keys = list(sd)
    shards = {"pytorch_model-00001-of-00002.bin": keys[:20], "pytorch_model-00002-of-00002.bin": keys[20:]}
    folder = tmp_path / "sharded"
    folder.mkdir()
    for name, part in shards.items():
        torch.save({k: sd[k] for k in part}, folder / name)
    index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    loaded = load_checkpoint_file(folder)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in keys)
    # wrapped / DDP-prefixed checkpoints are unwrapped
    torch.save({"epoch": 3, "model_state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "wrapped.pt")
    assert load_checkpoint_file(tmp_path / "wrapped.pt").keys() == sd.keys()
    assert len(official_key_map()) > 20


def radfm_state(sd):
    """RadFM's layout: ViT3D + perceiver + a 5120-wide fc (not transferable) + its grounding parts."""
    out = {k: v for k, v in sd.items() if k.startswith((E + "vision_encoder.", E + "perceiver."))}
    out.update({E + "fc.weight": torch.zeros(80, C), E + "bert_model.encoder.w": torch.zeros(2),
                E + "transformer_decoder.layers.0.w": torch.zeros(2), E + "cls_head.weight": torch.zeros(1, 12),
                E + "figure_token_weight": torch.zeros(2, 80), "lang_model.model.norm.weight": torch.zeros(80)})
    return out


def test_load_vision_weights_from_radfm(official, tmp_path):
    model, _ = build_model_and_processor("tiny", vision_overrides=LINEAR)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = radfm_state(official[1])
    report = load_vision_weights(model, state)
    assert report.source == "radfm" and report.missing == [] and report.unmapped == []
    assert E + "bert_model.encoder.w" in report.dropped and E + "fc.weight" in report.skipped
    vt = model.model.vision_tower
    last = VIS["num_hidden_layers"] - 1
    assert torch.equal(vt.layers[last].mlp.fc2.weight,
                       state[E + f"vision_encoder.transformer.layers.{last}.1.fn.net.3.weight"])
    assert torch.equal(model.model.resampler.latents, state[E + "perceiver.latents"])
    for key in ("model.multi_modal_projector.weight", "model.disease_branch.attention_weights", "lm_head.weight"):
        assert torch.equal(model.state_dict()[key], before[key]), key
    # RadFM's split files: the bare ViT state dict and {"perceiver": …, "fc": …}
    vit = {k.removeprefix(E + "vision_encoder."): v for k, v in state.items() if k.startswith(E + "vision_encoder.")}
    torch.save(vit, tmp_path / "RadFM_vit3d.pth")
    perceiver = {k.removeprefix(E + "perceiver."): v for k, v in state.items() if k.startswith(E + "perceiver.")}
    torch.save({"perceiver": perceiver, "fc": {"weight": torch.zeros(80, C)}}, tmp_path / "RadFM_perceiver_fc.pth")
    fresh, _ = build_model_and_processor("tiny", seed=3, vision_overrides=LINEAR)
    r1 = load_vision_weights(fresh, tmp_path / "RadFM_vit3d.pth")
    r2 = load_vision_weights(fresh, tmp_path / "RadFM_perceiver_fc.pth", source="radfm")
    assert len(r1.mapped) + len(r2.mapped) == len(report.mapped)
    for key in ("model.vision_tower.patch_embed.proj.weight", "model.resampler.layers.0.attn.to_kv.weight"):
        assert torch.equal(fresh.state_dict()[key], model.state_dict()[key]), key


def test_load_vision_weights_official_includes_disease_branch(official, converted):
    # the research code's branch: static disease attention (the tiny preset's dynamic one has more weights)
    model, _ = build_model_and_processor("tiny", vision_overrides=LINEAR, disease_attention="static")
    report = load_vision_weights(model, official[0])
    assert report.source == "official" and report.missing == [] and report.unmapped == []
    db = model.model.disease_branch
    assert torch.equal(db.abnormal_prototypes, official[1][E + "pos_sample_memory"][:, 0])
    assert math.isclose(db.temperature.item(), TEMP, rel_tol=1e-6)
    # a Dia-LLaMA checkpoint's own keys
    fresh, _ = build_model_and_processor("tiny", seed=5, vision_overrides=LINEAR, disease_attention="static")
    report = load_vision_weights(fresh, converted[0].state_dict())
    assert report.source == "dia_llama" and report.missing == []
    assert torch.equal(fresh.model.resampler.norm.weight, converted[0].model.resampler.norm.weight)
