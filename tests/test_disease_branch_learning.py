"""The disease branch learns where to look: attention logit scale and the input-dependent (dynamic) attention.

Toy problem on the branch alone (no vision tower): patch features are noise, and in positive cases one patch carries
the finding. Fast (a few seconds on a CPU).
"""

import pytest
import torch

from dia_llama.configuration_dia_llama import DiaLlamaConfig
from dia_llama.modeling_dia_llama import DiaLlamaForConditionalGeneration
from dia_llama.presets import build_config, build_model_and_processor, train_tiny_tokenizer

SIGNAL_PATCH = 37


def _config(**overrides):
    tok = train_tiny_tokenizer(corpus=["a b c"], vocab_size=300)
    return build_config("tiny", len(tok), **overrides)


def _batch(gen, num_patches, dim, batch=16, fixed_location=True):
    labels = (torch.rand(batch, generator=gen) < 0.5).float()
    feats = 0.5 * torch.randn(batch, num_patches, dim, generator=gen)
    where = torch.full((batch,), SIGNAL_PATCH) if fixed_location else torch.randint(0, num_patches, (batch,), generator=gen)
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
    assert torch.allclose(att.sum(-1), torch.ones(16, 14), atol=1e-5)
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
        assert torch.allclose(model.model.disease_branch(feats)[1], loaded.model.disease_branch(feats)[1], atol=1e-5)
