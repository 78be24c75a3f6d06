"""DiaLlamaProcessor: the diagnostic prompt's token ids (one-call tokenization, the piece table `generate` uses) and
the `--llm` tokenizer loader."""

import importlib.util
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dia_llama.presets import build_model_and_processor, load_llm_tokenizer

SHARED_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llama2_tokenizer"


@pytest.fixture(scope="module")
def tiny():
    return build_model_and_processor("tiny")


def test_generate_pieces_join_to_the_one_call_tokenization_of_any_diagnosis(tiny):
    """With the tiny byte-level BPE tokenizer too, the piece table `generate` uses gives the one-call tokenization of
    the prompt text (what training prompts use) for any diagnosis."""
    model, processor = tiny
    names = processor.disease_names
    patterns = [[False] * 14, [True] * 14, [i % 2 == 0 for i in range(14)], [i % 3 == 0 for i in range(14)]]
    patterns += [[j == i for j in range(14)] for i in range(14)]
    rows = processor.pad([processor.prompt_ids() for _ in patterns], side="left")
    ids, mask = model.expand_diagnosis_prompts(rows["input_ids"], rows["attention_mask"], torch.tensor(patterns),
                                               processor.tokenizer.pad_token_id)
    for states, row, m in zip(patterns, ids, mask):
        one_call = processor(diagnoses=[dict(zip(names, map(int, states)))])["input_ids"][0].tolist()
        assert row[m.bool()].tolist() == one_call


def test_training_prompt_is_the_inference_prompt_plus_the_report(tiny):
    _, processor = tiny
    states = [1, 0] * 7
    train = processor(reports=["Thorax is symmetrical."], disease_labels=[states])
    infer = processor(diagnoses=[states])
    n = infer["input_ids"].shape[1]
    assert train["input_ids"][0, :n].tolist() == infer["input_ids"][0].tolist()
    assert (train["labels"][0, :n] == -100).all() and (train["labels"][0, n:] != -100).all()
    assert train["input_ids"][0, -1].item() == processor.tokenizer.eos_token_id


def test_a_tokenizer_whose_pieces_do_not_join_is_refused_for_generate(tiny, monkeypatch):
    """Were the tokens of a sentence to depend on its neighbours, `generate` could not build the prompt from pieces:
    writing the table into a config fails and says how to generate instead."""
    model, processor = tiny
    monkeypatch.setattr(type(processor), "_encode", lambda self, text: [len(text) % 97] if text else [])
    _, _, problem = processor._prompt_pieces()
    assert problem
    processor._pieces_problem = problem
    try:
        with pytest.raises(ValueError, match="two steps"):
            processor.prepare_model_config(model.config)
    finally:
        processor._pieces_problem = None


def test_placeholders_and_padding_get_no_probability(tiny):
    model, processor = tiny
    batch = processor(volumes=[np.zeros((64, 64, 32), np.float32)], reports=["Thorax is symmetrical."],
                      disease_labels=[[0] * 14])
    with torch.no_grad():
        logits = model(**batch).logits
    suppressed = model.input_only_token_ids()
    assert set(suppressed) >= {model.config.image_token_id, model.config.diagnosis_token_id,
                               processor.tokenizer.pad_token_id}
    assert model.config.get_text_config().eos_token_id not in suppressed
    assert (logits.softmax(-1)[..., suppressed] == 0).all()


# ---------------------------------------------------------------------------------------------------------------------
# `--llm` tokenizers


@pytest.fixture
def sentencepiece_only(tmp_path):
    if not SHARED_TOKENIZER.is_dir():
        pytest.skip(f"the LLaMA-2 tokenizer is not at {SHARED_TOKENIZER} (../shared beside the checkout)")
    folder = tmp_path / "llama"
    folder.mkdir()
    shutil.copy(SHARED_TOKENIZER / "tokenizer.model", folder)
    return folder


def test_a_bare_sentencepiece_model_loads_like_its_tokenizer_json(sentencepiece_only):
    sentence = 'The "pleural effusion" is positive. Thorax is symmetrical, lung window shows clear markings.'
    bare = load_llm_tokenizer(sentencepiece_only)
    full = load_llm_tokenizer(SHARED_TOKENIZER)
    assert (bare(sentence, add_special_tokens=False)["input_ids"]
            == full(sentence, add_special_tokens=False)["input_ids"])
    assert (bare.bos_token, bare.eos_token) == ("<s>", "</s>")


def test_without_sentencepiece_the_error_says_what_to_install(sentencepiece_only, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sentencepiece" else real_find_spec(name, *a))
    with pytest.raises(ValueError, match=r"tokenizer\.model.*sentencepiece.*dia-llama\[llama\]") as err:
        load_llm_tokenizer(sentencepiece_only)
    assert "tiktoken" not in str(err.value) and str(sentencepiece_only) in str(err.value)


@pytest.mark.parametrize("make, match", [
    (lambda p: p, "no tokenizer"),
    (lambda p: p / "missing", "not a folder"),
    (lambda p: (p / "tokenizer.json").write_text("{ not json") and p, "could not load its tokenizer"),
])
def test_bad_llm_folders_name_the_problem(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        load_llm_tokenizer(make(tmp_path))


def test_pieces_are_exact_for_every_pair_of_neighbouring_states(tiny):
    """The load-time check covers all four (present, absent) combinations of every neighbouring pair."""
    _, processor = tiny
    table, instruction, problem = processor._prompt_pieces()
    assert problem is None and len(table) == 14
    for i, (a, b) in itertools.product(range(13), itertools.product([True, False], repeat=2)):
        states = [False] * 14
        states[i], states[i + 1] = a, b
        joined = [t for (p, q), s in zip(table, states) for t in (p if s else q)] + instruction
        assert joined == processor._encode(processor.prompt_text(states))
