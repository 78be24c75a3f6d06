"""Parity with the research code (zhi-xuan-chen/Dia-LLaMA at 6c278fe), against outputs it produced itself.

`fixtures/official/` holds what the official modules and data pipeline computed (see its README and the script
that made them); these tests rebuild the same weights, convert them with `dia_llama.convert` and compare.
"""

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LogitsProcessor, LogitsProcessorList

from dia_llama import DiaLlamaConfig, DiaLlamaForConditionalGeneration, DiaLlamaVisionConfig
from dia_llama.configuration_dia_llama import CHEXPERT_14, DEFAULT_INSTRUCTION
from dia_llama.convert import RESEARCH_VISION_OVERRIDES, convert_official_state_dict, load_vision_weights
from dia_llama.presets import add_special_tokens, build_config, build_processor, load_llm_tokenizer
from helpers.official_reference import parameter, volume

FIXTURES = Path(__file__).parent / "fixtures" / "official"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def modules():
    meta = json.loads((FIXTURES / "modules.json").read_text())
    with np.load(FIXTURES / "modules.npz") as arrays:
        return meta, {k: torch.from_numpy(arrays[k]) for k in arrays.files}


def official_state(spec, fixture: str) -> dict:
    """The official parameters the fixture script filled, rebuilt from their (name, shape, offset, scale)."""
    return {name: torch.from_numpy(parameter(f"{fixture}/{name}", shape, offset, scale))
            for name, shape, offset, scale in spec}


def toy_text_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)


# ---------------------------------------------------------------------------------------------------------------------
# Modules


def test_vit3d_and_perceiver_equal_the_official_modules(modules):
    meta, out = modules
    small, perceiver = meta["small_vit"], meta["small_perceiver"]
    vision = DiaLlamaVisionConfig(
        volume_size=meta["small_volume"][2:], num_channels=small["channels"],
        patch_size=(small["image_patch_size"], small["image_patch_size"], small["frame_patch_size"]),
        hidden_size=small["dim"], num_hidden_layers=small["depth"], num_attention_heads=small["heads"],
        head_dim=small["dim_head"], intermediate_size=small["mlp_dim"], perceiver_depth=perceiver["depth"],
        num_latents=perceiver["num_latents"], perceiver_heads=perceiver["heads"],
        perceiver_head_dim=perceiver["dim_head"], perceiver_ff_mult=perceiver["ff_mult"], **RESEARCH_VISION_OVERRIDES)
    model = DiaLlamaForConditionalGeneration(DiaLlamaConfig(vision_config=vision, text_config=toy_text_config(16)))
    report = load_vision_weights(model, official_state(meta["small_parameters"], "small"))
    assert report.ok and report.missing == [] and report.source == "radfm"
    model.eval()
    with torch.no_grad():
        features = model.model.encode_volume(torch.from_numpy(volume("small/input", meta["small_volume"])))
        latents = model.model.resampler(features)
    torch.testing.assert_close(features, out["small_vit_features"], **TOLERANCE)
    torch.testing.assert_close(latents, out["small_perceiver_latents"][:, 0], **TOLERANCE)


@pytest.fixture(scope="module")
def converted_embedding(modules):
    """The official `MyEmbedding` at the paper's vision size, converted; the text side is a toy LLaMA whose first 100
    rows are the official embedding table (ids: 100 `<image>`, 101 `<image_start>`, 102 `<image_end>`)."""
    meta, _ = modules
    vocab = meta["embedding"]["num_embeddings"]
    config = DiaLlamaConfig(
        vision_config=DiaLlamaVisionConfig(**RESEARCH_VISION_OVERRIDES), text_config=toy_text_config(vocab + 5),
        image_token_id=vocab, image_start_token_id=vocab + 1, image_end_token_id=vocab + 2,
        diagnosis_token_id=vocab + 3, disease_token_id=vocab + 4)
    state, report = convert_official_state_dict(official_state(meta["full_parameters"], "full"), config)
    assert report.ok and report.unmapped == []
    assert all(k.startswith("model.language_model.layers.")
               or k in ("lm_head.weight", "model.language_model.norm.weight")
               for k in report.missing)
    model = DiaLlamaForConditionalGeneration(config)
    model.load_state_dict(state, strict=False)
    return model.eval()


