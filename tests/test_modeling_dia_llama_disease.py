"""The disease branch (`modeling_dia_llama_disease`): attention pooling, the research code's legacy pooling, the
prototype memory, max pooling, and what the branch learns on toy data."""

import math

import pytest
import torch

from dia_llama import DiaLlamaConfig, DiaLlamaForConditionalGeneration
from dia_llama.presets import build_config, build_model_and_processor, train_tiny_tokenizer

SIGNAL_PATCH = 37
SHAPE = (32, 32, 16)


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
        torch.testing.assert_close(pooled[:, d], feats[:, (7 * d + 3) % num_m], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(branch.attention_map().sum(-1), torch.ones(num_l), rtol=1e-5, atol=1e-8)


def test_legacy_pooling_flag_reproduces_research_code_bug_at_inference_only():
    torch.manual_seed(0)
    model, _ = build_model_and_processor("tiny", legacy_disease_pooling=True, disease_attention="static",
                                         disease_max_pooling=False, disease_attention_min_intensity=None)
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
    sims = torch.nn.functional.cosine_similarity(branch.abnormal_prototypes[0][None], branch.abnormal_prototypes,
                                                 dim=-1)
    sims_n = torch.nn.functional.cosine_similarity(branch.abnormal_prototypes[0][None], branch.normal_prototypes,
                                                   dim=-1)
    assert torch.equal(probs[0] > 0.5, sims > sims_n)
    assert num_l == 14


def test_derived_no_finding_follows_the_other_classes():
    # attention over all patches, so that diagnose runs from patch features alone
    model, _ = build_model_and_processor("tiny", derive_no_finding=True, disease_attention_min_intensity=None)
    names = model.config.disease_names
    nf = names.index("no finding")
    logits = torch.full((2, len(names)), -4.0)
    logits[1, names.index("lung lesion")] = 4.0  # case 1 has a finding
    logits[:, nf] = torch.tensor([-9.0, 9.0])  # its own prototype says the opposite of the other classes
    branch = model.model.disease_branch
    branch.forward = lambda feats, legacy=False, patch_mask=None: (None, logits)
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
    torch.testing.assert_close(branch.loss(logits, labels), expected, rtol=1e-5, atol=1e-8)


def test_max_pooling_adds_the_patchwise_maximum():
    model, _ = build_model_and_processor("tiny", disease_max_pooling=False)
    branch = model.model.disease_branch
    feats = torch.randn(2, 512, 96)
    plain = branch.pool(feats)
    branch.max_pooling = True
    torch.testing.assert_close(branch.pool(feats), plain + feats.amax(dim=1, keepdim=True), rtol=1e-5, atol=1e-8)


def test_max_pooling_carries_one_patch_finding_from_the_start():
    """One patch marks the finding: the max-pooled feature moves by the full signal, the near-uniform DAA by ~1/M."""
    model, _ = build_model_and_processor("tiny", disease_max_pooling=True)
    branch = model.model.disease_branch
    feats = torch.zeros(1, 512, 96)
    marked = feats.clone()
    marked[0, 123, 5] = 1.0
    with torch.no_grad():
        shift = (branch.pool(marked) - branch.pool(feats))[0, :, 5]  # (L,)
    assert torch.all(shift > 1.0 - 1e-6)
    branch.max_pooling = False
    with torch.no_grad():
        shift = (branch.pool(marked) - branch.pool(feats))[0, :, 5]
    assert torch.all(shift < 20 / 512) and math.isfinite(shift.sum().item())


def _config(**overrides):
    tok = train_tiny_tokenizer(corpus=["a b c"], vocab_size=300)
    return build_config("tiny", len(tok), **overrides)


def _batch(gen, num_patches, dim, batch=16, fixed_location=True):
    labels = (torch.rand(batch, generator=gen) < 0.5).float()
    feats = 0.5 * torch.randn(batch, num_patches, dim, generator=gen)
    where = (torch.full((batch,), SIGNAL_PATCH) if fixed_location
             else torch.randint(0, num_patches, (batch,), generator=gen))
    feats[torch.arange(batch), where, :8] += 3.0 * labels[:, None]  # the finding: one patch, a fixed direction
    feats[torch.arange(batch), where, 8:16] += 3.0  # a "candidate region" marker, present in every case
    return feats, labels[:, None].expand(-1, 14), where


def _train_branch(config, steps=60, fixed_location=True, seed=0):
    model = DiaLlamaForConditionalGeneration(config)
    branch = model.model.disease_branch
    torch.manual_seed(seed)  # the branch's initialisation, independent of the vision tower's
    for module in branch.modules():
        model._init_weights(module)
    opt = torch.optim.Adam(branch.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    num_patches, dim = config.vision_config.num_patches, config.vision_config.hidden_size
    for _ in range(steps):
        feats, labels, _ = _batch(gen, num_patches, dim, fixed_location=fixed_location)
        _, logits = branch(feats)
        loss = branch.loss(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return branch, gen


def test_attention_scale_lets_static_attention_focus():
    """Adam moves W by ~lr per step: at scale 1 (the paper) the attention stays near uniform; at the tiny preset's
    scale its logit on the signal patch rises ~30× faster (≤ 30 · lr · steps)."""
    masses = {}
    for scale in (1.0, 30.0):
        branch, _ = _train_branch(_config(disease_attention="static", disease_attention_scale=scale))
        masses[scale] = branch.attention_map()[:, SIGNAL_PATCH].mean().item()
    uniform = 1.0 / 512
    assert masses[1.0] < 1.5 * uniform, masses
    assert masses[30.0] > 4 * uniform, masses


def test_dynamic_attention_follows_the_finding():
    """With the finding at a random patch, only the input-dependent attention can find it."""
    # 100 steps: on target ~19-33× uniform over seeds 0-2 (4-6× after 60)
    branch, gen = _train_branch(_config(disease_attention="dynamic", disease_attention_scale=30.0), steps=100,
                                fixed_location=False)
    feats, _, where = _batch(gen, 512, 96, fixed_location=False)
    with torch.no_grad():
        att = branch.attention_map(feats)  # (B, L, M)
    assert att.shape == (16, 14, 512)
    torch.testing.assert_close(att.sum(-1), torch.ones(16, 14), rtol=1e-5, atol=1e-5)
    on_target = att[torch.arange(16), :, where].mean().item()
    assert on_target > 10 / 512, on_target  # uniform would be 1/512
    assert branch.attention_map().shape == (14, 512)  # the static part, without features


def test_disease_attention_options_validate_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="disease_attention must be"):
        DiaLlamaConfig(disease_attention="bogus")
    with pytest.raises(ValueError, match="disease_attention_scale"):
        DiaLlamaConfig(disease_attention_scale=0.0)
    with pytest.raises(ValueError, match="legacy_disease_pooling"):
        DiaLlamaConfig(disease_attention="dynamic", legacy_disease_pooling=True)
    assert DiaLlamaConfig().disease_attention == "static" and DiaLlamaConfig().disease_attention_scale == 1.0

    model, _ = build_model_and_processor("tiny", disease_attention="dynamic")
    branch = model.model.disease_branch
    assert torch.count_nonzero(branch.attention_weights) == 0  # uniform static part at start
    assert 0.5 < branch.attention_query.std().item() < 1.5  # dynamic part initialised by _init_weights
    assert branch.attention_key.weight.std().item() == pytest.approx(96 ** -0.5, rel=0.2)
    model.save_pretrained(tmp_path)
    loaded = DiaLlamaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.disease_attention == "dynamic"
    assert loaded.config.disease_attention_scale == model.config.disease_attention_scale
    feats = torch.randn(2, 512, 96)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.model.disease_branch(feats)[1], loaded.model.disease_branch(feats)[1],
                                   rtol=1e-5, atol=1e-5)
    # disease_attention_dynamic_scale multiplies the query · key term only
    with pytest.raises(ValueError, match="disease_attention_dynamic_scale"):
        DiaLlamaConfig(disease_attention_dynamic_scale=0.0)
    with torch.no_grad():
        branch.attention_weights.normal_()
        base = branch.attention_logits(feats)  # (B, L, M)
        static = branch.attention_scale * branch.attention_weights  # (L, M)
        branch.dynamic_scale = 4.0
        torch.testing.assert_close(branch.attention_logits(feats) - static, 4 * (base - static), rtol=1e-4, atol=1e-4)


def _volume_with_body(batch: int = 2) -> torch.Tensor:
    """(B, 1, 64, 64, 32): air (0) around a box of soft tissue (0.5) over patch rows/cols 2..5 (voxels 16..47)."""
    volume = torch.zeros(batch, 1, 64, 64, 32)
    volume[:, :, 16:48, 16:48, :] = 0.5
    return volume


def test_body_mask_keeps_the_attention_off_the_air():
    torch.manual_seed(0)
    model, _ = build_model_and_processor("tiny", disease_attention_min_intensity=0.05)
    model.eval()
    inner, branch = model.model, model.model.disease_branch
    volume = _volume_with_body()
    mask = branch.body_mask(volume)  # (B, M): patches in (h w d) order on the 8×8×8 grid
    inside = torch.zeros(8, 8, 8, dtype=torch.bool)
    inside[2:6, 2:6, :] = True
    assert mask.shape == (2, 512) and torch.equal(mask[0], inside.reshape(-1)) and torch.equal(mask[1], mask[0])
    with torch.no_grad():
        branch.attention_weights[:, ~inside.reshape(-1)] = 10.0  # a sink on the air, as trained models learn
        dx = inner.diagnose(volume)
    assert dx.attention.shape == (2, 14, 512)
    assert dx.attention[:, :, ~mask[0]].abs().max() == 0.0  # no weight outside the body
    torch.testing.assert_close(dx.attention.sum(-1), torch.ones(2, 14))
    # the pooled features and the training loss use the same restricted attention
    feats = inner.encode_volume(volume)
    with torch.no_grad():
        pooled = branch.pool(feats, patch_mask=mask)
        expected = torch.einsum("blm,bmc->blc", dx.attention, feats)  # (no max pooling in the tiny preset)
        torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
        image_slots = torch.full((2, model.config.num_image_tokens), model.config.image_token_id)
        torch.testing.assert_close(inner(input_ids=image_slots, pixel_values=volume).disease_logits, dx.logits,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pass pixel_values"):
        inner.diagnose(patch_features=feats)
    # an all-air volume keeps every patch (no empty softmax, no NaN)
    empty = branch.body_mask(torch.zeros(1, 1, 64, 64, 32))
    assert bool(empty.all())
    assert torch.isfinite(inner.diagnose(torch.zeros(1, 1, 64, 64, 32)).probabilities).all()


def test_body_mask_is_off_by_default_and_validates():
    assert DiaLlamaConfig().disease_attention_min_intensity is None  # the paper: every patch
    with pytest.raises(ValueError, match="disease_attention_min_intensity"):
        DiaLlamaConfig(disease_attention_min_intensity=float("nan"))
    with pytest.raises(ValueError, match="legacy_disease_pooling"):
        DiaLlamaConfig(legacy_disease_pooling=True, disease_attention_min_intensity=0.05)
    model, _ = build_model_and_processor("tiny", disease_attention_min_intensity=None, disease_attention="static")
    assert model.model.disease_branch.body_mask(_volume_with_body()) is None
    dx = model.model.diagnose(_volume_with_body())
    assert dx.attention.shape == (14, 512)  # static without a mask: one map for every volume
