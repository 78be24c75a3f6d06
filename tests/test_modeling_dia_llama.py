"""DiaLlamaModel / DiaLlamaForConditionalGeneration: forward, losses, generation, saving and loading, remote code."""

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from dia_llama import DiaLlamaForConditionalGeneration
from dia_llama.presets import build_model_and_processor, train_tiny_tokenizer
from helpers.remote_code import BLOCK_DIA_LLAMA


def random_volumes(n, shape=(70, 66, 30), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(-300, 400, size=shape).astype(np.float32) for _ in range(n)]


def training_batch(processor, n=2):
    reports = ["No pleural effusion or pleural thickening.", "A nodule of 12 mm in the right upper lobe."][:n]
    labels = [{"no finding": 1}, {"lung lesion": 1}][:n]
    return processor(volumes=random_volumes(n), reports=reports, disease_labels=labels)


def test_auto_classes_load_init_folder(tiny_model_dir, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    assert type(AutoConfig.from_pretrained(tiny_model_dir)).__name__ == "DiaLlamaConfig"
    assert isinstance(model, DiaLlamaForConditionalGeneration)
    assert type(processor).__name__ == "DiaLlamaProcessor"
    assert type(AutoModel.from_pretrained(tiny_model_dir)).__name__ == "DiaLlamaModel"
    assert model.config.diagnosis_prompt_ids and len(model.config.diagnosis_prompt_ids) == 14


def test_forward_losses_and_backward(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    model = copy.deepcopy(model)  # train mode moves BatchNorm statistics: keep the shared model as loaded
    model.train()
    try:
        batch = training_batch(processor)
        out = model(**batch)
        for name in ("loss", "lm_loss", "dp_loss"):
            assert torch.isfinite(getattr(out, name)), name
        cfg = model.config
        expected = cfg.lm_loss_weight * out.lm_loss + cfg.dp_loss_weight * out.dp_loss
        torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-8)
        assert out.disease_logits.shape == (2, 14) and out.disease_probs.shape == (2, 14)
        model.zero_grad()
        out.loss.backward()
        inner = model.model
        for param in (
            next(inner.vision_tower.patch_embed.parameters()),
            inner.resampler.latents,
            inner.multi_modal_projector.weight,
            inner.disease_branch.attention_weights,
            inner.disease_branch.abnormal_prototypes,
            inner.disease_branch.log_temperature,
            inner.language_model.layers[0].self_attn.q_proj.weight,
        ):
            assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    finally:
        model.zero_grad()
        model.eval()


def test_labels_mask_everything_but_report(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    batch = training_batch(processor)
    tok = processor.tokenizer
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        kept = labels[labels != -100].tolist()
        assert kept[-1] == tok.eos_token_id
        report = tok.decode(kept[:-1])
        assert report in ("No pleural effusion or pleural thickening.", "A nodule of 12 mm in the right upper lobe.")
        # supervised tokens are exactly the tail of the unpadded row (right padding)
        n = int(mask.sum())
        assert ids[n - len(kept) : n].tolist() == kept and mask[:n].all() and not mask[n:].any()
    # the training prompt carries the ground truth
    text = tok.decode(batch["input_ids"][1])
    assert 'The "lung lesion" is positive.' in text and 'The "no finding" is negative.' in text


def test_truncation_cuts_only_the_report(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    long_report = "Multiple nodules are seen in both lungs. " * 80
    full = processor(reports=[long_report], disease_labels=[[0] * 14])
    cut = processor(reports=[long_report], disease_labels=[[0] * 14], max_report_tokens=20)
    n_prompt = int((full["labels"][0] == -100).sum())
    assert int((cut["labels"][0] == -100).sum()) == n_prompt
    assert int((cut["labels"][0] != -100).sum()) == 20  # 19 report tokens + EOS
    assert cut["input_ids"][0, :n_prompt].tolist() == full["input_ids"][0, :n_prompt].tolist()


def test_generate_one_call_returns_text_and_diagnoses(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    inputs = processor(volumes=random_volumes(2))
    assert (inputs["input_ids"] == model.config.diagnosis_token_id).sum() == 2
    assert inputs["attention_mask"][:, -1].all()  # left padding for generation
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    texts = processor.batch_decode(out.sequences)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    dx = out["diagnoses"]
    assert dx.probabilities.shape == (2, 14) and dx.present.dtype == torch.bool
    # the prompt that was used is the model's own diagnosis, readable from the sequences
    used = processor.decode_diagnoses(out.sequences)
    for row, present in zip(used, dx.present.tolist()):
        assert [row[name] for name in processor.disease_names] == present
    direct = model.diagnose(inputs["pixel_values"])
    torch.testing.assert_close(direct.probabilities, dx.probabilities, rtol=1e-5, atol=1e-8)


def test_generate_two_step_with_given_diagnoses(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    vols = random_volumes(1)
    given = [["cardiomegaly", "pleural effusion"]]
    inputs = processor(volumes=vols, diagnoses=given)
    assert (inputs["input_ids"] == model.config.diagnosis_token_id).sum() == 0
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert 'The "cardiomegaly" is positive.' in text and 'The "edema" is negative.' in text
    seq = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert processor.decode_diagnoses(seq)[0]["pleural effusion"] is True
    # the one-call path with forced diagnoses gives the same prompt
    one = model.generate(**processor(volumes=vols),
                         diagnoses=torch.tensor([[n in given[0] for n in processor.disease_names]]),
                         max_new_tokens=4, do_sample=False)
    assert one.tolist() == seq.tolist()


def test_generation_is_batch_consistent(tiny_model_and_processor):
    """Left-padded batched generation equals one-by-one generation (padding and positions are handled)."""
    model, processor = tiny_model_and_processor
    vols = random_volumes(2, seed=3)
    diag = [["lung lesion"], ["cardiomegaly", "edema", "fracture", "pleural other"]]
    batch = model.generate(**processor(volumes=vols, diagnoses=diag), max_new_tokens=5, do_sample=False)
    texts = processor.batch_decode(batch)
    for i in range(2):
        single = model.generate(**processor(volumes=[vols[i]], diagnoses=[diag[i]]), max_new_tokens=5, do_sample=False)
        assert processor.batch_decode(single)[0] == texts[i]


def test_image_token_count_mismatch_raises(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    batch = training_batch(processor, n=1)
    ids = batch["input_ids"].clone()
    ids[0, ids[0].tolist().index(model.config.image_token_id)] = processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="do not match"):
        model(input_ids=ids, pixel_values=batch["pixel_values"], attention_mask=batch["attention_mask"])


def test_wrong_volume_shape_raises(tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model.diagnose(torch.zeros(1, 1, 32, 32, 32))


def test_save_load_round_trip_identical_logits(tiny_model_and_processor, tmp_path):
    model, processor = tiny_model_and_processor
    batch = training_batch(processor)
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path)
    again = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = again(**batch).logits
    assert torch.equal(before, after)


def test_remote_code_loads_without_package(tiny_model_dir, tiny_model_and_processor, tmp_path):
    """The saved folder loads with trust_remote_code=True in a process where `import dia_llama` fails."""
    _, processor = tiny_model_and_processor
    # a fresh copy: other tests run the shared model in train mode, which moves its BatchNorm statistics
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    batch = training_batch(processor)
    with torch.no_grad():
        expected = model(**batch).logits
    torch.save(dict(batch), tmp_path / "batch.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = BLOCK_DIA_LLAMA + textwrap.dedent(
        f"""
        import numpy as np, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        d = {str(tiny_model_dir)!r}
        model = AutoModelForImageTextToText.from_pretrained(d, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(d, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            logits = model(**batch).logits
        # equal up to float rounding: conv3d kernels may differ by a few ulps between processes
        torch.testing.assert_close(logits, torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-5, atol=1e-5)
        out = model.generate(**processor(volumes=[np.zeros((64, 64, 32), np.float32)]), max_new_tokens=3)
        print("REMOTE_OK", processor.batch_decode(out))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]


REMOTE_CODE_FILES = {
    "configuration_dia_llama.py", "modeling_dia_llama.py", "modeling_dia_llama_vision.py",
    "modeling_dia_llama_disease.py", "image_processing_dia_llama.py", "processing_dia_llama.py",
    "pipeline_dia_llama.py", "volume_io.py", "volume_io_core.py", "volume_io_files.py", "volume_io_dicom.py",
}


def test_plain_save_pretrained_loads_as_remote_code_with_identical_logits(tmp_path):
    """`model.save_pretrained(d)` + `processor.save_pretrained(d)`, nothing else: the folder holds every code file its
    config names and loads with trust_remote_code=True in a process that cannot import dia_llama; report and disease
    logits are bit-identical."""
    model, processor = build_model_and_processor("tiny", seed=7)
    model.eval()
    folder = tmp_path / "plain"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert REMOTE_CODE_FILES <= {p.name for p in folder.iterdir()}
    config = __import__("json").loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_dia_llama.DiaLlamaForConditionalGeneration"
    assert config["custom_pipelines"]["ct-report-generation"]["impl"] == "pipeline_dia_llama.CTReportGenerationPipeline"
    batch = training_batch(processor)
    with torch.no_grad():
        out = model(**batch)
    torch.save(dict(batch), tmp_path / "batch.pt")
    threads = torch.get_num_threads()  # the same thread count: the same reduction order in every kernel
    script = BLOCK_DIA_LLAMA + textwrap.dedent(f"""
        import json, torch
        from transformers import AutoModelForImageTextToText
        torch.set_num_threads({threads})
        model = AutoModelForImageTextToText.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(**torch.load({str(tmp_path / "batch.pt")!r}))
        torch.save({{"logits": out.logits, "disease_logits": out.disease_logits}}, {str(tmp_path / "remote.pt")!r})
        print("REMOTE_OK")
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]
    remote = torch.load(tmp_path / "remote.pt")
    assert torch.equal(remote["logits"], out.logits)
    assert torch.equal(remote["disease_logits"], out.disease_logits)


def test_text_only_logits_equal_llama(tmp_path):
    """With a LLaMA checkpoint as text part (tokenizer without the Dia-LLaMA tokens), text logits are unchanged."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(61)])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(cfg).eval()
    llama.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    model, processor = build_model_and_processor("tiny", llm=tmp_path)
    model.eval()
    assert len(processor.tokenizer) == len(vocab) + 6  # 5 placeholders + pad
    ids = torch.randint(3, len(vocab), (2, 11))
    with torch.no_grad():
        ref = llama(input_ids=ids).logits
        ours = model(input_ids=ids).logits
    torch.testing.assert_close(ours[..., : len(vocab)], ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Disease branch


def small_config(**overrides):
    tok = train_tiny_tokenizer(corpus=["a b c"], vocab_size=300)
    from dia_llama.presets import build_config

    return build_config("tiny", len(tok), **overrides), tok


@pytest.mark.parametrize(
    "overrides",
    [
        dict(disease_pooling="mean", diagnosis_head="linear"),
        dict(disease_pooling="attention", diagnosis_head="linear"),
        dict(disease_pooling="mean", diagnosis_head="prototype"),
        dict(prompt_type="none"),
        dict(prompt_type="token"),
        dict(prompt_type="feature"),
    ],
)
def test_ablation_switches_train_and_generate(overrides):
    model, processor = build_model_and_processor("tiny", **overrides)
    batch = processor(volumes=random_volumes(2), reports=["No effusion.", "Nodule."],
                      disease_labels=[[1] + [0] * 13, [0] * 14])
    out = model(**batch)
    assert torch.isfinite(out.loss) and torch.isfinite(out.dp_loss)
    out.loss.backward()
    model.eval()
    inputs = processor(volumes=random_volumes(2))
    gen = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert gen["diagnoses"].present.shape == (2, 14)
    if overrides.get("prompt_type") in ("token", "feature"):
        assert (inputs["input_ids"] == model.config.disease_token_id).sum() == 2 * 14
        # the soft prompt follows the states: flipping a diagnosis changes the logits
        states = torch.zeros(1, 14, dtype=torch.bool)
        one = processor(volumes=random_volumes(1))
        with torch.no_grad():
            a = model(**one, diagnoses=states).logits
            b = model(**one, diagnoses=~states).logits
        assert not torch.allclose(a, b)
    if overrides.get("prompt_type") == "none":
        text = processor.tokenizer.decode(inputs["input_ids"][0])
        assert "positive" not in text and "<dx>" not in text


def test_init_weights_cover_custom_parameters(tiny_model_and_processor, tmp_path):
    """Parameters missing from a checkpoint are initialised by _init_weights, never left as garbage."""
    from safetensors.torch import load_file, save_file

    model, _ = tiny_model_and_processor
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = [k for k in state if "disease_branch" in k or "resampler" in k or "pos_embed" in k]
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    loaded = DiaLlamaForConditionalGeneration.from_pretrained(tmp_path)
    named = dict(loaded.named_parameters())
    for key in dropped:
        p = named[key]
        assert torch.isfinite(p).all() and p.abs().max() < 10, key
    branch = loaded.model.disease_branch
    assert branch.temperature.item() == pytest.approx(0.07, rel=1e-5)
    torch.testing.assert_close(branch.attention_map(),
                               torch.full_like(branch.attention_map(), 1 / branch.attention_map().shape[1]),
                               rtol=1e-5, atol=1e-8)


def test_gradient_checkpointing_matches_plain_backward():
    model, processor = build_model_and_processor("tiny")
    batch = processor(volumes=random_volumes(1), reports=["A nodule."], disease_labels=[[0, 0, 0, 1] + [0] * 10])
    model.train()
    loss = model(**batch).loss
    loss.backward()
    first_stem_weight = next(model.model.vision_tower.patch_embed.parameters())
    ref = first_stem_weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable()
    layers = (list(model.model.vision_tower.layers) + list(model.model.resampler.layers)
              + list(model.model.language_model.layers))
    assert all(layer.gradient_checkpointing for layer in layers)
    loss2 = model(**batch).loss
    loss2.backward()
    torch.testing.assert_close(loss, loss2, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(first_stem_weight.grad, ref, rtol=1e-5, atol=1e-6)


def test_bf16_model_accepts_float32_pixel_values(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(volumes=random_volumes(1))
    assert inputs["pixel_values"].dtype == torch.float32
    out = model.generate(**inputs, max_new_tokens=2, return_dict_in_generate=True)
    assert out["diagnoses"].probabilities.shape == (1, 14)


# ---------------------------------------------------------------------------------------------------------------------
# Config


def test_unknown_disease_names_in_labels_raise(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match="unknown disease names.*'pneumonitis'"):
        processor(reports=["x"], disease_labels=[{"pneumonitis": 1}])
    with pytest.raises(ValueError, match="unknown disease names"):
        processor(volumes=random_volumes(1), diagnoses=[["lung cancer"]])


def test_a_checkpoint_saved_before_the_reorganisation_loads_with_identical_outputs():
    """`fixtures/checkpoint_v0_1` was written by version 0.1's layout (processing_dia_llama.py holding the volume
    processor, one modeling file; `make_checkpoint.py` beside it): it loads through the Auto classes and gives the same
    report logits and disease logits, bit for bit."""
    import numpy as np

    folder = Path(__file__).parent / "fixtures" / "checkpoint_v0_1"
    expected = torch.load(folder / "expected_outputs.pt", weights_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor.image_processor).__name__ == "DiaLlamaVolumeProcessor"
    volume = (np.arange(64 * 64 * 32).reshape(64, 64, 32) % 1999 - 1000).astype(np.float32)
    batch = processor(volumes=[volume], reports=["Thorax is symmetrical. No pleural effusion."],
                      disease_labels=[[1, 0] * 7])
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    with torch.no_grad():
        out = model(**batch)
    report = batch["labels"][0] != -100
    torch.testing.assert_close(out.logits[0, report], expected["report_logits"], rtol=0, atol=0)
    torch.testing.assert_close(out.disease_logits, expected["disease_logits"], rtol=0, atol=0)