def test_disease_branch_equals_the_official_training_and_inference_paths(modules, converted_embedding):
    meta, out = modules
    model = converted_embedding
    pixel_values = torch.from_numpy(volume("full/input", meta["full_volume"]))[:, 0]  # (B, C, H, W, D)
    with torch.no_grad():
        features = model.model.encode_volume(pixel_values)  # (B, 1024, 768)
        torch.testing.assert_close(features[0, meta["feature_rows"]], out["full_vit_feature_rows"], **TOLERANCE)
        tau = model.model.disease_branch.temperature
        # training path (`mode='train'`): ground-truth class first, similarities / τ
        _, logits = model.model.disease_branch(features)
        sim, labels = out["full_train_similarities"], torch.tensor(meta["cls_labels"])
        expected = torch.where(labels == 1, sim[:, 0] - sim[:, 1], sim[:, 1] - sim[:, 0])
        torch.testing.assert_close(logits[0], expected, **TOLERANCE)
        # inference path (`mode='cls'`, with the research code's pooling bug) through diagnose and the legacy flag
        model.config.legacy_disease_pooling = True
        try:
            dx = model.model.diagnose(patch_features=features)
        finally:
            model.config.legacy_disease_pooling = False
    sim = out["full_cls_similarities"]  # (B, 14, 2): [sim(pos), sim(neg)]
    torch.testing.assert_close(dx.logits * tau, sim[..., 0] - sim[..., 1], **TOLERANCE)
    assert torch.equal(dx.present, sim[..., 0] > sim[..., 1])


def test_prompt_embeddings_equal_the_official_embedding_layer(modules, converted_embedding):
    """Visual tokens (ViT3D → perceiver → projector) at the `<image>` slots, the `<image>`/`</image>` rows and the word
    rows: the inputs_embeds the language model receives, against `MyEmbedding`'s output."""
    meta, out = modules
    model = converted_embedding
    vocab = meta["embedding"]["num_embeddings"]
    official_to_ours = {vocab: vocab + 1, vocab + 1: vocab + 2, **{vocab + 2 + k: vocab for k in range(32)}}
    input_ids = torch.tensor([[official_to_ours.get(i, i) for i in meta["text_ids"]]])
    pixel_values = torch.from_numpy(volume("full/input", meta["full_volume"]))[:, 0]
    captured = {}

    def keep_inputs_embeds(module, args, kwargs) -> None:
        captured["inputs_embeds"] = kwargs["inputs_embeds"]

    handle = model.model.language_model.register_forward_pre_hook(keep_inputs_embeds, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=input_ids, pixel_values=pixel_values)
    finally:
        handle.remove()
    torch.testing.assert_close(captured["inputs_embeds"], out["full_prompt_embeddings"], **TOLERANCE)


# ---------------------------------------------------------------------------------------------------------------------
# Prompt token ids with the real LLaMA-2 tokenizer


