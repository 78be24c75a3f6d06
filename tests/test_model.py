"""Model behaviour: loading through the Auto classes, losses, generation, disease branch, ablations, remote code."""

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

import dia_llama
from dia_llama import DiaLlamaConfig, DiaLlamaForConditionalGeneration
from dia_llama.presets import build_model_and_processor, train_tiny_tokenizer


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
        assert torch.allclose(out.loss, expected)
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
    assert torch.allclose(direct.probabilities, dx.probabilities)


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
    one = model.generate(**processor(volumes=vols), diagnoses=torch.tensor([[n in given[0] for n in processor.disease_names]]),
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
    script = textwrap.dedent(
        f"""
        import builtins, sys
        real_import = builtins.__import__
        def guarded(name, *args, **kwargs):
            if name == "dia_llama" or name.startswith("dia_llama."):
                raise ImportError("dia_llama is blocked")
            return real_import(name, *args, **kwargs)
        builtins.__import__ = guarded
        try:
            import dia_llama
            raise SystemExit("dia_llama should not import")
        except ImportError:
            pass
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
        assert torch.allclose(logits, torch.load({str(tmp_path / "expected.pt")!r}), atol=1e-5, rtol=1e-5)
        out = model.generate(**processor(volumes=[np.zeros((64, 64, 32), np.float32)]), max_new_tokens=3)
        print("REMOTE_OK", processor.batch_decode(out))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]


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
    assert torch.allclose(ours[..., : len(vocab)], ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Disease branch


def small_config(**overrides):
    tok = train_tiny_tokenizer(corpus=["a b c"], vocab_size=300)
    from dia_llama.presets import build_config

    return build_config("tiny", len(tok), **overrides), tok


def test_disease_attention_pools_over_patches():
    model, _ = build_model_and_processor("tiny", disease_max_pooling=False)
    branch = model.model.disease_branch
    num_l, num_m = branch.attention_weights.shape
    feats = torch.randn(2, num_m, 96)
    with torch.no_grad():
        branch.attention_weights.fill_(-1e4)
        for d in range(num_l):
            branch.attention_weights[d, (7 * d + 3) % num_m] = 0.0
        pooled = branch.pool(feats)
    assert pooled.shape == (2, num_l, 96)
    for d in range(num_l):
        assert torch.allclose(pooled[:, d], feats[:, (7 * d + 3) % num_m], atol=1e-5)
    assert torch.allclose(branch.attention_map().sum(-1), torch.ones(num_l))


def test_legacy_pooling_flag_reproduces_research_code_bug_at_inference_only():
    torch.manual_seed(0)
    model, _ = build_model_and_processor("tiny", legacy_disease_pooling=True, disease_attention="static",
                                         disease_max_pooling=False)
    model.eval()
    branch = model.model.disease_branch
    with torch.no_grad():
        branch.attention_weights.normal_()  # a non-uniform attention, so the two poolings differ
    feats = torch.randn(2, branch.attention_weights.shape[1], 96)
    softmax = branch.attention_map()  # (L, M)
    with torch.no_grad():
        legacy = branch.pool(feats, legacy=True)
        correct = branch.pool(feats)
        # the research code's `mode='cls'`: disease i is judged from patch token i, scaled by the summed attention
        torch.testing.assert_close(legacy, softmax.sum(0)[: softmax.shape[0], None] * feats[:, : softmax.shape[0]])
        torch.testing.assert_close(correct, torch.einsum("lm,bmc->blc", softmax, feats))
        # its training path (`mode='train'`) pools correctly: forward (which computes L_DP) does not use the bug ...
        _, train_logits = branch(feats)
        _, correct_logits = branch(feats, legacy=False)
        torch.testing.assert_close(train_logits, correct_logits)
        # ... while diagnose (the inference path) does
        dx = model.model.diagnose(patch_features=feats)
        _, legacy_logits = branch(feats, legacy=True)
        torch.testing.assert_close(dx.logits, legacy_logits)
        assert not torch.allclose(legacy_logits, correct_logits)


def test_prototype_memory_decides_by_closer_prototype():
    model, _ = build_model_and_processor("tiny")
    branch = model.model.disease_branch
    num_l = branch.abnormal_prototypes.shape[0]
    with torch.no_grad():
        branch.proj.weight.copy_(torch.eye(96))
        branch.proj.bias.zero_()
        branch.attention_weights.zero_()
        feats = torch.zeros(2, branch.attention_weights.shape[1], 96)
        feats[0] = branch.abnormal_prototypes[0]  # every disease feature equals abnormal prototype 0
        _, logits = branch(feats)
    probs = torch.sigmoid(logits)
    assert probs[0, 0] > 0.99  # identical to the abnormal prototype of disease 0
    sims = torch.nn.functional.cosine_similarity(branch.abnormal_prototypes[0][None], branch.abnormal_prototypes, dim=-1)
    sims_n = torch.nn.functional.cosine_similarity(branch.abnormal_prototypes[0][None], branch.normal_prototypes, dim=-1)
    assert torch.equal(probs[0] > 0.5, sims > sims_n)
    assert num_l == 14


def test_derived_no_finding_follows_the_other_classes():
    model, _ = build_model_and_processor("tiny", derive_no_finding=True)
    names = model.config.disease_names
    nf = names.index("no finding")
    logits = torch.full((2, len(names)), -4.0)
    logits[1, names.index("lung lesion")] = 4.0  # case 1 has a finding
    logits[:, nf] = torch.tensor([-9.0, 9.0])  # its own prototype says the opposite of the other classes
    branch = model.model.disease_branch
    branch.forward = lambda feats, legacy=False: (None, logits)
    dx = model.model.diagnose(patch_features=torch.zeros(2, 1, 96))
    assert dx.present[:, nf].tolist() == [True, False]
    expected = (1 - torch.sigmoid(torch.tensor(-4.0))) ** (len(names) - 1)
    assert dx.probabilities[0, nf].item() == pytest.approx(expected.item(), rel=1e-5)
    assert dx.probabilities[1, nf].item() < 0.05
    model.config.derive_no_finding = False  # the paper: "no finding" scored by its own prototype
    dx = model.model.diagnose(patch_features=torch.zeros(2, 1, 96))
    assert dx.present[:, nf].tolist() == [False, True]


def test_temperature_starts_at_007_and_stays_bounded():
    model, _ = build_model_and_processor("tiny")
    branch = model.model.disease_branch
    assert branch.temperature.item() == pytest.approx(0.07, rel=1e-5)
    with torch.no_grad():
        branch.log_temperature.fill_(-50.0)
    assert branch.temperature.item() == pytest.approx(model.config.temperature_bounds[0])
    with torch.no_grad():
        branch.log_temperature.fill_(50.0)
    assert branch.temperature.item() == pytest.approx(model.config.temperature_bounds[1])


def test_dp_loss_is_two_way_infonce():
    model, _ = build_model_and_processor("tiny")
    branch = model.model.disease_branch
    logits = torch.tensor([[2.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0]])
    # 2-way cross entropy with logits (s_abn, s_norm) whose difference is `logits`
    two_way = torch.stack([logits, torch.zeros_like(logits)], -1)
    target = (1 - labels).long()
    expected = torch.nn.functional.cross_entropy(two_way.reshape(-1, 2), target.reshape(-1))
    assert torch.allclose(branch.loss(logits, labels), expected)


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
    batch = processor(volumes=random_volumes(2), reports=["No effusion.", "Nodule."], disease_labels=[[1] + [0] * 13, [0] * 14])
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
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = DiaLlamaForConditionalGeneration.from_pretrained(tmp_path)
    named = dict(loaded.named_parameters())
    for key in dropped:
        p = named[key]
        assert torch.isfinite(p).all() and p.abs().max() < 10, key
    branch = loaded.model.disease_branch
    assert branch.temperature.item() == pytest.approx(0.07, rel=1e-5)
    assert torch.allclose(branch.attention_map(), torch.full_like(branch.attention_map(), 1 / branch.attention_map().shape[1]))


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
    layers = list(model.model.vision_tower.layers) + list(model.model.resampler.layers) + list(model.model.language_model.layers)
    assert all(layer.gradient_checkpointing for layer in layers)
    loss2 = model(**batch).loss
    loss2.backward()
    assert torch.allclose(loss, loss2)
    assert torch.allclose(first_stem_weight.grad, ref, atol=1e-6)


def test_bf16_model_accepts_float32_pixel_values(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    inputs = processor(volumes=random_volumes(1))
    assert inputs["pixel_values"].dtype == torch.float32
    out = model.generate(**inputs, max_new_tokens=2, return_dict_in_generate=True)
    assert out["diagnoses"].probabilities.shape == (1, 14)


# ---------------------------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(disease_pooling="max"), "disease_pooling"),
        (dict(diagnosis_head="mlp"), "diagnosis_head"),
        (dict(prompt_type="soft"), "prompt_type"),
        (dict(disease_names="chexpert99"), "unknown disease set"),
        (dict(disease_names=["a", "a"]), "duplicates"),
        (dict(prototype_temperature=5.0), "temperature"),
        (dict(prompt_template="no fields"), "prompt_template"),
        (dict(vision_config=dict(volume_size=(60, 64, 32), patch_size=(8, 8, 4))), "multiple of patch_size"),
        (dict(vision_config=dict(patch_embedding="unet")), "patch_embedding"),
        (dict(vision_config=dict(volume_size=(64, 64, 36), patch_size=(8, 8, 6), patch_embedding="conv")),
         "power of 2"),
        (dict(vision_config=dict(patch_embedding="conv", conv_stem_channels=(16, 32, 64))), "at most 2\\*\\*4"),
        (dict(temperature_bounds=(0.5, 0.1)), "temperature_bounds"),
        (dict(dp_loss_weight=-1.0), "loss weights"),
    ],
)
def test_invalid_config_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiaLlamaConfig(**kwargs)


def test_config_defaults_are_the_papers():
    cfg = DiaLlamaConfig()
    vc = cfg.vision_config
    assert vc.volume_size == [256, 256, 64] and vc.patch_size == [32, 32, 4] and vc.num_patches == 1024
    assert (vc.hidden_size, vc.num_hidden_layers, vc.num_attention_heads, vc.intermediate_size) == (768, 12, 8, 2048)
    assert (vc.perceiver_depth, vc.num_latents) == (6, 32) and cfg.num_image_tokens == 32
    assert cfg.dp_loss_weight == 4 and cfg.lm_loss_weight == 1
    assert cfg.disease_names == dia_llama.CHEXPERT_14 and len(DiaLlamaConfig(disease_names="ctrate18").disease_names) == 18
    assert vc.patch_embedding == "linear"
    assert cfg.get_text_config().model_type == "llama"


def test_unknown_disease_names_in_labels_raise(tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match="unknown disease names.*'pneumonitis'"):
        processor(reports=["x"], disease_labels=[{"pneumonitis": 1}])
    with pytest.raises(ValueError, match="unknown disease names"):
        processor(volumes=random_volumes(1), diagnoses=[["lung cancer"]])


def conv_stem_tower(patch_size=(8, 8, 4), channels=(4, 8)):
    from dia_llama.configuration_dia_llama import DiaLlamaVisionConfig
    from dia_llama.modeling_dia_llama import DiaLlamaVisionTower

    config = DiaLlamaVisionConfig(volume_size=(32, 32, 16), num_channels=1, patch_size=patch_size, hidden_size=12,
                                  num_hidden_layers=1, num_attention_heads=2, head_dim=6, intermediate_size=24,
                                  patch_embedding="conv", conv_stem_channels=channels)
    return DiaLlamaVisionTower(config).eval(), config


def test_conv_patch_embedding_halves_each_axis_until_the_patch_size():
    tower, config = conv_stem_tower()
    strides = [layer.conv.stride for layer in tower.patch_embed.layers]
    assert strides == [(2, 2, 2), (2, 2, 2), (2, 2, 1)]
    widths = [layer.conv.out_channels for layer in tower.patch_embed.layers]
    assert widths == [4, 8, 12]
    tokens = tower.patch_embed(torch.zeros(2, 1, 32, 32, 16))
    assert tokens.shape == (2, config.num_patches, 12) == (2, 4 * 4 * 4, 12)


def test_conv_patch_embedding_tokens_are_centred_on_their_patches():
    """With binomial (peaked, symmetric) kernels each token's receptive field peaks at its patch centre, so a change
    anywhere in patch (h, w, d), corners included, moves token h·W·D + w·D + d the most (the linear embedding's
    order)."""
    tower, config = conv_stem_tower()
    binomial = {4: torch.tensor([1.0, 3.0, 3.0, 1.0]), 3: torch.tensor([1.0, 2.0, 1.0])}
    with torch.no_grad():
        for layer in tower.patch_embed.layers:
            kh, kw, kd = layer.conv.kernel_size
            kernel = torch.einsum("i,j,k->ijk", binomial[kh], binomial[kw], binomial[kd])
            layer.conv.weight.copy_(kernel.expand_as(layer.conv.weight))
    _, w, d = config.grid_size
    base = torch.zeros(1, 1, 32, 32, 16)
    for patch in ((2, 1, 3), (1, 2, 0)):
        for offset in ((0, 0, 0), (7, 7, 3), (3, 4, 1), (0, 7, 2)):
            bumped = base.clone()
            bumped[0, 0, 8 * patch[0] + offset[0], 8 * patch[1] + offset[1], 4 * patch[2] + offset[2]] = 1.0
            with torch.no_grad():
                change = (tower.patch_embed(bumped) - tower.patch_embed(base)).abs().sum(-1)[0]  # (M,)
            assert int(change.argmax()) == patch[0] * w * d + patch[1] * d + patch[2], (patch, offset)


def test_conv_patch_embedding_batch_norm_statistics_round_trip(tmp_path):
    """The stem's BatchNorm running statistics are trained state: saved, loaded and used in eval mode."""
    model, _ = build_model_and_processor("tiny", vision_overrides={"patch_embedding": "conv"})
    stem = model.model.vision_tower.patch_embed
    model.train()
    with torch.no_grad():
        model.model.encode_volume(torch.rand(2, 1, 64, 64, 32))
    assert int(stem.layers[0].norm.num_batches_tracked) == 1
    model.save_pretrained(tmp_path)
    loaded = DiaLlamaForConditionalGeneration.from_pretrained(tmp_path).eval()
    norm, loaded_norm = stem.layers[0].norm, loaded.model.vision_tower.patch_embed.layers[0].norm
    assert torch.equal(norm.running_mean, loaded_norm.running_mean)
    assert torch.equal(norm.running_var, loaded_norm.running_var)
    x = torch.rand(1, 1, 64, 64, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval().model.encode_volume(x), loaded.model.encode_volume(x), atol=1e-6)