@pytest.fixture(scope="module")
def llama_parity():
    """The official ids of the 362 CTRG test cases, our processor with the real LLaMA-2 tokenizer (32 visual tokens,
    as the paper), a toy model carrying that processor's diagnosis table, and the id map official → ours."""
    tokenizer_dir = SHARED_DATA / "llama2_tokenizer"
    if not tokenizer_dir.is_dir():
        pytest.skip(f"the real LLaMA-2 tokenizer is not at {tokenizer_dir} (../shared beside the checkout)")
    with gzip.open(FIXTURES / "prompt_ids.json.gz", "rt", encoding="utf-8") as f:
        official = json.load(f)
    tokenizer = load_llm_tokenizer(tokenizer_dir)
    add_special_tokens(tokenizer)
    # the official prompt's instruction (the tiny preset shortens it)
    config = build_config("tiny", len(tokenizer), vision_overrides={"num_latents": 32}, instruction=DEFAULT_INSTRUCTION)
    processor = build_processor("paper", tokenizer, config)
    processor.prepare_model_config(config)
    config.get_text_config().pad_token_id = tokenizer.pad_token_id
    config.get_text_config().eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = DiaLlamaForConditionalGeneration(config).eval()
    specials = official["special_token_ids"]
    to_ours = {specials["<image>"]: config.image_start_token_id, specials["</image>"]: config.image_end_token_id,
               **{specials[f"<image{k}>"]: config.image_token_id for k in range(32)}}
    reports = {r["id"]: r
               for r in csv.DictReader(open(SHARED_DATA / "ctrg_chest" / "test_reports.csv", encoding="utf-8"))}
    cases = []
    for case in official["cases"]:
        row = reports[case["id"]]
        states = [f'The "{d}" is positive.' in row["prompt"] for d in CHEXPERT_14]
        assert sum(f'The "{d}" is ' in row["prompt"] for d in CHEXPERT_14) == 14
        ids = [to_ours.get(i, i) for i in case["input_ids"]]
        cases.append(dict(id=case["id"], report=row["ground_truth"], states=states, ids=ids,
                          prompt_length=case["prompt_length"]))
    return processor, model, cases


def test_training_ids_equal_the_official_whole_string_tokenization(llama_parity):
    processor, _, cases = llama_parity
    assert len(cases) == 362
    mismatched = []
    for case in cases:
        batch = processor(reports=[case["report"]], disease_labels=[case["states"]])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        n = case["prompt_length"]
        if ids != case["ids"] or labels != [-100] * n + case["ids"][n:]:
            mismatched.append(case["id"])
    assert mismatched == [], f"{len(mismatched)} of 362 cases differ from the official ids: {mismatched[:5]}"
    assert 200 < cases[0]["prompt_length"] < 240  # ≈ 223: BOS, 34 image tokens, 14 sentences, the instruction


def test_generate_prompt_ids_equal_the_official_inference_prompt(llama_parity):
    """`generate` writes the diagnostic prompt from `config.diagnosis_prompt_ids`: for the states of all 362 cases
    (any set of diagnoses) it must give the official prompt's ids."""
    processor, model, cases = llama_parity
    rows = processor.pad([processor.prompt_ids() for _ in cases], side="left")
    present = torch.tensor([case["states"] for case in cases])
    ids, mask = model.expand_diagnosis_prompts(rows["input_ids"], rows["attention_mask"], present,
                                               processor.tokenizer.pad_token_id)
    expanded = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    mismatched = [c["id"] for c, e in zip(cases, expanded) if e != c["ids"][: c["prompt_length"]]]
    assert mismatched == [], f"{len(mismatched)} of 362 prompts differ from the official ones: {mismatched[:5]}"
    # two-step inference (given diagnoses) tokenizes the whole prompt text and agrees
    two_step = processor(diagnoses=[cases[0]["states"]])["input_ids"][0].tolist()
    assert two_step == cases[0]["ids"][: cases[0]["prompt_length"]]


class _FirstStepInputs(LogitsProcessor):
    """Records the input_ids generation starts from (the expanded prompt)."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        if not self.seen:
            self.seen.append(input_ids.clone())
        return scores


def test_generate_runs_on_the_official_prompt(llama_parity):
    processor, model, cases = llama_parity
    case = cases[1]
    inputs = processor(volumes=[np.zeros((64, 64, 32), np.float32)])
    recorder = _FirstStepInputs()
    with torch.no_grad():
        out = model.generate(**inputs, diagnoses=torch.tensor([case["states"]]), max_new_tokens=2, do_sample=False,
                             logits_processor=LogitsProcessorList([recorder]), return_dict_in_generate=True)
    assert recorder.seen[0][0].tolist() == case["ids"][: case["prompt_length"]]
    new_tokens = out.sequences[0, case["prompt_length"]:].tolist()
    assert not set(new_tokens) & set(model.input_only_token_ids())  # placeholders and padding are never generated
